//! `exec` through Docker's exec API: create, start attached (output streamed as the daemon
//! sends it), exit code from inspect. Most requests skip the start: they run on the sandbox's
//! spare runner, an exec started ahead (see [`crate::runner`]).
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
//! [`ExitStatus::TimedOut`]. Requests without a timeout run their argv directly. On a spare
//! runner the pid is the runner's own (it reported it when it started), so no wrapper is
//! needed there.
//!
//! # Exec starts never overlap a paused commit
//! A Docker exec whose start (`runc exec`) is under way when the container is frozen never
//! finishes starting, and the daemon then cannot unpause: the container stays paused and
//! both calls hang (reproduced on Docker 20.10 by racing `docker exec` with `docker commit`;
//! writing `THAWED` to the container's freezer cgroup releases it). So each container has a
//! gate ([`ExecGates`]): every exec this backend starts holds it shared from `create_exec`
//! until its process is known to run (the daemon reports its pid, or the runner's first
//! line), and a snapshot holds it exclusively for its commit. Commands already running are
//! not affected: they are frozen with the container and resume after the commit.
//!
//! # Session settings of claimed warm sandboxes
//! Docker fixes a container's environment at creation, so a warm container claimed by a
//! session gets its session environment as the `Env` of every exec (on top of which comes the
//! request's env). It is cached per sandbox and read back from the session file in the
//! container (see [`crate::pool`]) by a new backend instance.

use std::collections::HashMap;
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
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, mpsc};

use crate::backend::{Inner, Located};
use crate::error::{DockerError, Target, status_of};
use crate::runner::{self, Spares};

const KIND: BackendKind = BackendKind::Docker;
/// Items buffered between the task reading the daemon and the caller.
const CHANNEL: usize = 64;
/// `$0` of the timeout wrapper (shows in `ps`).
const WRAPPER_NAME: &str = "sandbox-exec";
const WRAPPER: &str = "echo \"$$\" >&2; exec \"$@\"";
const KILL_GROUP: &str = "kill -s KILL -\"$1\"";
/// How long to wait for the daemon to record the exit code after the output ended.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(2);

pub(crate) type Output = std::pin::Pin<
    Box<dyn Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// The result of a short internal command.
pub(crate) struct SimpleOutput {
    pub code: Option<i64>,
    pub stderr: Vec<u8>,
}

pub(crate) fn exec_config(
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

/// Per container: exec starts (shared) against paused commits (exclusive). See the module
/// docs.
#[derive(Default)]
pub(crate) struct ExecGates {
    gates: std::sync::Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

/// Held while an exec is starting: a paused commit of its container waits for it.
pub(crate) type Starting = OwnedRwLockReadGuard<()>;

impl ExecGates {
    fn gate(&self, container: &str) -> Arc<RwLock<()>> {
        self.gates
            .lock()
            .expect("exec gates lock")
            .entry(container.to_string())
            .or_default()
            .clone()
    }

    /// Waits until no paused commit of the container is running.
    pub(crate) async fn starting(&self, container: &str) -> Starting {
        self.gate(container).read_owned().await
    }

    /// Waits until no exec of the container is starting, and keeps new ones from starting.
    pub(crate) async fn pausing(&self, container: &str) -> OwnedRwLockWriteGuard<()> {
        self.gate(container).write_owned().await
    }

    /// Forgets a container (it is being removed).
    pub(crate) fn remove(&self, container: &str) {
        self.gates
            .lock()
            .expect("exec gates lock")
            .remove(container);
    }
}

/// An exec the daemon started (its process may still be starting: see `starting`).
pub(crate) struct Started {
    pub id: String,
    pub output: Output,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// Drop once the process is known to run.
    pub starting: Starting,
}

/// Releases `starting` once the daemon reports the exec's pid (it sets it when the process
/// started) or its exit, in the background. A daemon error or the API deadline releases it
/// too: a start that hangs that long is not one a commit would make worse.
pub(crate) fn release_when_running(inner: &Arc<Inner>, exec_id: String, starting: Starting) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let poll = async {
            let mut pause = Duration::from_millis(1);
            loop {
                match inner.docker().inspect_exec(&exec_id).await {
                    Ok(info) if info.pid.is_some_and(|p| p > 0) || info.exit_code.is_some() => {
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        };
        let _ = tokio::time::timeout(inner.api.timeout, poll).await;
        drop(starting);
    });
}

/// Creates and starts an exec; maps "container gone" to `NotFound` and "not running" to
/// `Conflict`. Waits for a paused commit of the container to end first.
pub(crate) async fn start(
    inner: &Inner,
    operation: Operation,
    container: &str,
    sandbox: &str,
    config: ExecConfig,
) -> Result<Started> {
    let starting = inner.exec_gates.starting(container).await;
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
        StartExecResults::Attached { output, input } => Ok(Started {
            id: created,
            output,
            input,
            starting,
        }),
        StartExecResults::Detached => Err(Error::backend(
            KIND,
            "the daemon started an attached exec detached",
        )),
    }
}

/// The exit code of a finished exec; the daemon may need a moment to record it.
pub(crate) async fn exit_code(
    inner: &Inner,
    operation: Operation,
    exec_id: &str,
) -> Result<Option<i64>> {
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
        // Short commands: the gate is held until they end.
        let Started {
            id: exec_id,
            mut output,
            starting: _starting,
            ..
        } = start(inner, operation, container, container, config).await?;
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
    let started = tokio::time::Instant::now();
    let stdin = request.stdin().cloned();
    if request.user().is_none() {
        let spare = inner
            .runners
            .take(&located.container_id, inner.api.timeout)
            .await;
        let spare = match spare {
            // Kept for the next request rather than dropped (which would end it).
            Some(runner) if !runner.can_run(&env, request.argv()) => {
                inner.runners.put(&located.container_id, runner);
                None
            }
            spare => spare,
        };
        if let Some(runner) = spare {
            let message = runner::request(request.workdir(), &env, request.argv());
            if let Some(running) = runner.run(inner, &message, stdin.is_none()).await? {
                tracing::debug!(pid = running.pid, "exec on the sandbox's spare runner");
                let (tx, rx) = mpsc::channel(CHANNEL);
                let pump = Pump {
                    inner: inner.clone(),
                    exec_id: running.exec_id,
                    container: located.container_id,
                    deadline: timeout.map(|t| started + t),
                    pid: Some(PidLine::known(running.pid)),
                    refill: true,
                    tx,
                };
                return Ok(pump.spawn(
                    rx,
                    running.output,
                    running.input,
                    stdin,
                    [running.stdout, running.stderr],
                ));
            }
            // The spare died before it took the request: nothing ran; the plain path
            // reports why (the sandbox stopped, was removed, ...).
        }
    }
    tracing::debug!("exec through a new Docker exec");
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
        stdin.is_some(),
    );
    let started_exec = match start(
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
    let Started {
        id: exec_id,
        output,
        input,
        starting,
    } = started_exec;
    release_when_running(inner, exec_id.clone(), starting);
    let (tx, rx) = mpsc::channel(CHANNEL);
    let pump = Pump {
        inner: inner.clone(),
        exec_id,
        container: located.container_id,
        deadline: timeout.map(|t| started + t),
        pid: timeout.map(|_| PidLine::default()),
        refill: request.user().is_none(),
        tx,
    };
    Ok(pump.spawn(rx, output, input, stdin, [Bytes::new(), Bytes::new()]))
}

/// Moves one exec's output from the daemon to the caller, and enforces its timeout.
struct Pump {
    inner: Arc<Inner>,
    exec_id: String,
    container: String,
    deadline: Option<tokio::time::Instant>,
    /// The process group to kill at the deadline: known, or read from the wrapper's line.
    pid: Option<PidLine>,
    /// Start the container's next spare runner once the command has ended. Not before: the
    /// daemon serializes exec starts and inspects per container, so a spare starting during
    /// a short command would delay its end by a whole exec start.
    refill: bool,
    tx: mpsc::Sender<Result<ExecEvent>>,
}

/// Strips the wrapper's pid line from the start of stderr.
#[derive(Default)]
struct PidLine {
    buf: BytesMut,
    pid: Option<u32>,
}

impl PidLine {
    /// A pid known already: stderr passes through untouched.
    fn known(pid: u32) -> Self {
        PidLine {
            buf: BytesMut::new(),
            pid: Some(pid),
        }
    }

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
    /// Runs the pump in the background; the stream ends with the exit status. `early`: the
    /// command's stdout and stderr read already.
    fn spawn(
        self,
        rx: mpsc::Receiver<Result<ExecEvent>>,
        output: Output,
        input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
        stdin: Option<Bytes>,
        early: [Bytes; 2],
    ) -> ExecStream {
        tokio::spawn(self.run(output, input, stdin, early));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        ExecStream::new(KIND, stream.boxed())
    }

    async fn send(&self, item: Result<ExecEvent>) -> bool {
        self.tx.send(item).await.is_ok()
    }

    async fn run(
        self,
        output: Output,
        input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
        stdin: Option<Bytes>,
        early: [Bytes; 2],
    ) {
        let (inner, container, refill) = (self.inner.clone(), self.container.clone(), self.refill);
        self.pump(output, input, stdin, early).await;
        // Also when the pump ended early (the caller dropped the stream, a daemon error).
        if refill {
            Spares::refill(&inner, &container);
        }
    }

    async fn pump(
        mut self,
        mut output: Output,
        mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
        stdin: Option<Bytes>,
        [stdout, stderr]: [Bytes; 2],
    ) {
        for event in [ExecEvent::Stdout(stdout), ExecEvent::Stderr(stderr)] {
            let empty =
                matches!(&event, ExecEvent::Stdout(b) | ExecEvent::Stderr(b) if b.is_empty());
            if !empty && !self.send(Ok(event)).await {
                return;
            }
        }
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
        let mut pid = self.pid.take();
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
        // The command has ended: start the next spare before the caller hears it, so an exec
        // sent right after finds it starting and waits for it (see `Spares::take`).
        if self.refill {
            Spares::refill(&self.inner, &self.container);
        }
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
