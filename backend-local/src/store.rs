//! The backend's state on disk: everything `status`, `list` and the reaper need lives here, so
//! a second `LocalBackend` on the same root (a restarted control plane) sees the same
//! sandboxes.
//!
//! ```text
//! <root>/lock                       flock(2)ed around session claims (across processes)
//! <root>/sandboxes/<id>/meta.json   Meta (written atomically: temp file + rename)
//! <root>/sandboxes/<id>/env.json    the sandbox's environment, secrets included (mode 0600)
//! <root>/sandboxes/<id>/workspace/  bound read-write at the workdir
//! <root>/sandboxes/<id>/tmp/        bound at /tmp
//! <root>/sandboxes/<id>/procs/<n>   "<pid> <start time>" of each running command
//! <root>/sandboxes/<id>/activity    its mtime is the last exec activity (idle timeout)
//! <root>/sessions/<session id>      the sandbox id serving the session (created O_EXCL)
//! <root>/pools/<template key>.json  the size and template a warm pool is kept at
//! <root>/snapshots/<id>.tar, .json  snapshot archives and their metadata
//! ```
//! Every directory is mode 0700.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use sandbox_core::time::{from_unix_seconds, unix_millis};
use sandbox_core::{
    RepoRef, Result, Sandbox, SandboxId, SandboxOrigin, SandboxStatus, SessionId, TemplateKey,
};

use crate::error::{KIND, LocalError, io};

/// The lifecycle state recorded for a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    Starting,
    Running,
    Stopping,
}

/// Everything known about a sandbox, persisted as `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub id: SandboxId,
    pub session_id: Option<SessionId>,
    pub labels: BTreeMap<String, String>,
    pub template_key: Option<TemplateKey>,
    /// The `SandboxTemplate` as JSON: a pool member serves a spec whose template serializes
    /// the same.
    pub template: String,
    pub workdir: String,
    pub network_full: bool,
    pub state: State,
    pub origin: SandboxOrigin,
    pub repo: Option<RepoRef>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub idle_timeout_ms: Option<u64>,
}

impl Meta {
    /// True for an unclaimed warm-pool sandbox.
    pub fn is_pool(&self) -> bool {
        self.session_id.is_none()
    }

    /// When the absolute timeout ends it.
    pub fn expires_at(&self) -> SystemTime {
        from_millis(self.expires_at_ms)
    }

    /// True when its absolute timeout has passed.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        unix_millis(now) >= self.expires_at_ms
    }

    /// As the library's type.
    pub fn to_sandbox(&self) -> Sandbox {
        let status = match self.state {
            State::Starting => SandboxStatus::Starting,
            State::Running => SandboxStatus::Running,
            State::Stopping => SandboxStatus::Stopping,
        };
        let mut sb = Sandbox::new(
            self.id.clone(),
            KIND,
            status,
            from_millis(self.created_at_ms),
        );
        sb.session_id = self.session_id.clone();
        sb.labels = self.labels.clone();
        sb.template_key = self.template_key.clone();
        sb.origin = self.origin.clone();
        sb.expires_at = Some(self.expires_at());
        sb
    }
}

/// A warm pool's definition, persisted so refills (and other instances) know its target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PoolDef {
    pub template_key: TemplateKey,
    pub template: String,
    pub workdir: String,
    pub network_full: bool,
    pub labels: BTreeMap<String, String>,
    pub size: u32,
}

pub(crate) fn from_millis(ms: u64) -> SystemTime {
    from_unix_seconds(0) + Duration::from_millis(ms)
}

/// Paths and file operations of the state directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    root: PathBuf,
}

/// Held while a session claim is decided; dropping it releases the lock.
pub(crate) struct StoreLock {
    _file: std::fs::File,
}

impl Store {
    /// Opens (creating) the state directory.
    pub fn open(root: PathBuf) -> Result<Self> {
        let store = Self { root };
        for dir in ["sandboxes", "sessions", "pools", "snapshots"] {
            mkdir_all(&store.root.join(dir))?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.root.join("sandboxes").join(id.as_str())
    }

    pub fn workspace(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("workspace")
    }

    pub fn tmp_dir(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("tmp")
    }

    pub fn procs_dir(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("procs")
    }

    fn meta_path(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("meta.json")
    }

    fn env_path(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("env.json")
    }

    fn activity_path(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("activity")
    }

    fn session_path(&self, session: &SessionId) -> PathBuf {
        self.root.join("sessions").join(session.as_str())
    }

    fn pool_path(&self, key: &TemplateKey) -> PathBuf {
        self.root.join("pools").join(format!("{key}.json"))
    }

    pub fn snapshot_archive(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(format!("{id}.tar"))
    }

    pub fn snapshot_meta(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(format!("{id}.json"))
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Takes the store-wide lock (flock(2) on `<root>/lock`), blocking on a thread.
    pub async fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join("lock");
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io("open lock file", &path, e))?;
            file.lock().map_err(|e| io("lock", &path, e))?;
            Ok(StoreLock { _file: file })
        })
        .await
        .map_err(|e| sandbox_core::Error::backend_with_source(KIND, "lock task failed", e))?
    }

    /// Makes the directories of a new sandbox.
    pub fn create_sandbox_dirs(&self, id: &SandboxId) -> Result<()> {
        let dir = self.sandbox_dir(id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io("create sandbox directory", &dir, e))?;
        for sub in [self.workspace(id), self.tmp_dir(id), self.procs_dir(id)] {
            mkdir_all(&sub)?;
        }
        Ok(())
    }

    /// The sandbox's metadata; `None` when it does not exist (or is being removed).
    pub fn read_meta(&self, id: &SandboxId) -> Result<Option<Meta>> {
        read_json(&self.meta_path(id))
    }

    pub fn write_meta(&self, meta: &Meta) -> Result<()> {
        write_json(&self.meta_path(&meta.id), meta, 0o600)
    }

    /// The sandbox's environment (with secrets).
    pub fn read_env(&self, id: &SandboxId) -> Result<Vec<(String, String)>> {
        Ok(read_json(&self.env_path(id))?.unwrap_or_default())
    }

    pub fn write_env(&self, id: &SandboxId, env: &[(String, String)]) -> Result<()> {
        write_json(&self.env_path(id), &env, 0o600)
    }

    /// Marks exec activity now (for the idle timeout).
    pub fn touch_activity(&self, id: &SandboxId) {
        let path = self.activity_path(id);
        // A failure only makes the idle timeout count from an earlier activity.
        let _ = std::fs::File::create(&path).and_then(|f| f.set_modified(SystemTime::now()));
    }

    /// The last exec activity, if recorded.
    pub fn last_activity(&self, id: &SandboxId) -> Option<SystemTime> {
        std::fs::metadata(self.activity_path(id))
            .and_then(|m| m.modified())
            .ok()
    }

    /// Every sandbox directory's id.
    pub fn sandbox_ids(&self) -> Result<Vec<SandboxId>> {
        let dir = self.root.join("sandboxes");
        let entries = std::fs::read_dir(&dir).map_err(|e| io("list", &dir, e))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| SandboxId::new(e.file_name().to_string_lossy().into_owned()).ok())
            .collect())
    }

    /// The sandbox a session maps to.
    pub fn session_target(&self, session: &SessionId) -> Result<Option<SandboxId>> {
        let path = self.session_path(session);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(SandboxId::new(s.trim()).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read session mapping", &path, e)),
        }
    }

    /// Maps a session to a sandbox; call with the store lock held.
    pub fn set_session(&self, session: &SessionId, id: &SandboxId) -> Result<()> {
        let path = self.session_path(session);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io("create session mapping", &path, e))?;
        f.write_all(id.as_str().as_bytes())
            .map_err(|e| io("write session mapping", &path, e))
    }

    /// Removes a session's mapping if it still points at `id`; call with the store lock held.
    pub fn remove_session(&self, session: &SessionId, id: &SandboxId) -> Result<()> {
        if self.session_target(session)?.as_ref() == Some(id) {
            let path = self.session_path(session);
            remove_file_if_exists(&path)?;
        }
        Ok(())
    }

    /// Removes a sandbox's directory tree.
    pub fn remove_sandbox_dir(&self, id: &SandboxId) -> Result<()> {
        let dir = self.sandbox_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove sandbox directory", &dir, e)),
        }
    }

    pub fn read_pool(&self, key: &TemplateKey) -> Result<Option<PoolDef>> {
        read_json(&self.pool_path(key))
    }

    pub fn write_pool(&self, pool: &PoolDef) -> Result<()> {
        write_json(&self.pool_path(&pool.template_key), pool, 0o600)
    }

    pub fn remove_pool(&self, key: &TemplateKey) -> Result<()> {
        remove_file_if_exists(&self.pool_path(key))
    }
}

pub(crate) fn mkdir_all(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| io("create directory", path, e))
}

pub(crate) fn remove_file_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path, e)),
    }
}

/// Reads a JSON file; `None` when it (or its directory) does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| {
            LocalError::State {
                path: path.to_path_buf(),
                source,
            }
            .into()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path, e)),
    }
}

/// Writes a JSON file atomically: a temp file beside it, then rename over it.
pub(crate) fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T, mode: u32) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|source| LocalError::State {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes, mode)
}

/// Writes a file atomically (temp file in the same directory, fsync-free rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        SandboxId::generate()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", path, e));
    }
    Ok(())
}
