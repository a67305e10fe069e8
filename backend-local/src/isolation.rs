//! How commands are isolated: bubblewrap when it works here, plain processes otherwise.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use sandbox_core::config::{IsolationMode, LocalConfig};
use sandbox_core::{Error, Result};

use crate::config::{READ_ONLY_HOST_PATHS, SANDBOX_PATH};

/// How this backend runs commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsolationKind {
    /// bubblewrap at this path: new user, pid, net, ipc, uts and cgroup namespaces; the
    /// workspace and a private `/tmp` bound read-write; the host's programs and libraries
    /// read-only; nothing else of the host visible; all capabilities dropped.
    Bubblewrap(PathBuf),
    /// Plain processes in their own process group, with the workspace as working directory.
    /// Isolation is process-level only: commands see the host's filesystem and network.
    Process,
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Decides the isolation from the config: finds bubblewrap, and checks that it really works
/// here (it can be installed yet unusable when user namespaces are off).
pub(crate) async fn detect(config: &LocalConfig) -> Result<IsolationKind> {
    if config.isolation == IsolationMode::Disabled {
        return Ok(IsolationKind::Process);
    }
    let problem = match find_bwrap(config) {
        None => {
            "bubblewrap (`bwrap`) is not installed (install the `bubblewrap` package)".to_string()
        }
        Some(path) => match probe(&path).await {
            Ok(()) => return Ok(IsolationKind::Bubblewrap(path)),
            Err(why) => format!("bubblewrap at {} does not work here: {why}", path.display()),
        },
    };
    if config.isolation == IsolationMode::Required {
        return Err(Error::invalid_config(
            "local.isolation",
            format!("is `required`, but {problem}"),
        ));
    }
    if !WARNED.swap(true, Ordering::SeqCst) {
        tracing::warn!(
            "local sandboxes are NOT isolated: {problem}; commands run as plain processes that \
             see the host's files and network (set local.isolation = \"required\" to fail instead)"
        );
    }
    Ok(IsolationKind::Process)
}

fn find_bwrap(config: &LocalConfig) -> Option<PathBuf> {
    if let Some(path) = &config.bwrap_path {
        return path.is_file().then(|| path.clone());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bwrap"))
        .find(|candidate| candidate.is_file())
}

/// Runs `true` under the exact flags sandboxes use.
async fn probe(bwrap: &Path) -> std::result::Result<(), String> {
    // Unique per probe: several backends may start at once in one process.
    let dir = std::env::temp_dir().join(format!(
        "sandbox-local-probe-{}-{}",
        std::process::id(),
        sandbox_core::SandboxId::generate()
    ));
    let (workspace, tmp) = (dir.join("w"), dir.join("t"));
    for d in [&workspace, &tmp] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let spec = CommandSpec {
        argv: &["true".to_string()],
        env: &[],
        workspace: &workspace,
        tmp: &tmp,
        workdir: "/workspace",
        cwd: "/workspace",
        network_full: false,
    };
    let out = command(&IsolationKind::Bubblewrap(bwrap.to_path_buf()), &spec)
        .stdin(Stdio::null())
        .output()
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// One command to run in a sandbox.
pub(crate) struct CommandSpec<'a> {
    pub argv: &'a [String],
    /// The whole environment (the sandbox's, then the request's).
    pub env: &'a [(String, String)],
    /// Host directory bound at `workdir`.
    pub workspace: &'a Path,
    /// Host directory bound at `/tmp`.
    pub tmp: &'a Path,
    /// The sandbox's workdir (inside the sandbox).
    pub workdir: &'a str,
    /// The command's working directory (inside the sandbox).
    pub cwd: &'a str,
    pub network_full: bool,
}

/// Maps a path inside the sandbox to the host when commands are plain processes: the
/// workdir tree is the workspace, `/tmp` is the sandbox's tmp; anything else is the host's.
pub(crate) fn host_path(spec: &CommandSpec<'_>, inside: &str) -> PathBuf {
    let under = |root: &str| {
        inside
            .strip_prefix(root)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .map(|rest| rest.trim_start_matches('/').to_string())
    };
    if let Some(rest) = under(spec.workdir) {
        spec.workspace.join(rest)
    } else if let Some(rest) = under("/tmp") {
        spec.tmp.join(rest)
    } else {
        PathBuf::from(inside)
    }
}

/// The process to spawn. argv is passed as separate arguments, never through a shell; the
/// environment is passed as the process environment, never on a command line (which `ps`
/// shows to every user of the host). The process leads its own process group, so that one
/// `killpg` reaches everything it started.
pub(crate) fn command(
    isolation: &IsolationKind,
    spec: &CommandSpec<'_>,
) -> tokio::process::Command {
    let mut cmd = match isolation {
        IsolationKind::Bubblewrap(bwrap) => {
            let mut cmd = tokio::process::Command::new(bwrap);
            cmd.args([
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
                "--cap-drop",
                "ALL",
                "--hostname",
                "sandbox",
            ]);
            if spec.network_full {
                cmd.arg("--share-net");
            }
            for path in READ_ONLY_HOST_PATHS {
                cmd.args(["--ro-bind-try", path, path]);
            }
            cmd.args(["--proc", "/proc", "--dev", "/dev"]);
            cmd.arg("--bind").arg(spec.tmp).arg("/tmp");
            cmd.arg("--bind").arg(spec.workspace).arg(spec.workdir);
            cmd.args(["--chdir", spec.cwd, "--"]);
            cmd.args(spec.argv);
            cmd
        }
        IsolationKind::Process => {
            let mut cmd = tokio::process::Command::new(&spec.argv[0]);
            cmd.args(&spec.argv[1..]);
            cmd.current_dir(host_path(spec, spec.cwd));
            cmd
        }
    };
    cmd.env_clear();
    cmd.env("PATH", SANDBOX_PATH);
    cmd.env("HOME", spec.workdir);
    cmd.env("LANG", "C.UTF-8");
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.process_group(0);
    cmd
}
