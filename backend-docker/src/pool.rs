//! Warm pools: containers created and started ahead of time, claimed by `create` without
//! starting anything.
//!
//! # A pool container
//! Named `sandbox-pool-<sandbox id>`, labelled `sandbox.rs/pool=true`, the template key and
//! the template itself (JSON, with the resolved image), expiring after the pool lifetime. Its
//! main process waits for its claim on stdin (`OpenStdin`, `StdinOnce`) and has an anonymous
//! volume at `/run/sandbox` (so the session file below is never part of a snapshot).
//!
//! # Claiming one
//! Docker fixes a container's labels, name and environment... except its name. A claim:
//! 1. records the claim in a labelled volume `sandbox-claim-<sandbox id>` (session id, new
//!    expiry, user labels, repository). Volume creation is idempotent by name, so a claim that
//!    finds the volume already recording another session has lost the race and moves on;
//! 2. renames the container from its pool name to the session's name
//!    `sandbox-session-<session id>`. Renaming *by the old name* is atomic in the daemon: of
//!    two claimers only one finds the name, and a session that already has a container makes
//!    the rename fail (409), which keeps `create` idempotent by session id;
//! 3. delivers the session environment (seed 003's table, user env and secrets) by attaching
//!    to the container's stdin: its main process writes it to `/run/sandbox/session.env`
//!    (mode 0600, NUL-separated records) and answers `claimed`. Every exec then gets it as its
//!    `Env` (see [`crate::exec`]); a new backend instance reads it back from that file.
//!
//! No container is started on this path: it costs a volume create, a rename and an attach.
//! `list`, `status` and the reaper read the claim volume, so a claimed sandbox's session,
//! labels and expiry come from the daemon. After a claim the pool is refilled in the
//! background; `warm` with size 0 stops refills (waiting for those in flight, which remove
//! what they made) and removes the pool's unclaimed containers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{AttachContainerOptions, RenameContainerOptions};
use futures::StreamExt;
use sandbox_core::{
    BackendKind, Error, Operation, Result, Sandbox, SandboxEventKind, SandboxId, SandboxSpec,
    SandboxTemplate, TemplateKey, WarmSpec, WarmStatus,
};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use crate::backend::{Inner, Located};
use crate::convert::{
    ClaimMeta, ContainerMeta, Kind, Listed, State, claim_volume_name, encode_session_file,
    pool_container_name, session_container_name,
};
use crate::error::{DockerError, Target, status_of};

const KIND: BackendKind = BackendKind::Docker;

/// A ready, unclaimed pool container this instance knows.
#[derive(Debug, Clone)]
struct Idle {
    sandbox_id: SandboxId,
    container_id: String,
    name: String,
}

struct Pool {
    spec: WarmSpec,
    image: String,
    fingerprint: String,
    target: u32,
    idle: VecDeque<Idle>,
    /// Containers being created for this pool.
    pending: u32,
    /// Bumped whenever the pool is emptied or its template changes: a refill of an older
    /// generation removes what it made instead of adding it.
    generation: u64,
    refills: JoinSet<()>,
}

/// The pools of one backend instance.
#[derive(Default)]
pub(crate) struct Pools {
    pools: Mutex<HashMap<TemplateKey, Pool>>,
}

impl Pools {
    /// Aborts every refill (the backend is being dropped).
    pub(crate) fn abort_all(&self) {
        if let Ok(mut pools) = self.pools.lock() {
            for pool in pools.values_mut() {
                pool.refills.abort_all();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TemplateKey, Pool>> {
        self.pools.lock().expect("pool lock")
    }
}

/// The template a pool container was made for, with the image it resolved to: a container is
/// only adopted into a pool whose fingerprint is the same.
fn fingerprint(template: &SandboxTemplate, image: &str) -> String {
    serde_json::json!({ "template": template, "image": image }).to_string()
}

pub(crate) async fn warm(inner: &Arc<Inner>, spec: WarmSpec) -> Result<WarmStatus> {
    let op = Operation::Warm;
    let caps = inner.capabilities();
    caps.require(KIND, op)?;
    caps.check_template(KIND, op, spec.template())?;
    let key = spec.template_key().clone();
    if spec.size() == 0 {
        return drain(inner, &key).await;
    }
    let image = inner.image_of(spec.template());
    inner.ensure_image(op, &image).await?;
    let fp = fingerprint(spec.template(), &image);

    // Adopt what an earlier instance left in this pool; remove what no longer fits it.
    let now = SystemTime::now();
    let mut stale = Vec::new();
    let mut adoptable = Vec::new();
    for l in inner.list_containers(op, None).await? {
        if l.meta.template_key.as_ref() != Some(&key) || !l.is_idle_in_pool() {
            continue;
        }
        if l.state == State::Running
            && l.meta.template_spec.as_deref() == Some(fp.as_str())
            && !l.is_expired(now)
        {
            adoptable.push(Idle {
                sandbox_id: l.meta.sandbox_id.clone(),
                container_id: l.container_id.clone(),
                name: l.name.trim_start_matches('/').to_string(),
            });
        } else if l.state.is_live() || l.state == State::Exited || l.state == State::Dead {
            stale.push(l);
        }
    }
    let deadline = tokio::time::Instant::now() + inner.settings.ready_timeout;
    loop {
        let (need, generation, extra) = {
            let mut pools = inner.pools.lock();
            let pool = pools.entry(key.clone()).or_insert_with(|| Pool {
                spec: spec.clone(),
                image: image.clone(),
                fingerprint: fp.clone(),
                target: 0,
                idle: VecDeque::new(),
                pending: 0,
                generation: 0,
                refills: JoinSet::new(),
            });
            let mut extra = Vec::new();
            if pool.fingerprint != fp {
                extra.extend(pool.idle.drain(..));
                pool.generation += 1;
                pool.fingerprint = fp.clone();
                pool.image = image.clone();
            }
            pool.spec = spec.clone();
            pool.target = spec.size();
            for a in adoptable.drain(..) {
                if !pool.idle.iter().any(|i| i.container_id == a.container_id) {
                    pool.idle.push_back(a);
                }
            }
            let target = pool.target as usize;
            if pool.idle.len() > target {
                extra.extend(pool.idle.drain(target..));
            }
            let have = pool.idle.len() as u32 + pool.pending;
            let need = pool.target.saturating_sub(have);
            pool.pending += need;
            (need, pool.generation, extra)
        };
        let removals = stale.iter().map(|l| inner.destroy(l)).collect::<Vec<_>>();
        for r in futures::future::join_all(removals).await {
            r?;
        }
        for e in &extra {
            inner.remove_container(&e.container_id).await?;
        }

        let made = futures::future::join_all(
            (0..need).map(|_| create_pool_container(inner, &spec, &image, &fp)),
        )
        .await;
        let mut first_error = None;
        let mut discard = Vec::new();
        {
            let mut pools = inner.pools.lock();
            let pool = pools.get_mut(&key);
            match pool {
                Some(pool) => {
                    for r in made {
                        pool.pending = pool.pending.saturating_sub(1);
                        match r {
                            Ok(idle) if pool.generation == generation => pool.idle.push_back(idle),
                            Ok(idle) => discard.push(idle),
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                }
                None => discard.extend(made.into_iter().filter_map(Result::ok)),
            }
        }
        for idle in discard {
            inner.remove_container(&idle.container_id).await?;
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        // Refills in flight (after claims) count as coming: wait for them.
        loop {
            let (ready, pending, target) = {
                let pools = inner.pools.lock();
                pools
                    .get(&key)
                    .map_or((0, 0, 0), |p| (p.idle.len() as u32, p.pending, p.target))
            };
            if ready >= target {
                break;
            }
            if pending == 0 {
                // A refill failed: make the missing ones here.
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: op,
                    after: inner.settings.ready_timeout,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let full = inner
            .pools
            .lock()
            .get(&key)
            .is_none_or(|p| p.idle.len() as u32 >= p.target);
        if full || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    let pools = inner.pools.lock();
    let (target, ready, starting) = pools
        .get(&key)
        .map_or((0, 0, 0), |p| (p.target, p.idle.len() as u32, p.pending));
    Ok(WarmStatus::new(key, target, ready, starting))
}

/// `warm(0)`: stops refills and removes every unclaimed container of the pool.
async fn drain(inner: &Arc<Inner>, key: &TemplateKey) -> Result<WarmStatus> {
    let (mut refills, idle) = {
        let mut pools = inner.pools.lock();
        match pools.get_mut(key) {
            Some(pool) => {
                pool.target = 0;
                pool.generation += 1;
                (
                    std::mem::take(&mut pool.refills),
                    pool.idle.drain(..).collect::<Vec<_>>(),
                )
            }
            None => (JoinSet::new(), Vec::new()),
        }
    };
    // Refills in flight see the new generation and remove what they made.
    while refills.join_next().await.is_some() {}
    for i in &idle {
        inner.remove_container(&i.container_id).await?;
    }
    let leftovers: Vec<Listed> = inner
        .list_containers(Operation::Warm, None)
        .await?
        .into_iter()
        .filter(|l| l.meta.template_key.as_ref() == Some(key) && l.is_idle_in_pool())
        .collect();
    for r in futures::future::join_all(leftovers.iter().map(|l| inner.destroy(l))).await {
        r?;
    }
    {
        let mut pools = inner.pools.lock();
        if pools
            .get(key)
            .is_some_and(|p| p.pending == 0 && p.target == 0)
        {
            pools.remove(key);
        }
    }
    Ok(WarmStatus::new(key.clone(), 0, 0, 0))
}

async fn create_pool_container(
    inner: &Inner,
    spec: &WarmSpec,
    image: &str,
    fp: &str,
) -> Result<Idle> {
    let id = SandboxId::generate();
    let now = SystemTime::now();
    let meta = ContainerMeta {
        kind: Kind::Pool,
        sandbox_id: id.clone(),
        session_id: None,
        template_key: Some(spec.template_key().clone()),
        created_at: now,
        expires_at: Some(now + inner.settings.pool_lifetime),
        snapshot_id: None,
        repo: None,
        labels: spec.labels().clone(),
        template_spec: Some(fp.to_string()),
    };
    let body = inner.container_body(image, spec.template(), Vec::new(), meta.to_labels(), true);
    let name = pool_container_name(&id);
    let container_id = inner
        .launch(Operation::Warm, &name, body, &id, || {})
        .await?
        .ok_or_else(|| Error::Conflict {
            message: format!("a container named {name} exists already"),
        })?;
    inner.events.emit_now(
        &id,
        None,
        SandboxEventKind::Warmed {
            template_key: spec.template_key().clone(),
        },
    );
    Ok(Idle {
        sandbox_id: id,
        container_id,
        name,
    })
}

/// Replaces one claimed container, in the background.
async fn refill(inner: Arc<Inner>, key: TemplateKey, generation: u64) {
    let (spec, image, fp) = {
        let mut pools = inner.pools.lock();
        let Some(pool) = pools.get_mut(&key) else {
            return;
        };
        if pool.generation != generation || pool.idle.len() as u32 + pool.pending >= pool.target {
            return;
        }
        pool.pending += 1;
        (
            pool.spec.clone(),
            pool.image.clone(),
            pool.fingerprint.clone(),
        )
    };
    let made = create_pool_container(&inner, &spec, &image, &fp).await;
    let discard = {
        let mut pools = inner.pools.lock();
        match (pools.get_mut(&key), made) {
            (Some(pool), made) => {
                pool.pending = pool.pending.saturating_sub(1);
                match made {
                    Ok(idle) if pool.generation == generation => {
                        pool.idle.push_back(idle);
                        None
                    }
                    Ok(idle) => Some(idle),
                    Err(e) => {
                        tracing::warn!(template_key = %key, error = %e, "refilling a warm pool");
                        None
                    }
                }
            }
            (None, Ok(idle)) => Some(idle),
            (None, Err(_)) => None,
        }
    };
    if let Some(idle) = discard
        && let Err(e) = inner.remove_container(&idle.container_id).await
    {
        tracing::warn!(container = %idle.name, error = %e, "removing a refill of an emptied pool");
    }
}

enum Claim {
    Claimed(Box<Sandbox>),
    /// Someone else took it, or it is gone: try the next one.
    Lost,
    /// The session already has a container (made by another process).
    SessionTaken,
}

/// Serves `spec` from a matching pool, if one has a ready container. `Ok(None)`: no pool
/// matches or it is empty (the caller creates cold), or the session has a container already.
pub(crate) async fn claim(inner: &Arc<Inner>, spec: &SandboxSpec) -> Result<Option<Sandbox>> {
    let Some(key) = spec.template_key() else {
        return Ok(None);
    };
    loop {
        let idle = {
            let mut pools = inner.pools.lock();
            let Some(pool) = pools.get_mut(key) else {
                return Ok(None);
            };
            if !pool.spec.matches(spec) {
                return Ok(None);
            }
            pool.idle.pop_front()
        };
        let Some(idle) = idle else {
            spawn_refill(inner, key);
            return Ok(None);
        };
        // Refills start only after the claim: a container starting during the claim would
        // slow it down (the daemon is busy with the start), and the claim is what the caller
        // waits for.
        match try_claim(inner, spec, &idle).await {
            Ok(Claim::Claimed(sb)) => {
                spawn_refill(inner, key);
                return Ok(Some(*sb));
            }
            Ok(Claim::Lost) => {
                spawn_refill(inner, key);
                continue;
            }
            Ok(Claim::SessionTaken) => {
                let mut pools = inner.pools.lock();
                if let Some(pool) = pools.get_mut(key) {
                    pool.idle.push_front(idle);
                }
                return Ok(None);
            }
            Err(e) => {
                spawn_refill(inner, key);
                tracing::warn!(container = %idle.name, error = %e, "claiming a warm container failed; trying the next");
                continue;
            }
        }
    }
}

/// Starts one refill of the pool (it stops at once if the pool is full).
fn spawn_refill(inner: &Arc<Inner>, key: &TemplateKey) {
    let mut pools = inner.pools.lock();
    if let Some(pool) = pools.get_mut(key) {
        while pool.refills.try_join_next().is_some() {}
        let generation = pool.generation;
        pool.refills
            .spawn(refill(inner.clone(), key.clone(), generation));
    }
}

async fn try_claim(inner: &Inner, spec: &SandboxSpec, idle: &Idle) -> Result<Claim> {
    let op = Operation::Create;
    let id = &idle.sandbox_id;
    let session = spec.session_id();
    let now = SystemTime::now();
    let claim = ClaimMeta {
        sandbox_id: id.clone(),
        session_id: session.clone(),
        template_key: spec.template_key().cloned(),
        created_at: now,
        expires_at: now + spec.timeout(),
        repo: spec.session().repo().cloned(),
        labels: spec.labels().clone(),
    };
    let labels = claim.to_labels();
    let request = VolumeCreateRequest {
        name: Some(claim_volume_name(id)),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    let made = inner
        .api
        .call(op, Target::Daemon, inner.docker().create_volume(request))
        .await?;
    // Creating a volume that exists returns it: if it records another claim, that one won.
    if made.labels != labels {
        return Ok(Claim::Lost);
    }
    let rename = RenameContainerOptions {
        name: session_container_name(session),
    };
    match inner
        .api
        .call_raw(op, inner.docker().rename_container(&idle.name, rename))
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) if status_of(&e) == Some(404) => {
            inner.remove_claim_volume(id).await?;
            return Ok(Claim::Lost);
        }
        Ok(Err(e)) if status_of(&e) == Some(409) => {
            inner.remove_claim_volume(id).await?;
            return Ok(Claim::SessionTaken);
        }
        Ok(Err(e)) => {
            inner.remove_claim_volume(id).await?;
            return Err(inner.api.map(op, Target::Daemon, e));
        }
        Err(timeout) => {
            // Renamed or not, this container is no longer safely claimable.
            discard(inner, idle).await;
            return Err(timeout);
        }
    }
    let env = spec.environment(id, false).to_key_value_strings();
    if let Err(e) = deliver(inner, &idle.container_id, &env).await {
        discard(inner, idle).await;
        return Err(e);
    }
    inner.cache(
        id,
        Located {
            container_id: idle.container_id.clone(),
            claimed: true,
            session_env: Some(Arc::new(env)),
            workdir: Some(spec.template().workdir().to_string()),
        },
    );
    let key = spec
        .template_key()
        .cloned()
        .expect("a pool claim has a template key");
    inner
        .events
        .emit_now(id, Some(session), SandboxEventKind::Creating);
    inner.events.emit_now(
        id,
        Some(session),
        SandboxEventKind::WarmHit {
            template_key: key.clone(),
        },
    );
    inner
        .events
        .emit_now(id, Some(session), SandboxEventKind::Ready);
    let listed = Listed {
        container_id: idle.container_id.clone(),
        name: session_container_name(session),
        image: Some(inner.image_of(spec.template())),
        state: State::Running,
        meta: ContainerMeta {
            kind: Kind::Pool,
            sandbox_id: id.clone(),
            session_id: None,
            template_key: Some(key),
            created_at: now,
            expires_at: None,
            snapshot_id: None,
            repo: None,
            labels: Default::default(),
            template_spec: None,
        },
        claim: Some(claim),
    };
    Ok(Claim::Claimed(Box::new(listed.sandbox(SystemTime::now()))))
}

async fn discard(inner: &Inner, idle: &Idle) {
    if let Err(e) = inner.remove_container(&idle.container_id).await {
        tracing::warn!(container = %idle.name, error = %e, "removing a warm container whose claim failed");
    }
    if let Err(e) = inner.remove_claim_volume(&idle.sandbox_id).await {
        tracing::warn!(container = %idle.name, error = %e, "removing the claim volume of a failed claim");
    }
}

/// Hands the session environment to a pool container's main process through its stdin and
/// waits for its acknowledgement.
async fn deliver(inner: &Inner, container: &str, env: &[String]) -> Result<()> {
    let options = AttachContainerOptions {
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
        logs: false,
        detach_keys: None,
    };
    let payload = encode_session_file(env);
    let not_acked = |detail: String| {
        DockerError::ClaimNotAcknowledged {
            container: container.to_string(),
            detail,
        }
        .into_error()
    };
    let run = async {
        let mut attached = inner
            .api
            .call(
                Operation::Create,
                Target::Daemon,
                inner.docker().attach_container(container, Some(options)),
            )
            .await?;
        attached
            .input
            .write_all(&payload)
            .await
            .map_err(|e| not_acked(format!("writing the session settings: {e}")))?;
        attached
            .input
            .shutdown()
            .await
            .map_err(|e| not_acked(format!("closing its stdin: {e}")))?;
        let mut said = Vec::new();
        while let Some(item) = attached.output.next().await {
            let item = item.map_err(|e| not_acked(e.to_string()))?;
            said.extend_from_slice(&item.into_bytes());
            if said.windows(8).any(|w| w == b"claimed\n") {
                return Ok(());
            }
            if said.windows(12).any(|w| w == b"claim-failed") {
                break;
            }
        }
        Err(not_acked(format!(
            "it answered {:?}",
            String::from_utf8_lossy(&said)
        )))
    };
    match tokio::time::timeout(inner.api.timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(not_acked(format!(
            "no answer within {:?}",
            inner.api.timeout
        ))),
    }
}
