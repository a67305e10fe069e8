//! What a caller asks for: [`SandboxSpec`] (built with [`SandboxSpecBuilder`]), [`WarmSpec`],
//! [`SnapshotOptions`] and the filters of `list`.
//!
//! Every builder validates every field in `build()`, before anything reaches a backend; the
//! error names the field and the rule. A built spec is therefore always valid, and its fields
//! are read through getters.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{SandboxId, SessionId, SnapshotId, TemplateKey};
use crate::labels;
use crate::secret::Secret;
use crate::validate;

/// Default absolute lifetime of a sandbox (the seeds' control plane uses 2 hours).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);
/// Shortest absolute lifetime accepted.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest absolute lifetime accepted (Modal's cap).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest idle timeout accepted.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default working directory inside a sandbox.
pub const DEFAULT_WORKDIR: &str = "/workspace";
/// Default LLM provider (seed 003's table).
pub const DEFAULT_LLM_PROVIDER: &str = "anthropic";
/// Default LLM model (seed 003's table).
pub const DEFAULT_LLM_MODEL: &str = "claude-haiku-4-5";
/// Fewest CPU millicores a limit may set.
pub const MIN_CPU_MILLIS: u32 = 10;
/// Most CPU millicores a limit may set.
pub const MAX_CPU_MILLIS: u32 = 64_000;
/// Smallest memory limit (16 MiB).
pub const MIN_MEMORY_BYTES: u64 = 16 * 1024 * 1024;
/// Largest memory limit (256 GiB).
pub const MAX_MEMORY_BYTES: u64 = 256 * 1024 * 1024 * 1024;
/// Smallest process-count limit.
pub const MIN_PIDS: u32 = 8;
/// Largest process-count limit.
pub const MAX_PIDS: u32 = 1_000_000;
/// Most user labels on one sandbox.
pub const MAX_LABELS: usize = 64;
/// Most egress rules in an allow-list.
pub const MAX_EGRESS_RULES: usize = 64;
/// Largest warm pool.
pub const MAX_POOL_SIZE: u32 = 256;
/// Longest LLM provider or model name.
pub const LLM_NAME_MAX_LEN: usize = 128;

/// Environment variables the library sets from the session settings; user env may not set them.
pub const RESERVED_ENV: &[&str] = &[
    "SESSION_ID",
    "SANDBOX_ID",
    "REPO_OWNER",
    "REPO_NAME",
    "REPO_BRANCH",
    "CONTROL_PLANE_URL",
    "SANDBOX_AUTH_TOKEN",
    "PROVIDER",
    "MODEL",
    "SESSION_CONFIG",
    "RESTORED_FROM_SNAPSHOT",
];

/// A GitHub repository, optionally at a branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(try_from = "RawRepo")]
pub struct RepoRef {
    owner: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    owner: String,
    name: String,
    branch: Option<String>,
}

impl TryFrom<RawRepo> for RepoRef {
    type Error = Error;
    fn try_from(r: RawRepo) -> Result<Self> {
        let repo = RepoRef::new(r.owner, r.name)?;
        match r.branch {
            Some(b) => repo.with_branch(b),
            None => Ok(repo),
        }
    }
}

impl RepoRef {
    /// Validates a GitHub owner and repository name.
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Result<Self> {
        let (owner, name) = (owner.into(), name.into());
        validate::github_owner("repo.owner", &owner)?;
        validate::github_repo("repo.name", &name)?;
        Ok(Self {
            owner,
            name,
            branch: None,
        })
    }

    /// Adds a branch, validated as `git check-ref-format --branch` does.
    pub fn with_branch(mut self, branch: impl Into<String>) -> Result<Self> {
        let branch = branch.into();
        validate::git_branch("repo.branch", &branch)?;
        self.branch = Some(branch);
        Ok(self)
    }

    /// The owner (user or organisation).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The repository name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The branch, if one was given.
    pub fn branch(&self) -> Option<&str> {
        self.branch.as_deref()
    }
}

/// Resource limits. `None` leaves the backend's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU limit in millicores (1000 = one CPU).
    pub cpu_millis: Option<u32>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Most processes (and threads) at once.
    pub pids: Option<u32>,
}

impl Resources {
    /// Checks each set limit against its bounds.
    pub fn validate(&self) -> Result<()> {
        if let Some(cpu) = self.cpu_millis {
            validate::number_within(
                "resources.cpu_millis",
                cpu.into(),
                MIN_CPU_MILLIS.into(),
                MAX_CPU_MILLIS.into(),
                "millicores",
            )?;
        }
        if let Some(mem) = self.memory_bytes {
            validate::number_within(
                "resources.memory_bytes",
                mem,
                MIN_MEMORY_BYTES,
                MAX_MEMORY_BYTES,
                "bytes",
            )?;
        }
        if let Some(pids) = self.pids {
            validate::number_within(
                "resources.pids",
                pids.into(),
                MIN_PIDS.into(),
                MAX_PIDS.into(),
                "processes",
            )?;
        }
        Ok(())
    }
}

/// One destination a sandbox may reach under [`NetworkPolicy::AllowList`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    /// A host name (`api.github.com`, `*.example.com`), an IP address or a CIDR block.
    pub host: String,
    /// A destination port; `None` allows every port.
    pub port: Option<u16>,
}

impl EgressRule {
    /// A rule for `host` on every port.
    pub fn host(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
        }
    }

    /// A rule for `host` on one port.
    pub fn host_port(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port: Some(port),
        }
    }

    fn validate(&self, field: &str) -> Result<()> {
        if self.port == Some(0) {
            return Err(Error::invalid_spec(
                field,
                "port must be between 1 and 65535",
            ));
        }
        let host = self.host.as_str();
        if let Some((addr, prefix)) = host.split_once('/') {
            let ip: std::net::IpAddr = addr.parse().map_err(|_| {
                Error::invalid_spec(
                    field,
                    format!("`{host}` is not a CIDR block (address/prefix)"),
                )
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match prefix.parse::<u8>() {
                Ok(p) if p <= max => return Ok(()),
                _ => {
                    return Err(Error::invalid_spec(
                        field,
                        format!("CIDR prefix must be 0 to {max}"),
                    ));
                }
            }
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(());
        }
        let name = host.strip_prefix("*.").unwrap_or(host);
        if name.is_empty() || name.len() > 253 {
            return Err(Error::invalid_spec(
                field,
                "host name must be 1 to 253 characters",
            ));
        }
        for part in name.split('.') {
            validate::dns_label(field, part).map_err(|_| {
                Error::invalid_spec(
                    field,
                    format!("`{host}` is not a lowercase host name, IP address or CIDR block"),
                )
            })?;
        }
        Ok(())
    }
}

/// What a sandbox may reach on the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "rules")]
pub enum NetworkPolicy {
    /// No network at all (only loopback). The default: a sandbox gets a network when asked.
    #[default]
    None,
    /// Only these destinations. Backends that cannot enforce it return
    /// [`Error::Unsupported`] rather than silently allowing more.
    AllowList(Vec<EgressRule>),
    /// Unrestricted outbound network.
    Full,
}

impl NetworkPolicy {
    fn validate(&self) -> Result<()> {
        if let NetworkPolicy::AllowList(rules) = self {
            if rules.is_empty() {
                return Err(Error::invalid_spec(
                    "network.allow_list",
                    "must name at least one destination (use NetworkPolicy::None for no network)",
                ));
            }
            if rules.len() > MAX_EGRESS_RULES {
                return Err(Error::invalid_spec(
                    "network.allow_list",
                    format!("at most {MAX_EGRESS_RULES} rules"),
                ));
            }
            for (i, rule) in rules.iter().enumerate() {
                rule.validate(&format!("network.allow_list[{i}]"))?;
            }
        }
        Ok(())
    }
}

/// The part of a spec that a warm sandbox is prepared with: everything but the session.
/// A `create` is served from a warm pool when its template key and template equal the pool's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SandboxTemplate {
    image: Option<String>,
    resources: Resources,
    network: NetworkPolicy,
    workdir: String,
}

impl Default for SandboxTemplate {
    fn default() -> Self {
        Self {
            image: None,
            resources: Resources::default(),
            network: NetworkPolicy::None,
            workdir: DEFAULT_WORKDIR.to_string(),
        }
    }
}

impl SandboxTemplate {
    /// The image; `None` means the backend's configured default.
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// The resource limits.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// The network policy.
    pub fn network(&self) -> &NetworkPolicy {
        &self.network
    }

    /// The working directory of commands (an absolute path).
    pub fn workdir(&self) -> &str {
        &self.workdir
    }

    fn validate(&self) -> Result<()> {
        if let Some(image) = &self.image {
            validate::image_ref("image", image)?;
        }
        self.resources.validate()?;
        self.network.validate()?;
        validate::absolute_path("workdir", &self.workdir)
    }
}

/// The settings of one agent session that reach the sandbox as environment variables
/// (seed 003's table; see [`SandboxSpec::environment`]).
#[derive(Debug, Clone)]
pub struct SessionSettings {
    session_id: SessionId,
    repo: Option<RepoRef>,
    control_plane_url: Option<url::Url>,
    auth_token: Option<Secret>,
    llm_provider: String,
    llm_model: String,
    env: BTreeMap<String, String>,
    secrets: BTreeMap<String, Secret>,
}

impl SessionSettings {
    /// The session id: also the idempotency key of `create`.
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    /// The repository the session works on.
    pub fn repo(&self) -> Option<&RepoRef> {
        self.repo.as_ref()
    }

    /// Where the sandbox reports back.
    pub fn control_plane_url(&self) -> Option<&url::Url> {
        self.control_plane_url.as_ref()
    }

    /// The token the sandbox authenticates to the control plane with.
    pub fn auth_token(&self) -> Option<&Secret> {
        self.auth_token.as_ref()
    }

    /// The LLM provider (default [`DEFAULT_LLM_PROVIDER`]).
    pub fn llm_provider(&self) -> &str {
        &self.llm_provider
    }

    /// The LLM model (default [`DEFAULT_LLM_MODEL`]).
    pub fn llm_model(&self) -> &str {
        &self.llm_model
    }

    /// Extra environment variables.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Secret environment variables (API keys): never logged.
    pub fn secrets(&self) -> &BTreeMap<String, Secret> {
        &self.secrets
    }
}

/// Everything `create` (and `restore`) needs. Build it with [`SandboxSpec::builder`].
///
/// ```
/// use std::time::Duration;
/// use sandbox_core::{NetworkPolicy, SandboxSpec};
///
/// let spec = SandboxSpec::builder("sess-1")
///     .repo("octocat", "hello-world")
///     .branch("main")
///     .control_plane_url("https://cp.example.com")
///     .auth_token("t0ken")
///     .env("RUST_LOG", "info")
///     .secret("ANTHROPIC_API_KEY", "sk-...")
///     .memory_bytes(512 * 1024 * 1024)
///     .timeout(Duration::from_secs(3600))
///     .idle_timeout(Duration::from_secs(600))
///     .network(NetworkPolicy::None)
///     .label("team", "infra")
///     .build()?;
/// assert_eq!(spec.session().session_id().as_str(), "sess-1");
/// assert!(!format!("{spec:?}").contains("t0ken"));
///
/// // Every field is checked, and the error names it.
/// let err = SandboxSpec::builder("sess-1").branch("a..b").repo("o", "r").build().unwrap_err();
/// assert_eq!(err.invalid_field(), Some("session.repo.branch"));
/// # Ok::<(), sandbox_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    session: SessionSettings,
    template: SandboxTemplate,
    template_key: Option<TemplateKey>,
    timeout: Duration,
    idle_timeout: Option<Duration>,
    labels: BTreeMap<String, String>,
}

impl SandboxSpec {
    /// Starts a builder for the session `session_id` (validated in `build()`).
    pub fn builder(session_id: impl Into<String>) -> SandboxSpecBuilder {
        SandboxSpecBuilder {
            session_id: session_id.into(),
            ..SandboxSpecBuilder::default()
        }
    }

    /// The session settings.
    pub fn session(&self) -> &SessionSettings {
        &self.session
    }

    /// Shorthand for `self.session().session_id()`.
    pub fn session_id(&self) -> &SessionId {
        &self.session.session_id
    }

    /// Image, resources, network and workdir.
    pub fn template(&self) -> &SandboxTemplate {
        &self.template
    }

    /// The warm-pool template key, if the caller wants a pooled sandbox.
    pub fn template_key(&self) -> Option<&TemplateKey> {
        self.template_key.as_ref()
    }

    /// Absolute lifetime: the sandbox is terminated this long after it was created.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Idle timeout: terminated after this long without an exec. `None`: no idle timeout.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// User labels (keys outside the reserved [`labels::PREFIX`]).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The environment the sandbox gets, from the session settings (seed 003's table) and the
    /// user's env and secrets, in a stable order (`SESSION_CONFIG` only when the session has a
    /// repository). `restored` adds
    /// `RESTORED_FROM_SNAPSHOT=true`. Every backend delivers exactly this.
    pub fn environment(&self, sandbox_id: &SandboxId, restored: bool) -> Environment {
        let s = &self.session;
        let mut env = Environment::default();
        env.push("SESSION_ID", s.session_id.as_str(), false);
        env.push("SANDBOX_ID", sandbox_id.as_str(), false);
        if let Some(repo) = &s.repo {
            env.push("REPO_OWNER", repo.owner(), false);
            env.push("REPO_NAME", repo.name(), false);
            if let Some(branch) = repo.branch() {
                env.push("REPO_BRANCH", branch, false);
            }
        }
        if let Some(url) = &s.control_plane_url {
            env.push("CONTROL_PLANE_URL", url.as_str(), false);
        }
        if let Some(token) = &s.auth_token {
            env.push("SANDBOX_AUTH_TOKEN", token.expose(), true);
        }
        env.push("PROVIDER", &s.llm_provider, false);
        env.push("MODEL", &s.llm_model, false);
        if let Some(config) = self.session_config_json() {
            env.push("SESSION_CONFIG", &config, false);
        }
        if restored {
            env.push("RESTORED_FROM_SNAPSHOT", "true", false);
        }
        for (k, v) in &s.env {
            env.push(k, v, false);
        }
        for (k, v) in &s.secrets {
            env.push(k, v.expose(), true);
        }
        env
    }

    /// `SESSION_CONFIG` as the seeds' bridge reads it; only for a session with a repository
    /// (the bridge's config requires one).
    fn session_config_json(&self) -> Option<String> {
        let s = &self.session;
        let repo = s.repo.as_ref()?;
        let config = crate::wire::SessionConfig {
            session_id: s.session_id.to_string(),
            repo_owner: repo.owner().to_string(),
            repo_name: repo.name().to_string(),
            branch: repo.branch().map(str::to_string),
            base_sha: None,
            opencode_session_id: None,
            provider: s.llm_provider.clone(),
            model: s.llm_model.clone(),
            git_user: None,
        };
        // Serializing a struct of strings cannot fail.
        serde_json::to_string(&config).ok()
    }
}

/// One environment variable of a sandbox.
#[derive(Clone)]
pub struct EnvVar {
    /// The name.
    pub key: String,
    /// The value (a secret's real value: do not log it when `secret` is true).
    pub value: String,
    /// True for the auth token and user secrets.
    pub secret: bool,
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value: &dyn std::fmt::Debug = if self.secret {
            &"[redacted]"
        } else {
            &self.value
        };
        f.debug_struct("EnvVar")
            .field("key", &self.key)
            .field("value", value)
            .finish()
    }
}

/// The environment of a sandbox, in order; `Debug` redacts the secret values.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: Vec<EnvVar>,
}

impl Environment {
    fn push(&mut self, key: &str, value: &str, secret: bool) {
        self.vars.push(EnvVar {
            key: key.to_string(),
            value: value.to_string(),
            secret,
        });
    }

    /// The variables in order.
    pub fn iter(&self) -> impl Iterator<Item = &EnvVar> {
        self.vars.iter()
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|v| v.key == key)
            .map(|v| v.value.as_str())
    }

    /// `KEY=value` strings (for Docker's `Env`). Contains secrets: do not log.
    pub fn to_key_value_strings(&self) -> Vec<String> {
        self.vars
            .iter()
            .map(|v| format!("{}={}", v.key, v.value))
            .collect()
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

/// Builder of [`SandboxSpec`]. Setters take raw values; `build()` validates all of them.
#[derive(Debug, Default, Clone)]
#[must_use = "call build() to get a SandboxSpec"]
pub struct SandboxSpecBuilder {
    session_id: String,
    repo: Option<(String, String)>,
    branch: Option<String>,
    control_plane_url: Option<String>,
    auth_token: Option<Secret>,
    llm_provider: Option<String>,
    llm_model: Option<String>,
    env: Vec<(String, String)>,
    secrets: Vec<(String, Secret)>,
    image: Option<String>,
    resources: Resources,
    network: NetworkPolicy,
    workdir: Option<String>,
    template_key: Option<String>,
    timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    labels: Vec<(String, String)>,
}

impl SandboxSpecBuilder {
    /// The GitHub repository (owner, name).
    pub fn repo(mut self, owner: impl Into<String>, name: impl Into<String>) -> Self {
        self.repo = Some((owner.into(), name.into()));
        self
    }

    /// The branch (needs `repo`).
    pub fn branch(mut self, branch: impl Into<String>) -> Self {
        self.branch = Some(branch.into());
        self
    }

    /// The control plane's URL (http or https).
    pub fn control_plane_url(mut self, url: impl Into<String>) -> Self {
        self.control_plane_url = Some(url.into());
        self
    }

    /// The sandbox's token for the control plane (`SANDBOX_AUTH_TOKEN`).
    pub fn auth_token(mut self, token: impl Into<Secret>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// The LLM provider (`PROVIDER`).
    pub fn llm_provider(mut self, provider: impl Into<String>) -> Self {
        self.llm_provider = Some(provider.into());
        self
    }

    /// The LLM model (`MODEL`).
    pub fn llm_model(mut self, model: impl Into<String>) -> Self {
        self.llm_model = Some(model.into());
        self
    }

    /// An extra environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A secret environment variable (an API key): redacted everywhere but inside the sandbox.
    pub fn secret(mut self, key: impl Into<String>, value: impl Into<Secret>) -> Self {
        self.secrets.push((key.into(), value.into()));
        self
    }

    /// The image (default: the backend's configured image).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// All resource limits at once.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// CPU limit in millicores.
    pub fn cpu_millis(mut self, millis: u32) -> Self {
        self.resources.cpu_millis = Some(millis);
        self
    }

    /// Memory limit in bytes.
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.resources.memory_bytes = Some(bytes);
        self
    }

    /// Process-count limit.
    pub fn pids(mut self, pids: u32) -> Self {
        self.resources.pids = Some(pids);
        self
    }

    /// The network policy (default: [`NetworkPolicy::None`]).
    pub fn network(mut self, network: NetworkPolicy) -> Self {
        self.network = network;
        self
    }

    /// The working directory (default [`DEFAULT_WORKDIR`]).
    pub fn workdir(mut self, workdir: impl Into<String>) -> Self {
        self.workdir = Some(workdir.into());
        self
    }

    /// The warm-pool template key.
    pub fn template_key(mut self, key: impl Into<String>) -> Self {
        self.template_key = Some(key.into());
        self
    }

    /// Absolute lifetime (default [`DEFAULT_TIMEOUT`], at most [`MAX_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Idle timeout (at most the absolute timeout).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// A user label (Kubernetes label rules; the `sandbox.rs/` prefix is reserved).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Validates every field and builds the spec.
    pub fn build(self) -> Result<SandboxSpec> {
        let session_id = SessionId::new_for_field("session.session_id", self.session_id)?;
        let repo = match (self.repo, self.branch) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(Error::invalid_spec(
                    "session.repo.branch",
                    "a branch needs a repository (call .repo(owner, name))",
                ));
            }
            (Some((owner, name)), branch) => {
                validate::github_owner("session.repo.owner", &owner)?;
                validate::github_repo("session.repo.name", &name)?;
                if let Some(branch) = &branch {
                    validate::git_branch("session.repo.branch", branch)?;
                }
                Some(RepoRef {
                    owner,
                    name,
                    branch,
                })
            }
        };
        let control_plane_url = self
            .control_plane_url
            .map(|u| validate::http_url("session.control_plane_url", &u))
            .transpose()?;
        if let Some(token) = &self.auth_token {
            if token.is_empty() {
                return Err(Error::invalid_spec(
                    "session.auth_token",
                    "must not be empty",
                ));
            }
            validate::env_value("session.auth_token", token.expose()).map_err(|_| {
                Error::invalid_spec("session.auth_token", "must not contain a NUL byte")
            })?;
        }
        let llm_provider = llm_name(
            "session.llm_provider",
            self.llm_provider,
            DEFAULT_LLM_PROVIDER,
        )?;
        let llm_model = llm_name("session.llm_model", self.llm_model, DEFAULT_LLM_MODEL)?;

        let mut env = BTreeMap::new();
        for (k, v) in self.env {
            let field = format!("session.env[{k}]");
            check_user_env_key(&field, &k)?;
            validate::env_value(&field, &v)?;
            if env.insert(k, v).is_some() {
                return Err(Error::invalid_spec(field, "is set twice"));
            }
        }
        let mut secrets = BTreeMap::new();
        for (k, v) in self.secrets {
            let field = format!("session.secrets[{k}]");
            check_user_env_key(&field, &k)?;
            // Check the value without echoing it.
            if v.expose().contains('\0') || v.expose().len() > validate::ENV_VALUE_MAX_LEN {
                return Err(Error::invalid_spec(
                    field,
                    "value must be at most 128 KiB with no NUL byte",
                ));
            }
            if env.contains_key(&k) || secrets.insert(k, v).is_some() {
                return Err(Error::invalid_spec(field, "is set twice"));
            }
        }

        let template = SandboxTemplate {
            image: self.image,
            resources: self.resources,
            network: self.network,
            workdir: self.workdir.unwrap_or_else(|| DEFAULT_WORKDIR.to_string()),
        };
        template.validate()?;
        let template_key = self
            .template_key
            .map(|k| TemplateKey::new_for_field("template_key", k))
            .transpose()?;

        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        validate::duration_within("timeout", timeout, MIN_TIMEOUT, MAX_TIMEOUT)?;
        if let Some(idle) = self.idle_timeout {
            validate::duration_within("idle_timeout", idle, MIN_IDLE_TIMEOUT, timeout)?;
        }
        let labels = user_labels(self.labels)?;

        Ok(SandboxSpec {
            session: SessionSettings {
                session_id,
                repo,
                control_plane_url,
                auth_token: self.auth_token,
                llm_provider,
                llm_model,
                env,
                secrets,
            },
            template,
            template_key,
            timeout,
            idle_timeout: self.idle_timeout,
            labels,
        })
    }
}

fn llm_name(field: &str, value: Option<String>, default: &str) -> Result<String> {
    let value = value.unwrap_or_else(|| default.to_string());
    if value.is_empty() || value.len() > LLM_NAME_MAX_LEN {
        return Err(Error::invalid_spec(
            field,
            format!("must be 1 to {LLM_NAME_MAX_LEN} characters"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@')))
    {
        return Err(Error::invalid_spec(
            field,
            format!("allows letters, digits and `._-/:@`; found {c:?}"),
        ));
    }
    Ok(value)
}

fn check_user_env_key(field: &str, key: &str) -> Result<()> {
    validate::env_key(field, key)?;
    if RESERVED_ENV.contains(&key) {
        return Err(Error::invalid_spec(
            field,
            "is set by the library from the session settings; use the matching builder method",
        ));
    }
    Ok(())
}

fn user_labels(pairs: Vec<(String, String)>) -> Result<BTreeMap<String, String>> {
    if pairs.len() > MAX_LABELS {
        return Err(Error::invalid_spec(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    let mut labels = BTreeMap::new();
    for (k, v) in pairs {
        let field = format!("labels[{k}]");
        validate::label_key(&field, &k)?;
        if labels::is_reserved(&k) {
            return Err(Error::invalid_spec(
                field,
                format!(
                    "the `{}` prefix is reserved for the library",
                    labels::PREFIX
                ),
            ));
        }
        validate::label_value(&field, &v)?;
        if labels.insert(k, v).is_some() {
            return Err(Error::invalid_spec(field, "is set twice"));
        }
    }
    Ok(labels)
}

/// Asks a backend to keep `size` ready sandboxes of a template waiting, so that a `create`
/// with the same template key and template starts none.
#[derive(Debug, Clone)]
pub struct WarmSpec {
    template_key: TemplateKey,
    template: SandboxTemplate,
    size: u32,
    labels: BTreeMap<String, String>,
}

impl WarmSpec {
    /// Starts a builder for the pool `template_key`.
    pub fn builder(template_key: impl Into<String>) -> WarmSpecBuilder {
        WarmSpecBuilder {
            template_key: template_key.into(),
            size: 1,
            ..WarmSpecBuilder::default()
        }
    }

    /// A pool for the template of `spec` (which must have a template key).
    pub fn for_spec(spec: &SandboxSpec, size: u32) -> Result<Self> {
        let key = spec.template_key().cloned().ok_or_else(|| {
            Error::invalid_spec("template_key", "a warm pool needs a template key")
        })?;
        validate::number_within("size", size.into(), 0, MAX_POOL_SIZE.into(), "sandboxes")?;
        Ok(Self {
            template_key: key,
            template: spec.template().clone(),
            size,
            labels: spec.labels().clone(),
        })
    }

    /// The pool's key.
    pub fn template_key(&self) -> &TemplateKey {
        &self.template_key
    }

    /// The template its sandboxes are prepared with.
    pub fn template(&self) -> &SandboxTemplate {
        &self.template
    }

    /// How many ready sandboxes to keep (0 empties the pool).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// User labels of the pool's sandboxes.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// True when a `create` of `spec` can take a sandbox of this pool.
    pub fn matches(&self, spec: &SandboxSpec) -> bool {
        spec.template_key() == Some(&self.template_key) && spec.template() == &self.template
    }
}

/// Builder of [`WarmSpec`].
#[derive(Debug, Default, Clone)]
#[must_use = "call build() to get a WarmSpec"]
pub struct WarmSpecBuilder {
    template_key: String,
    image: Option<String>,
    resources: Resources,
    network: NetworkPolicy,
    workdir: Option<String>,
    size: u32,
    labels: Vec<(String, String)>,
}

impl WarmSpecBuilder {
    /// The image.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Resource limits.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Network policy.
    pub fn network(mut self, network: NetworkPolicy) -> Self {
        self.network = network;
        self
    }

    /// Working directory.
    pub fn workdir(mut self, workdir: impl Into<String>) -> Self {
        self.workdir = Some(workdir.into());
        self
    }

    /// How many ready sandboxes to keep (default 1, at most [`MAX_POOL_SIZE`]).
    pub fn size(mut self, size: u32) -> Self {
        self.size = size;
        self
    }

    /// A user label on the pool's sandboxes.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<WarmSpec> {
        let template_key = TemplateKey::new_for_field("template_key", self.template_key)?;
        let template = SandboxTemplate {
            image: self.image,
            resources: self.resources,
            network: self.network,
            workdir: self.workdir.unwrap_or_else(|| DEFAULT_WORKDIR.to_string()),
        };
        template.validate()?;
        validate::number_within(
            "size",
            self.size.into(),
            0,
            MAX_POOL_SIZE.into(),
            "sandboxes",
        )?;
        Ok(WarmSpec {
            template_key,
            template,
            size: self.size,
            labels: user_labels(self.labels)?,
        })
    }
}

/// Why a snapshot is taken (the seeds' reasons).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotReason {
    /// The agent finished a prompt.
    ExecutionComplete,
    /// The sandbox is about to reach its timeout.
    PreTimeout,
    /// The sandbox stopped sending heartbeats.
    HeartbeatTimeout,
    /// The session went idle.
    InactivityTimeout,
    /// Asked for explicitly.
    #[default]
    Manual,
}

impl SnapshotReason {
    /// The wire name (`execution_complete`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            SnapshotReason::ExecutionComplete => "execution_complete",
            SnapshotReason::PreTimeout => "pre_timeout",
            SnapshotReason::HeartbeatTimeout => "heartbeat_timeout",
            SnapshotReason::InactivityTimeout => "inactivity_timeout",
            SnapshotReason::Manual => "manual",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            SnapshotReason::ExecutionComplete,
            SnapshotReason::PreTimeout,
            SnapshotReason::HeartbeatTimeout,
            SnapshotReason::InactivityTimeout,
            SnapshotReason::Manual,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Options of `snapshot`: what to label the snapshot with so it can be found again.
/// Repo and branch default to the sandbox's own.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    repo: Option<RepoRef>,
    sha: Option<String>,
    reason: SnapshotReason,
    labels: BTreeMap<String, String>,
}

impl SnapshotOptions {
    /// No labels beyond the sandbox's own; reason `manual`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Labels the snapshot with a repository (and its branch).
    pub fn repo(mut self, repo: RepoRef) -> Self {
        self.repo = Some(repo);
        self
    }

    /// Labels the snapshot with a commit id (validated).
    pub fn sha(mut self, sha: impl Into<String>) -> Result<Self> {
        let sha = sha.into();
        validate::git_sha("snapshot.sha", &sha)?;
        self.sha = Some(sha);
        Ok(self)
    }

    /// Why the snapshot is taken.
    pub fn reason(mut self, reason: SnapshotReason) -> Self {
        self.reason = reason;
        self
    }

    /// Adds a user label (validated; `sandbox.rs/` is reserved).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        let mut pairs: Vec<_> = std::mem::take(&mut self.labels).into_iter().collect();
        pairs.push((key.into(), value.into()));
        self.labels = user_labels(pairs)?;
        Ok(self)
    }

    /// The repository label, if given.
    pub fn repo_ref(&self) -> Option<&RepoRef> {
        self.repo.as_ref()
    }

    /// The commit label, if given.
    pub fn sha_ref(&self) -> Option<&str> {
        self.sha.as_deref()
    }

    /// The reason.
    pub fn reason_kind(&self) -> SnapshotReason {
        self.reason
    }

    /// User labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
}

/// Which sandboxes `list` returns: live ones matching every given criterion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this session's sandbox.
    pub session_id: Option<SessionId>,
    /// Only sandboxes carrying every one of these user labels.
    pub labels: BTreeMap<String, String>,
    /// Also list unclaimed warm-pool sandboxes (default: only sandboxes serving a session).
    pub include_pool: bool,
}

impl ListFilter {
    /// Every live sandbox serving a session.
    pub fn all() -> Self {
        Self::default()
    }

    /// Adds a label criterion.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Restricts to one session.
    pub fn session(mut self, session_id: SessionId) -> Self {
        self.session_id = Some(session_id);
        self
    }

    /// True when a sandbox with these labels and session matches.
    pub fn matches(
        &self,
        session_id: Option<&SessionId>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        if self.session_id.is_some() && self.session_id.as_ref() != session_id {
            return false;
        }
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Which snapshots `list_snapshots` returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Repository owner.
    pub repo_owner: Option<String>,
    /// Repository name.
    pub repo_name: Option<String>,
    /// Branch.
    pub branch: Option<String>,
    /// Session the snapshot was taken in.
    pub session_id: Option<SessionId>,
    /// Snapshots taken of this sandbox.
    pub source: Option<SandboxId>,
    /// User labels that must all match.
    pub labels: BTreeMap<String, String>,
}

impl SnapshotFilter {
    /// Snapshots of one repository (any branch).
    pub fn repo(owner: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            repo_owner: Some(owner.into()),
            repo_name: Some(name.into()),
            ..Self::default()
        }
    }

    /// True when `snapshot` matches every criterion.
    pub fn matches(&self, snapshot: &crate::Snapshot) -> bool {
        let repo = snapshot.repo.as_ref();
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        eq(&self.repo_owner, repo.map(RepoRef::owner))
            && eq(&self.repo_name, repo.map(RepoRef::name))
            && eq(&self.branch, repo.and_then(RepoRef::branch))
            && self
                .session_id
                .as_ref()
                .is_none_or(|s| snapshot.session_id.as_ref() == Some(s))
            && self
                .source
                .as_ref()
                .is_none_or(|s| snapshot.source.as_ref() == Some(s))
            && self
                .labels
                .iter()
                .all(|(k, v)| snapshot.labels.get(k) == Some(v))
    }
}

/// Convenience: the id a restore may use for a snapshot it has only by id.
impl From<&SnapshotId> for crate::SnapshotRef {
    fn from(id: &SnapshotId) -> Self {
        crate::SnapshotRef { id: id.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<SandboxSpec>) -> String {
        match r {
            Err(Error::InvalidSpec { field, .. }) => field,
            Err(e) => panic!("expected InvalidSpec, got {e}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn minimal_spec_has_documented_defaults() {
        let spec = SandboxSpec::builder("s1").build().unwrap();
        assert_eq!(spec.timeout(), DEFAULT_TIMEOUT);
        assert_eq!(spec.idle_timeout(), None);
        assert_eq!(spec.template().workdir(), DEFAULT_WORKDIR);
        assert_eq!(spec.template().network(), &NetworkPolicy::None);
        assert_eq!(spec.session().llm_provider(), DEFAULT_LLM_PROVIDER);
        assert_eq!(spec.session().llm_model(), DEFAULT_LLM_MODEL);
    }

    #[test]
    fn each_field_is_validated_and_named() {
        let b = || SandboxSpec::builder("s1");
        let cases: Vec<(SandboxSpecBuilder, &str)> = vec![
            (SandboxSpec::builder("S1"), "session.session_id"),
            (SandboxSpec::builder("s;rm -rf /"), "session.session_id"),
            (SandboxSpec::builder(""), "session.session_id"),
            (b().repo("-bad", "r"), "session.repo.owner"),
            (b().repo("o", "r/x"), "session.repo.name"),
            (b().repo("o", "r").branch("a..b"), "session.repo.branch"),
            (b().branch("main"), "session.repo.branch"),
            (
                b().control_plane_url("ftp://x"),
                "session.control_plane_url",
            ),
            (
                b().control_plane_url("not a url"),
                "session.control_plane_url",
            ),
            (b().auth_token(""), "session.auth_token"),
            (b().llm_model("m; rm"), "session.llm_model"),
            (b().llm_provider(""), "session.llm_provider"),
            (b().env("1BAD", "v"), "session.env[1BAD]"),
            (b().env("SESSION_ID", "v"), "session.env[SESSION_ID]"),
            (b().env("A", "x\0y"), "session.env[A]"),
            (b().env("A", "1").env("A", "2"), "session.env[A]"),
            (b().env("A", "1").secret("A", "2"), "session.secrets[A]"),
            (b().secret("K-Y", "v"), "session.secrets[K-Y]"),
            (b().image("Bad Image"), "image"),
            (b().cpu_millis(1), "resources.cpu_millis"),
            (b().memory_bytes(1), "resources.memory_bytes"),
            (b().pids(0), "resources.pids"),
            (
                b().network(NetworkPolicy::AllowList(vec![])),
                "network.allow_list",
            ),
            (
                b().network(NetworkPolicy::AllowList(vec![EgressRule::host("bad host")])),
                "network.allow_list[0]",
            ),
            (
                b().network(NetworkPolicy::AllowList(vec![EgressRule::host_port(
                    "a.com", 0,
                )])),
                "network.allow_list[0]",
            ),
            (
                b().network(NetworkPolicy::AllowList(vec![EgressRule::host(
                    "10.0.0.0/33",
                )])),
                "network.allow_list[0]",
            ),
            (b().workdir("relative"), "workdir"),
            (b().workdir("/a/../etc"), "workdir"),
            (b().template_key("Bad_Key"), "template_key"),
            (b().timeout(Duration::ZERO), "timeout"),
            (b().timeout(MAX_TIMEOUT + Duration::from_secs(1)), "timeout"),
            (
                b().timeout(Duration::from_secs(10))
                    .idle_timeout(Duration::from_secs(11)),
                "idle_timeout",
            ),
            (b().label("sandbox.rs/x", "v"), "labels[sandbox.rs/x]"),
            (b().label("bad key", "v"), "labels[bad key]"),
            (b().label("k", "bad value"), "labels[k]"),
        ];
        for (builder, want) in cases {
            let dbg = format!("{builder:?}");
            assert_eq!(field(builder.build()), want, "{dbg}");
        }
    }

    #[test]
    fn secrets_are_never_in_debug_or_errors() {
        let spec = SandboxSpec::builder("s1")
            .auth_token("TOKEN-VALUE")
            .secret("API_KEY", "KEY-VALUE")
            .build()
            .unwrap();
        let dbg = format!("{spec:?}");
        assert!(
            !dbg.contains("TOKEN-VALUE") && !dbg.contains("KEY-VALUE"),
            "{dbg}"
        );
        let env = spec.environment(&SandboxId::new("sbx-1").unwrap(), false);
        let dbg = format!("{env:?}");
        assert!(
            !dbg.contains("TOKEN-VALUE") && !dbg.contains("KEY-VALUE"),
            "{dbg}"
        );
        assert_eq!(env.get("SANDBOX_AUTH_TOKEN"), Some("TOKEN-VALUE"));
        assert_eq!(env.get("API_KEY"), Some("KEY-VALUE"));

        let err = SandboxSpec::builder("s1")
            .secret("K", "SECRET\0VALUE")
            .build()
            .unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }

    #[test]
    fn environment_follows_the_seed_table() {
        let spec = SandboxSpec::builder("sess-9")
            .repo("octo", "hello")
            .branch("feat/x")
            .control_plane_url("https://cp.example.com")
            .auth_token("tok")
            .llm_model("claude-sonnet-4-5")
            .env("EXTRA", "1")
            .build()
            .unwrap();
        let id = SandboxId::new("sbx-abc").unwrap();
        let env = spec.environment(&id, true);
        assert_eq!(env.get("SESSION_ID"), Some("sess-9"));
        assert_eq!(env.get("SANDBOX_ID"), Some("sbx-abc"));
        assert_eq!(env.get("REPO_OWNER"), Some("octo"));
        assert_eq!(env.get("REPO_NAME"), Some("hello"));
        assert_eq!(env.get("REPO_BRANCH"), Some("feat/x"));
        assert_eq!(
            env.get("CONTROL_PLANE_URL"),
            Some("https://cp.example.com/")
        );
        assert_eq!(env.get("PROVIDER"), Some("anthropic"));
        assert_eq!(env.get("MODEL"), Some("claude-sonnet-4-5"));
        assert_eq!(env.get("RESTORED_FROM_SNAPSHOT"), Some("true"));
        assert_eq!(env.get("EXTRA"), Some("1"));
        let cfg: serde_json::Value =
            serde_json::from_str(env.get("SESSION_CONFIG").unwrap()).unwrap();
        assert_eq!(cfg["session_id"], "sess-9");
        assert_eq!(cfg["repo_owner"], "octo");
        assert_eq!(cfg["branch"], "feat/x");
        assert_eq!(cfg["model"], "claude-sonnet-4-5");
        assert!(
            spec.environment(&id, false)
                .get("RESTORED_FROM_SNAPSHOT")
                .is_none()
        );
    }

    #[test]
    fn warm_specs_match_on_key_and_template() {
        let warm = WarmSpec::builder("py")
            .size(2)
            .memory_bytes_for_test(64 << 20)
            .build()
            .unwrap();
        let hit = SandboxSpec::builder("s1")
            .template_key("py")
            .memory_bytes(64 << 20)
            .build()
            .unwrap();
        assert!(warm.matches(&hit));
        let other_key = SandboxSpec::builder("s1")
            .template_key("js")
            .memory_bytes(64 << 20)
            .build()
            .unwrap();
        assert!(!warm.matches(&other_key));
        let other_template = SandboxSpec::builder("s1")
            .template_key("py")
            .build()
            .unwrap();
        assert!(!warm.matches(&other_template));
        assert!(
            WarmSpec::builder("py")
                .size(MAX_POOL_SIZE + 1)
                .build()
                .is_err()
        );
        assert!(WarmSpec::builder("Py").build().is_err());
        let from_spec = WarmSpec::for_spec(&hit, 3).unwrap();
        assert!(from_spec.matches(&hit));
        assert!(WarmSpec::for_spec(&SandboxSpec::builder("s").build().unwrap(), 1).is_err());
    }

    impl WarmSpecBuilder {
        fn memory_bytes_for_test(mut self, bytes: u64) -> Self {
            self.resources.memory_bytes = Some(bytes);
            self
        }
    }

    #[test]
    fn snapshot_options_validate() {
        assert!(SnapshotOptions::new().sha("abc1234").is_ok());
        assert!(SnapshotOptions::new().sha("xyz").is_err());
        assert!(SnapshotOptions::new().label("sandbox.rs/a", "b").is_err());
        let o = SnapshotOptions::new()
            .label("a", "b")
            .unwrap()
            .label("c", "d")
            .unwrap();
        assert_eq!(o.labels().len(), 2);
        assert_eq!(
            SnapshotReason::parse("pre_timeout"),
            Some(SnapshotReason::PreTimeout)
        );
        assert_eq!(SnapshotReason::parse("x"), None);
    }

    #[test]
    fn repo_ref_deserializes_with_validation() {
        let r: RepoRef =
            serde_json::from_str(r#"{"owner":"o","name":"r","branch":"main"}"#).unwrap();
        assert_eq!(r.branch(), Some("main"));
        assert!(
            serde_json::from_str::<RepoRef>(r#"{"owner":"o","name":"r","branch":"a..b"}"#).is_err()
        );
        assert!(serde_json::from_str::<RepoRef>(r#"{"owner":"o","name":"r","x":1}"#).is_err());
    }
}
