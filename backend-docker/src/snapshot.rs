//! Snapshots are images: `docker commit` of the sandbox's container, tagged
//! `sandbox-snapshot:<snapshot id>` and labelled with the snapshot's repository, branch, commit,
//! session, reason, time and user labels.
//!
//! The commit runs with `pause=true`: the daemon freezes the container for the duration of the
//! commit, so the filesystem is captured at one instant, and unpauses it afterwards whatever
//! the outcome (the daemon's own deferred unpause). Execs of this backend do not start during
//! the commit (see `crate::exec`: an exec starting in a paused container hangs the daemon).
//! The image's environment has every variable
//! the sandbox got beyond the image's own set to the empty string: a snapshot never carries
//! the session's token or secrets (Docker would otherwise copy the container's `Env` into the
//! image). The session file of a claimed warm sandbox lives in a volume, which commits skip.
//! `restore` is a cold create from the snapshot image with `RESTORED_FROM_SNAPSHOT=true`.

use std::collections::HashMap;
use std::time::SystemTime;

use bollard::models::ContainerConfig;
use bollard::query_parameters::{CommitContainerOptions, ListImagesOptions, RemoveImageOptions};
use sandbox_core::{
    BackendKind, Error, Operation, ResourceKind, Result, SandboxEventKind, SandboxId, Snapshot,
    SnapshotFilter, SnapshotId, SnapshotOptions,
};

use crate::backend::Inner;
use crate::convert::{
    Kind, SNAPSHOT_REPOSITORY, managed_filter, snapshot_from_labels, snapshot_image,
    snapshot_labels,
};
use crate::error::{Target, status_of};

const KIND: BackendKind = BackendKind::Docker;

/// The environment a snapshot image gets: the container's, with each variable that the image
/// did not have (session settings, secrets) set to the empty string.
pub(crate) fn scrubbed_env(container_env: &[String], image_env: &[String]) -> Vec<String> {
    container_env
        .iter()
        .map(|var| {
            if image_env.contains(var) {
                var.clone()
            } else {
                let key = var.split_once('=').map_or(var.as_str(), |(k, _)| k);
                format!("{key}=")
            }
        })
        .collect()
}

pub(crate) async fn snapshot(
    inner: &Inner,
    id: &SandboxId,
    options: SnapshotOptions,
) -> Result<Snapshot> {
    let op = Operation::Snapshot;
    inner.capabilities().require(KIND, op)?;
    let listed = inner.find(op, id).await?;
    let container = inner
        .api
        .call(
            op,
            Target::Sandbox(id.as_str()),
            inner.docker().inspect_container(&listed.container_id, None),
        )
        .await?;
    let container_env = container
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let image_env = match container.image.as_deref() {
        Some(image) => inner
            .api
            .call(
                op,
                Target::Image(image),
                inner.docker().inspect_image(image),
            )
            .await?
            .config
            .and_then(|c| c.env)
            .unwrap_or_default(),
        None => Vec::new(),
    };

    let snapshot_id = SnapshotId::generate();
    let claim = listed.claim.as_ref().filter(|_| listed.is_claimed());
    let mut snap = Snapshot::new(snapshot_id.clone(), KIND, SystemTime::now());
    snap.source = Some(id.clone());
    snap.session_id = listed.session_id();
    snap.repo = options
        .repo_ref()
        .cloned()
        .or_else(|| claim.map_or_else(|| listed.meta.repo.clone(), |c| c.repo.clone()));
    snap.sha = options.sha_ref().map(str::to_string);
    snap.reason = options.reason_kind();
    snap.labels = options.labels().clone();

    let tag = snapshot_id.to_string();
    let commit = CommitContainerOptions {
        container: Some(listed.container_id.clone()),
        repo: Some(SNAPSHOT_REPOSITORY.to_string()),
        tag: Some(tag),
        comment: Some(format!("sandbox snapshot {snapshot_id} of {id}")),
        pause: true,
        ..Default::default()
    };
    let config = ContainerConfig {
        labels: Some(snapshot_labels(&snap)),
        env: Some(scrubbed_env(&container_env, &image_env)),
        ..Default::default()
    };
    let image = snapshot_image(&snapshot_id);
    // No exec of ours may be starting while the daemon pauses the container (see
    // `crate::exec`): wait for those under way, hold new ones back until the commit ends.
    let pausing = inner.exec_gates.pausing(&listed.container_id).await;
    let committed = inner
        .api
        .call_raw(op, inner.docker().commit_container(commit, config))
        .await;
    drop(pausing);
    match committed {
        Ok(Ok(_)) => {}
        // A 404 is the container gone, or the new image removed by another client before
        // the daemon tagged it: only the first is the sandbox not found.
        Ok(Err(e)) if status_of(&e) == Some(404) => {
            inner.find(op, id).await?;
            return Err(Error::Backend {
                backend: KIND,
                status: Some(404),
                message: format!("committing sandbox {id} failed: {e}"),
                source: Some(e.into()),
            });
        }
        Ok(Err(e)) => return Err(inner.api.map(op, Target::Sandbox(id.as_str()), e)),
        Err(timeout) => {
            // The commit may still complete: do not leave its image behind.
            remove_image(inner, &image).await.ok();
            return Err(timeout);
        }
    }
    // The snapshot exists only if the daemon can show its image.
    let made = inner
        .api
        .call(
            op,
            Target::Snapshot(snapshot_id.as_str()),
            inner.docker().inspect_image(&image),
        )
        .await?;
    snap.size_bytes = made.size.and_then(|s| u64::try_from(s).ok());
    inner.events.emit_now(
        id,
        snap.session_id.as_ref(),
        SandboxEventKind::SnapshotTaken {
            snapshot_id: snapshot_id.clone(),
        },
    );
    Ok(snap)
}

/// The image of a snapshot; `NotFound` (kind snapshot) when it does not exist.
pub(crate) async fn image_of_snapshot(inner: &Inner, id: &SnapshotId) -> Result<String> {
    let op = Operation::Restore;
    let image = snapshot_image(id);
    let info = inner
        .api
        .call(
            op,
            Target::Snapshot(id.as_str()),
            inner.docker().inspect_image(&image),
        )
        .await?;
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    match snapshot_from_labels(&format!("image {image}"), &labels, None)? {
        Some(s) if &s.id == id => Ok(image),
        _ => Err(Error::NotFound {
            kind: ResourceKind::Snapshot,
            id: id.to_string(),
        }),
    }
}

pub(crate) async fn list_snapshots(inner: &Inner, filter: SnapshotFilter) -> Result<Vec<Snapshot>> {
    let op = Operation::ListSnapshots;
    inner.capabilities().require(KIND, op)?;
    let options = ListImagesOptions {
        filters: Some(HashMap::from([(
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
    let mut out = Vec::new();
    for image in images {
        let Some(snap) = snapshot_from_labels(
            &format!("image {}", image.id),
            &image.labels,
            u64::try_from(image.size).ok(),
        )?
        else {
            continue;
        };
        // A deleted snapshot whose image a sandbox still uses has lost its tag: not listed.
        if !image.repo_tags.contains(&snapshot_image(&snap.id)) {
            continue;
        }
        if filter.matches(&snap) {
            out.push(snap);
        }
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

pub(crate) async fn delete_snapshot(inner: &Inner, id: &SnapshotId) -> Result<()> {
    inner
        .capabilities()
        .require(KIND, Operation::DeleteSnapshot)?;
    remove_image(inner, &snapshot_image(id)).await
}

/// Removes a snapshot image by tag. A sandbox restored from it may still use it: the daemon
/// then only removes the tag, and the image goes with the last such sandbox
/// ([`remove_if_deleted_snapshot`]).
async fn remove_image(inner: &Inner, image: &str) -> Result<()> {
    let op = Operation::DeleteSnapshot;
    let options = RemoveImageOptions {
        force: true,
        noprune: false,
        platforms: None,
    };
    match inner
        .api
        .call_raw(op, inner.docker().remove_image(image, Some(options), None))
        .await?
    {
        Ok(_) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(inner.api.map(op, Target::Image(image), e)),
    }
}

/// After a sandbox is removed: if its image is a snapshot that was deleted (untagged) while
/// the sandbox used it, removes the image unless another container still uses it.
pub(crate) async fn remove_if_deleted_snapshot(inner: &Inner, image: Option<&str>) {
    let Some(image) = image else { return };
    if !image.starts_with("sha256:") {
        // Still referenced by its tag: the snapshot exists.
        return;
    }
    let op = Operation::Terminate;
    let Ok(Ok(info)) = inner
        .api
        .call_raw(op, inner.docker().inspect_image(image))
        .await
    else {
        return;
    };
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    let untagged = info.repo_tags.unwrap_or_default().is_empty();
    if untagged && Kind::of(&labels) == Some(Kind::Snapshot) {
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            platforms: None,
        };
        // 409: another container still uses it; the last one removes it.
        let _ = inner
            .api
            .call_raw(op, inner.docker().remove_image(image, Some(options), None))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_env_drops_every_value_the_sandbox_added() {
        let image = vec!["PATH=/bin".to_string()];
        let container = vec![
            "PATH=/bin".to_string(),
            "SANDBOX_AUTH_TOKEN=secret".to_string(),
            "API_KEY=a=b".to_string(),
        ];
        assert_eq!(
            scrubbed_env(&container, &image),
            vec!["PATH=/bin", "SANDBOX_AUTH_TOKEN=", "API_KEY="]
        );
    }
}
