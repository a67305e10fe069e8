//! The conformance suite: public async checks that every backend's tests run, so that every
//! backend honours the same contract (see [`SandboxBackend`](crate::SandboxBackend)).
//!
//! Each check creates what it needs with a unique `conformance-run` label, and ends by
//! removing everything carrying that label (sandboxes, warm pools, snapshots) and then
//! checking that the backend lists nothing left; a check fails if anything is. Checks of an
//! operation the backend's [`Capabilities`] lack assert that it returns
//! [`Error::Unsupported`] instead.
//!
//! A backend's test file generates one test per check with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use sandbox_core::{BackendKind, DynSandboxBackend, Error};
//! # // Here: no provider. In a backend's tests: connect the backend as its users do.
//! # async fn connect() -> Result<Arc<DynSandboxBackend>, Error> {
//! #     Err(Error::Unavailable {
//! #         backend: BackendKind::Docker,
//! #         message: "no daemon in a doctest".into(),
//! #         source: None,
//! #     })
//! # }
//! use sandbox_core::conformance::Suite;
//!
//! async fn make_suite() -> Option<Suite> {
//!     match connect().await {
//!         Ok(backend) => Some(Suite::new(backend)),
//!         // Not reachable here: say so loudly, then skip.
//!         Err(e) => {
//!             eprintln!("SKIPPED: conformance: {e}");
//!             None
//!         }
//!     }
//! }
//!
//! mod conformance {
//!     sandbox_core::conformance_tests!(super::make_suite);
//! }
//! ```
//! The test crate needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;

use crate::{
    BackendKind, Capabilities, DynSandboxBackend, EgressRule, Error, EventStream, ExecEvent,
    ExecRequest, ExitStatus, ListFilter, NetworkPolicy, Sandbox, SandboxBackendExt, SandboxEvent,
    SandboxEventKind, SandboxId, SandboxOrigin, SandboxSpec, SandboxSpecBuilder, SandboxStatus,
    SnapshotFilter, SnapshotId, SnapshotOptions, SnapshotRef, TemplateKey, TerminationReason,
    WarmSpec,
};

/// The label every sandbox, pool and snapshot of one check carries (value: a random run id).
pub const RUN_LABEL: &str = "conformance-run";

/// Settings of a suite run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SuiteOptions {
    /// The image specs ask for (`None`: the backend's default).
    pub image: Option<String>,
    /// An image reference that does not exist and cannot be pulled, to check that a failed
    /// create leaves nothing behind (`None` skips that part).
    pub missing_image: Option<String>,
    /// How long after its timeout a sandbox may take to be terminated.
    pub expiry_grace: Duration,
    /// How many creates `concurrent_creates` runs at once (at least 16).
    pub concurrency: usize,
    /// Deadline for one backend call in the checks (a hung call fails the check).
    pub call_timeout: Duration,
    /// The network policy specs ask for (default `None`; a backend that cannot enforce
    /// `None` is run with `Full`).
    pub network: NetworkPolicy,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self {
            image: None,
            missing_image: None,
            expiry_grace: Duration::from_secs(20),
            concurrency: 16,
            call_timeout: Duration::from_secs(180),
            network: NetworkPolicy::None,
        }
    }
}

/// A backend under test and the options of the run.
#[derive(Debug, Clone)]
pub struct Suite {
    backend: Arc<DynSandboxBackend>,
    options: SuiteOptions,
}

impl Suite {
    /// A suite with default options.
    pub fn new(backend: Arc<DynSandboxBackend>) -> Self {
        Self {
            backend,
            options: SuiteOptions::default(),
        }
    }

    /// Sets the image specs ask for.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.options.image = Some(image.into());
        self
    }

    /// Sets an image that does not exist (see [`SuiteOptions::missing_image`]).
    pub fn missing_image(mut self, image: impl Into<String>) -> Self {
        self.options.missing_image = Some(image.into());
        self
    }

    /// Sets how late expiry may be.
    pub fn expiry_grace(mut self, grace: Duration) -> Self {
        self.options.expiry_grace = grace;
        self
    }

    /// Sets the network policy specs ask for.
    pub fn network(mut self, network: NetworkPolicy) -> Self {
        self.options.network = network;
        self
    }

    /// Replaces all options.
    pub fn options(mut self, options: SuiteOptions) -> Self {
        self.options = options;
        self
    }

    /// The backend under test.
    pub fn backend(&self) -> &DynSandboxBackend {
        &*self.backend
    }
}

/// Generates one `#[tokio::test]` per conformance check, calling `$make_suite().await` (an
/// `async fn() -> Option<Suite>`; `None` skips) for each.
#[macro_export]
macro_rules! conformance_tests {
    ($make_suite:path) => {
        $crate::conformance_tests!(@each $make_suite;
            create_exec_status,
            idempotent_create,
            warm_pool,
            snapshot_restore,
            terminate_idempotent,
            list_sees_live_with_labels,
            expiry,
            bad_input_creates_nothing,
            concurrent_creates,
            files_round_trip,
            exec_streams_and_statuses,
            shell_metacharacters_stay_literal
        );
    };
    (@each $make_suite:path; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let Some(suite) = $make_suite().await else { return };
                $crate::conformance::$check(&suite).await;
            }
        )*
    };
}

type CheckResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Turns a library error into a check failure naming the step.
trait Step<T> {
    fn step(self, what: &str) -> Result<T, String>;
}

impl<T> Step<T> for crate::Result<T> {
    fn step(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e} ({e:?})"))
    }
}

/// What one check is working with.
#[derive(Clone)]
struct Ctx {
    backend: Arc<DynSandboxBackend>,
    options: SuiteOptions,
    caps: Capabilities,
    kind: BackendKind,
    run: String,
    pools: Arc<Mutex<Vec<WarmSpec>>>,
}

impl Ctx {
    fn new(suite: &Suite) -> Self {
        Self {
            backend: suite.backend.clone(),
            options: suite.options.clone(),
            caps: suite.backend.capabilities(),
            kind: suite.backend.kind(),
            run: format!("r{}", &crate::id::random_token()[..12]),
            pools: Arc::default(),
        }
    }

    fn b(&self) -> &DynSandboxBackend {
        &*self.backend
    }

    /// A fresh session id.
    fn session(&self) -> String {
        format!("cf-{}", &crate::id::random_token()[..20])
    }

    /// A spec for a fresh session, labelled with the run, with a timeout that reaps it even if
    /// everything else fails.
    fn spec(&self) -> SandboxSpecBuilder {
        let mut b = SandboxSpec::builder(self.session())
            .label(RUN_LABEL, &self.run)
            .network(self.options.network.clone())
            .timeout(Duration::from_secs(600));
        if let Some(image) = &self.options.image {
            b = b.image(image);
        }
        b
    }

    fn filter(&self) -> ListFilter {
        ListFilter {
            include_pool: true,
            ..ListFilter::all().label(RUN_LABEL, &self.run)
        }
    }

    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = crate::Result<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.options.call_timeout, fut).await {
            Ok(r) => r.step(what),
            Err(_) => Err(format!(
                "{what}: no answer within {:?}",
                self.options.call_timeout
            )),
        }
    }

    async fn create(&self, spec: SandboxSpec) -> Result<Sandbox, String> {
        self.call("create", self.b().create(spec)).await
    }

    async fn exec(&self, id: &SandboxId, argv: &[&str]) -> Result<crate::ExecOutput, String> {
        let req = ExecRequest::new(argv.iter().copied()).step("exec request")?;
        self.call(&format!("exec {argv:?}"), self.b().exec_output(id, req))
            .await
    }

    /// Runs `sh -c script` and requires exit code 0; returns stdout.
    async fn sh(&self, id: &SandboxId, script: &str) -> Result<String, String> {
        let out = self.exec(id, &["sh", "-c", script]).await?;
        ensure!(
            out.success(),
            "`sh -c {script:?}` {}; stderr: {}",
            out.status,
            out.stderr_str()
        );
        Ok(out.stdout_str().into_owned())
    }

    async fn listed_ids(&self, filter: ListFilter) -> Result<BTreeSet<SandboxId>, String> {
        let list = self.call("list", self.b().list(filter)).await?;
        Ok(list.into_iter().map(|s| s.id).collect())
    }

    /// Removes everything of this run; returns what could not be removed.
    async fn cleanup(&self) -> CheckResult {
        let mut problems = Vec::new();
        let pools: Vec<WarmSpec> = self.pools.lock().expect("pool list lock").clone();
        for pool in pools {
            let empty = WarmSpec::builder(pool.template_key().as_str())
                .network(pool.template().network().clone())
                .size(0)
                .build()
                .expect("a size-0 pool spec is valid");
            if let Err(e) = self.b().warm(empty).await {
                problems.push(format!("emptying pool {}: {e}", pool.template_key()));
            }
        }
        match self.b().list(self.filter()).await {
            Ok(list) => {
                for sb in list {
                    if let Err(e) = self.b().terminate(&sb.id).await {
                        problems.push(format!("terminating {}: {e}", sb.id));
                    }
                }
            }
            Err(e) => problems.push(format!("listing for cleanup: {e}")),
        }
        if self.caps.manage_snapshots {
            let filter = SnapshotFilter {
                labels: BTreeMap::from([(RUN_LABEL.to_string(), self.run.clone())]),
                ..SnapshotFilter::default()
            };
            match self.b().list_snapshots(filter).await {
                Ok(snaps) => {
                    for s in snaps {
                        if let Err(e) = self.b().delete_snapshot(&s.id).await {
                            problems.push(format!("deleting snapshot {}: {e}", s.id));
                        }
                    }
                }
                Err(e) => problems.push(format!("listing snapshots for cleanup: {e}")),
            }
        }
        match self.b().list(self.filter()).await {
            Ok(left) if left.is_empty() => {}
            Ok(left) => problems.push(format!(
                "left behind after cleanup: {:?}",
                left.iter().map(|s| &s.id).collect::<Vec<_>>()
            )),
            Err(e) => problems.push(format!("listing after cleanup: {e}")),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// Runs a check, then the cleanup, and panics with the failures of either.
async fn run<F, Fut>(suite: &Suite, name: &str, check: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = CheckResult>,
{
    init_tracing();
    let ctx = Ctx::new(suite);
    let outcome = check(ctx.clone()).await;
    let cleanup = ctx.cleanup().await;
    let kind = ctx.kind;
    match (outcome, cleanup) {
        (Ok(()), Ok(())) => {}
        (Err(e), Ok(())) => panic!("conformance `{name}` failed on the {kind} backend: {e}"),
        (Ok(()), Err(c)) => panic!("conformance `{name}` on the {kind} backend: {c}"),
        (Err(e), Err(c)) => {
            panic!("conformance `{name}` failed on the {kind} backend: {e}\nand cleanup: {c}")
        }
    }
}

/// Waits up to `within` for an event about `id` matching `pred`.
async fn expect_event(
    events: &mut EventStream,
    id: &SandboxId,
    within: Duration,
    what: &str,
    pred: impl Fn(&SandboxEventKind) -> bool,
) -> Result<SandboxEvent, String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => return Err(format!("no `{what}` event for {id} within {within:?}")),
            Ok(None) => return Err(format!("event stream ended before `{what}` for {id}")),
            Ok(Some(Err(Error::EventsLagged { .. }))) => continue,
            Ok(Some(Err(e))) => return Err(format!("event stream error: {e}")),
            Ok(Some(Ok(event))) if &event.sandbox_id == id && pred(&event.kind) => {
                return Ok(event);
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

fn is_gone(status: &crate::Result<SandboxStatus>) -> bool {
    match status {
        Ok(s) => s.is_terminal(),
        Err(e) => e.is_not_found(),
    }
}

fn expect_unsupported<T: std::fmt::Debug>(what: &str, r: crate::Result<T>) -> CheckResult {
    match r {
        Err(Error::Unsupported { .. }) => Ok(()),
        other => Err(format!(
            "{what}: capabilities say unsupported, so Error::Unsupported was expected; got {other:?}"
        )),
    }
}

const EVENT_WAIT: Duration = Duration::from_secs(10);

/// create returns a ready sandbox with its session settings; status says running; exec
/// returns output and exit codes; the session environment (seed 003's table) is visible;
/// `Creating` and `Ready` events are emitted.
pub async fn create_exec_status(suite: &Suite) {
    run(suite, "create_exec_status", |ctx| async move {
        let mut events = ctx.b().events();
        let spec = ctx
            .spec()
            .repo("octo-org", "hello-world")
            .branch("feature/x")
            .control_plane_url("https://cp.example.com/")
            .auth_token("conformance-token")
            .llm_model("claude-sonnet-4-5")
            .env("CONFORMANCE_VAR", "42")
            .secret("CONFORMANCE_SECRET", "s3cr3t-value")
            .label("role", "main")
            .build()
            .step("spec")?;
        let session = spec.session_id().clone();
        let timeout = spec.timeout();
        let sb = ctx.create(spec).await?;
        ensure!(
            sb.status == SandboxStatus::Running,
            "create returned status {:?}, want running",
            sb.status
        );
        ensure!(
            sb.session_id.as_ref() == Some(&session),
            "session id {:?}, want {session}",
            sb.session_id
        );
        ensure!(
            sb.backend == ctx.kind,
            "backend {:?}, want {:?}",
            sb.backend,
            ctx.kind
        );
        ensure!(
            sb.origin == SandboxOrigin::Cold,
            "origin {:?}, want cold",
            sb.origin
        );
        ensure!(
            sb.labels.get("role").map(String::as_str) == Some("main"),
            "labels {:?} lack role=main",
            sb.labels
        );
        ensure!(
            sb.labels.get(RUN_LABEL) == Some(&ctx.run),
            "labels {:?} lack the run label",
            sb.labels
        );
        ensure!(
            !sb.labels.keys().any(|k| crate::labels::is_reserved(k)),
            "user labels {:?} include reserved keys",
            sb.labels
        );
        if let Some(exp) = sb.expires_at {
            let want = sb.created_at + timeout;
            let diff = exp
                .duration_since(want)
                .or_else(|e| Ok::<_, ()>(e.duration()))
                .unwrap_or_default();
            ensure!(
                diff <= Duration::from_secs(5),
                "expires_at is {diff:?} away from created_at + timeout"
            );
        }
        let age = SystemTime::now()
            .duration_since(sb.created_at)
            .unwrap_or_default();
        ensure!(
            age < Duration::from_secs(600),
            "created_at {:?} is not recent",
            sb.created_at
        );

        let status = ctx.call("status", ctx.b().status(&sb.id)).await?;
        ensure!(
            status == SandboxStatus::Running,
            "status {status:?}, want running"
        );

        let out = ctx
            .exec(&sb.id, &["sh", "-c", "echo out; echo err >&2; exit 3"])
            .await?;
        ensure!(
            out.status == ExitStatus::Exited { code: 3 },
            "status {:?}, want exited 3",
            out.status
        );
        ensure!(out.stdout_str() == "out\n", "stdout {:?}", out.stdout_str());
        ensure!(out.stderr_str() == "err\n", "stderr {:?}", out.stderr_str());

        let env = ctx.sh(&sb.id, "env").await?;
        let vars: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
        for (k, v) in [
            ("SESSION_ID", session.as_str()),
            ("SANDBOX_ID", sb.id.as_str()),
            ("REPO_OWNER", "octo-org"),
            ("REPO_NAME", "hello-world"),
            ("REPO_BRANCH", "feature/x"),
            ("CONTROL_PLANE_URL", "https://cp.example.com/"),
            ("SANDBOX_AUTH_TOKEN", "conformance-token"),
            ("PROVIDER", crate::DEFAULT_LLM_PROVIDER),
            ("MODEL", "claude-sonnet-4-5"),
            ("CONFORMANCE_VAR", "42"),
            ("CONFORMANCE_SECRET", "s3cr3t-value"),
        ] {
            ensure!(
                vars.get(k) == Some(&v),
                "sandbox env {k}={:?}, want {v:?}",
                vars.get(k)
            );
        }
        ensure!(
            vars.contains_key("SESSION_CONFIG"),
            "sandbox env lacks SESSION_CONFIG"
        );

        // Per-exec env and workdir.
        ctx.sh(&sb.id, "mkdir -p sub").await?;
        let req = ExecRequest::builder(["sh", "-c", "echo \"$PER_EXEC\" > marker"])
            .env("PER_EXEC", "yes")
            .workdir(format!("{}/sub", crate::DEFAULT_WORKDIR))
            .build()
            .step("exec request")?;
        let out = ctx
            .call(
                "exec with env and workdir",
                ctx.b().exec_output(&sb.id, req),
            )
            .await?;
        ensure!(
            out.success(),
            "exec with workdir: {} {}",
            out.status,
            out.stderr_str()
        );
        let marker = ctx.sh(&sb.id, "cat sub/marker").await?;
        ensure!(marker == "yes\n", "per-exec env/workdir: marker {marker:?}");

        let created = expect_event(&mut events, &sb.id, EVENT_WAIT, "creating", |k| {
            *k == SandboxEventKind::Creating
        })
        .await?;
        // Secrets never show in the backend's Debug, the sandbox, or events.
        for (what, text) in [
            ("the backend's Debug", format!("{:?}", ctx.b())),
            ("the sandbox's Debug", format!("{sb:?}")),
            ("an event", format!("{created:?}")),
        ] {
            ensure!(
                !text.contains("conformance-token") && !text.contains("s3cr3t-value"),
                "{what} shows a secret: {text}"
            );
        }
        expect_event(&mut events, &sb.id, EVENT_WAIT, "ready", |k| {
            *k == SandboxEventKind::Ready
        })
        .await?;
        Ok(())
    })
    .await;
}

/// create is idempotent by session id, sequentially and concurrently.
pub async fn idempotent_create(suite: &Suite) {
    run(suite, "idempotent_create", |ctx| async move {
        let spec = ctx.spec().build().step("spec")?;
        let first = ctx.create(spec.clone()).await?;
        let again = ctx.create(spec.clone()).await?;
        ensure!(
            again.id == first.id,
            "second create for one session made {} besides {}",
            again.id,
            first.id
        );

        let spec2 = ctx.spec().build().step("spec")?;
        let (a, b) = tokio::join!(ctx.create(spec2.clone()), ctx.create(spec2.clone()));
        let (a, b) = (a?, b?);
        ensure!(
            a.id == b.id,
            "concurrent creates for one session made two sandboxes: {} and {}",
            a.id,
            b.id
        );
        let by_session = ctx
            .listed_ids(ListFilter::all().session(spec2.session_id().clone()))
            .await?;
        ensure!(
            by_session.len() == 1,
            "list by session shows {by_session:?}, want exactly one"
        );
        let all = ctx.listed_ids(ctx.filter()).await?;
        ensure!(
            all.len() == 2,
            "run has {all:?}, want exactly two sandboxes"
        );
        Ok(())
    })
    .await;
}

/// warm keeps ready sandboxes; a matching create takes one and gets its session settings;
/// a miss falls back to a cold create; warm(0) empties the pool.
pub async fn warm_pool(suite: &Suite) {
    run(suite, "warm_pool", |ctx| async move {
        let key = format!("cf-{}", &crate::id::random_token()[..16]);
        let mut warm = WarmSpec::builder(key.as_str())
            .size(2)
            .network(ctx.options.network.clone())
            .label(RUN_LABEL, &ctx.run);
        if let Some(image) = &ctx.options.image {
            warm = warm.image(image);
        }
        let warm = warm.build().step("warm spec")?;
        if !ctx.caps.warm {
            return expect_unsupported("warm", ctx.b().warm(warm).await);
        }
        ctx.pools.lock().expect("pool list lock").push(warm.clone());
        let status = ctx.call("warm", ctx.b().warm(warm.clone())).await?;
        ensure!(
            status.target == 2 && status.ready == 2,
            "warm returned {status:?}, want 2 ready"
        );
        let pooled = ctx.call("list", ctx.b().list(ctx.filter())).await?;
        ensure!(
            pooled.len() == 2,
            "list with include_pool shows {} sandboxes, want the 2 pooled",
            pooled.len()
        );
        ensure!(
            pooled.iter().all(|s| s.session_id.is_none()),
            "pooled sandboxes have sessions: {pooled:?}"
        );
        let serving = ctx
            .listed_ids(ListFilter::all().label(RUN_LABEL, &ctx.run))
            .await?;
        ensure!(
            serving.is_empty(),
            "list without include_pool shows pooled sandboxes {serving:?}"
        );

        let mut events = ctx.b().events();
        let spec = ctx.spec().template_key(key.as_str()).build().step("spec")?;
        ensure!(warm.matches(&spec), "test bug: spec does not match pool");
        let session = spec.session_id().clone();
        let sb = ctx.create(spec).await?;
        ensure!(
            sb.origin == SandboxOrigin::WarmPool,
            "origin {:?}, want warm_pool",
            sb.origin
        );
        ensure!(
            sb.session_id.as_ref() == Some(&session),
            "claimed sandbox session {:?}",
            sb.session_id
        );
        ensure!(
            sb.template_key.as_ref().map(TemplateKey::as_str) == Some(key.as_str()),
            "template key {:?}",
            sb.template_key
        );
        ensure!(
            sb.status == SandboxStatus::Running,
            "claimed sandbox status {:?}",
            sb.status
        );
        let env = ctx.sh(&sb.id, "echo \"$SESSION_ID $SANDBOX_ID\"").await?;
        ensure!(
            env == format!("{session} {}\n", sb.id),
            "session env in claimed sandbox: {env:?}"
        );
        expect_event(&mut events, &sb.id, EVENT_WAIT, "warm_hit", |k| {
            matches!(k, SandboxEventKind::WarmHit { .. })
        })
        .await?;
        let serving = ctx
            .listed_ids(ListFilter::all().label(RUN_LABEL, &ctx.run))
            .await?;
        ensure!(
            serving.contains(&sb.id),
            "claimed sandbox {} not listed as serving: {serving:?}",
            sb.id
        );

        // A template that matches no pool is a cold create.
        let miss = ctx
            .spec()
            .template_key("cf-no-such-pool")
            .build()
            .step("spec")?;
        let cold = ctx.create(miss).await?;
        ensure!(
            cold.origin == SandboxOrigin::Cold,
            "pool miss gave origin {:?}, want cold",
            cold.origin
        );

        let empty = WarmSpec::builder(key.as_str())
            .network(ctx.options.network.clone())
            .size(0)
            .build()
            .step("warm spec")?;
        let status = ctx.call("warm(0)", ctx.b().warm(empty)).await?;
        ensure!(
            status.target == 0 && status.ready == 0,
            "warm(0) returned {status:?}"
        );
        let left: Vec<Sandbox> = ctx.call("list", ctx.b().list(ctx.filter())).await?;
        ensure!(
            left.iter().all(|s| s.session_id.is_some()),
            "warm(0) left pooled sandboxes: {left:?}"
        );
        ensure!(
            left.len() == 2,
            "after warm(0) the run has {} sandboxes, want the 2 serving",
            left.len()
        );
        Ok(())
    })
    .await;
}

/// snapshot then restore gives the files of the moment of the snapshot; snapshots carry repo
/// labels, are listed, found as the latest for their repo, and deleted idempotently.
pub async fn snapshot_restore(suite: &Suite) {
    run(suite, "snapshot_restore", |ctx| async move {
        let spec = ctx.spec().repo("octo-org", "snap-repo").branch("main").build().step("spec")?;
        let sb = ctx.create(spec).await?;
        let options = SnapshotOptions::new()
            .sha("0123456789abcdef0123456789abcdef01234567")
            .step("sha")?
            .label(RUN_LABEL, &ctx.run)
            .step("label")?;
        if !ctx.caps.snapshot {
            expect_unsupported("snapshot", ctx.b().snapshot(&sb.id, options).await)?;
            if !ctx.caps.restore {
                let r = SnapshotRef::from(SnapshotId::generate());
                expect_unsupported("restore", ctx.b().restore(&r, ctx.spec().build().step("spec")?).await)?;
            }
            return Ok(());
        }
        ctx.sh(&sb.id, "mkdir -p data/nested && printf v1 > data/nested/file.txt && printf 'b\\001\\377' > data/bin")
            .await?;
        let mut events = ctx.b().events();
        let before = SystemTime::now() - Duration::from_secs(60);
        let snap = ctx.call("snapshot", ctx.b().snapshot(&sb.id, options)).await?;
        ensure!(snap.source.as_ref() == Some(&sb.id), "snapshot source {:?}", snap.source);
        let repo = snap.repo.as_ref().ok_or("snapshot has no repo label (should default to the sandbox's)")?;
        ensure!(repo.owner() == "octo-org" && repo.name() == "snap-repo" && repo.branch() == Some("main"), "snapshot repo {repo:?}");
        ensure!(snap.sha.as_deref() == Some("0123456789abcdef0123456789abcdef01234567"), "snapshot sha {:?}", snap.sha);
        ensure!(snap.created_at >= before, "snapshot created_at {:?} is not recent", snap.created_at);
        ensure!(snap.labels.get(RUN_LABEL) == Some(&ctx.run), "snapshot labels {:?}", snap.labels);
        expect_event(&mut events, &sb.id, EVENT_WAIT, "snapshot_taken", |k| matches!(k, SandboxEventKind::SnapshotTaken { snapshot_id } if *snapshot_id == snap.id)).await?;

        // Changes after the snapshot must not be in it.
        ctx.sh(&sb.id, "printf v2 > data/nested/file.txt && touch data/later").await?;

        if !ctx.caps.restore {
            return expect_unsupported("restore", ctx.b().restore(&snap.reference(), ctx.spec().build().step("spec")?).await);
        }
        let spec = ctx.spec().build().step("spec")?;
        let session = spec.session_id().clone();
        let restored = ctx.call("restore", ctx.b().restore(&snap.reference(), spec.clone())).await?;
        ensure!(restored.id != sb.id, "restore reused the source sandbox id");
        ensure!(restored.session_id.as_ref() == Some(&session), "restored session {:?}", restored.session_id);
        ensure!(restored.origin == SandboxOrigin::Snapshot { snapshot_id: snap.id.clone() }, "restored origin {:?}", restored.origin);
        ensure!(restored.status == SandboxStatus::Running, "restored status {:?}", restored.status);
        let again = ctx.call("restore again", ctx.b().restore(&snap.reference(), spec)).await?;
        ensure!(again.id == restored.id, "restore is not idempotent by session: {} then {}", restored.id, again.id);
        let content = ctx.sh(&restored.id, "cat data/nested/file.txt").await?;
        ensure!(content == "v1", "restored file has {content:?}, want the snapshot's \"v1\"");
        let bin = ctx.exec(&restored.id, &["cat", "data/bin"]).await?;
        ensure!(&bin.stdout[..] == b"b\x01\xff", "restored binary file {:?}", bin.stdout);
        let later = ctx.exec(&restored.id, &["test", "-e", "data/later"]).await?;
        ensure!(!later.success(), "a file created after the snapshot exists in the restore");
        let flag = ctx.sh(&restored.id, "echo \"$RESTORED_FROM_SNAPSHOT $SESSION_ID\"").await?;
        ensure!(flag == format!("true {session}\n"), "restored env: {flag:?}");
        expect_event(&mut events, &restored.id, EVENT_WAIT, "restored", |k| matches!(k, SandboxEventKind::Restored { .. })).await?;

        let missing = SnapshotRef::from(SnapshotId::generate());
        match ctx.b().restore(&missing, ctx.spec().build().step("spec")?).await {
            Err(e) if e.is_not_found() => {}
            other => return Err(format!("restore of a missing snapshot: want NotFound, got {other:?}")),
        }

        if !ctx.caps.manage_snapshots {
            return expect_unsupported("list_snapshots", ctx.b().list_snapshots(SnapshotFilter::default()).await);
        }
        let mut filter = SnapshotFilter::repo("octo-org", "snap-repo");
        filter.labels.insert(RUN_LABEL.into(), ctx.run.clone());
        let listed = ctx.call("list_snapshots", ctx.b().list_snapshots(filter.clone())).await?;
        ensure!(listed.iter().any(|s| s.id == snap.id), "list_snapshots does not show {}", snap.id);
        let other = ctx.call("list_snapshots", ctx.b().list_snapshots(SnapshotFilter::repo("octo-org", "other-repo"))).await?;
        ensure!(!other.iter().any(|s| s.id == snap.id), "list_snapshots for another repo shows {}", snap.id);
        let latest = ctx.call("latest_snapshot", ctx.b().latest_snapshot("octo-org", "snap-repo")).await?;
        ensure!(latest.is_some(), "latest_snapshot found nothing");
        ctx.call("delete_snapshot", ctx.b().delete_snapshot(&snap.id)).await?;
        ctx.call("delete_snapshot again", ctx.b().delete_snapshot(&snap.id)).await?;
        let listed = ctx.call("list_snapshots", ctx.b().list_snapshots(filter)).await?;
        ensure!(!listed.iter().any(|s| s.id == snap.id), "deleted snapshot still listed");
        match ctx.b().restore(&snap.reference(), ctx.spec().build().step("spec")?).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => Err(format!("restore of a deleted snapshot: want NotFound, got {other:?}")),
        }
    })
    .await;
}

/// terminate is idempotent; afterwards status says terminated or not found, exec fails, list
/// omits it, and a `Terminated { Requested }` event is emitted.
pub async fn terminate_idempotent(suite: &Suite) {
    run(suite, "terminate_idempotent", |ctx| async move {
        let sb = ctx.create(ctx.spec().build().step("spec")?).await?;
        let mut events = ctx.b().events();
        ctx.call("terminate", ctx.b().terminate(&sb.id)).await?;
        ctx.call("terminate again", ctx.b().terminate(&sb.id))
            .await?;
        let status = ctx.b().status(&sb.id).await;
        ensure!(
            is_gone(&status),
            "status after terminate: {status:?}, want terminated or NotFound"
        );
        let exec = ctx
            .b()
            .exec_output(&sb.id, ExecRequest::new(["true"]).step("req")?)
            .await;
        ensure!(exec.is_err(), "exec after terminate succeeded: {exec:?}");
        let listed = ctx.listed_ids(ctx.filter()).await?;
        ensure!(!listed.contains(&sb.id), "terminated sandbox still listed");
        expect_event(&mut events, &sb.id, EVENT_WAIT, "terminated", |k| {
            *k == SandboxEventKind::Terminated {
                reason: TerminationReason::Requested,
            }
        })
        .await?;

        let never = SandboxId::generate();
        ctx.call("terminate of an unknown id", ctx.b().terminate(&never))
            .await?;
        match ctx.b().status(&never).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => Err(format!(
                "status of an unknown id: want NotFound, got {other:?}"
            )),
        }
    })
    .await;
}

/// list shows exactly the live sandboxes matching the filter, with their labels.
pub async fn list_sees_live_with_labels(suite: &Suite) {
    run(suite, "list_sees_live_with_labels", |ctx| async move {
        let a = ctx
            .create(ctx.spec().label("group", "a").build().step("spec")?)
            .await?;
        let b = ctx
            .create(ctx.spec().label("group", "b").build().step("spec")?)
            .await?;
        let list = ctx.call("list", ctx.b().list(ctx.filter())).await?;
        let ids: BTreeSet<_> = list.iter().map(|s| s.id.clone()).collect();
        ensure!(
            ids == BTreeSet::from([a.id.clone(), b.id.clone()]),
            "list shows {ids:?}, want {} and {}",
            a.id,
            b.id
        );
        for s in &list {
            let want = if s.id == a.id { "a" } else { "b" };
            ensure!(
                s.labels.get("group").map(String::as_str) == Some(want),
                "{} listed with labels {:?}",
                s.id,
                s.labels
            );
            ensure!(
                s.status == SandboxStatus::Running,
                "{} listed as {:?}",
                s.id,
                s.status
            );
            let want_session = if s.id == a.id {
                &a.session_id
            } else {
                &b.session_id
            };
            ensure!(
                &s.session_id == want_session,
                "{} listed with session {:?}",
                s.id,
                s.session_id
            );
        }
        let only_a = ctx.listed_ids(ctx.filter().label("group", "a")).await?;
        ensure!(
            only_a == BTreeSet::from([a.id.clone()]),
            "label filter group=a gives {only_a:?}"
        );
        let session_b = b.session_id.clone().ok_or("b has no session")?;
        let only_b = ctx.listed_ids(ListFilter::all().session(session_b)).await?;
        ensure!(
            only_b == BTreeSet::from([b.id.clone()]),
            "session filter gives {only_b:?}"
        );
        ctx.call("terminate", ctx.b().terminate(&a.id)).await?;
        let after = ctx.listed_ids(ctx.filter()).await?;
        ensure!(
            after == BTreeSet::from([b.id.clone()]),
            "after terminating a, list shows {after:?}"
        );
        Ok(())
    })
    .await;
}

/// A sandbox past its timeout is terminated (by the provider or `reap_expired`).
pub async fn expiry(suite: &Suite) {
    run(suite, "expiry", |ctx| async move {
        let mut events = ctx.b().events();
        let timeout = Duration::from_secs(2);
        // The sandbox's clock starts somewhere inside `create`: bound it from both sides.
        let before_create = Instant::now();
        let sb = ctx
            .create(ctx.spec().timeout(timeout).build().step("spec")?)
            .await?;
        if let Some(exp) = sb.expires_at {
            ensure!(
                exp <= SystemTime::now() + timeout,
                "expires_at {exp:?} is later than the timeout allows"
            );
        }
        let started = Instant::now();
        let deadline = started + timeout + ctx.options.expiry_grace;
        loop {
            if Instant::now() > started + timeout {
                ctx.call("reap_expired", ctx.b().reap_expired()).await?;
            }
            let status = ctx.b().status(&sb.id).await;
            if is_gone(&status) {
                ensure!(
                    before_create.elapsed() >= timeout - Duration::from_millis(500),
                    "terminated {:?} after create began, before its {timeout:?} timeout",
                    before_create.elapsed()
                );
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "still {status:?} {:?} after its {timeout:?} timeout",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let exec = ctx
            .b()
            .exec_output(&sb.id, ExecRequest::new(["true"]).step("req")?)
            .await;
        ensure!(exec.is_err(), "exec in an expired sandbox succeeded");
        expect_event(&mut events, &sb.id, EVENT_WAIT, "expired", |k| {
            matches!(
                k,
                SandboxEventKind::Expired
                    | SandboxEventKind::Terminated {
                        reason: TerminationReason::Expired
                    }
            )
        })
        .await?;
        Ok(())
    })
    .await;
}

/// Every bad input is rejected with a typed error before anything is created.
pub async fn bad_input_creates_nothing(suite: &Suite) {
    run(suite, "bad_input_creates_nothing", |ctx| async move {
        // Input the builders reject: the error names the field; nothing can reach the backend.
        let b = || ctx.spec();
        let table: Vec<(SandboxSpecBuilder, &str)> = vec![
            (SandboxSpec::builder("Not_A_Label"), "session.session_id"),
            (SandboxSpec::builder("x;rm -rf /"), "session.session_id"),
            (b().repo("bad owner", "r"), "session.repo.owner"),
            (b().repo("o", "r;x"), "session.repo.name"),
            (b().repo("o", "r").branch("a..b"), "session.repo.branch"),
            (
                b().control_plane_url("file:///etc/passwd"),
                "session.control_plane_url",
            ),
            (b().env("BAD-KEY", "v"), "session.env[BAD-KEY]"),
            (b().env("SESSION_ID", "spoof"), "session.env[SESSION_ID]"),
            (b().image("UPPER/case"), "image"),
            (b().cpu_millis(0), "resources.cpu_millis"),
            (b().memory_bytes(1), "resources.memory_bytes"),
            (b().pids(1), "resources.pids"),
            (b().workdir("../escape"), "workdir"),
            (b().timeout(Duration::ZERO), "timeout"),
            (b().template_key("UPPER"), "template_key"),
            (
                b().label("sandbox.rs/managed-by", "me"),
                "labels[sandbox.rs/managed-by]",
            ),
            (
                b().network(NetworkPolicy::AllowList(vec![EgressRule::host(
                    "not a host",
                )])),
                "network.allow_list[0]",
            ),
        ];
        for (builder, field) in table {
            match builder.build() {
                Err(Error::InvalidSpec { field: f, .. }) if f == field => {}
                other => {
                    return Err(format!(
                        "bad `{field}`: want InvalidSpec naming it, got {other:?}"
                    ));
                }
            }
        }

        // Input only the backend can judge: what its capabilities lack.
        let caps = ctx.caps;
        let mut unsupported: Vec<(&str, SandboxSpecBuilder)> = Vec::new();
        if !caps.network_allow_list {
            unsupported.push((
                "allow-list",
                b().network(NetworkPolicy::AllowList(vec![EgressRule::host_port(
                    "api.github.com",
                    443,
                )])),
            ));
        }
        if !caps.network_none {
            unsupported.push(("no network", b().network(NetworkPolicy::None)));
        }
        if !caps.network_full {
            unsupported.push(("full network", b().network(NetworkPolicy::Full)));
        }
        if !caps.cpu_limit {
            unsupported.push(("cpu limit", b().cpu_millis(500)));
        }
        if !caps.memory_limit {
            unsupported.push(("memory limit", b().memory_bytes(256 << 20)));
        }
        if !caps.pids_limit {
            unsupported.push(("pids limit", b().pids(64)));
        }
        if !caps.idle_timeout {
            unsupported.push(("idle timeout", b().idle_timeout(Duration::from_secs(30))));
        }
        for (what, builder) in unsupported {
            let spec = builder.build().step("spec")?;
            expect_unsupported(what, ctx.b().create(spec).await)?;
        }
        if caps.max_timeout < crate::MAX_TIMEOUT {
            let spec = b()
                .timeout(caps.max_timeout + Duration::from_secs(1))
                .build()
                .step("spec")?;
            match ctx.b().create(spec).await {
                Err(Error::InvalidSpec { field, .. }) if field == "timeout" => {}
                other => {
                    return Err(format!(
                        "timeout over the backend's max: want InvalidSpec(timeout), got {other:?}"
                    ));
                }
            }
        }
        if let Some(missing) = &ctx.options.missing_image {
            let spec = ctx.spec().image(missing).build().step("spec")?;
            let r = ctx.b().create(spec).await;
            ensure!(r.is_err(), "create with missing image {missing} succeeded");
        }
        let left = ctx.listed_ids(ctx.filter()).await?;
        ensure!(left.is_empty(), "rejected creates left {left:?}");

        // Operations on what does not exist.
        let ghost = SandboxId::generate();
        let r = ctx.b().status(&ghost).await;
        ensure!(
            matches!(&r, Err(e) if e.is_not_found()),
            "status of unknown sandbox: {r:?}"
        );
        let r = ctx
            .b()
            .exec_output(&ghost, ExecRequest::new(["true"]).step("req")?)
            .await;
        ensure!(
            matches!(&r, Err(e) if e.is_not_found()),
            "exec in unknown sandbox: {r:?}"
        );
        if caps.restore {
            let r = ctx
                .b()
                .restore(
                    &SnapshotRef::from(SnapshotId::generate()),
                    b().build().step("spec")?,
                )
                .await;
            ensure!(
                matches!(&r, Err(e) if e.is_not_found()),
                "restore of unknown snapshot: {r:?}"
            );
        }

        // Requests on a live sandbox that the backend must refuse.
        let sb = ctx.create(b().build().step("spec")?).await?;
        if caps.files {
            for path in ["../../etc/passwd", "/workspace/../etc/passwd", "a\0b"] {
                let r = ctx.b().read_file(&sb.id, path).await;
                ensure!(
                    matches!(r, Err(Error::InvalidSpec { .. })),
                    "read_file {path:?}: want InvalidSpec, got {r:?}"
                );
                let r = ctx
                    .b()
                    .write_file(&sb.id, path, Bytes::from_static(b"x"))
                    .await;
                ensure!(
                    matches!(r, Err(Error::InvalidSpec { .. })),
                    "write_file {path:?}: want InvalidSpec, got {r:?}"
                );
            }
        }
        if !caps.exec_stdin {
            let req = ExecRequest::builder(["cat"])
                .stdin("x")
                .build()
                .step("req")?;
            expect_unsupported("exec with stdin", ctx.b().exec_output(&sb.id, req).await)?;
        }
        if !caps.exec_user {
            let req = ExecRequest::builder(["id"])
                .user("1000")
                .build()
                .step("req")?;
            expect_unsupported("exec as user", ctx.b().exec_output(&sb.id, req).await)?;
        }
        let left = ctx.listed_ids(ctx.filter()).await?;
        ensure!(
            left == BTreeSet::from([sb.id.clone()]),
            "run has {left:?}, want only {}",
            sb.id
        );
        Ok(())
    })
    .await;
}

/// Many creates at once all succeed, all work, and all terminate.
pub async fn concurrent_creates(suite: &Suite) {
    run(suite, "concurrent_creates", |ctx| async move {
        let n = ctx.options.concurrency.max(16);
        let specs: Vec<SandboxSpec> = (0..n)
            .map(|i| ctx.spec().label("index", i.to_string()).build())
            .collect::<crate::Result<_>>()
            .step("spec")?;
        let created = futures::future::join_all(specs.into_iter().map(|s| ctx.create(s))).await;
        let mut sandboxes = Vec::new();
        let mut failures = Vec::new();
        for r in created {
            match r {
                Ok(sb) => sandboxes.push(sb),
                Err(e) => failures.push(e),
            }
        }
        ensure!(
            failures.is_empty(),
            "{} of {n} concurrent creates failed: {failures:?}",
            failures.len()
        );
        let ids: BTreeSet<_> = sandboxes.iter().map(|s| s.id.clone()).collect();
        ensure!(
            ids.len() == n,
            "{n} creates gave {} distinct sandboxes",
            ids.len()
        );
        let outs = futures::future::join_all(sandboxes.iter().map(|sb| async {
            let want = sb.labels.get("index").cloned().unwrap_or_default();
            let out = ctx.exec(&sb.id, &["echo", &want]).await?;
            ensure!(
                out.stdout_str() == format!("{want}\n"),
                "sandbox {} echoed {:?}",
                sb.id,
                out.stdout_str()
            );
            Ok::<(), String>(())
        }))
        .await;
        for r in outs {
            r?;
        }
        let terminated = futures::future::join_all(
            ids.iter()
                .map(|id| ctx.call("terminate", ctx.b().terminate(id))),
        )
        .await;
        for r in terminated {
            r?;
        }
        let left = ctx.listed_ids(ctx.filter()).await?;
        ensure!(
            left.is_empty(),
            "after terminating all, list shows {left:?}"
        );
        Ok(())
    })
    .await;
}

/// Files written are read back byte for byte, and seen by commands.
pub async fn files_round_trip(suite: &Suite) {
    run(suite, "files_round_trip", |ctx| async move {
        let sb = ctx.create(ctx.spec().build().step("spec")?).await?;
        if !ctx.caps.files {
            expect_unsupported("read_file", ctx.b().read_file(&sb.id, "x").await)?;
            return expect_unsupported(
                "write_file",
                ctx.b().write_file(&sb.id, "x", Bytes::new()).await,
            );
        }
        let data: Bytes = (0..=255u8)
            .cycle()
            .take(300_000)
            .collect::<Vec<u8>>()
            .into();
        ctx.call(
            "write_file",
            ctx.b().write_file(&sb.id, "dir/sub/blob.bin", data.clone()),
        )
        .await?;
        let back = ctx
            .call("read_file", ctx.b().read_file(&sb.id, "dir/sub/blob.bin"))
            .await?;
        ensure!(
            back == data,
            "read back {} bytes differing from the {} written",
            back.len(),
            data.len()
        );
        let abs = format!("{}/dir/sub/blob.bin", crate::DEFAULT_WORKDIR);
        let back = ctx
            .call("read_file absolute", ctx.b().read_file(&sb.id, &abs))
            .await?;
        ensure!(back == data, "absolute path read differs");
        let seen = ctx.exec(&sb.id, &["cat", "dir/sub/blob.bin"]).await?;
        ensure!(
            seen.stdout == data,
            "cat of the written file gives {} bytes",
            seen.stdout.len()
        );

        ctx.call(
            "overwrite",
            ctx.b()
                .write_file(&sb.id, "dir/sub/blob.bin", Bytes::from_static(b"short")),
        )
        .await?;
        let back = ctx
            .call("read_file", ctx.b().read_file(&sb.id, "dir/sub/blob.bin"))
            .await?;
        ensure!(
            &back[..] == b"short",
            "overwrite left {:?}",
            String::from_utf8_lossy(&back[..back.len().min(32)])
        );
        ctx.call(
            "write empty",
            ctx.b().write_file(&sb.id, "empty", Bytes::new()),
        )
        .await?;
        let back = ctx
            .call("read empty", ctx.b().read_file(&sb.id, "empty"))
            .await?;
        ensure!(back.is_empty(), "empty file read back {} bytes", back.len());

        ctx.sh(&sb.id, "printf 'from exec' > made-by-exec.txt")
            .await?;
        let back = ctx
            .call("read_file", ctx.b().read_file(&sb.id, "made-by-exec.txt"))
            .await?;
        ensure!(
            &back[..] == b"from exec",
            "file made by exec read as {back:?}"
        );
        match ctx.b().read_file(&sb.id, "no-such-file").await {
            Err(e) if e.is_not_found() => Ok(()),
            other => Err(format!(
                "read of a missing file: want NotFound, got {other:?}"
            )),
        }
    })
    .await;
}

/// exec streams output before the command ends; exit codes, signals and timeouts are typed,
/// and a timeout kills the command.
pub async fn exec_streams_and_statuses(suite: &Suite) {
    run(suite, "exec_streams_and_statuses", |ctx| async move {
        let sb = ctx.create(ctx.spec().build().step("spec")?).await?;

        let req = ExecRequest::new(["sh", "-c", "echo first; sleep 5; echo second"]).step("req")?;
        let mut stream = ctx.call("exec", ctx.b().exec(&sb.id, req)).await?;
        let first = tokio::time::timeout(Duration::from_secs(4), stream.next())
            .await
            .map_err(|_| "no output within 4s from a command that printed at once and then slept 5s: output is not streamed".to_string())?;
        match first {
            Some(Ok(ExecEvent::Stdout(b))) if &b[..] == b"first\n" => {}
            other => return Err(format!("first stream item {other:?}, want stdout \"first\\n\"")),
        }
        let rest = tokio::time::timeout(Duration::from_secs(30), stream.output())
            .await
            .map_err(|_| "stream did not end".to_string())?
            .step("rest of stream")?;
        ensure!(rest.stdout_str() == "second\n" && rest.success(), "rest of stream {rest:?}");

        let out = ctx.exec(&sb.id, &["sh", "-c", "exit 7"]).await?;
        ensure!(out.status == ExitStatus::Exited { code: 7 }, "exit 7 gave {:?}", out.status);
        let out = ctx.exec(&sb.id, &["sh", "-c", "kill -KILL $$"]).await?;
        // Docker's exec API reports a signal death only as 128 + signal; accept that form.
        ensure!(
            matches!(out.status, ExitStatus::Signaled { signal: 9 } | ExitStatus::Exited { code: 137 }),
            "kill -KILL gave {:?}, want signaled 9",
            out.status
        );

        let req = ExecRequest::builder(["sh", "-c", "sleep 2; echo late > late-marker"])
            .timeout(Duration::from_millis(500))
            .build()
            .step("req")?;
        let started = Instant::now();
        let out = ctx.call("exec with timeout", ctx.b().exec_output(&sb.id, req)).await?;
        ensure!(out.status == ExitStatus::TimedOut, "timed-out command gave {:?}", out.status);
        ensure!(started.elapsed() < Duration::from_secs(2), "timed-out exec returned after {:?}, past the command's own end", started.elapsed());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let marker = ctx.exec(&sb.id, &["test", "-e", "late-marker"]).await?;
        ensure!(!marker.success(), "the timed-out command kept running and wrote its marker");

        if ctx.caps.exec_stdin {
            let req = ExecRequest::builder(["cat"]).stdin("hello stdin\n").build().step("req")?;
            let out = ctx.call("exec with stdin", ctx.b().exec_output(&sb.id, req)).await?;
            ensure!(out.stdout_str() == "hello stdin\n", "cat of stdin gave {:?}", out.stdout_str());
        }
        let out = ctx.exec(&sb.id, &["sh", "-c", "yes 0123456789 | head -c 1000000"]).await?;
        ensure!(out.stdout.len() == 1_000_000 && out.success(), "1 MB of output came back as {} bytes ({})", out.stdout.len(), out.status);
        Ok(())
    })
    .await;
}

/// Shell metacharacters in session settings and arguments reach the sandbox as literal bytes
/// and are never interpreted by a shell.
pub async fn shell_metacharacters_stay_literal(suite: &Suite) {
    run(
        suite,
        "shell_metacharacters_stay_literal",
        |ctx| async move {
            let branch = "feat/$(touch${IFS}pwned-branch);`touch${IFS}pwned-tick`|x&y";
            let value = "$(touch pwned-env) `touch pwned-env2`; touch pwned-env3";
            let spec = ctx
                .spec()
                .repo("octo-org", "repo")
                .branch(branch)
                .env("TRICKY", value)
                .build()
                .step("spec")?;
            let sb = ctx.create(spec).await?;
            let out = ctx.exec(&sb.id, &["printenv", "REPO_BRANCH"]).await?;
            ensure!(
                out.stdout_str() == format!("{branch}\n"),
                "REPO_BRANCH arrived as {:?}",
                out.stdout_str()
            );
            let out = ctx.exec(&sb.id, &["printenv", "TRICKY"]).await?;
            ensure!(
                out.stdout_str() == format!("{value}\n"),
                "TRICKY arrived as {:?}",
                out.stdout_str()
            );
            let arg =
                "$(touch pwned-arg); `touch pwned-arg2` | touch pwned-arg3 && touch pwned-arg4";
            let out = ctx.exec(&sb.id, &["echo", arg]).await?;
            ensure!(
                out.stdout_str() == format!("{arg}\n"),
                "echo of a literal argument gave {:?}",
                out.stdout_str()
            );
            let listing = ctx.sh(&sb.id, "ls -a").await?;
            ensure!(
                !listing.contains("pwned"),
                "a metacharacter was interpreted: workdir has {listing:?}"
            );
            Ok(())
        },
    )
    .await;
}
