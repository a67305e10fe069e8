//! Running a command: spawn, stream its output as it comes, enforce its timeout by killing
//! everything it started, and record it on disk so `terminate` (from any instance) can kill it.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use sandbox_core::{ExecEvent, ExecStream, ExitStatus, Result, SandboxId};

use crate::error::{KIND, LocalError, io};
use crate::isolation::{CommandSpec, IsolationKind, command};
use crate::store::{Store, remove_file_if_exists, write_atomic};

const CHUNK: usize = 16 * 1024;

/// Starts `spec` in sandbox `id` and returns its output stream.
pub(crate) async fn spawn(
    store: &Store,
    id: &SandboxId,
    isolation: &IsolationKind,
    spec: &CommandSpec<'_>,
    stdin: Option<Bytes>,
    timeout: Option<Duration>,
) -> Result<ExecStream> {
    let mut cmd = command(isolation, spec);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| LocalError::Spawn {
        program: spec.argv[0].clone(),
        source,
    })?;
    let pid = child
        .id()
        .ok_or_else(|| sandbox_core::Error::backend(KIND, "spawned command has no pid"))?;
    let pid_file = store
        .procs_dir(id)
        .join(format!("{pid}-{}", SandboxId::generate()));
    if let Err(e) = record(&pid_file, pid) {
        kill_group(pid);
        let _ = child.wait().await;
        return Err(e);
    }
    store.touch_activity(id);

    let (tx, rx) = mpsc::channel::<Result<ExecEvent>>(64);
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        tokio::spawn(async move {
            // A command that does not read its stdin closes the pipe: not an error.
            let _ = pipe.write_all(&data).await;
        });
    }
    let stdout = child
        .stdout
        .take()
        .map(|p| pump(p, tx.clone(), ExecEvent::Stdout));
    let stderr = child
        .stderr
        .take()
        .map(|p| pump(p, tx.clone(), ExecEvent::Stderr));
    let store = store.clone();
    let id = id.clone();
    tokio::spawn(async move {
        let mut timed_out = false;
        let waited = match timeout {
            Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
                Ok(r) => r,
                Err(_) => {
                    timed_out = true;
                    kill_group(pid);
                    child.wait().await
                }
            },
            None => child.wait().await,
        };
        // What the command left running in its group dies with it (under bubblewrap the pid
        // namespace has already taken them).
        kill_group(pid);
        for pump in [stdout, stderr].into_iter().flatten() {
            let _ = pump.await;
        }
        let _ = remove_file_if_exists(&pid_file);
        store.touch_activity(&id);
        let status = match waited {
            _ if timed_out => ExitStatus::TimedOut,
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => ExitStatus::Exited { code },
                (None, Some(signal)) => ExitStatus::Signaled { signal },
                (None, None) => ExitStatus::Unknown {
                    reason: format!("{status}"),
                },
            },
            Err(e) => ExitStatus::Unknown {
                reason: format!("waiting for the command failed: {e}"),
            },
        };
        let _ = tx.send(Ok(ExecEvent::Exit(status))).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(ExecStream::new(KIND, stream.boxed()))
}

/// Forwards a pipe's bytes as they come. Keeps reading after the receiver is gone, so a
/// caller that drops the stream does not block the command on a full pipe.
fn pump<R>(
    mut pipe: R,
    tx: mpsc::Sender<Result<ExecEvent>>,
    wrap: fn(Bytes) -> ExecEvent,
) -> tokio::task::JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = tx.send(Ok(wrap(Bytes::copy_from_slice(&buf[..n])))).await;
                }
            }
        }
    })
}

/// SIGKILLs a process group; a group already gone is fine.
pub(crate) fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Writes `<pid> <start time>` so another instance can kill this process group later
/// without mistaking a recycled pid for it.
fn record(path: &Path, pid: u32) -> Result<()> {
    let start = start_time(pid).unwrap_or_default();
    write_atomic(path, format!("{pid} {start}").as_bytes(), 0o600)
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`), in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Kills every recorded command of a sandbox (from any instance) and forgets them.
pub(crate) fn kill_recorded(procs_dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(procs_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("list", procs_dir, e)),
    };
    let mut killed = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let path: PathBuf = entry.path();
        if let Some((pid, start)) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| parse_record(&s))
            && start_time(pid) == Some(start)
        {
            kill_group(pid);
            killed += 1;
        }
        remove_file_if_exists(&path)?;
    }
    Ok(killed)
}

/// True when a sandbox has a command running.
pub(crate) fn has_running(procs_dir: &Path) -> bool {
    std::fs::read_dir(procs_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

fn parse_record(s: &str) -> Option<(u32, u64)> {
    let (pid, start) = s.trim().split_once(' ')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_this_process_is_stable() {
        let me = std::process::id();
        let a = start_time(me).expect("own stat");
        assert_eq!(start_time(me), Some(a));
        assert_eq!(parse_record(&format!("{me} {a}\n")), Some((me, a)));
        assert_eq!(parse_record("garbage"), None);
    }
}
