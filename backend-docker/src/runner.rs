//! Spare exec sessions ("runners"): the fast path of `exec`.
//!
//! Starting a Docker exec costs one `runc exec` (about 45 ms on a small machine), far more than
//! the command it usually runs. So the backend keeps, per sandbox, one exec already started
//! and waiting: a tiny POSIX shell script ([`SCRIPT`]) attached to a hijacked connection. An
//! exec request is written to its stdin, the script reads it and `exec`s the command, which
//! thereby *is* that Docker exec: the daemon still frames stdout and stderr, reports the exit
//! code through `inspect_exec`, and kills it with the container. The next spare is started in
//! the background once the command has ended; a request arriving while it starts waits for
//! it rather than start a plain exec that would queue behind it.
//!
//! # Protocol (library → script, on stdin)
//! ```text
//! <workdir, encoded; empty for the container's>\n
//! <argument count>\n
//! <argument, encoded>\n ...
//! ```
//! then the command's own stdin, then end of file. Values are encoded so that they fit on one
//! line: `@` becomes `@a` and a newline `@n`; the script decodes them with parameter
//! expansion only (no `eval`, no subprocess), so no byte of a request is ever interpreted by
//! the shell. Env is passed as `env -- KEY=value... <argv>` (only when the image has `env`),
//! on top of the container's environment, as Docker's exec `Env` would be.
//!
//! The script reports on stderr, each time as one line the backend strips: `<pid> [env]` once
//! it is up (its pid leads the exec's process group, which a timeout kills), and `go` once it
//! has read a whole request. A spare whose connection ended before `go` never ran anything,
//! so the request falls back to a plain exec, which reports the daemon's own error (the
//! sandbox stopped, removed, ...).
//!
//! Requests with a user, and any request when no spare is ready, take the plain exec path.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use sandbox_core::{Operation, Result};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::backend::Inner;
use crate::exec::{Output, exec_config};

/// `$0` of a runner (shows in `ps`).
pub(crate) const NAME: &str = "sandbox-runner";

/// The runner. POSIX sh (busybox ash, dash, bash); the request never reaches `eval`.
/// - `d` decodes `$1` into `$v` (`@n` → newline, `@a` → `@`).
/// - A missing command exits 126 with a message, as Docker's exec does.
pub(crate) const SCRIPT: &str = r#"if command -v env >/dev/null 2>&1; then e=' env'; else e=; fi
echo "$$$e" >&2
nl='
'
d() { v=; r=$1; while :; do case $r in *@*) v=$v${r%%@*}; r=${r#*@}; case $r in n*) v=$v$nl;; *) v=$v@;; esac; r=${r#?};; *) v=$v$r; return;; esac; done; }
IFS= read -r w || exit 0
IFS= read -r n || exit 0
case $n in ''|*[!0-9]*) exit 0;; esac
set --
while [ "$n" -gt 0 ]; do IFS= read -r l || exit 0; d "$l"; set -- "$@" "$v"; n=$((n-1)); done
echo go >&2
if [ -n "$w" ]; then d "$w"; cd -- "$v" 2>/dev/null || { echo "sandbox-exec: chdir to $v failed" >&2; exit 126; }; fi
unset SHLVL PWD OLDPWD
command -v -- "$1" >/dev/null 2>&1 || { echo "sandbox-exec: $1: executable file not found in PATH" >&2; exit 126; }
exec "$@""#;

type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// A started runner waiting for its request.
pub(crate) struct Runner {
    exec_id: String,
    pid: u32,
    has_env: bool,
    output: Output,
    input: Input,
}

/// A runner that accepted a request: its command is running as the exec `exec_id`.
pub(crate) struct Running {
    pub exec_id: String,
    pub pid: u32,
    pub output: Output,
    pub input: Input,
    /// Output of the command that arrived before or with the `go` line.
    pub stdout: Bytes,
    /// See `stdout`.
    pub stderr: Bytes,
}

/// Why [`start`] got no runner.
pub(crate) enum NotStarted {
    /// The script ended before it reported (exit code if known, its stderr).
    Ended(Option<i64>, Vec<u8>),
    /// The daemon refused or failed.
    Error(sandbox_core::Error),
}

/// The spare runner of each container this instance runs commands in.
#[derive(Default)]
pub(crate) struct Spares {
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Default)]
struct Slot {
    ready: Option<Runner>,
    starting: bool,
    /// The request waiting for the spare that is starting (at most one: others take a plain
    /// exec).
    waiter: Option<oneshot::Sender<Runner>>,
}

/// A runner usable at once (alive when taken).
fn alive(mut runner: Runner) -> Option<Runner> {
    // A runner prints nothing before its request: anything here (most often the end of the
    // stream, the container having stopped) means it is unusable.
    match runner.output.next().now_or_never() {
        None => Some(runner),
        Some(_) => None,
    }
}

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().expect("runner slots lock")
    }

    /// Stores a runner that proved the container ready.
    pub(crate) fn put(&self, container: &str, runner: Runner) {
        self.lock().entry(container.to_string()).or_default().ready = Some(runner);
    }

    /// Takes the container's spare if it is alive; if one is starting and no other request
    /// waits for it, waits for it (at most `wait`). A plain exec started instead would queue
    /// behind that start anyway: the daemon serializes exec starts per container.
    pub(crate) async fn take(&self, container: &str, wait: Duration) -> Option<Runner> {
        let waiting = {
            let mut slots = self.lock();
            let slot = slots.get_mut(container)?;
            if let Some(runner) = slot.ready.take() {
                return alive(runner);
            }
            if !slot.starting || slot.waiter.is_some() {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            slot.waiter = Some(tx);
            rx
        };
        // A failed start drops the sender: the request takes the plain path.
        let runner = tokio::time::timeout(wait, waiting).await.ok()?.ok()?;
        alive(runner)
    }

    /// Drops what is kept for a container (it is being removed).
    pub(crate) fn remove(&self, container: &str) {
        self.lock().remove(container);
    }

    /// Starts the container's next spare in the background unless one is ready or starting.
    pub(crate) fn refill(inner: &Arc<Inner>, container: &str) {
        {
            let mut slots = inner.runners.lock();
            let slot = slots.entry(container.to_string()).or_default();
            if slot.ready.is_some() || slot.starting {
                return;
            }
            slot.starting = true;
        }
        let inner = inner.clone();
        let container = container.to_string();
        tokio::spawn(async move {
            let started = start(&inner, Operation::Exec, &container).await;
            let mut slots = inner.runners.lock();
            match (started, slots.get_mut(&container)) {
                (Ok(runner), Some(slot)) => {
                    slot.starting = false;
                    // Hand it to the waiting request, or keep it if that one gave up.
                    let runner = match slot.waiter.take() {
                        Some(waiter) => waiter.send(runner).err(),
                        None => Some(runner),
                    };
                    slot.ready = runner;
                }
                // Removed meanwhile: the runner dies with the container.
                (Ok(_), None) => {}
                (Err(_), _) => {
                    // The container cannot run execs now (stopped, paused, gone): try again at
                    // the next exec, which takes the plain path meanwhile.
                    slots.remove(&container);
                }
            }
        });
    }
}

/// Starts a runner in `container` and waits until it reports.
pub(crate) async fn start(
    inner: &Inner,
    operation: Operation,
    container: &str,
) -> std::result::Result<Runner, NotStarted> {
    let config = exec_config(
        vec!["sh".into(), "-c".into(), SCRIPT.into(), NAME.into()],
        Vec::new(),
        None,
        None,
        true,
    );
    let crate::exec::Started {
        id: exec_id,
        mut output,
        input,
        starting,
    } = crate::exec::start(inner, operation, container, container, config)
        .await
        .map_err(NotStarted::Error)?;
    let (mut stderr, mut stdout) = (BytesMut::new(), BytesMut::new());
    let line = tokio::time::timeout(
        inner.api.timeout,
        read_line(&mut output, &mut stderr, &mut stdout),
    )
    .await;
    // Its first line (or its end) shows the process started: a commit may pause it now.
    drop(starting);
    match line {
        Ok(Some(line)) => {
            let line = String::from_utf8_lossy(&line);
            let mut words = line.split_whitespace();
            let pid = words.next().and_then(|p| p.parse::<u32>().ok());
            match pid {
                Some(pid) if pid > 1 => Ok(Runner {
                    exec_id,
                    pid,
                    has_env: words.next() == Some("env"),
                    output,
                    input,
                }),
                _ => Err(NotStarted::Ended(None, line.as_bytes().to_vec())),
            }
        }
        Ok(None) => {
            let code = crate::exec::exit_code(inner, operation, &exec_id)
                .await
                .map_err(NotStarted::Error)?;
            Err(NotStarted::Ended(code, stderr.to_vec()))
        }
        Err(_) => Err(NotStarted::Error(sandbox_core::Error::Timeout {
            operation,
            after: inner.api.timeout,
        })),
    }
}

/// Reads stderr up to the next newline; `None` when the stream ends (or fails) first. Stdout
/// that arrives meanwhile goes to `stdout`: the daemon copies the two streams independently,
/// so the command's first stdout can overtake the line the script wrote before it.
async fn read_line(
    output: &mut Output,
    buf: &mut BytesMut,
    stdout: &mut BytesMut,
) -> Option<Bytes> {
    loop {
        if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(nl + 1);
            return Some(line.freeze().slice(..nl));
        }
        match output.next().await? {
            Ok(LogOutput::StdErr { message }) => buf.extend_from_slice(&message),
            Ok(other) => stdout.extend_from_slice(&other.into_bytes()),
            Err(_) => return None,
        }
    }
}

/// Encodes one value on one line (see the module docs).
pub(crate) fn encode(value: &str, out: &mut Vec<u8>) {
    for b in value.bytes() {
        match b {
            b'@' => out.extend_from_slice(b"@a"),
            b'\n' => out.extend_from_slice(b"@n"),
            b => out.push(b),
        }
    }
    out.push(b'\n');
}

/// The request a runner reads: workdir, then argv (with an `env --` prefix when env is set).
pub(crate) fn request(workdir: Option<&str>, env: &[String], argv: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + argv.iter().map(String::len).sum::<usize>());
    encode(workdir.unwrap_or(""), &mut out);
    let prefix = if env.is_empty() { 0 } else { 2 + env.len() };
    out.extend_from_slice(format!("{}\n", prefix + argv.len()).as_bytes());
    if !env.is_empty() {
        encode("env", &mut out);
        encode("--", &mut out);
        for kv in env {
            encode(kv, &mut out);
        }
    }
    for arg in argv {
        encode(arg, &mut out);
    }
    out
}

impl Runner {
    /// Whether this runner can run the request: env needs the image's `env`, and then a
    /// command name with `=` would be read by `env` as an assignment.
    pub(crate) fn can_run(&self, env: &[String], argv: &[String]) -> bool {
        env.is_empty() || (self.has_env && argv.first().is_some_and(|a| !a.contains('=')))
    }

    /// Hands the request over. `Ok(None)`: the runner died before accepting it, so nothing
    /// ran. With `close_stdin`, the command's stdin ends right after the request.
    pub(crate) async fn run(
        mut self,
        inner: &Inner,
        request: &[u8],
        close_stdin: bool,
    ) -> Result<Option<Running>> {
        if self.input.write_all(request).await.is_err() {
            return Ok(None);
        }
        if close_stdin && self.input.shutdown().await.is_err() {
            return Ok(None);
        }
        let (mut stderr, mut stdout) = (BytesMut::new(), BytesMut::new());
        let ack = tokio::time::timeout(
            inner.api.timeout,
            read_line(&mut self.output, &mut stderr, &mut stdout),
        )
        .await
        .map_err(|_| sandbox_core::Error::Timeout {
            operation: Operation::Exec,
            after: inner.api.timeout,
        })?;
        match ack {
            Some(line) if &line[..] == b"go" => Ok(Some(Running {
                exec_id: self.exec_id,
                pid: self.pid,
                output: self.output,
                input: self.input,
                stdout: stdout.freeze(),
                stderr: stderr.freeze(),
            })),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's decoder, run by a real shell (`program`), prints what it decoded.
    fn decode_with(program: &[&str], encoded: &[u8]) -> Option<Vec<u8>> {
        use std::io::Write;
        let decoder = SCRIPT
            .lines()
            .find(|l| l.starts_with("d() "))
            .expect("decoder line");
        let script = format!("nl='\n'\n{decoder}\nIFS= read -r l; d \"$l\"; printf %s \"$v\"");
        let mut child = std::process::Command::new(program[0])
            .args(&program[1..])
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(encoded).ok()?;
        let out = child.wait_with_output().ok()?;
        out.status.success().then_some(out.stdout)
    }

    #[test]
    fn values_round_trip_through_real_shells() {
        let values = [
            "",
            "plain",
            "@",
            "@@n@a",
            "a\nb\n",
            "\n",
            "trailing newline\n\n",
            "  spaces  ",
            "$(touch /tmp/pwned) `id` $HOME ${x:-y} ; | & > < * ? [a] ' \" \\ \\n",
            "ünïcødé ✓",
            "%0A@n",
        ];
        let shells: [&[&str]; 4] = [
            &["/bin/sh"],
            &["dash"],
            &["bash", "--posix"],
            &["busybox", "sh"],
        ];
        let mut shells_run = 0;
        for shell in shells {
            if decode_with(shell, b"probe\n").is_none() {
                eprintln!("{shell:?} is not installed: skipped");
                continue;
            }
            shells_run += 1;
            for value in values {
                let mut encoded = Vec::new();
                encode(value, &mut encoded);
                assert_eq!(
                    encoded.iter().filter(|b| **b == b'\n').count(),
                    1,
                    "one line: {value:?}"
                );
                let decoded = decode_with(shell, &encoded).expect("the shell ran");
                assert_eq!(
                    String::from_utf8_lossy(&decoded),
                    value,
                    "{shell:?} decoding {encoded:?}"
                );
            }
        }
        // /bin/sh exists on every machine this runs on.
        assert!(shells_run >= 1, "no shell ran the decoder");
    }

    #[test]
    fn a_request_is_lines_of_encoded_values() {
        let req = request(
            Some("/work space"),
            &["A=1\n2".to_string()],
            &["printf".to_string(), "%s@".to_string()],
        );
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "/work space\n5\nenv\n--\nA=1@n2\nprintf\n%s@a\n"
        );
        let req = request(None, &[], &["true".to_string()]);
        assert_eq!(String::from_utf8(req).unwrap(), "\n1\ntrue\n");
    }
}
