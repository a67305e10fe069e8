//! Docker <-> core types: names, labels, states, the session file of warm sandboxes.
//!
//! # Labels
//! Every container, claim volume and snapshot image carries the keys of
//! [`sandbox_core::labels`], each one always set (an empty value means "none"), because Docker
//! copies a committed container's labels into its image and an image's labels into the
//! containers made from it: a key this library did not set explicitly would be inherited. User
//! labels are stored as `sandbox.rs/label.<key>` and listed in [`LABEL_KEYS`], so inherited
//! user labels of a snapshot's source are never taken for the new sandbox's own.
//! Times are stored twice: in Unix seconds under the core keys (rounded up for expiry, so a
//! reaper reading them is never early) and in milliseconds under the `sandbox.rs/docker.`
//! keys this backend reads.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use sandbox_core::labels as core;
use sandbox_core::{
    BackendKind, RepoRef, Result, Sandbox, SandboxId, SandboxOrigin, SandboxStatus, SessionId,
    Snapshot, SnapshotId, SnapshotReason, TemplateKey, TerminationReason,
};

use crate::error::DockerError;

/// What a labelled Docker resource is.
pub(crate) const KIND_LABEL: &str = "sandbox.rs/docker.kind";
/// Comma-separated keys of the user labels of a resource.
pub(crate) const LABEL_KEYS: &str = "sandbox.rs/docker.label-keys";
/// Creation time in Unix milliseconds.
pub(crate) const CREATED_AT_MS: &str = "sandbox.rs/docker.created-at-ms";
/// Expiry time in Unix milliseconds.
pub(crate) const EXPIRES_AT_MS: &str = "sandbox.rs/docker.expires-at-ms";
/// The template (JSON) a warm-pool container was prepared with.
pub(crate) const TEMPLATE_SPEC: &str = "sandbox.rs/docker.template-spec";

/// Name prefix of the container serving a session: the daemon refuses a second container of
/// that name, which makes `create` idempotent by session id across processes.
pub(crate) const SESSION_PREFIX: &str = "sandbox-session-";
/// Name prefix of an unclaimed warm-pool container.
pub(crate) const POOL_PREFIX: &str = "sandbox-pool-";
/// Name prefix of the volume recording the claim of a warm-pool container.
pub(crate) const CLAIM_PREFIX: &str = "sandbox-claim-";
/// The image repository snapshots are tagged in (`sandbox-snapshot:<snapshot id>`).
pub const SNAPSHOT_REPOSITORY: &str = "sandbox-snapshot";

/// Directory (an anonymous volume, so never part of a snapshot) of a warm-pool container that
/// receives the session settings when it is claimed.
pub(crate) const SESSION_DIR: &str = "/run/sandbox";
/// The session settings file of a claimed warm-pool container.
pub(crate) const SESSION_FILE: &str = "/run/sandbox/session.env";
/// First record of the session file: its format.
pub(crate) const SESSION_FILE_MAGIC: &str = "sandbox-session-env-v1";

pub(crate) fn session_container_name(session: &SessionId) -> String {
    format!("{SESSION_PREFIX}{session}")
}

pub(crate) fn pool_container_name(id: &SandboxId) -> String {
    format!("{POOL_PREFIX}{id}")
}

pub(crate) fn claim_volume_name(id: &SandboxId) -> String {
    format!("{CLAIM_PREFIX}{id}")
}

pub(crate) fn snapshot_image(id: &SnapshotId) -> String {
    format!("{SNAPSHOT_REPOSITORY}:{id}")
}

/// The session a container name serves, if it is a session container's name.
pub(crate) fn session_of_name(name: &str) -> Option<SessionId> {
    SessionId::new(name.trim_start_matches('/').strip_prefix(SESSION_PREFIX)?).ok()
}

/// The kind of a labelled resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A container made for a session (cold create or restore).
    Sandbox,
    /// A container made for a warm pool (claimed or not).
    Pool,
    /// A volume recording a warm-pool claim.
    Claim,
    /// A snapshot image.
    Snapshot,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Sandbox => "sandbox",
            Kind::Pool => "pool",
            Kind::Claim => "claim",
            Kind::Snapshot => "snapshot",
        }
    }

    pub(crate) fn of(labels: &HashMap<String, String>) -> Option<Kind> {
        match labels.get(KIND_LABEL).map(String::as_str) {
            Some("sandbox") => Some(Kind::Sandbox),
            Some("pool") => Some(Kind::Pool),
            Some("claim") => Some(Kind::Claim),
            Some("snapshot") => Some(Kind::Snapshot),
            _ => None,
        }
    }

    /// The docker `label=` filter selecting this kind.
    pub(crate) fn filter(self) -> String {
        format!("{KIND_LABEL}={}", self.as_str())
    }
}

/// The docker `label=` filter selecting everything of this library.
pub(crate) fn managed_filter() -> String {
    format!("{}={}", core::MANAGED_BY, core::MANAGED_BY_VALUE)
}

/// Milliseconds since the epoch.
pub(crate) fn millis(t: SystemTime) -> u64 {
    sandbox_core::time::unix_millis(t)
}

fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// Label map under construction, with the rule "every key always set".
struct Writer(HashMap<String, String>);

impl Writer {
    fn new(kind: Kind) -> Self {
        let mut map = HashMap::new();
        map.insert(
            core::MANAGED_BY.to_string(),
            core::MANAGED_BY_VALUE.to_string(),
        );
        map.insert(KIND_LABEL.to_string(), kind.as_str().to_string());
        Self(map)
    }

    fn set(&mut self, key: &str, value: impl Into<String>) {
        self.0.insert(key.to_string(), value.into());
    }

    fn opt(&mut self, key: &str, value: Option<&str>) {
        self.set(key, value.unwrap_or_default());
    }

    fn times(&mut self, created: SystemTime, expires: Option<SystemTime>) {
        self.set(
            core::CREATED_AT,
            sandbox_core::time::unix_seconds(created).to_string(),
        );
        self.set(CREATED_AT_MS, millis(created).to_string());
        match expires {
            Some(exp) => {
                let ms = millis(exp);
                self.set(core::EXPIRES_AT, ms.div_ceil(1000).to_string());
                self.set(EXPIRES_AT_MS, ms.to_string());
            }
            None => {
                self.set(core::EXPIRES_AT, "");
                self.set(EXPIRES_AT_MS, "");
            }
        }
    }

    fn repo(&mut self, repo: Option<&RepoRef>) {
        self.opt(core::REPO_OWNER, repo.map(RepoRef::owner));
        self.opt(core::REPO_NAME, repo.map(RepoRef::name));
        self.opt(core::REPO_BRANCH, repo.and_then(RepoRef::branch));
    }

    fn user_labels(&mut self, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.set(&format!("{}{k}", core::USER_LABEL_PREFIX), v.clone());
        }
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        self.set(LABEL_KEYS, keys.join(","));
    }
}

/// Reads labels of one resource; errors name the resource and the key.
struct Reader<'a> {
    resource: &'a str,
    map: &'a HashMap<String, String>,
}

impl<'a> Reader<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.map
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn bad(&self, key: &'static str) -> sandbox_core::Error {
        DockerError::BadLabel {
            resource: self.resource.to_string(),
            key,
            value: self.map.get(key).cloned().unwrap_or_default(),
        }
        .into_error()
    }

    fn parse<T>(&self, key: &'static str, f: impl Fn(&str) -> Option<T>) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| self.bad(key)),
        }
    }

    fn required<T>(&self, key: &'static str, f: impl Fn(&str) -> Option<T>) -> Result<T> {
        self.parse(key, f)?.ok_or_else(|| self.bad(key))
    }

    fn time_ms(&self, key: &'static str) -> Result<Option<SystemTime>> {
        self.parse(key, |v| v.parse::<u64>().ok().map(from_millis))
    }

    fn repo(&self) -> Result<Option<RepoRef>> {
        let (Some(owner), Some(name)) = (self.get(core::REPO_OWNER), self.get(core::REPO_NAME))
        else {
            return Ok(None);
        };
        let repo = RepoRef::new(owner, name).map_err(|_| self.bad(core::REPO_NAME))?;
        match self.get(core::REPO_BRANCH) {
            Some(branch) => repo
                .with_branch(branch)
                .map(Some)
                .map_err(|_| self.bad(core::REPO_BRANCH)),
            None => Ok(Some(repo)),
        }
    }

    fn user_labels(&self) -> BTreeMap<String, String> {
        let Some(keys) = self.get(LABEL_KEYS) else {
            return BTreeMap::new();
        };
        keys.split(',')
            .filter_map(|k| {
                let v = self.map.get(&format!("{}{k}", core::USER_LABEL_PREFIX))?;
                Some((k.to_string(), v.clone()))
            })
            .collect()
    }
}

/// What every container of this library records about itself at creation (immutable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerMeta {
    pub kind: Kind,
    pub sandbox_id: SandboxId,
    /// The session of a `Sandbox` container (pool containers have none in their labels).
    pub session_id: Option<SessionId>,
    pub template_key: Option<TemplateKey>,
    pub created_at: SystemTime,
    pub expires_at: Option<SystemTime>,
    pub snapshot_id: Option<SnapshotId>,
    pub repo: Option<RepoRef>,
    pub labels: BTreeMap<String, String>,
    /// The template (JSON) a pool container was made for.
    pub template_spec: Option<String>,
}

impl ContainerMeta {
    pub(crate) fn to_labels(&self) -> HashMap<String, String> {
        let mut w = Writer::new(self.kind);
        w.set(core::SANDBOX_ID, self.sandbox_id.as_str());
        w.opt(
            core::SESSION_ID,
            self.session_id.as_ref().map(SessionId::as_str),
        );
        w.opt(
            core::TEMPLATE,
            self.template_key.as_ref().map(TemplateKey::as_str),
        );
        w.set(
            core::POOL,
            if self.kind == Kind::Pool {
                "true"
            } else {
                "false"
            },
        );
        w.times(self.created_at, self.expires_at);
        w.opt(
            core::SNAPSHOT_ID,
            self.snapshot_id.as_ref().map(SnapshotId::as_str),
        );
        w.repo(self.repo.as_ref());
        // Keys only snapshots use: set empty so a restored container never shows its image's.
        w.set(core::REPO_SHA, "");
        w.set(core::SNAPSHOT_REASON, "");
        w.user_labels(&self.labels);
        w.opt(TEMPLATE_SPEC, self.template_spec.as_deref());
        w.0
    }

    /// Parses the labels of container `resource`; `None` when it is not a container of this
    /// library.
    pub(crate) fn from_labels(
        resource: &str,
        map: &HashMap<String, String>,
    ) -> Result<Option<Self>> {
        let kind = match Kind::of(map) {
            Some(k @ (Kind::Sandbox | Kind::Pool)) => k,
            _ => return Ok(None),
        };
        let r = Reader { resource, map };
        Ok(Some(Self {
            kind,
            sandbox_id: r.required(core::SANDBOX_ID, |v| SandboxId::new(v).ok())?,
            session_id: r.parse(core::SESSION_ID, |v| SessionId::new(v).ok())?,
            template_key: r.parse(core::TEMPLATE, |v| TemplateKey::new(v).ok())?,
            created_at: r
                .time_ms(CREATED_AT_MS)?
                .ok_or_else(|| r.bad(CREATED_AT_MS))?,
            expires_at: r.time_ms(EXPIRES_AT_MS)?,
            snapshot_id: r.parse(core::SNAPSHOT_ID, |v| SnapshotId::new(v).ok())?,
            repo: r.repo()?,
            labels: r.user_labels(),
            template_spec: r.get(TEMPLATE_SPEC).map(str::to_string),
        }))
    }
}

/// The record of a claim of a warm-pool container: a labelled volume, since a container's
/// labels cannot change after creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimMeta {
    pub sandbox_id: SandboxId,
    pub session_id: SessionId,
    pub template_key: Option<TemplateKey>,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    pub repo: Option<RepoRef>,
    pub labels: BTreeMap<String, String>,
}

impl ClaimMeta {
    pub(crate) fn to_labels(&self) -> HashMap<String, String> {
        let mut w = Writer::new(Kind::Claim);
        w.set(core::SANDBOX_ID, self.sandbox_id.as_str());
        w.set(core::SESSION_ID, self.session_id.as_str());
        w.opt(
            core::TEMPLATE,
            self.template_key.as_ref().map(TemplateKey::as_str),
        );
        w.times(self.created_at, Some(self.expires_at));
        w.repo(self.repo.as_ref());
        w.user_labels(&self.labels);
        w.0
    }

    pub(crate) fn from_labels(
        resource: &str,
        map: &HashMap<String, String>,
    ) -> Result<Option<Self>> {
        if Kind::of(map) != Some(Kind::Claim) {
            return Ok(None);
        }
        let r = Reader { resource, map };
        Ok(Some(Self {
            sandbox_id: r.required(core::SANDBOX_ID, |v| SandboxId::new(v).ok())?,
            session_id: r.required(core::SESSION_ID, |v| SessionId::new(v).ok())?,
            template_key: r.parse(core::TEMPLATE, |v| TemplateKey::new(v).ok())?,
            created_at: r
                .time_ms(CREATED_AT_MS)?
                .ok_or_else(|| r.bad(CREATED_AT_MS))?,
            expires_at: r
                .time_ms(EXPIRES_AT_MS)?
                .ok_or_else(|| r.bad(EXPIRES_AT_MS))?,
            repo: r.repo()?,
            labels: r.user_labels(),
        }))
    }
}

/// Labels of a snapshot image.
pub(crate) fn snapshot_labels(s: &Snapshot) -> HashMap<String, String> {
    let mut w = Writer::new(Kind::Snapshot);
    w.set(core::SNAPSHOT_ID, s.id.as_str());
    w.opt(core::SANDBOX_ID, s.source.as_ref().map(SandboxId::as_str));
    w.opt(
        core::SESSION_ID,
        s.session_id.as_ref().map(SessionId::as_str),
    );
    w.repo(s.repo.as_ref());
    w.opt(core::REPO_SHA, s.sha.as_deref());
    w.set(core::SNAPSHOT_REASON, s.reason.as_str());
    w.times(s.created_at, None);
    // Keys of the source container that mean nothing on an image.
    w.set(core::TEMPLATE, "");
    w.set(core::POOL, "false");
    w.set(TEMPLATE_SPEC, "");
    w.user_labels(&s.labels);
    w.0
}

/// Parses a snapshot image's labels; `None` when it is not a snapshot of this library.
pub(crate) fn snapshot_from_labels(
    resource: &str,
    map: &HashMap<String, String>,
    size_bytes: Option<u64>,
) -> Result<Option<Snapshot>> {
    if Kind::of(map) != Some(Kind::Snapshot) {
        return Ok(None);
    }
    let r = Reader { resource, map };
    let id = r.required(core::SNAPSHOT_ID, |v| SnapshotId::new(v).ok())?;
    let created = r
        .time_ms(CREATED_AT_MS)?
        .ok_or_else(|| r.bad(CREATED_AT_MS))?;
    let mut s = Snapshot::new(id, BackendKind::Docker, created);
    s.source = r.parse(core::SANDBOX_ID, |v| SandboxId::new(v).ok())?;
    s.session_id = r.parse(core::SESSION_ID, |v| SessionId::new(v).ok())?;
    s.repo = r.repo()?;
    s.sha = r.get(core::REPO_SHA).map(str::to_string);
    s.reason = r
        .parse(core::SNAPSHOT_REASON, SnapshotReason::parse)?
        .unwrap_or_default();
    s.labels = r.user_labels();
    s.size_bytes = size_bytes;
    Ok(Some(s))
}

/// The daemon's state of a container, reduced to what the library distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl State {
    pub(crate) fn from_summary(s: Option<bollard::models::ContainerSummaryStateEnum>) -> Self {
        use bollard::models::ContainerSummaryStateEnum as S;
        match s {
            Some(S::RUNNING) => State::Running,
            Some(S::PAUSED) => State::Paused,
            Some(S::RESTARTING) => State::Restarting,
            Some(S::REMOVING | S::STOPPING) => State::Removing,
            Some(S::EXITED) => State::Exited,
            Some(S::DEAD) => State::Dead,
            Some(S::CREATED | S::EMPTY) | None => State::Created,
        }
    }

    /// True when the container still holds resources.
    pub(crate) fn is_live(self) -> bool {
        matches!(
            self,
            State::Created | State::Running | State::Paused | State::Restarting
        )
    }

    /// The sandbox status; `expired` says whether its expiry has passed.
    pub(crate) fn status(self, expired: bool) -> SandboxStatus {
        match self {
            State::Created | State::Restarting => SandboxStatus::Starting,
            State::Running => SandboxStatus::Running,
            State::Paused => SandboxStatus::Paused,
            State::Removing => SandboxStatus::Stopping,
            State::Exited | State::Dead => SandboxStatus::Terminated {
                reason: Some(if expired {
                    TerminationReason::Expired
                } else {
                    TerminationReason::External
                }),
            },
        }
    }
}

/// One container of this library as the daemon lists it, with its claim when it has one.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub container_id: String,
    pub name: String,
    pub image: Option<String>,
    pub state: State,
    pub meta: ContainerMeta,
    pub claim: Option<ClaimMeta>,
}

impl Listed {
    /// A pool container renamed to a session name: taken from the pool.
    pub(crate) fn is_claimed(&self) -> bool {
        self.meta.kind == Kind::Pool
            && self
                .name
                .trim_start_matches('/')
                .starts_with(SESSION_PREFIX)
    }

    /// Waiting in a pool, unclaimed (and nobody is claiming it).
    pub(crate) fn is_idle_in_pool(&self) -> bool {
        self.meta.kind == Kind::Pool && !self.is_claimed() && self.claim.is_none()
    }

    /// The session the sandbox serves.
    pub(crate) fn session_id(&self) -> Option<SessionId> {
        match self.meta.kind {
            Kind::Pool if self.is_claimed() => self
                .claim
                .as_ref()
                .map(|c| c.session_id.clone())
                .or_else(|| session_of_name(&self.name)),
            _ => self.meta.session_id.clone(),
        }
    }

    /// When the sandbox expires: a claim's expiry replaces the pool container's.
    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        match &self.claim {
            Some(c) if self.is_claimed() => Some(c.expires_at),
            _ => self.meta.expires_at,
        }
    }

    pub(crate) fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|e| e <= now)
    }

    pub(crate) fn sandbox(&self, now: SystemTime) -> Sandbox {
        let claim = self.claim.as_ref().filter(|_| self.is_claimed());
        let created = claim.map_or(self.meta.created_at, |c| c.created_at);
        let mut sb = Sandbox::new(
            self.meta.sandbox_id.clone(),
            BackendKind::Docker,
            self.state.status(self.is_expired(now)),
            created,
        );
        sb.session_id = self.session_id();
        sb.labels = claim.map_or_else(|| self.meta.labels.clone(), |c| c.labels.clone());
        sb.template_key = self.meta.template_key.clone();
        sb.image = self.image.clone();
        sb.origin = match (&self.meta.kind, &self.meta.snapshot_id) {
            (Kind::Pool, _) => SandboxOrigin::WarmPool,
            (_, Some(snapshot_id)) => SandboxOrigin::Snapshot {
                snapshot_id: snapshot_id.clone(),
            },
            _ => SandboxOrigin::Cold,
        };
        sb.expires_at = self.expires_at();
        sb.provider_id = Some(self.container_id.clone());
        sb
    }
}

/// Encodes a session environment (`KEY=value` strings) as the session file: NUL-separated
/// records after a format record, so that values may hold any byte but NUL (which env values
/// cannot hold).
pub(crate) fn encode_session_file(env: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + env.iter().map(|e| e.len() + 1).sum::<usize>());
    out.extend_from_slice(SESSION_FILE_MAGIC.as_bytes());
    out.push(0);
    for var in env {
        out.extend_from_slice(var.as_bytes());
        out.push(0);
    }
    out
}

/// Decodes a session file; `None` when it is not one.
pub(crate) fn decode_session_file(bytes: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut records = text.split_terminator('\0');
    if records.next()? != SESSION_FILE_MAGIC {
        return None;
    }
    records
        .map(|r| r.contains('=').then(|| r.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: Kind) -> ContainerMeta {
        ContainerMeta {
            kind,
            sandbox_id: SandboxId::new("sbx-a").unwrap(),
            session_id: (kind == Kind::Sandbox).then(|| SessionId::new("sess-1").unwrap()),
            template_key: Some(TemplateKey::new("py").unwrap()),
            created_at: from_millis(1_700_000_000_123),
            expires_at: Some(from_millis(1_700_000_002_123)),
            snapshot_id: None,
            repo: Some(
                RepoRef::new("octo", "repo")
                    .unwrap()
                    .with_branch("feat/x")
                    .unwrap(),
            ),
            labels: BTreeMap::from([
                ("team".into(), "infra".into()),
                ("empty".into(), String::new()),
            ]),
            template_spec: None,
        }
    }

    #[test]
    fn container_labels_round_trip_and_set_every_key() {
        for kind in [Kind::Sandbox, Kind::Pool] {
            let m = meta(kind);
            let labels = m.to_labels();
            for key in [
                core::MANAGED_BY,
                core::SANDBOX_ID,
                core::SESSION_ID,
                core::TEMPLATE,
                core::POOL,
                core::EXPIRES_AT,
                core::CREATED_AT,
                core::SNAPSHOT_ID,
                core::REPO_OWNER,
                core::REPO_NAME,
                core::REPO_BRANCH,
                core::REPO_SHA,
                core::SNAPSHOT_REASON,
            ] {
                assert!(labels.contains_key(key), "{key} missing for {kind:?}");
            }
            assert_eq!(labels[core::EXPIRES_AT], "1700000003", "rounded up");
            assert_eq!(labels["sandbox.rs/label.team"], "infra");
            let back = ContainerMeta::from_labels("c", &labels).unwrap().unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn inherited_user_labels_are_ignored() {
        let mut labels = meta(Kind::Sandbox).to_labels();
        // A label the image carried from the snapshot's source container.
        labels.insert("sandbox.rs/label.stale".into(), "x".into());
        let back = ContainerMeta::from_labels("c", &labels).unwrap().unwrap();
        assert!(!back.labels.contains_key("stale"));
    }

    #[test]
    fn foreign_and_broken_labels() {
        assert!(
            ContainerMeta::from_labels("c", &HashMap::new())
                .unwrap()
                .is_none()
        );
        let mut labels = meta(Kind::Sandbox).to_labels();
        labels.insert(core::SANDBOX_ID.into(), "../bad".into());
        let err = ContainerMeta::from_labels("container abc", &labels).unwrap_err();
        assert!(err.to_string().contains(core::SANDBOX_ID), "{err}");
        assert!(err.to_string().contains("container abc"), "{err}");
    }

    #[test]
    fn claims_and_snapshots_round_trip() {
        let claim = ClaimMeta {
            sandbox_id: SandboxId::new("sbx-a").unwrap(),
            session_id: SessionId::new("s-2").unwrap(),
            template_key: None,
            created_at: from_millis(5_000),
            expires_at: from_millis(9_000),
            repo: None,
            labels: BTreeMap::from([("k".into(), "v".into())]),
        };
        let back = ClaimMeta::from_labels("v", &claim.to_labels())
            .unwrap()
            .unwrap();
        assert_eq!(back, claim);

        let mut s = Snapshot::new(
            SnapshotId::new("snap-1").unwrap(),
            BackendKind::Docker,
            from_millis(7_000),
        );
        s.sha = Some("abc1234".into());
        s.reason = SnapshotReason::PreTimeout;
        s.repo = Some(RepoRef::new("o", "r").unwrap());
        s.labels = BTreeMap::from([("k".into(), "v".into())]);
        let back = snapshot_from_labels("img", &snapshot_labels(&s), None)
            .unwrap()
            .unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn names_carry_the_session() {
        let s = SessionId::new("sess-9").unwrap();
        assert_eq!(
            session_of_name(&format!("/{}", session_container_name(&s))),
            Some(s)
        );
        assert_eq!(session_of_name("/sandbox-pool-sbx-1"), None);
    }

    #[test]
    fn session_file_round_trips_any_value_but_nul() {
        let env = vec![
            "A=1".to_string(),
            "B=line\nbreak=x $(y)".to_string(),
            "C=".to_string(),
        ];
        let bytes = encode_session_file(&env);
        assert_eq!(decode_session_file(&bytes).unwrap(), env);
        assert!(decode_session_file(b"garbage\0A=1\0").is_none());
    }

    #[test]
    fn states_map_to_statuses() {
        assert_eq!(State::Running.status(false), SandboxStatus::Running);
        assert_eq!(
            State::Exited.status(true),
            SandboxStatus::Terminated {
                reason: Some(TerminationReason::Expired)
            }
        );
        assert_eq!(
            State::Dead.status(false),
            SandboxStatus::Terminated {
                reason: Some(TerminationReason::External)
            }
        );
        assert!(!State::Exited.is_live());
    }
}
