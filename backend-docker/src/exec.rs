//! `exec` through Docker's exec API: create, start attached (output streamed as the daemon
//! sends it), exit code from inspect.
//!
//! # Timeouts kill the command
//! Docker's exec API has no way to kill an exec. A request with a timeout therefore runs its
//! argv under a tiny wrapper, `sh -c 'echo "$$" >&2; exec "$@"' sandbox-exec <argv...>`: the
//! argv is passed as positional parameters (never interpolated into the script), and the
//! wrapper reports its pid on the first line of stderr (stripped before the caller sees
//! stderr) and then *becomes* the command. Every Docker exec process leads its own process
//! group, so when the deadline passes the backend runs a second exec,
//! `sh -c 'kill -s KILL -"$1"' sh <pid>`, as root (the sandbox keeps `CAP_KILL` for this),
//! which kills the command and everything it started, and then reports
//! [`ExitStatus::TimedOut`]. Requests without a timeout run their argv directly.
//!
//! # Session settings of claimed warm sandboxes
//! Docker fixes a container's environment at creation, so a warm container claimed by a
//! session gets its session environment as the `Env` of every exec (on top of which comes the
//! request's env). It is cached per sandbox and read back from the session file in the
//! container (see [`crate::pool`]) by a new backend instance.

use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sandbox_core::{
    BackendKind, Error, ExecEvent, ExecRequest, ExecStream, ExitStatus, Operation, Result,
    SandboxId,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::backend::{Inner, Located};
use crate::error::{DockerError, Target, status_of};

const KIND: BackendKind = BackendKind::Docker;
/// Items buffered between the task reading the daemon and the caller.
const CHANNEL: usize = 64;
/// `$0` of the timeout wrapper (shows in `ps`).
const WRAPPER_NAME: &str = "sandbox-exec";
const WRAPPER: &str = "echo \"$$\" >&2; exec \"$@\"";
const KILL_GROUP: &str = "kill -s KILL -\"$1\"";
/// How long to wait for the daemon to record the exit code after the output ended.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(2);

type Output = std::pin::Pin<
    Box<dyn Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// The result of a short internal command.
pub(crate) struct SimpleOutput {
    pub code: Option<i64>,
    pub stderr: Vec<u8>,
}

fn exec_config(
    argv: Vec<String>,
    env: Vec<String>,
    user: Option<String>,
    workdir: Option<String>,
    stdin: bool,
) -> ExecConfig {
    ExecConfig {
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        env: (!env.is_empty()).then_some(env),
        cmd: Some(argv),
        user,
        working_dir: workdir,
        ..Default::default()
    }
}

/// Creates and starts an exec; maps "container gone" to `NotFound` and "not running" to
/// `Conflict`.
async fn start(
    inner: &Inner,
    operation: Operation,
    container: &str,
    sandbox: &str,
    config: ExecConfig,
) -> Result<(
    String,
    Output,
    std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
)> {
    let created = match inner
        .api
        .call_raw(operation, inner.docker().create_exec(container, config))
        .await?
    {
        Ok(c) => c.id,
        Err(e) if status_of(&e) == Some(409) => {
            return Err(Error::Conflict {
                message: format!("sandbox {sandbox} is not running: {e}"),
            });
        }
        Err(e) => return Err(inner.api.map(operation, Target::Sandbox(sandbox), e)),
    };
    let options = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: None,
    };
    match inner
        .api
        .call(
            operation,
            Target::Sandbox(sandbox),
            inner.docker().start_exec(&created, Some(options)),
        )
        .await?
    {
        StartExecResults::Attached { output, input } => Ok((created, output, input)),
        StartExecResults::Detached => Err(Error::backend(
            KIND,
            "the daemon started an attached exec detached",
        )),
    }
}

/// The exit code of a finished exec; the daemon may need a moment to record it.
async fn exit_code(inner: &Inner, operation: Operation, exec_id: &str) -> Result<Option<i64>> {
    let deadline = tokio::time::Instant::now() + EXIT_CODE_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        let info = inner
            .api
            .call(
                operation,
                Target::Daemon,
                inner.docker().inspect_exec(exec_id),
            )
            .await?;
        if info.running != Some(true) && info.exit_code.is_some() {
            return Ok(info.exit_code);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Runs a short command to completion (readiness checks, kills, reading files back) with the
/// API deadline on the whole run.
pub(crate) async fn run_simple(
    inner: &Inner,
    operation: Operation,
    container: &str,
    argv: &[&str],
    user: Option<&str>,
) -> Result<SimpleOutput> {
    let config = exec_config(
        argv.iter().map(|s| s.to_string()).collect(),
        Vec::new(),
        user.map(str::to_string),
        None,
        false,
    );
    let run = async {
        let (exec_id, mut output, _input) =
            start(inner, operation, container, container, config).await?;
        let mut stderr = Vec::new();
        while let Some(item) = output.next().await {
            if let LogOutput::StdErr { message } =
                item.map_err(|e| inner.api.map(operation, Target::Daemon, e))?
            {
                stderr.extend_from_slice(&message);
            }
        }
        let code = exit_code(inner, operation, &exec_id).await?;
        Ok(SimpleOutput { code, stderr })
    };
    match tokio::time::timeout(inner.api.timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            operation,
            after: inner.api.timeout,
        }),
    }
}

/// The session environment of a claimed warm sandbox: cached, else read from its session file.
async fn session_env(
    inner: &Inner,
    id: &SandboxId,
    located: &Located,
) -> Result<Option<Arc<Vec<String>>>> {
    if !located.claimed {
        return Ok(None);
    }
    if let Some(env) = &located.session_env {
        return Ok(Some(env.clone()));
    }
    let bytes = crate::files::read_path(
        inner,
        Operation::Exec,
        &located.container_id,
        crate::convert::SESSION_FILE,
    )
    .await
    .map_err(|e| match e {
        Error::NotFound { .. } => DockerError::SessionFile {
            sandbox: id.to_string(),
            detail:
                "the session file is missing (the claim was interrupted); terminate the sandbox"
                    .to_string(),
        }
        .into_error(),
        other => other,
    })?;
    let env = crate::convert::decode_session_file(&bytes).ok_or_else(|| {
        DockerError::SessionFile {
            sandbox: id.to_string(),
            detail: "the session file is malformed".to_string(),
        }
        .into_error()
    })?;
    let env = Arc::new(env);
    let mut updated = located.clone();
    updated.session_env = Some(env.clone());
    inner.cache(id, updated);
    Ok(Some(env))
}

pub(crate) async fn exec(
    inner: &Arc<Inner>,
    id: &SandboxId,
    request: ExecRequest,
) -> Result<ExecStream> {
    inner.capabilities().check_exec(KIND, &request)?;
    let located = inner.locate(Operation::Exec, id).await?;
    let mut env: Vec<String> = match session_env(inner, id, &located).await? {
        Some(env) => env.as_ref().clone(),
        None => Vec::new(),
    };
    env.extend(request.env().iter().map(|(k, v)| format!("{k}={v}")));
    let timeout = request.timeout();
    let mut argv = Vec::with_capacity(request.argv().len() + 4);
    if timeout.is_some() {
        argv.extend(["sh", "-c", WRAPPER, WRAPPER_NAME].map(String::from));
    }
    argv.extend(request.argv().iter().cloned());
    let config = exec_config(
        argv,
        env,
        request.user().map(str::to_string),
        request.workdir().map(str::to_string),
        request.stdin().is_some(),
    );
    let started = tokio::time::Instant::now();
    let (exec_id, output, input) = match start(
        inner,
        Operation::Exec,
        &located.container_id,
        id.as_str(),
        config,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            if e.is_not_found() {
                inner.forget(id);
            }
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL);
    let pump = Pump {
        inner: inner.clone(),
        exec_id,
        container: located.container_id,
        deadline: timeout.map(|t| started + t),
        tx,
    };
    let stdin = request.stdin().cloned();
    tokio::spawn(pump.run(output, input, stdin));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(ExecStream::new(KIND, stream.boxed()))
}

/// Moves one exec's output from the daemon to the caller, and enforces its timeout.
struct Pump {
    inner: Arc<Inner>,
    exec_id: String,
    container: String,
    deadline: Option<tokio::time::Instant>,
    tx: mpsc::Sender<Result<ExecEvent>>,
}

/// Strips the wrapper's pid line from the start of stderr.
#[derive(Default)]
struct PidLine {
    buf: BytesMut,
    pid: Option<u32>,
}

impl PidLine {
    /// Feeds stderr bytes; returns the bytes that belong to the command.
    fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.pid.is_some() {
            return chunk;
        }
        self.buf.extend_from_slice(&chunk);
        match self.buf.iter().position(|b| *b == b'\n') {
            None => Bytes::new(),
            Some(nl) => {
                let line = self.buf.split_to(nl + 1);
                self.pid = std::str::from_utf8(&line[..nl])
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                if self.pid.is_none() {
                    // Not our line after all (the shell failed before echo): pass it on.
                    self.pid = Some(0);
                    let mut all = BytesMut::from(&line[..]);
                    all.extend_from_slice(&self.buf.split());
                    return all.freeze();
                }
                self.buf.split().freeze()
            }
        }
    }
}

impl Pump {
    async fn send(&self, item: Result<ExecEvent>) -> bool {
        self.tx.send(item).await.is_ok()
    }

    async fn run(
        self,
        mut output: Output,
        mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
        stdin: Option<Bytes>,
    ) {
        // Feed stdin concurrently with reading, so a command that writes before it reads
        // cannot deadlock against us.
        let writer = stdin.map(|data| {
            tokio::spawn(async move {
                if let Err(e) = input.write_all(&data).await {
                    tracing::debug!(error = %e, "writing exec stdin");
                }
                // Closing our side tells the daemon to close the command's stdin.
                let _ = input.shutdown().await;
            })
        });
        let mut pid = self.deadline.map(|_| PidLine::default());
        let timed_out = loop {
            let next = async {
                match self.deadline {
                    Some(d) => tokio::time::timeout_at(d, output.next()).await.ok(),
                    None => Some(output.next().await),
                }
            };
            let item = tokio::select! {
                item = next => item,
                () = self.tx.closed() => break false,
            };
            let event = match item {
                None => break true,
                Some(None) => break false,
                Some(Some(Ok(LogOutput::StdErr { message }))) => match &mut pid {
                    Some(p) => {
                        let rest = p.feed(message);
                        if rest.is_empty() {
                            continue;
                        }
                        ExecEvent::Stderr(rest)
                    }
                    None => ExecEvent::Stderr(message),
                },
                Some(Some(Ok(other))) => ExecEvent::Stdout(other.into_bytes()),
                Some(Some(Err(e))) => {
                    let err = self.inner.api.map(Operation::Exec, Target::Daemon, e);
                    self.send(Err(err)).await;
                    return;
                }
            };
            if !self.send(Ok(event)).await {
                break false;
            }
        };
        if let Some(w) = writer {
            w.abort();
        }
        if self.tx.is_closed() {
            return;
        }
        let status = if timed_out {
            self.kill(&mut output, pid.unwrap_or_default()).await
        } else {
            match exit_code(&self.inner, Operation::Exec, &self.exec_id).await {
                Ok(Some(code)) => Ok(ExitStatus::Exited {
                    code: i32::try_from(code).unwrap_or(i32::MAX),
                }),
                Ok(None) => Ok(ExitStatus::Unknown {
                    reason: DockerError::NoExitCode {
                        exec_id: self.exec_id.clone(),
                    }
                    .to_string(),
                }),
                Err(e) => Err(e),
            }
        };
        self.send(status.map(ExecEvent::Exit)).await;
    }

    /// Kills the timed-out command's process group; `TimedOut` once it is dead.
    async fn kill(&self, output: &mut Output, mut pid: PidLine) -> Result<ExitStatus> {
        // The pid line comes first on stderr; a command that timed out before its wrapper
        // even started still sends it.
        let wait_pid = async {
            while pid.pid.is_none() {
                match output.next().await {
                    Some(Ok(LogOutput::StdErr { message })) => {
                        pid.feed(message);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        };
        let _ = tokio::time::timeout(self.inner.api.timeout, wait_pid).await;
        match pid.pid {
            Some(p) if p > 1 => {
                let pid = p.to_string();
                let out = run_simple(
                    &self.inner,
                    Operation::Exec,
                    &self.container,
                    &["sh", "-c", KILL_GROUP, "sandbox-kill", &pid],
                    Some("0"),
                )
                .await?;
                if out.code != Some(0) {
                    // The group is gone already: it ended on its own at the deadline.
                    tracing::debug!(pid, stderr = %String::from_utf8_lossy(&out.stderr), "kill after timeout");
                }
                Ok(ExitStatus::TimedOut)
            }
            _ => {
                // No pid: the command never started (its output ended first).
                match exit_code(&self.inner, Operation::Exec, &self.exec_id).await? {
                    Some(code) => Ok(ExitStatus::Exited {
                        code: i32::try_from(code).unwrap_or(i32::MAX),
                    }),
                    None => Ok(ExitStatus::TimedOut),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_line_is_stripped_across_chunks() {
        let mut p = PidLine::default();
        assert!(p.feed(Bytes::from_static(b"12")).is_empty());
        assert_eq!(&p.feed(Bytes::from_static(b"3\nerr"))[..], b"err");
        assert_eq!(p.pid, Some(123));
        assert_eq!(&p.feed(Bytes::from_static(b"more"))[..], b"more");
    }

    #[test]
    fn a_foreign_first_line_is_passed_on() {
        let mut p = PidLine::default();
        assert_eq!(
            &p.feed(Bytes::from_static(b"sh: oops\nx"))[..],
            b"sh: oops\nx"
        );
        assert_eq!(p.pid, Some(0));
    }

    #[test]
    fn the_wrapper_never_interpolates_argv() {
        // argv travels as positional parameters: the script is a constant.
        assert!(!WRAPPER.contains('{'));
        assert!(WRAPPER.ends_with("exec \"$@\""));
        assert!(KILL_GROUP.contains("\"$1\""));
    }
}
