//! Expiry and orphan cleanup, from the daemon's labels alone.
//!
//! Every container carries its expiry (`sandbox.rs/expires-at`, and in milliseconds
//! `sandbox.rs/docker.expires-at-ms`); a claimed warm container's expiry is its claim volume's.
//! [`reap_expired`] removes every container past it (unclaimed pool containers too, after the
//! pool lifetime) and emits `Expired` then `Terminated { Expired }`. It runs when called, and
//! in the background when `reaper_interval_seconds` (or the builder's `reaper_interval`) is set.

use std::collections::HashSet;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use bollard::query_parameters::{ListImagesOptions, ListVolumesOptions, RemoveImageOptions};
use sandbox_core::{Operation, Result, SandboxId};

use crate::backend::{Inner, ReapedOrphans};
use crate::convert::{ClaimMeta, Kind, managed_filter};
use crate::error::Target;

pub(crate) async fn reap_expired(inner: &Inner) -> Result<Vec<SandboxId>> {
    let now = SystemTime::now();
    let expired: Vec<_> = inner
        .list_containers(Operation::ReapExpired, None)
        .await?
        .into_iter()
        .filter(|l| l.is_expired(now))
        .collect();
    let results = futures::future::join_all(expired.iter().map(|l| inner.reap_one(l, true))).await;
    let mut reaped = Vec::new();
    let mut first_error = None;
    for (l, r) in expired.iter().zip(results) {
        match r {
            Ok(()) => {
                tracing::info!(sandbox_id = %l.meta.sandbox_id, "reaped an expired sandbox");
                reaped.push(l.meta.sandbox_id.clone());
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if reaped.is_empty() => Err(e),
        Some(e) => {
            tracing::warn!(error = %e, "some expired sandboxes could not be removed");
            Ok(reaped)
        }
        None => Ok(reaped),
    }
}

/// The background reaper: holds the backend weakly and stops when it is dropped.
pub(crate) fn spawn(inner: Weak<Inner>, every: Duration) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = reap_expired(&inner).await {
                tracing::warn!(error = %e, "background reaper");
            }
        }
    })
    .abort_handle()
}

pub(crate) async fn reap_orphans(inner: &Inner) -> Result<ReapedOrphans> {
    let op = Operation::ReapExpired;
    let now = SystemTime::now();
    // A claim younger than this may be in progress in another process.
    let grace = inner.settings.api_timeout * 2;
    let listed = inner.list_containers(op, None).await?;
    let mut report = ReapedOrphans::default();
    for l in &listed {
        let interrupted_claim = l.meta.kind == Kind::Pool
            && match (&l.claim, l.is_claimed()) {
                // Renamed but its claim record is gone.
                (None, true) => true,
                // Claim recorded but never completed.
                (Some(c), false) => now
                    .duration_since(c.created_at)
                    .is_ok_and(|age| age > grace),
                _ => false,
            };
        if !l.state.is_live() || interrupted_claim {
            inner.destroy(l).await?;
            report
                .containers
                .push(l.name.trim_start_matches('/').to_string());
        }
    }
    // Claim volumes whose container is gone.
    let options = ListVolumesOptions {
        filters: Some(std::collections::HashMap::from([(
            "label".to_string(),
            vec![managed_filter(), Kind::Claim.filter()],
        )])),
    };
    let volumes = inner
        .api
        .call(
            op,
            Target::Daemon,
            inner.docker().list_volumes(Some(options)),
        )
        .await?;
    let containers: HashSet<_> = listed.iter().map(|l| l.meta.sandbox_id.clone()).collect();
    for v in volumes.volumes.unwrap_or_default() {
        let Some(claim) = ClaimMeta::from_labels(&format!("volume {}", v.name), &v.labels)? else {
            continue;
        };
        if !containers.contains(&claim.sandbox_id) {
            inner.remove_claim_volume(&claim.sandbox_id).await?;
            report.volumes.push(v.name);
        }
    }
    // Snapshot images deleted while in use (untagged), once nothing uses them.
    let options = ListImagesOptions {
        all: false,
        filters: Some(std::collections::HashMap::from([(
            "label".to_string(),
            vec![managed_filter(), Kind::Snapshot.filter()],
        )])),
        ..Default::default()
    };
    let images = inner
        .api
        .call(
            op,
            Target::Daemon,
            inner.docker().list_images(Some(options)),
        )
        .await?;
    for image in images {
        // A commit creates its image before it tags it: an untagged image younger than the
        // grace may be a snapshot being taken right now, here or in another process.
        let created = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(image.created).unwrap_or_default());
        let settled = now.duration_since(created).is_ok_and(|age| age > grace);
        if settled && !image.repo_tags.iter().any(|t| t != "<none>:<none>") {
            let options = RemoveImageOptions {
                force: false,
                noprune: false,
                platforms: None,
            };
            // 409: a sandbox still uses it.
            if let Ok(Ok(_)) = inner
                .api
                .call_raw(
                    op,
                    inner.docker().remove_image(&image.id, Some(options), None),
                )
                .await
            {
                report.images.push(image.id);
            }
        }
    }
    Ok(report)
}
