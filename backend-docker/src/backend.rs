//! [`DockerBackend`]: the [`SandboxBackend`] over a Docker daemon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
};
use bytes::Bytes;
use futures::StreamExt;
use sandbox_core::config::{DockerConfig, PullPolicy};
use sandbox_core::{
    BackendKind, Capabilities, Error, EventBus, EventStream, ExecRequest, ExecStream, Isolation,
    ListFilter, NetworkPolicy, Operation, ResourceKind, Result, Sandbox, SandboxBackend,
    SandboxEventKind, SandboxId, SandboxSpec, SandboxStatus, SandboxTemplate, SessionId, Snapshot,
    SnapshotFilter, SnapshotId, SnapshotOptions, SnapshotRef, TerminationReason, WarmSpec,
    WarmStatus, async_trait,
};
use tracing::Instrument;

use crate::config::{
    ADDED_CAPABILITIES, DEFAULT_PIDS_LIMIT, STOP_GRACE, Settings, client, negotiate,
};
use crate::convert::{
    self, ClaimMeta, ContainerMeta, Kind, Listed, SESSION_DIR, State, claim_volume_name,
    managed_filter, session_container_name,
};
use crate::error::{Api, DockerError, Target, status_of};
use crate::exec::ExecGates;
use crate::pool::Pools;
use crate::runner::{NotStarted, Spares};

const KIND: BackendKind = BackendKind::Docker;

/// The main process of a sandbox: waits forever, exits at once on SIGTERM. It runs under
/// Docker's init (`init: true`), which reaps the zombies of every command run in the sandbox.
pub(crate) const KEEPALIVE: &str = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done";

/// The main process of a warm-pool container: first waits for its claim, which arrives on
/// stdin (see [`crate::pool`]), stores it as the session file, acknowledges, then waits forever.
pub(crate) fn pool_main() -> String {
    format!(
        "umask 077; if cat > {dir}/session.env.part && mv -f {dir}/session.env.part {file}; \
         then echo claimed; else echo claim-failed; fi; exec </dev/null; {KEEPALIVE}",
        dir = SESSION_DIR,
        file = convert::SESSION_FILE,
    )
}

/// Where a sandbox lives, as this instance has seen it. Only immutable facts (the container id,
/// whether it is a claimed warm container, its session settings and workdir) are cached; its
/// state always comes from the daemon.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub container_id: String,
    pub claimed: bool,
    /// Session environment of a claimed warm container (`KEY=value`; holds secrets).
    pub session_env: Option<Arc<Vec<String>>>,
    pub workdir: Option<String>,
}

/// Everything the operations share. Background tasks hold it through `Arc`/`Weak`.
pub(crate) struct Inner {
    pub api: Api,
    pub settings: Settings,
    pub events: EventBus,
    located: Mutex<HashMap<SandboxId, Located>>,
    session_locks: Mutex<HashMap<SessionId, Weak<tokio::sync::Mutex<()>>>>,
    pub pools: Pools,
    /// Spare exec sessions, per container (see [`crate::runner`]).
    pub runners: Spares,
    /// Exec starts against paused commits, per container (see [`crate::exec`]).
    pub exec_gates: ExecGates,
}

/// A sandbox backend running each sandbox as a container on a Docker daemon.
///
/// See the [crate documentation](crate) for how each operation maps onto Docker. Every call to
/// the daemon has the configured deadline (`api_timeout_seconds`); everything this backend
/// creates is labelled (`sandbox.rs/managed-by=sandbox`), so a new instance, `list`, `status`,
/// the reaper and [`DockerBackend::reap_orphans`] find it from the daemon alone.
pub struct DockerBackend {
    inner: Arc<Inner>,
    reaper: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for DockerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the located cache: it holds session environments, secrets included.
        let s = &self.inner.settings;
        f.debug_struct("DockerBackend")
            .field("host", &s.host)
            .field("image", &s.image)
            .field("pull_policy", &s.pull_policy)
            .field("network", &s.network)
            .field("runtime", &s.runtime)
            .field("api_timeout", &s.api_timeout)
            .field("reaper_interval", &s.reaper_interval)
            .finish_non_exhaustive()
    }
}

impl Drop for DockerBackend {
    fn drop(&mut self) {
        if let Some(reaper) = &self.reaper {
            reaper.abort();
        }
        // Stops pool refills; their containers stay labelled for the next instance or the
        // reaper.
        self.inner.pools.abort_all();
    }
}

/// Options of [`DockerBackend`] beyond [`DockerConfig`]. Build with [`DockerBackend::builder`].
#[derive(Debug, Clone)]
#[must_use = "call connect() to get a DockerBackend"]
pub struct DockerBackendBuilder {
    config: DockerConfig,
    pool_lifetime: Option<Duration>,
    reaper_interval: Option<Duration>,
}

impl DockerBackendBuilder {
    /// How long an unclaimed warm-pool container may wait before the reaper removes it
    /// (default [`DEFAULT_POOL_LIFETIME`](crate::DEFAULT_POOL_LIFETIME)).
    pub fn pool_lifetime(mut self, lifetime: Duration) -> Self {
        self.pool_lifetime = Some(lifetime);
        self
    }

    /// Runs [`reap_expired`](SandboxBackend::reap_expired) in the background at this period
    /// (overrides `reaper_interval_seconds` of the config).
    pub fn reaper_interval(mut self, interval: Duration) -> Self {
        self.reaper_interval = Some(interval);
        self
    }

    /// Connects: opens the client for the configured host (else `DOCKER_HOST`, else the local
    /// socket), negotiates the API version and pings. Must be called within a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config, [`Error::Unavailable`] naming the host when
    /// the daemon does not answer.
    pub async fn connect(self) -> Result<DockerBackend> {
        let mut settings = Settings::new(&self.config)?;
        if let Some(lifetime) = self.pool_lifetime {
            settings.pool_lifetime = lifetime;
        }
        if let Some(interval) = self.reaper_interval {
            settings.reaper_interval = Some(interval);
        }
        let docker = client(&settings.host, settings.api_timeout)?;
        let docker = negotiate(docker, &settings.host, settings.api_timeout).await?;
        let inner = Arc::new(Inner {
            api: Api {
                docker,
                host: settings.host.clone(),
                timeout: settings.api_timeout,
            },
            settings,
            events: EventBus::new(),
            located: Mutex::default(),
            session_locks: Mutex::default(),
            pools: Pools::default(),
            runners: Spares::default(),
            exec_gates: ExecGates::default(),
        });
        let reaper = inner
            .settings
            .reaper_interval
            .map(|every| crate::reaper::spawn(Arc::downgrade(&inner), every));
        tracing::debug!(host = %inner.settings.host, "connected to the Docker daemon");
        Ok(DockerBackend { inner, reaper })
    }
}

impl DockerBackend {
    /// Connects with the default options; see [`DockerBackendBuilder::connect`].
    pub async fn connect(config: DockerConfig) -> Result<Self> {
        Self::builder(config).connect().await
    }

    /// A builder for options beyond the config.
    pub fn builder(config: DockerConfig) -> DockerBackendBuilder {
        DockerBackendBuilder {
            config,
            pool_lifetime: None,
            reaper_interval: None,
        }
    }

    /// The daemon address this backend talks to.
    pub fn host(&self) -> &str {
        &self.inner.settings.host
    }

    /// The bollard client, for what this crate does not wrap (read-only inspection in tests
    /// and tools). Calls made through it bypass the backend's deadlines and labels.
    pub fn docker(&self) -> &bollard::Docker {
        &self.inner.api.docker
    }

    /// Removes what this library left behind that no live sandbox owns, and returns what was
    /// removed: stopped or dead sandbox containers (killed outside the library, or whose
    /// removal was interrupted), warm-pool claims that were interrupted, claim volumes whose
    /// container is gone, and untagged snapshot images (deleted while a sandbox still used
    /// them, or left by a failed commit) once unused. Claims and images younger than twice
    /// the API deadline are left alone: they may be a claim or a commit in progress, here or
    /// in another process.
    pub async fn reap_orphans(&self) -> Result<ReapedOrphans> {
        crate::reaper::reap_orphans(&self.inner).await
    }
}

/// What [`DockerBackend::reap_orphans`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReapedOrphans {
    /// Names of removed containers.
    pub containers: Vec<String>,
    /// Names of removed claim volumes.
    pub volumes: Vec<String>,
    /// Ids of removed snapshot images.
    pub images: Vec<String>,
}

fn capabilities(settings: &Settings) -> Capabilities {
    let vm_runtime = settings
        .runtime
        .as_deref()
        .is_some_and(|r| r == "runsc" || r.contains("kata"));
    let mut caps = Capabilities::default();
    caps.warm = true;
    caps.snapshot = true;
    caps.restore = true;
    caps.manage_snapshots = true;
    caps.files = true;
    caps.exec_stdin = true;
    caps.exec_user = true;
    caps.network_none = true;
    // Plain Docker has no egress allow-list: refused rather than silently allowing more.
    caps.network_allow_list = false;
    caps.network_full = true;
    caps.cpu_limit = true;
    caps.memory_limit = true;
    caps.pids_limit = true;
    // Idleness would have to be tracked across processes; not enforced.
    caps.idle_timeout = false;
    caps.custom_image = true;
    caps.max_timeout = sandbox_core::MAX_TIMEOUT;
    caps.isolation = if vm_runtime {
        Isolation::MicroVm
    } else {
        Isolation::Container
    };
    caps
}

impl Inner {
    pub(crate) fn capabilities(&self) -> Capabilities {
        capabilities(&self.settings)
    }

    pub(crate) fn docker(&self) -> &bollard::Docker {
        &self.api.docker
    }

    /// The image a template runs.
    pub(crate) fn image_of(&self, template: &SandboxTemplate) -> String {
        template
            .image()
            .map_or_else(|| self.settings.image.clone(), str::to_string)
    }

    pub(crate) fn cache(&self, id: &SandboxId, located: Located) {
        self.located
            .lock()
            .expect("located cache lock")
            .insert(id.clone(), located);
    }

    pub(crate) fn cached(&self, id: &SandboxId) -> Option<Located> {
        self.located
            .lock()
            .expect("located cache lock")
            .get(id)
            .cloned()
    }

    pub(crate) fn forget(&self, id: &SandboxId) {
        self.located.lock().expect("located cache lock").remove(id);
    }

    /// Serializes creates for one session within this process (across processes, the
    /// session-derived container name does it).
    async fn session_lock(&self, session: &SessionId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.session_locks.lock().expect("session lock map");
            locks.retain(|_, l| l.strong_count() > 0);
            match locks.get(session).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(session.clone(), Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }

    /// Containers of this library, with the claim of each claimed warm container. `sandbox`
    /// restricts to one sandbox id.
    pub(crate) async fn list_containers(
        &self,
        operation: Operation,
        sandbox: Option<&SandboxId>,
    ) -> Result<Vec<Listed>> {
        let mut labels = vec![managed_filter()];
        if let Some(id) = sandbox {
            labels.push(format!("{}={id}", sandbox_core::labels::SANDBOX_ID));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), labels)])),
            ..Default::default()
        };
        let summaries = self
            .api
            .call(
                operation,
                Target::Daemon,
                self.docker().list_containers(Some(options)),
            )
            .await?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let container_id = s.id.unwrap_or_default();
            let labels = s.labels.unwrap_or_default();
            let Some(meta) =
                ContainerMeta::from_labels(&format!("container {container_id}"), &labels)?
            else {
                continue;
            };
            out.push(Listed {
                name: s
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default(),
                container_id,
                image: s.image,
                state: State::from_summary(s.state),
                meta,
                claim: None,
            });
        }
        if out.iter().any(|l| l.meta.kind == Kind::Pool) {
            let claims = self.list_claims(operation, sandbox).await?;
            for l in &mut out {
                if l.meta.kind == Kind::Pool {
                    l.claim = claims.get(&l.meta.sandbox_id).cloned();
                }
            }
        }
        Ok(out)
    }

    /// Claim volumes by sandbox id.
    pub(crate) async fn list_claims(
        &self,
        operation: Operation,
        sandbox: Option<&SandboxId>,
    ) -> Result<HashMap<SandboxId, ClaimMeta>> {
        let mut labels = vec![managed_filter(), Kind::Claim.filter()];
        if let Some(id) = sandbox {
            labels.push(format!("{}={id}", sandbox_core::labels::SANDBOX_ID));
        }
        let options = ListVolumesOptions {
            filters: Some(HashMap::from([("label".to_string(), labels)])),
        };
        let volumes = self
            .api
            .call(
                operation,
                Target::Daemon,
                self.docker().list_volumes(Some(options)),
            )
            .await?;
        let mut out = HashMap::new();
        for v in volumes.volumes.unwrap_or_default() {
            if let Some(c) = ClaimMeta::from_labels(&format!("volume {}", v.name), &v.labels)? {
                out.insert(c.sandbox_id.clone(), c);
            }
        }
        Ok(out)
    }

    /// The container of a sandbox, from the cache or the daemon.
    pub(crate) async fn locate(&self, operation: Operation, id: &SandboxId) -> Result<Located> {
        if let Some(l) = self.cached(id) {
            return Ok(l);
        }
        let listed = self.find(operation, id).await?;
        let located = Located {
            container_id: listed.container_id.clone(),
            claimed: listed.is_claimed(),
            session_env: None,
            workdir: None,
        };
        self.cache(id, located.clone());
        Ok(located)
    }

    /// The daemon's view of one sandbox; `NotFound` when it has no container.
    pub(crate) async fn find(&self, operation: Operation, id: &SandboxId) -> Result<Listed> {
        self.list_containers(operation, Some(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                self.forget(id);
                Error::sandbox_not_found(id)
            })
    }

    /// Makes sure `image` is present, following the pull policy. A missing image that cannot
    /// be pulled is an error naming it.
    pub(crate) async fn ensure_image(&self, operation: Operation, image: &str) -> Result<()> {
        let present = match self
            .api
            .call_raw(operation, self.docker().inspect_image(image))
            .await?
        {
            Ok(_) => true,
            Err(e) if status_of(&e) == Some(404) => false,
            Err(e) => return Err(self.api.map(operation, Target::Image(image), e)),
        };
        match (self.settings.pull_policy, present) {
            (PullPolicy::Never, false) => Err(Error::NotFound {
                kind: ResourceKind::Image,
                id: format!("{image} (not present locally; pull policy is `never`)"),
            }),
            (PullPolicy::Never | PullPolicy::IfNotPresent, true) => Ok(()),
            (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, false) => {
                self.pull(operation, image).await
            }
        }
    }

    async fn pull(&self, operation: Operation, image: &str) -> Result<()> {
        tracing::info!(image, "pulling image");
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let pull = async {
            let mut stream = self.docker().create_image(Some(options), None, None);
            while let Some(item) = stream.next().await {
                item?;
            }
            Ok::<_, bollard::errors::Error>(())
        };
        match self.api.call_raw(operation, pull).await? {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = e.to_string();
                if status_of(&e) == Some(404)
                    || message.contains("not found")
                    || message.contains("does not exist")
                    || message.contains("pull access denied")
                {
                    Err(Error::NotFound {
                        kind: ResourceKind::Image,
                        id: image.to_string(),
                    })
                } else {
                    Err(Error::backend_with_source(
                        KIND,
                        format!(
                            "image `{image}` is not present and could not be pulled: {message}"
                        ),
                        e,
                    ))
                }
            }
        }
    }

    /// The body of a container of this library.
    pub(crate) fn container_body(
        &self,
        image: &str,
        template: &SandboxTemplate,
        env: Vec<String>,
        labels: HashMap<String, String>,
        pool: bool,
    ) -> ContainerCreateBody {
        let r = template.resources();
        let network = match template.network() {
            NetworkPolicy::None => "none".to_string(),
            // AllowList never gets here: `Capabilities::check_template` rejects it first.
            NetworkPolicy::Full | NetworkPolicy::AllowList(_) => self.settings.network.clone(),
        };
        let host_config = HostConfig {
            init: Some(true),
            cap_drop: Some(vec!["ALL".to_string()]),
            cap_add: Some(ADDED_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            pids_limit: Some(i64::from(r.pids.unwrap_or(DEFAULT_PIDS_LIMIT))),
            nano_cpus: r.cpu_millis.map(|m| i64::from(m) * 1_000_000),
            memory: r.memory_bytes.map(|b| b as i64),
            memory_swap: r.memory_bytes.map(|b| b as i64),
            network_mode: Some(network),
            runtime: self.settings.runtime.clone(),
            mounts: pool.then(|| {
                vec![Mount {
                    target: Some(SESSION_DIR.to_string()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        let main = if pool {
            pool_main()
        } else {
            KEEPALIVE.to_string()
        };
        ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["sh".to_string(), "-c".to_string(), main]),
            entrypoint: Some(vec![]),
            env: Some(env),
            labels: Some(labels),
            working_dir: Some(template.workdir().to_string()),
            open_stdin: Some(pool),
            stdin_once: Some(pool),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// Creates and starts a container and waits until exec works in it. Any failure removes
    /// the container. `Ok(None)`: a container of that name exists already.
    pub(crate) async fn launch(
        &self,
        operation: Operation,
        name: &str,
        body: ContainerCreateBody,
        sandbox: &SandboxId,
        on_created: impl FnOnce(),
    ) -> Result<Option<String>> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let image = body.image.clone().unwrap_or_default();
        let created = match self
            .api
            .call_raw(
                operation,
                self.docker().create_container(Some(options), body),
            )
            .await
        {
            Ok(Ok(c)) => c.id,
            Ok(Err(e)) if status_of(&e) == Some(409) => return Ok(None),
            Ok(Err(e)) if status_of(&e) == Some(404) => {
                return Err(Error::NotFound {
                    kind: ResourceKind::Image,
                    id: image,
                });
            }
            Ok(Err(e)) => return Err(self.api.map(operation, Target::Daemon, e)),
            Err(timeout) => {
                // The daemon may have created it after all: remove it by name.
                self.remove_container(name).await.ok();
                return Err(timeout);
            }
        };
        on_created();
        let started = async {
            self.api
                .call(
                    operation,
                    Target::Sandbox(sandbox.as_str()),
                    self.docker().start_container(&created, None),
                )
                .await?;
            self.wait_ready(operation, &created, sandbox).await
        };
        match started.await {
            Ok(()) => Ok(Some(created)),
            Err(e) => {
                if let Err(cleanup) = self.remove_container(&created).await {
                    tracing::warn!(container = %created, error = %cleanup, "removing a container that failed to start");
                }
                Err(e)
            }
        }
    }

    /// Waits until an exec succeeds in the container, within the ready deadline.
    pub(crate) async fn wait_ready(
        &self,
        operation: Operation,
        container: &str,
        sandbox: &SandboxId,
    ) -> Result<()> {
        let deadline = Instant::now() + self.settings.ready_timeout;
        let mut last = None;
        while Instant::now() < deadline {
            // The check is a runner (see `crate::runner`): once it reports, exec works, and it
            // stays as the sandbox's spare, so the first exec is fast too.
            match crate::runner::start(self, operation, container).await {
                Ok(runner) => {
                    self.runners.put(container, runner);
                    return Ok(());
                }
                Err(NotStarted::Ended(code, stderr)) => {
                    last = Some(format!(
                        "readiness check exited with {code:?}: {}",
                        String::from_utf8_lossy(&stderr).trim()
                    ))
                }
                Err(NotStarted::Error(Error::Conflict { message })) => {
                    // Not running: it will not become ready by waiting.
                    let state = self.container_state(operation, container).await;
                    return Err(Error::backend(
                        KIND,
                        format!(
                            "sandbox {sandbox} stopped while starting ({message}; {state}); the \
                             image must provide /bin/sh"
                        ),
                    ));
                }
                Err(NotStarted::Error(e)) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::debug!(?last, "not ready");
        Err(Error::Timeout {
            operation,
            after: self.settings.ready_timeout,
        })
    }

    async fn container_state(&self, operation: Operation, container: &str) -> String {
        match self
            .api
            .call(
                operation,
                Target::Daemon,
                self.docker().inspect_container(container, None),
            )
            .await
        {
            Ok(c) => {
                let s = c.state.unwrap_or_default();
                format!(
                    "state {:?}, exit code {:?}, error {:?}",
                    s.status.map(|s| s.to_string()),
                    s.exit_code,
                    s.error.filter(|e| !e.is_empty())
                )
            }
            Err(e) => format!("state unknown: {e}"),
        }
    }

    /// Stops (short grace) and removes a container and its anonymous volumes. Gone already
    /// is fine.
    pub(crate) async fn remove_container(&self, container: &str) -> Result<()> {
        self.runners.remove(container);
        self.exec_gates.remove(container);
        let op = Operation::Terminate;
        let stop = StopContainerOptions {
            t: Some(STOP_GRACE.as_secs() as i32),
            signal: None,
        };
        match self
            .api
            .call_raw(op, self.docker().stop_container(container, Some(stop)))
            .await?
        {
            Ok(()) => {}
            Err(e) if matches!(status_of(&e), Some(304 | 404 | 409)) => {}
            Err(e) => return Err(self.api.map(op, Target::Daemon, e)),
        }
        let remove = RemoveContainerOptions {
            v: true,
            force: true,
            link: false,
        };
        match self
            .api
            .call_raw(op, self.docker().remove_container(container, Some(remove)))
            .await?
        {
            Ok(()) => Ok(()),
            // 409: removal already in progress.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(self.api.map(op, Target::Daemon, e)),
        }
    }

    /// Removes a claim volume; gone already is fine.
    pub(crate) async fn remove_claim_volume(&self, sandbox: &SandboxId) -> Result<()> {
        let op = Operation::Terminate;
        let name = claim_volume_name(sandbox);
        match self
            .api
            .call_raw(
                op,
                self.docker()
                    .remove_volume(&name, Some(RemoveVolumeOptions { force: true })),
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.api.map(op, Target::Daemon, e)),
        }
    }

    /// Removes a sandbox's container and claim; returns whether there was anything.
    pub(crate) async fn destroy(&self, listed: &Listed) -> Result<()> {
        self.remove_container(&listed.container_id).await?;
        if listed.meta.kind == Kind::Pool {
            self.remove_claim_volume(&listed.meta.sandbox_id).await?;
        }
        self.forget(&listed.meta.sandbox_id);
        crate::snapshot::remove_if_deleted_snapshot(self, listed.image.as_deref()).await;
        Ok(())
    }

    /// The sandbox serving `session`, from its container name. A container of that name that
    /// is no longer live is removed (`Ok(None)`), so the session can get a new one.
    pub(crate) async fn session_sandbox(
        &self,
        operation: Operation,
        session: &SessionId,
    ) -> Result<Option<Sandbox>> {
        let name = session_container_name(session);
        let inspect = match self
            .api
            .call_raw(operation, self.docker().inspect_container(&name, None))
            .await?
        {
            Ok(c) => c,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.api.map(operation, Target::Daemon, e)),
        };
        let container_id = inspect.id.clone().unwrap_or_default();
        let labels = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let Some(meta) = ContainerMeta::from_labels(&format!("container {name}"), &labels)? else {
            return Err(Error::AlreadyExists {
                kind: ResourceKind::Sandbox,
                id: name,
                reason: "a container of that name exists but was not made by this library"
                    .to_string(),
            });
        };
        let listed = self.find(operation, &meta.sandbox_id).await;
        let listed = match listed {
            Ok(l) if l.container_id == container_id => l,
            // Removed (or replaced) meanwhile.
            _ => return Ok(None),
        };
        if !listed.state.is_live() || listed.is_expired(SystemTime::now()) {
            tracing::info!(container = %name, state = ?listed.state, "replacing the session's dead or expired sandbox");
            self.reap_one(&listed, listed.is_expired(SystemTime::now()))
                .await?;
            return Ok(None);
        }
        if listed.state != State::Running {
            self.wait_ready(operation, &container_id, &meta.sandbox_id)
                .await?;
        }
        self.cache(
            &meta.sandbox_id,
            Located {
                container_id,
                claimed: listed.is_claimed(),
                session_env: None,
                workdir: None,
            },
        );
        let mut sb = listed.sandbox(SystemTime::now());
        sb.status = SandboxStatus::Running;
        Ok(Some(sb))
    }

    /// Removes one sandbox the reaper found, with its events.
    pub(crate) async fn reap_one(&self, listed: &Listed, expired: bool) -> Result<()> {
        self.destroy(listed).await?;
        let id = &listed.meta.sandbox_id;
        let session = listed.session_id();
        if expired {
            self.events
                .emit_now(id, session.as_ref(), SandboxEventKind::Expired);
        }
        self.events.emit_now(
            id,
            session.as_ref(),
            SandboxEventKind::Terminated {
                reason: if expired {
                    TerminationReason::Expired
                } else {
                    TerminationReason::External
                },
            },
        );
        Ok(())
    }

    /// Creates a sandbox from an image (cold path, also used by restore).
    pub(crate) async fn create_cold(
        &self,
        operation: Operation,
        spec: &SandboxSpec,
        image: String,
        snapshot: Option<&SnapshotId>,
    ) -> Result<Sandbox> {
        for _attempt in 0..2 {
            if let Some(existing) = self.session_sandbox(operation, spec.session_id()).await? {
                return Ok(existing);
            }
            let id = SandboxId::generate();
            tracing::Span::current().record("sandbox_id", id.as_str());
            let now = SystemTime::now();
            let meta = ContainerMeta {
                kind: Kind::Sandbox,
                sandbox_id: id.clone(),
                session_id: Some(spec.session_id().clone()),
                template_key: spec.template_key().cloned(),
                created_at: now,
                expires_at: Some(now + spec.timeout()),
                snapshot_id: snapshot.cloned(),
                repo: spec.session().repo().cloned(),
                labels: spec.labels().clone(),
                template_spec: None,
            };
            let env = spec
                .environment(&id, snapshot.is_some())
                .to_key_value_strings();
            let body = self.container_body(&image, spec.template(), env, meta.to_labels(), false);
            let session = spec.session_id();
            let launched = self
                .launch(
                    operation,
                    &session_container_name(session),
                    body,
                    &id,
                    || {
                        self.events
                            .emit_now(&id, Some(session), SandboxEventKind::Creating)
                    },
                )
                .await;
            let container_id = match launched {
                Ok(Some(c)) => c,
                // Another process made the session's container meanwhile: use it.
                Ok(None) => continue,
                Err(e) => {
                    self.events.emit_now(
                        &id,
                        Some(session),
                        SandboxEventKind::Failed {
                            error: e.to_string(),
                        },
                    );
                    return Err(e);
                }
            };
            self.cache(
                &id,
                Located {
                    container_id: container_id.clone(),
                    claimed: false,
                    session_env: None,
                    workdir: Some(spec.template().workdir().to_string()),
                },
            );
            if let Some(snapshot_id) = snapshot {
                self.events.emit_now(
                    &id,
                    Some(session),
                    SandboxEventKind::Restored {
                        snapshot_id: snapshot_id.clone(),
                    },
                );
            }
            self.events
                .emit_now(&id, Some(session), SandboxEventKind::Ready);
            let listed = Listed {
                container_id,
                name: session_container_name(session),
                image: Some(image.clone()),
                state: State::Running,
                meta,
                claim: None,
            };
            return Ok(listed.sandbox(SystemTime::now()));
        }
        Err(Error::Conflict {
            message: format!(
                "the container of session {} kept appearing and disappearing",
                spec.session_id()
            ),
        })
    }

    async fn create(self: &Arc<Self>, spec: SandboxSpec) -> Result<Sandbox> {
        self.capabilities().check_spec(KIND, &spec)?;
        let _guard = self.session_lock(spec.session_id()).await;
        if spec.template_key().is_some() {
            if let Some(existing) = self
                .session_sandbox(Operation::Create, spec.session_id())
                .await?
            {
                return Ok(existing);
            }
            if let Some(sb) = crate::pool::claim(self, &spec).await? {
                return Ok(sb);
            }
        }
        let image = self.image_of(spec.template());
        self.ensure_image(Operation::Create, &image).await?;
        self.create_cold(Operation::Create, &spec, image, None)
            .await
    }

    async fn restore(&self, snapshot: &SnapshotRef, spec: SandboxSpec) -> Result<Sandbox> {
        let caps = self.capabilities();
        caps.require(KIND, Operation::Restore)?;
        caps.check_spec(KIND, &spec)?;
        let image = crate::snapshot::image_of_snapshot(self, &snapshot.id).await?;
        let _guard = self.session_lock(spec.session_id()).await;
        self.create_cold(Operation::Restore, &spec, image, Some(&snapshot.id))
            .await
    }

    async fn terminate(&self, id: &SandboxId) -> Result<()> {
        let listed = match self.find(Operation::Terminate, id).await {
            Ok(l) => l,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        self.destroy(&listed).await?;
        self.events.emit_now(
            id,
            listed.session_id().as_ref(),
            SandboxEventKind::Terminated {
                reason: TerminationReason::Requested,
            },
        );
        Ok(())
    }

    async fn status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        let listed = self.find(Operation::Status, id).await?;
        Ok(listed.sandbox(SystemTime::now()).status)
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Sandbox>> {
        let now = SystemTime::now();
        let mut out: Vec<Sandbox> = self
            .list_containers(Operation::List, None)
            .await?
            .into_iter()
            .filter(|l| l.state.is_live())
            .filter(|l| filter.include_pool || !l.is_idle_in_pool())
            .map(|l| l.sandbox(now))
            .filter(|s| filter.matches(s.session_id.as_ref(), &s.labels))
            .collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }
}

fn span(
    operation: Operation,
    sandbox: Option<&SandboxId>,
    session: Option<&SessionId>,
) -> tracing::Span {
    tracing::info_span!(
        "sandbox",
        backend = "docker",
        operation = operation.as_str(),
        sandbox_id = sandbox.map(SandboxId::as_str),
        session_id = session.map(SessionId::as_str),
    )
}

/// Logs a failed operation at debug level (the caller gets the error itself).
fn logged<T>(r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        tracing::debug!(error = %e, "operation failed");
    }
    r
}

#[async_trait]
impl SandboxBackend for DockerBackend {
    fn kind(&self) -> BackendKind {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
        let span = span(Operation::Create, None, Some(spec.session_id()));
        logged(self.inner.create(spec).instrument(span).await)
    }

    async fn warm(&self, spec: WarmSpec) -> Result<WarmStatus> {
        let span = span(Operation::Warm, None, None);
        logged(crate::pool::warm(&self.inner, spec).instrument(span).await)
    }

    async fn snapshot(&self, id: &SandboxId, options: SnapshotOptions) -> Result<Snapshot> {
        let span = span(Operation::Snapshot, Some(id), None);
        logged(
            crate::snapshot::snapshot(&self.inner, id, options)
                .instrument(span)
                .await,
        )
    }

    async fn restore(&self, snapshot: &SnapshotRef, spec: SandboxSpec) -> Result<Sandbox> {
        let span = span(Operation::Restore, None, Some(spec.session_id()));
        logged(self.inner.restore(snapshot, spec).instrument(span).await)
    }

    async fn terminate(&self, id: &SandboxId) -> Result<()> {
        let span = span(Operation::Terminate, Some(id), None);
        logged(self.inner.terminate(id).instrument(span).await)
    }

    async fn status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        let span = span(Operation::Status, Some(id), None);
        logged(self.inner.status(id).instrument(span).await)
    }

    async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream> {
        let span = span(Operation::Exec, Some(id), None);
        logged(
            crate::exec::exec(&self.inner, id, request)
                .instrument(span)
                .await,
        )
    }

    async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Bytes> {
        let span = span(Operation::ReadFile, Some(id), None);
        logged(
            crate::files::read_file(&self.inner, id, path)
                .instrument(span)
                .await,
        )
    }

    async fn write_file(&self, id: &SandboxId, path: &str, contents: Bytes) -> Result<()> {
        let span = span(Operation::WriteFile, Some(id), None);
        logged(
            crate::files::write_file(&self.inner, id, path, contents)
                .instrument(span)
                .await,
        )
    }

    async fn list(&self, filter: ListFilter) -> Result<Vec<Sandbox>> {
        let span = span(Operation::List, None, filter.session_id.as_ref());
        logged(self.inner.list(filter).instrument(span).await)
    }

    async fn list_snapshots(&self, filter: SnapshotFilter) -> Result<Vec<Snapshot>> {
        let span = span(Operation::ListSnapshots, None, filter.session_id.as_ref());
        logged(
            crate::snapshot::list_snapshots(&self.inner, filter)
                .instrument(span)
                .await,
        )
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        let span = span(Operation::DeleteSnapshot, None, None);
        logged(
            crate::snapshot::delete_snapshot(&self.inner, id)
                .instrument(span)
                .await,
        )
    }

    async fn reap_expired(&self) -> Result<Vec<SandboxId>> {
        let span = span(Operation::ReapExpired, None, None);
        logged(
            crate::reaper::reap_expired(&self.inner)
                .instrument(span)
                .await,
        )
    }

    fn events(&self) -> EventStream {
        self.inner.events.subscribe()
    }
}

impl From<DockerError> for Error {
    fn from(e: DockerError) -> Self {
        e.into_error()
    }
}
