//! Running commands: [`ExecRequest`] in, [`ExecStream`] (streamed) or [`ExecOutput`]
//! (buffered) out, ending in a typed [`ExitStatus`].

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, Stream, StreamExt};
use serde::Serialize;

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::validate;

/// Longest command line accepted (sum of argument lengths).
pub const MAX_ARGV_BYTES: usize = 128 * 1024;
/// Longest exec timeout.
pub const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest exec timeout.
pub const MIN_EXEC_TIMEOUT: Duration = Duration::from_millis(1);
/// Largest stdin accepted in one request (16 MiB).
pub const MAX_STDIN_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of stdout and of stderr that [`ExecStream::output`] keeps (64 MiB each); the
/// rest is dropped and [`ExecOutput::truncated`] is set.
pub const MAX_BUFFERED_OUTPUT: usize = 64 * 1024 * 1024;

/// A command to run in a sandbox: argv (never a shell string; a shell is the caller's explicit
/// `sh -c`), with optional env, workdir, user, stdin and timeout.
///
/// ```
/// use std::time::Duration;
/// use sandbox_core::ExecRequest;
/// let req = ExecRequest::builder(["sh", "-c", "echo $GREETING"])
///     .env("GREETING", "hi")
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(req.argv()[0], "sh");
/// assert!(ExecRequest::new(Vec::<String>::new()).is_err());
/// # Ok::<(), sandbox_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ExecRequest {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    user: Option<String>,
    stdin: Option<Bytes>,
    timeout: Option<Duration>,
}

impl fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Env values and stdin may carry secrets the caller passes to one command.
        f.debug_struct("ExecRequest")
            .field("argv", &self.argv)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("workdir", &self.workdir)
            .field("user", &self.user)
            .field("stdin_bytes", &self.stdin.as_ref().map(Bytes::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ExecRequest {
    /// A request with only argv.
    pub fn new<I, S>(argv: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::builder(argv).build()
    }

    /// A builder starting from argv.
    pub fn builder<I, S>(argv: I) -> ExecRequestBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequestBuilder {
            req: ExecRequest {
                argv: argv.into_iter().map(Into::into).collect(),
                env: BTreeMap::new(),
                workdir: None,
                user: None,
                stdin: None,
                timeout: None,
            },
            env: Vec::new(),
        }
    }

    /// The program and its arguments.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Extra environment for this command (on top of the sandbox's).
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Working directory; `None` uses the sandbox's.
    pub fn workdir(&self) -> Option<&str> {
        self.workdir.as_deref()
    }

    /// User to run as (`name`, `uid` or `uid:gid`); `None` uses the sandbox's default.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Bytes written to the command's stdin, which is then closed. `None`: stdin is empty.
    pub fn stdin(&self) -> Option<&Bytes> {
        self.stdin.as_ref()
    }

    /// Deadline: when it passes, the command is killed and the status is
    /// [`ExitStatus::TimedOut`]. `None`: no deadline but the sandbox's own lifetime.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// Builder of [`ExecRequest`]; `build()` validates.
#[derive(Debug, Clone)]
#[must_use = "call build() to get an ExecRequest"]
pub struct ExecRequestBuilder {
    req: ExecRequest,
    env: Vec<(String, String)>,
}

impl ExecRequestBuilder {
    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory (absolute).
    pub fn workdir(mut self, workdir: impl Into<String>) -> Self {
        self.req.workdir = Some(workdir.into());
        self
    }

    /// Sets the user (`name`, `uid` or `uid:gid`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.req.user = Some(user.into());
        self
    }

    /// Sets stdin.
    pub fn stdin(mut self, stdin: impl Into<Bytes>) -> Self {
        self.req.stdin = Some(stdin.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.req.timeout = Some(timeout);
        self
    }

    /// Validates every field.
    pub fn build(mut self) -> Result<ExecRequest> {
        let req = &mut self.req;
        if req.argv.is_empty() {
            return Err(Error::invalid_spec("exec.argv", "must name a program"));
        }
        if req.argv[0].is_empty() {
            return Err(Error::invalid_spec("exec.argv[0]", "must not be empty"));
        }
        let mut total = 0;
        for (i, arg) in req.argv.iter().enumerate() {
            validate::no_nul(&format!("exec.argv[{i}]"), arg)?;
            total += arg.len() + 1;
        }
        if total > MAX_ARGV_BYTES {
            return Err(Error::invalid_spec(
                "exec.argv",
                format!("must be at most {MAX_ARGV_BYTES} bytes in all"),
            ));
        }
        for (k, v) in std::mem::take(&mut self.env) {
            let field = format!("exec.env[{k}]");
            validate::env_key(&field, &k)?;
            validate::env_value(&field, &v)?;
            if req.env.insert(k, v).is_some() {
                return Err(Error::invalid_spec(field, "is set twice"));
            }
        }
        if let Some(dir) = &req.workdir {
            validate::absolute_path("exec.workdir", dir)?;
        }
        if let Some(user) = &req.user {
            validate_user(user)?;
        }
        if let Some(stdin) = &req.stdin
            && stdin.len() > MAX_STDIN_BYTES
        {
            return Err(Error::invalid_spec(
                "exec.stdin",
                format!("must be at most {MAX_STDIN_BYTES} bytes"),
            ));
        }
        if let Some(t) = req.timeout {
            validate::duration_within("exec.timeout", t, MIN_EXEC_TIMEOUT, MAX_EXEC_TIMEOUT)?;
        }
        Ok(self.req)
    }
}

fn validate_user(user: &str) -> Result<()> {
    let field = "exec.user";
    let numeric = |s: &str| !s.is_empty() && s.len() <= 10 && s.chars().all(|c| c.is_ascii_digit());
    let name = |s: &str| {
        !s.is_empty()
            && s.len() <= 32
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
    };
    let ok = match user.split_once(':') {
        Some((u, g)) => (numeric(u) || name(u)) && (numeric(g) || name(g)),
        None => numeric(user) || name(user),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_spec(
            field,
            "must be a user name ([a-z_][a-z0-9_-]*), a uid, or user:group",
        ))
    }
}

/// How a command ended. Never a magic number: a timeout is `TimedOut`, not 124 or 137 or -1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitStatus {
    /// The process exited with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The process was killed by a signal it did not ask for (OOM kill, external kill).
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The request's timeout passed; the process was killed.
    TimedOut,
    /// The command's end could not be observed (the sandbox went away, the provider lost the
    /// status). The reason says what is known.
    Unknown {
        /// What is known.
        reason: String,
    },
}

impl ExitStatus {
    /// True for `Exited { code: 0 }`.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited { code: 0 })
    }

    /// The exit code, when the process exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited { code } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited { code } => write!(f, "exited with code {code}"),
            ExitStatus::Signaled { signal } => write!(f, "killed by signal {signal}"),
            ExitStatus::TimedOut => f.write_str("timed out"),
            ExitStatus::Unknown { reason } => write!(f, "unknown ({reason})"),
        }
    }
}

/// One item of a streamed exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes the command wrote to stdout, as they came.
    Stdout(Bytes),
    /// Bytes the command wrote to stderr, as they came.
    Stderr(Bytes),
    /// The command ended. Always the last item.
    Exit(ExitStatus),
}

/// A buffered exec result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// How the command ended.
    pub status: ExitStatus,
    /// Everything written to stdout (up to [`MAX_BUFFERED_OUTPUT`]).
    pub stdout: Bytes,
    /// Everything written to stderr (up to [`MAX_BUFFERED_OUTPUT`]).
    pub stderr: Bytes,
    /// True when output beyond [`MAX_BUFFERED_OUTPUT`] was dropped.
    pub truncated: bool,
}

impl ExecOutput {
    /// True when the command exited with code 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Stdout as text (lossy UTF-8).
    pub fn stdout_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Stderr as text (lossy UTF-8).
    pub fn stderr_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }
}

/// The output of a running command: [`ExecEvent`]s as they come, ending with exactly one
/// [`ExecEvent::Exit`].
///
/// Backends build it from any stream with [`ExecStream::new`], which enforces the contract: a
/// provider stream that ends without an exit status yields an error instead of a silent end,
/// and nothing is yielded after the exit status or an error.
pub struct ExecStream {
    inner: BoxStream<'static, Result<ExecEvent>>,
    backend: BackendKind,
    done: bool,
}

impl fmt::Debug for ExecStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecStream")
            .field("backend", &self.backend)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ExecStream {
    /// Wraps a backend's event stream.
    pub fn new(backend: BackendKind, inner: BoxStream<'static, Result<ExecEvent>>) -> Self {
        Self {
            inner,
            backend,
            done: false,
        }
    }

    /// Collects everything into an [`ExecOutput`].
    pub async fn output(mut self) -> Result<ExecOutput> {
        let mut stdout = BytesMut::new();
        let mut stderr = BytesMut::new();
        let mut truncated = false;
        let mut keep = |buf: &mut BytesMut, chunk: &Bytes| {
            let room = MAX_BUFFERED_OUTPUT.saturating_sub(buf.len());
            if chunk.len() > room {
                truncated = true;
            }
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        };
        while let Some(event) = self.next().await {
            match event? {
                ExecEvent::Stdout(b) => keep(&mut stdout, &b),
                ExecEvent::Stderr(b) => keep(&mut stderr, &b),
                ExecEvent::Exit(status) => {
                    return Ok(ExecOutput {
                        status,
                        stdout: stdout.freeze(),
                        stderr: stderr.freeze(),
                        truncated,
                    });
                }
            }
        }
        // `poll_next` turns an end without exit status into an error, so this is unreachable
        // in practice; keep a typed error rather than a panic.
        Err(missing_exit(self.backend))
    }
}

fn missing_exit(backend: BackendKind) -> Error {
    Error::backend(backend, "exec stream ended without an exit status")
}

impl Stream for ExecStream {
    type Item = Result<ExecEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(ExecEvent::Exit(status)))) => {
                self.done = true;
                Poll::Ready(Some(Ok(ExecEvent::Exit(status))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(event))) => Poll::Ready(Some(Ok(event))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(missing_exit(self.backend))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    #[test]
    fn requests_are_validated() {
        let field = |r: Result<ExecRequest>| r.unwrap_err().invalid_field().unwrap().to_string();
        assert_eq!(field(ExecRequest::new(Vec::<String>::new())), "exec.argv");
        assert_eq!(field(ExecRequest::new([""])), "exec.argv[0]");
        assert_eq!(field(ExecRequest::new(["echo", "a\0b"])), "exec.argv[1]");
        assert_eq!(
            field(ExecRequest::new(["x".repeat(MAX_ARGV_BYTES + 1)])),
            "exec.argv"
        );
        let b = || ExecRequest::builder(["true"]);
        assert_eq!(field(b().env("A-B", "1").build()), "exec.env[A-B]");
        assert_eq!(field(b().workdir("tmp").build()), "exec.workdir");
        assert_eq!(field(b().user("root;id").build()), "exec.user");
        assert_eq!(field(b().timeout(Duration::ZERO).build()), "exec.timeout");
        assert_eq!(
            field(b().stdin(vec![0u8; MAX_STDIN_BYTES + 1]).build()),
            "exec.stdin"
        );
        for ok in ["root", "1000", "1000:1000", "app:staff", "_svc"] {
            b().user(ok).build().unwrap();
        }
        // Metacharacters are plain bytes of an argument, never interpreted.
        ExecRequest::new(["echo", "$(id); `id` | && >"]).unwrap();
    }

    #[test]
    fn debug_hides_env_values_and_stdin() {
        let req = ExecRequest::builder(["true"])
            .env("TOKEN", "very-secret")
            .stdin("also-secret")
            .build()
            .unwrap();
        let dbg = format!("{req:?}");
        assert!(
            !dbg.contains("very-secret") && !dbg.contains("also-secret"),
            "{dbg}"
        );
        assert!(dbg.contains("TOKEN"));
    }

    #[tokio::test]
    async fn stream_without_exit_status_is_an_error() {
        let inner = stream::iter(vec![Ok(ExecEvent::Stdout(Bytes::from_static(b"partial")))]);
        let mut s = ExecStream::new(BackendKind::Local, inner.boxed());
        assert!(matches!(s.next().await, Some(Ok(ExecEvent::Stdout(_)))));
        let err = s.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("without an exit status"), "{err}");
        assert!(s.next().await.is_none());

        let inner = stream::iter(vec![Ok(ExecEvent::Stdout(Bytes::from_static(b"x")))]);
        let err = ExecStream::new(BackendKind::Local, inner.boxed())
            .output()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("without an exit status"));
    }

    #[tokio::test]
    async fn output_collects_and_stops_at_exit() {
        let inner = stream::iter(vec![
            Ok(ExecEvent::Stdout(Bytes::from_static(b"a"))),
            Ok(ExecEvent::Stderr(Bytes::from_static(b"e"))),
            Ok(ExecEvent::Stdout(Bytes::from_static(b"b"))),
            Ok(ExecEvent::Exit(ExitStatus::Exited { code: 3 })),
            Ok(ExecEvent::Stdout(Bytes::from_static(b"after"))),
        ]);
        let out = ExecStream::new(BackendKind::Local, inner.boxed())
            .output()
            .await
            .unwrap();
        assert_eq!(&out.stdout[..], b"ab");
        assert_eq!(&out.stderr[..], b"e");
        assert_eq!(out.status.code(), Some(3));
        assert!(!out.success());
        assert!(!out.truncated);
    }

    #[test]
    fn exit_status_display_and_serde() {
        assert_eq!(ExitStatus::TimedOut.to_string(), "timed out");
        assert!(ExitStatus::Exited { code: 0 }.success());
        assert!(!ExitStatus::Signaled { signal: 9 }.success());
        let json = serde_json::to_string(&ExitStatus::Exited { code: 2 }).unwrap();
        assert_eq!(json, r#"{"kind":"exited","code":2}"#);
        let back: ExitStatus = serde_json::from_str(r#"{"kind":"timed_out"}"#).unwrap();
        assert_eq!(back, ExitStatus::TimedOut);
    }
}
