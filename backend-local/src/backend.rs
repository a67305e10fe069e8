//! [`LocalBackend`]: the [`SandboxBackend`] of this crate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sandbox_core::config::LocalConfig;
use sandbox_core::time::unix_millis;
use sandbox_core::{
    BackendKind, Capabilities, Error, EventBus, EventStream, ExecRequest, ExecStream, Isolation,
    ListFilter, MAX_TIMEOUT, Operation, Result, Sandbox, SandboxBackend, SandboxEventKind,
    SandboxId, SandboxOrigin, SandboxSpec, SandboxStatus, SessionId, Snapshot, SnapshotFilter,
    SnapshotId, SnapshotOptions, SnapshotRef, TemplateKey, TerminationReason, WarmSpec, WarmStatus,
    async_trait,
};

use crate::config::{DEFAULT_POOL_LIFETIME, PEER_CREATE_WAIT, root_dir};
use crate::error::{KIND, sandbox_not_found, snapshot_not_found};
use crate::exec::{has_running, kill_recorded, spawn};
use crate::isolation::{CommandSpec, IsolationKind, detect, host_path};
use crate::store::{Meta, PoolDef, State, Store};
use crate::{files, snapshot};

/// How often a `create` looks again at another caller's create of the same session.
const PEER_POLL: Duration = Duration::from_millis(20);
/// A sandbox directory left `Starting` this long by a creator that died is reaped.
const STALE_START: Duration = Duration::from_secs(300);

/// The embedded backend: a sandbox is a private workspace directory plus its environment, and
/// commands run isolated with bubblewrap when it works here (see [`IsolationKind`]).
///
/// State lives on disk under the root directory ([`LocalBackend::root`]): `status`, `list`
/// and the reaper read it there, so another instance on the same root (a restarted control
/// plane) sees, uses and terminates the same sandboxes. Secrets of a sandbox's environment are
/// stored in a mode-0600 file of its directory (mode 0700).
///
/// Behaviour to know:
/// - Every command runs in a fresh pid namespace (under bubblewrap) or process group: what it
///   starts in the background ends when it ends. Files persist in the workspace and `/tmp`.
/// - A command killed by a signal is reported as `Exited { code: 128 + signal }` under
///   bubblewrap (bubblewrap reports it so), as `Signaled` without it.
/// - File operations are confined to the workdir tree and never follow symbolic links.
/// - A snapshot taken while a command writes to the workspace may catch it half-way.
///
/// ```no_run
/// # async fn run() -> sandbox_core::Result<()> {
/// use sandbox_core::{ExecRequest, SandboxBackend, SandboxBackendExt, SandboxSpec};
/// use sandbox_backend_local::LocalBackend;
///
/// let backend = LocalBackend::new(Default::default()).await?;
/// let sandbox = backend.create(SandboxSpec::builder("session-1").build()?).await?;
/// let out = backend.exec_output(&sandbox.id, ExecRequest::new(["echo", "hi"])?).await?;
/// assert_eq!(out.stdout_str(), "hi\n");
/// backend.terminate(&sandbox.id).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    isolation: IsolationKind,
    events: EventBus,
    /// One lock per warm pool, so a refill and a resize do not race in this process.
    pool_locks: Mutex<HashMap<TemplateKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl LocalBackend {
    /// Opens (creating) the state directory, decides the isolation, and starts the reaper.
    ///
    /// With `isolation = "required"` and no usable bubblewrap this fails with
    /// [`Error::InvalidConfig`] naming `local.isolation`; with `"auto"` it warns once (a
    /// `tracing` warning) and runs commands as plain processes.
    pub async fn new(config: LocalConfig) -> Result<Self> {
        config.validate()?;
        let isolation = detect(&config).await?;
        let store = Store::open(root_dir(&config))?;
        let backend = Self {
            inner: Arc::new(Inner {
                store,
                isolation,
                events: EventBus::new(),
                pool_locks: Mutex::new(HashMap::new()),
            }),
        };
        spawn_reaper(
            Arc::downgrade(&backend.inner),
            Duration::from_millis(config.reap_interval_ms),
        );
        Ok(backend)
    }

    /// How commands are isolated.
    pub fn isolation(&self) -> &IsolationKind {
        &self.inner.isolation
    }

    /// The state directory.
    pub fn root(&self) -> &std::path::Path {
        self.inner.store.root()
    }
}

fn spawn_reaper(inner: Weak<Inner>, every: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = inner.reap().await {
                tracing::warn!(error = %e, "local reaper failed");
            }
        }
    });
}

impl Inner {
    fn capabilities(&self) -> Capabilities {
        let isolated = matches!(self.isolation, IsolationKind::Bubblewrap(_));
        let mut caps = Capabilities::default();
        caps.warm = true;
        caps.snapshot = true;
        caps.restore = true;
        caps.manage_snapshots = true;
        caps.files = true;
        caps.exec_stdin = true;
        caps.exec_user = false;
        caps.network_none = isolated;
        caps.network_allow_list = false;
        caps.network_full = true;
        caps.cpu_limit = false;
        caps.memory_limit = false;
        caps.pids_limit = false;
        caps.idle_timeout = true;
        caps.custom_image = false;
        caps.max_timeout = MAX_TIMEOUT;
        caps.isolation = if isolated {
            Isolation::Namespaces
        } else {
            Isolation::Process
        };
        caps
    }

    fn pool_lock(&self, key: &TemplateKey) -> Arc<tokio::sync::Mutex<()>> {
        self.pool_locks
            .lock()
            .expect("pool lock map")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The live sandbox serving `session`, waiting for another caller's create in progress.
    async fn existing(&self, session: &SessionId) -> Result<Option<Sandbox>> {
        let started = Instant::now();
        loop {
            let Some(id) = self.store.session_target(session)? else {
                return Ok(None);
            };
            match self.store.read_meta(&id)? {
                None => {
                    // The mapping outlived its sandbox (a crash during terminate): drop it.
                    let _lock = self.store.lock().await?;
                    self.store.remove_session(session, &id)?;
                    return Ok(None);
                }
                Some(meta) if meta.is_expired(SystemTime::now()) => {
                    self.terminate(&id, TerminationReason::Expired).await?;
                    return Ok(None);
                }
                Some(meta) if meta.state == State::Running => return Ok(Some(meta.to_sandbox())),
                Some(_) if started.elapsed() > PEER_CREATE_WAIT => {
                    return Err(Error::Conflict {
                        message: format!(
                            "sandbox {id} of session {session} has been starting or stopping for \
                             over {PEER_CREATE_WAIT:?}"
                        ),
                    });
                }
                Some(_) => tokio::time::sleep(PEER_POLL).await,
            }
        }
    }

    /// Creates a sandbox (for `spec`'s session, or for a warm pool when `pool` is given).
    /// Returns `Ok(None)` when another caller mapped the session first.
    async fn provision(
        &self,
        spec: Provision<'_>,
        origin: SandboxOrigin,
        archive: Option<std::path::PathBuf>,
    ) -> Result<Option<Sandbox>> {
        let id = SandboxId::generate();
        let now = SystemTime::now();
        let session = spec.session.map(|s| s.session_id().clone());
        self.events
            .emit_now(&id, session.as_ref(), SandboxEventKind::Creating);
        self.store.create_sandbox_dirs(&id)?;
        let mut meta = Meta {
            id: id.clone(),
            session_id: session.clone(),
            labels: spec.labels.clone(),
            template_key: spec.template_key.cloned(),
            template: spec.template_json.clone(),
            workdir: spec.workdir.to_string(),
            network_full: spec.network_full,
            state: State::Starting,
            origin: origin.clone(),
            repo: spec.session.and_then(|s| s.session().repo().cloned()),
            created_at_ms: unix_millis(now),
            expires_at_ms: unix_millis(now + spec.lifetime),
            idle_timeout_ms: spec
                .idle_timeout
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let outcome: Result<bool> = async {
            self.store.write_meta(&meta)?;
            if let Some(full) = spec.session {
                let env = full.environment(&id, archive.is_some());
                let pairs: Vec<_> = env
                    .iter()
                    .map(|v| (v.key.clone(), v.value.clone()))
                    .collect();
                self.store.write_env(&id, &pairs)?;
            }
            if let Some(session) = &session {
                let _lock = self.store.lock().await?;
                if self.store.session_target(session)?.is_some() {
                    return Ok(false);
                }
                self.store.set_session(session, &id)?;
            }
            if let Some(archive) = &archive {
                let (archive, ws) = (archive.clone(), self.store.workspace(&id));
                tokio::task::spawn_blocking(move || snapshot::extract(&archive, &ws))
                    .await
                    .map_err(|e| Error::backend_with_source(KIND, "extract task failed", e))??;
            }
            self.ready_check(&meta).await?;
            meta.state = State::Running;
            self.store.write_meta(&meta)?;
            self.store.touch_activity(&id);
            Ok(true)
        }
        .await;
        match outcome {
            Ok(true) => {
                if let SandboxOrigin::Snapshot { snapshot_id } = &origin {
                    self.events.emit_now(
                        &id,
                        session.as_ref(),
                        SandboxEventKind::Restored {
                            snapshot_id: snapshot_id.clone(),
                        },
                    );
                }
                let kind = match spec.template_key {
                    Some(key) if session.is_none() => SandboxEventKind::Warmed {
                        template_key: key.clone(),
                    },
                    _ => SandboxEventKind::Ready,
                };
                self.events.emit_now(&id, session.as_ref(), kind);
                Ok(Some(meta.to_sandbox()))
            }
            Ok(false) => {
                // Lost the race for the session: remove what this call made.
                self.store.remove_sandbox_dir(&id)?;
                Ok(None)
            }
            Err(e) => {
                if let Some(session) = &session
                    && let Ok(_lock) = self.store.lock().await
                {
                    let _ = self.store.remove_session(session, &id);
                }
                let _ = kill_recorded(&self.store.procs_dir(&id));
                let _ = self.store.remove_sandbox_dir(&id);
                self.events.emit_now(
                    &id,
                    session.as_ref(),
                    SandboxEventKind::Failed {
                        error: e.to_string(),
                    },
                );
                Err(e)
            }
        }
    }

    /// Runs `true` in a new sandbox: `create` returns only when commands run.
    async fn ready_check(&self, meta: &Meta) -> Result<()> {
        let argv = ["true".to_string()];
        let out = self
            .run(
                meta,
                &argv,
                &[],
                meta.workdir.as_str(),
                None,
                Some(Duration::from_secs(30)),
            )
            .await?
            .output()
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(Error::backend(
                KIND,
                format!(
                    "a new sandbox cannot run commands: `true` {}: {}",
                    out.status,
                    out.stderr_str().trim()
                ),
            ))
        }
    }

    async fn run(
        &self,
        meta: &Meta,
        argv: &[String],
        env: &[(String, String)],
        cwd: &str,
        stdin: Option<Bytes>,
        timeout: Option<Duration>,
    ) -> Result<ExecStream> {
        let (workspace, tmp) = (self.store.workspace(&meta.id), self.store.tmp_dir(&meta.id));
        let spec = CommandSpec {
            argv,
            env,
            workspace: &workspace,
            tmp: &tmp,
            workdir: &meta.workdir,
            cwd,
            network_full: meta.network_full,
        };
        let under = |root: &str| {
            cwd.strip_prefix(root)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if (under(&meta.workdir) || under("/tmp")) && !host_path(&spec, cwd).is_dir() {
            return Err(Error::invalid_spec(
                "exec.workdir",
                format!("`{cwd}` is not a directory in the sandbox"),
            ));
        }
        spawn(
            &self.store,
            &meta.id,
            &self.isolation,
            &spec,
            stdin,
            timeout,
        )
        .await
    }

    /// A claimable member of `key`'s pool serving `template_json`, claimed for `spec`.
    async fn claim(&self, spec: &SandboxSpec, key: &TemplateKey) -> Result<Option<Sandbox>> {
        let template_json = template_json(spec);
        let session = spec.session_id();
        let claimed = {
            let _lock = self.store.lock().await?;
            if self.store.session_target(session)?.is_some() {
                return Ok(None);
            }
            let now = SystemTime::now();
            let mut found = None;
            for id in self.store.sandbox_ids()? {
                if let Some(meta) = self.store.read_meta(&id)?
                    && meta.is_pool()
                    && meta.state == State::Running
                    && meta.template_key.as_ref() == Some(key)
                    && meta.template == template_json
                    && !meta.is_expired(now)
                {
                    found = Some(meta);
                    break;
                }
            }
            let Some(mut meta) = found else {
                return Ok(None);
            };
            let env = spec.environment(&meta.id, false);
            let pairs: Vec<_> = env
                .iter()
                .map(|v| (v.key.clone(), v.value.clone()))
                .collect();
            self.store.write_env(&meta.id, &pairs)?;
            meta.session_id = Some(session.clone());
            meta.labels = spec.labels().clone();
            meta.origin = SandboxOrigin::WarmPool;
            meta.repo = spec.session().repo().cloned();
            meta.created_at_ms = unix_millis(now);
            meta.expires_at_ms = unix_millis(now + spec.timeout());
            meta.idle_timeout_ms = spec
                .idle_timeout()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            self.store.write_meta(&meta)?;
            self.store.set_session(session, &meta.id)?;
            meta
        };
        self.store.touch_activity(&claimed.id);
        self.events.emit_now(
            &claimed.id,
            Some(session),
            SandboxEventKind::WarmHit {
                template_key: key.clone(),
            },
        );
        Ok(Some(claimed.to_sandbox()))
    }

    /// Creates (or returns) the sandbox of `spec`'s session.
    async fn create(
        self: &Arc<Self>,
        spec: SandboxSpec,
        restore: Option<(SnapshotId, std::path::PathBuf)>,
    ) -> Result<Sandbox> {
        let session = spec.session_id().clone();
        let started = Instant::now();
        loop {
            if let Some(existing) = self.existing(&session).await? {
                return Ok(existing);
            }
            if restore.is_none()
                && let Some(key) = spec.template_key()
                && let Some(sb) = self.claim(&spec, key).await?
            {
                self.refill_later(key.clone());
                return Ok(sb);
            }
            let provision = Provision::for_session(&spec);
            let (origin, archive) = match &restore {
                Some((snapshot_id, archive)) => (
                    SandboxOrigin::Snapshot {
                        snapshot_id: snapshot_id.clone(),
                    },
                    Some(archive.clone()),
                ),
                None => (SandboxOrigin::Cold, None),
            };
            if let Some(sb) = self.provision(provision, origin, archive).await? {
                return Ok(sb);
            }
            if started.elapsed() > PEER_CREATE_WAIT {
                return Err(Error::Conflict {
                    message: format!("session {session} keeps changing owner"),
                });
            }
        }
    }

    /// Keeps a pool at its size, after a claim took one.
    fn refill_later(self: &Arc<Self>, key: TemplateKey) {
        let inner = Arc::downgrade(self);
        tokio::spawn(async move {
            let Some(inner) = inner.upgrade() else { return };
            let lock = inner.pool_lock(&key);
            let _guard = lock.lock().await;
            match inner.store.read_pool(&key) {
                Ok(Some(pool)) => {
                    if let Err(e) = inner.fill(&pool).await {
                        tracing::warn!(pool = %key, error = %e, "refilling a warm pool failed");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(pool = %key, error = %e, "reading a warm pool failed"),
            }
        });
    }

    /// The unclaimed members of a pool.
    fn members(&self, key: &TemplateKey) -> Result<Vec<Meta>> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for id in self.store.sandbox_ids()? {
            if let Some(meta) = self.store.read_meta(&id)?
                && meta.is_pool()
                && meta.template_key.as_ref() == Some(key)
                && !meta.is_expired(now)
            {
                out.push(meta);
            }
        }
        Ok(out)
    }

    /// Brings a pool to its size: removes members of another template or beyond the size,
    /// creates the missing ones. Call with the pool's lock held.
    async fn fill(&self, pool: &PoolDef) -> Result<WarmStatus> {
        let members = self.members(&pool.template_key)?;
        let (mut keep, stale): (Vec<_>, Vec<_>) = members
            .into_iter()
            .partition(|m| m.template == pool.template);
        let extra = keep.split_off(keep.len().min(pool.size as usize));
        for meta in stale.iter().chain(&extra) {
            self.terminate(&meta.id, TerminationReason::Requested)
                .await?;
        }
        let missing = (pool.size as usize).saturating_sub(keep.len());
        let made = futures::future::join_all(
            (0..missing)
                .map(|_| self.provision(Provision::for_pool(pool), SandboxOrigin::Cold, None)),
        )
        .await;
        let mut ready = u32::try_from(keep.len()).unwrap_or(u32::MAX);
        let mut first_error = None;
        for r in made {
            match r {
                Ok(Some(_)) => ready += 1,
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(WarmStatus::new(
            pool.template_key.clone(),
            pool.size,
            ready,
            0,
        ))
    }

    /// Terminates a sandbox: kills every command it runs (recorded on disk, so from any
    /// instance), drops its session mapping and removes its directory. Idempotent.
    async fn terminate(&self, id: &SandboxId, reason: TerminationReason) -> Result<()> {
        let Some(mut meta) = self.store.read_meta(id)? else {
            // Unknown, or already gone; a directory without metadata is removed all the same.
            let _ = kill_recorded(&self.store.procs_dir(id));
            return self.store.remove_sandbox_dir(id);
        };
        meta.state = State::Stopping;
        // The directory may vanish under a concurrent terminate: that is fine.
        let _ = self.store.write_meta(&meta);
        kill_recorded(&self.store.procs_dir(id))?;
        if let Some(session) = &meta.session_id {
            let _lock = self.store.lock().await?;
            self.store.remove_session(session, id)?;
        }
        self.store.remove_sandbox_dir(id)?;
        if reason == TerminationReason::Expired {
            self.events
                .emit_now(id, meta.session_id.as_ref(), SandboxEventKind::Expired);
        }
        self.events.emit_now(
            id,
            meta.session_id.as_ref(),
            SandboxEventKind::Terminated { reason },
        );
        Ok(())
    }

    /// Why a sandbox should be reaped now, if it should.
    fn reap_reason(&self, meta: &Meta, now: SystemTime) -> Option<TerminationReason> {
        if meta.is_expired(now) {
            return Some(TerminationReason::Expired);
        }
        let idle = Duration::from_millis(meta.idle_timeout_ms?);
        if meta.state != State::Running || has_running(&self.store.procs_dir(&meta.id)) {
            return None;
        }
        let last = self
            .store
            .last_activity(&meta.id)
            .unwrap_or_else(|| store_time(meta.created_at_ms));
        (now.duration_since(last).unwrap_or_default() >= idle).then_some(TerminationReason::Idle)
    }

    /// Terminates what expired, went idle, or was left half-made by a creator that died.
    async fn reap(&self) -> Result<Vec<SandboxId>> {
        let now = SystemTime::now();
        let mut reaped = Vec::new();
        for id in self.store.sandbox_ids()? {
            let meta = match self.store.read_meta(&id) {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "unreadable sandbox state");
                    continue;
                }
            };
            let reason = match &meta {
                Some(meta) => self.reap_reason(meta, now).or_else(|| {
                    let age = now
                        .duration_since(store_time(meta.created_at_ms))
                        .unwrap_or_default();
                    (meta.state == State::Starting && age > STALE_START)
                        .then_some(TerminationReason::Failed)
                }),
                // A directory whose metadata was never written: its creator died at once.
                None => {
                    let dir = self.store.sandbox_dir(&id);
                    let age = std::fs::metadata(&dir)
                        .and_then(|m| m.modified())
                        .map(|t| now.duration_since(t).unwrap_or_default())
                        .unwrap_or_default();
                    (age > STALE_START).then_some(TerminationReason::Failed)
                }
            };
            if let Some(reason) = reason {
                self.terminate(&id, reason).await?;
                reaped.push(id);
            }
        }
        Ok(reaped)
    }

    /// The metadata of a live sandbox; reaps it first when it is due.
    async fn live(&self, id: &SandboxId) -> Result<Meta> {
        let meta = self
            .store
            .read_meta(id)?
            .ok_or_else(|| sandbox_not_found(id.as_str()))?;
        if let Some(reason) = self.reap_reason(&meta, SystemTime::now()) {
            self.terminate(id, reason).await?;
            return Err(sandbox_not_found(id.as_str()));
        }
        Ok(meta)
    }
}

fn store_time(ms: u64) -> SystemTime {
    crate::store::from_millis(ms)
}

fn template_json(spec: &SandboxSpec) -> String {
    serde_json::to_string(spec.template()).unwrap_or_default()
}

/// What `provision` makes: a session's sandbox or a pool member.
struct Provision<'a> {
    session: Option<&'a SandboxSpec>,
    template_key: Option<&'a TemplateKey>,
    template_json: String,
    workdir: &'a str,
    network_full: bool,
    labels: std::collections::BTreeMap<String, String>,
    lifetime: Duration,
    idle_timeout: Option<Duration>,
}

impl<'a> Provision<'a> {
    fn for_session(spec: &'a SandboxSpec) -> Self {
        Self {
            session: Some(spec),
            template_key: spec.template_key(),
            template_json: template_json(spec),
            workdir: spec.template().workdir(),
            network_full: matches!(spec.template().network(), sandbox_core::NetworkPolicy::Full),
            labels: spec.labels().clone(),
            lifetime: spec.timeout(),
            idle_timeout: spec.idle_timeout(),
        }
    }

    fn for_pool(pool: &'a PoolDef) -> Self {
        Self {
            session: None,
            template_key: Some(&pool.template_key),
            template_json: pool.template.clone(),
            workdir: &pool.workdir,
            network_full: pool.network_full,
            labels: pool.labels.clone(),
            lifetime: DEFAULT_POOL_LIFETIME,
            idle_timeout: None,
        }
    }
}

#[async_trait]
impl SandboxBackend for LocalBackend {
    fn kind(&self) -> BackendKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    #[tracing::instrument(skip_all, fields(backend = "local", session_id = %spec.session_id()), err(level = "debug"))]
    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
        self.capabilities().check_spec(KIND, &spec)?;
        self.inner.create(spec, None).await
    }

    #[tracing::instrument(skip_all, fields(backend = "local", template_key = %spec.template_key()), err(level = "debug"))]
    async fn warm(&self, spec: WarmSpec) -> Result<WarmStatus> {
        // Emptying a pool is always possible, whatever its template asks for.
        if spec.size() > 0 {
            self.capabilities()
                .check_template(KIND, Operation::Warm, spec.template())?;
        }
        let key = spec.template_key().clone();
        let lock = self.inner.pool_lock(&key);
        let _guard = lock.lock().await;
        let pool = PoolDef {
            template_key: key.clone(),
            template: serde_json::to_string(spec.template()).unwrap_or_default(),
            workdir: spec.template().workdir().to_string(),
            network_full: matches!(spec.template().network(), sandbox_core::NetworkPolicy::Full),
            labels: spec.labels().clone(),
            size: spec.size(),
        };
        if spec.size() == 0 {
            self.inner.store.remove_pool(&key)?;
        } else {
            self.inner.store.write_pool(&pool)?;
        }
        self.inner.fill(&pool).await
    }

    #[tracing::instrument(skip_all, fields(backend = "local", sandbox_id = %id), err(level = "debug"))]
    async fn snapshot(&self, id: &SandboxId, options: SnapshotOptions) -> Result<Snapshot> {
        let meta = self.inner.live(id).await?;
        let snapshot_id = SnapshotId::generate();
        let archive = self.inner.store.snapshot_archive(snapshot_id.as_str());
        let workspace = self.inner.store.workspace(id);
        let (_, bytes) = tokio::task::spawn_blocking({
            let archive = archive.clone();
            move || snapshot::archive(&workspace, &archive)
        })
        .await
        .map_err(|e| Error::backend_with_source(KIND, "archive task failed", e))??;
        let mut snap = Snapshot::new(snapshot_id.clone(), KIND, SystemTime::now());
        snap.source = Some(id.clone());
        snap.session_id = meta.session_id.clone();
        snap.repo = options.repo_ref().cloned().or(meta.repo.clone());
        snap.sha = options.sha_ref().map(str::to_string);
        snap.reason = options.reason_kind();
        snap.labels = options.labels().clone();
        snap.size_bytes = Some(bytes);
        if let Err(e) = snapshot::write_meta(&self.inner.store, &snap) {
            let _ = snapshot::delete(&self.inner.store, snapshot_id.as_str());
            return Err(e);
        }
        self.inner.events.emit_now(
            id,
            meta.session_id.as_ref(),
            SandboxEventKind::SnapshotTaken { snapshot_id },
        );
        Ok(snap)
    }

    #[tracing::instrument(skip_all, fields(backend = "local", snapshot_id = %snapshot.id, session_id = %spec.session_id()), err(level = "debug"))]
    async fn restore(&self, snapshot: &SnapshotRef, spec: SandboxSpec) -> Result<Sandbox> {
        self.capabilities().check_spec(KIND, &spec)?;
        if let Some(existing) = self.inner.existing(spec.session_id()).await? {
            return Ok(existing);
        }
        let id = snapshot.id.as_str();
        let archive = self.inner.store.snapshot_archive(id);
        if snapshot::read_meta(&self.inner.store, id)?.is_none() || !archive.exists() {
            return Err(snapshot_not_found(id));
        }
        self.inner
            .create(spec, Some((snapshot.id.clone(), archive)))
            .await
    }

    #[tracing::instrument(skip_all, fields(backend = "local", sandbox_id = %id), err(level = "debug"))]
    async fn terminate(&self, id: &SandboxId) -> Result<()> {
        self.inner.terminate(id, TerminationReason::Requested).await
    }

    #[tracing::instrument(skip_all, fields(backend = "local", sandbox_id = %id), err(level = "debug"))]
    async fn status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        let meta = self
            .inner
            .store
            .read_meta(id)?
            .ok_or_else(|| sandbox_not_found(id.as_str()))?;
        if let Some(reason) = self.inner.reap_reason(&meta, SystemTime::now()) {
            self.inner.terminate(id, reason).await?;
            return Ok(SandboxStatus::Terminated {
                reason: Some(reason),
            });
        }
        Ok(meta.to_sandbox().status)
    }

    #[tracing::instrument(skip_all, fields(backend = "local", sandbox_id = %id), err(level = "debug"))]
    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream> {
        self.capabilities().check_exec(KIND, &request)?;
        let meta = self.inner.live(id).await?;
        if meta.state != State::Running {
            return Err(Error::Conflict {
                message: format!("sandbox {id} is {:?}, not running", meta.state),
            });
        }
        let mut env = self.inner.store.read_env(id)?;
        env.extend(request.env().iter().map(|(k, v)| (k.clone(), v.clone())));
        let cwd = request.workdir().unwrap_or(&meta.workdir).to_string();
        self.inner
            .run(
                &meta,
                request.argv(),
                &env,
                &cwd,
                request.stdin().cloned(),
                request.timeout(),
            )
            .await
    }

    #[tracing::instrument(skip_all, fields(backend = "local", sandbox_id = %id), err(level = "debug"))]
    async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Bytes> {
        let meta = self.inner.live(id).await?;
        let (ws, path) = (self.inner.store.workspace(id), path.to_string());
        tokio::task::spawn_blocking(move || files::read(&ws, &meta.workdir, &path))
            .await
            .map_err(|e| Error::backend_with_source(KIND, "read task failed", e))?
    }

    #[tracing::instrument(skip_all, fields(backend = "local", sandbox_id = %id), err(level = "debug"))]
    async fn write_file(&self, id: &SandboxId, path: &str, contents: Bytes) -> Result<()> {
        let meta = self.inner.live(id).await?;
        let (ws, path) = (self.inner.store.workspace(id), path.to_string());
        tokio::task::spawn_blocking(move || files::write(&ws, &meta.workdir, &path, &contents))
            .await
            .map_err(|e| Error::backend_with_source(KIND, "write task failed", e))?
    }

    #[tracing::instrument(skip_all, fields(backend = "local"), err(level = "debug"))]
    async fn list(&self, filter: ListFilter) -> Result<Vec<Sandbox>> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for id in self.inner.store.sandbox_ids()? {
            let Some(meta) = self.inner.store.read_meta(&id)? else {
                continue;
            };
            if let Some(reason) = self.inner.reap_reason(&meta, now) {
                self.inner.terminate(&id, reason).await?;
                continue;
            }
            if meta.state == State::Stopping
                || (meta.is_pool() && !filter.include_pool)
                || !filter.matches(meta.session_id.as_ref(), &meta.labels)
            {
                continue;
            }
            out.push(meta.to_sandbox());
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    #[tracing::instrument(skip_all, fields(backend = "local"), err(level = "debug"))]
    async fn list_snapshots(&self, filter: SnapshotFilter) -> Result<Vec<Snapshot>> {
        snapshot::list(&self.inner.store, &filter)
    }

    #[tracing::instrument(skip_all, fields(backend = "local", snapshot_id = %id), err(level = "debug"))]
    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        snapshot::delete(&self.inner.store, id.as_str())
    }

    #[tracing::instrument(skip_all, fields(backend = "local"), err(level = "debug"))]
    async fn reap_expired(&self) -> Result<Vec<SandboxId>> {
        self.inner.reap().await
    }

    fn events(&self) -> EventStream {
        self.inner.events.subscribe()
    }
}
