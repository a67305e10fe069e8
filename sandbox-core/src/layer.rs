//! Layers: wrappers that implement [`SandboxBackend`] around any backend, in the style of
//! tower and OpenDAL layers, so backends do not each reinvent them.
//!
//! - [`Timeout`]: a deadline per operation ([`Error::Timeout`] when it passes).
//! - [`Retry`]: retries what is safe to retry, with exponential backoff and jitter.
//!
//! Put the timeout inside the retry, so each attempt has its own deadline:
//!
//! ```no_run
//! # async fn f(backend: Box<sandbox_core::DynSandboxBackend>) {
//! use sandbox_core::layer::{Retry, RetryPolicy, Timeout, TimeoutPolicy};
//! let backend = Retry::new(Timeout::new(backend, TimeoutPolicy::default()), RetryPolicy::default());
//! # }
//! ```
//!
//! What [`Retry`] retries: errors with [`RetrySafety::Safe`] (unavailable, rate limited, a
//! timed-out idempotent call) for every operation, and errors with
//! [`RetrySafety::SameIdempotencyKey`] (outcome unknown, a timed-out create) for `create` and
//! `restore` only, because retrying those with the same spec carries the same session id,
//! which every backend treats as the idempotency key. `exec` and `snapshot` are retried only
//! when the call certainly had no effect.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{BackendKind, Operation, SandboxBackend};
use crate::capabilities::Capabilities;
use crate::error::{Error, Result, RetrySafety};
use crate::event::EventStream;
use crate::exec::{ExecRequest, ExecStream};
use crate::id::{SandboxId, SnapshotId};
use crate::sandbox::{Sandbox, SandboxStatus, Snapshot, SnapshotRef, WarmStatus};
use crate::spec::{ListFilter, SandboxSpec, SnapshotFilter, SnapshotOptions, WarmSpec};

/// Deadlines per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutPolicy {
    /// Deadline of `create`, `restore` and `warm` (they may pull images and start machines).
    pub provision: Duration,
    /// Deadline of `snapshot` (a filesystem copy).
    pub snapshot: Duration,
    /// Deadline of every other operation. For `exec` it bounds starting the command, not the
    /// command itself (that is [`ExecRequest::timeout`]).
    pub call: Duration,
}

impl Default for TimeoutPolicy {
    /// 10 minutes to provision or snapshot, 1 minute for anything else.
    fn default() -> Self {
        Self {
            provision: Duration::from_secs(600),
            snapshot: Duration::from_secs(600),
            call: Duration::from_secs(60),
        }
    }
}

impl TimeoutPolicy {
    fn for_operation(&self, op: Operation) -> Duration {
        match op {
            Operation::Create | Operation::Restore | Operation::Warm => self.provision,
            Operation::Snapshot => self.snapshot,
            _ => self.call,
        }
    }
}

/// How [`Retry`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, backoff 200 ms doubling up to 5 s, with full jitter.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (attempt counts from 1): full jitter over an
    /// exponential cap, or the provider's `retry_after` when it gave one.
    fn backoff(&self, attempt: u32, error: &Error) -> Duration {
        if let Error::RateLimited {
            retry_after: Some(after),
            ..
        } = error
        {
            return (*after).min(self.max_backoff);
        }
        let cap = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let mut bytes = [0u8; 4];
        // Without entropy, fall back to the cap itself: retries still happen, only without jitter.
        let fraction = match getrandom::fill(&mut bytes) {
            Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
            Err(_) => 1.0,
        };
        cap.mul_f64(fraction)
    }

    fn should_retry(&self, op: Operation, error: &Error) -> bool {
        match error.retry_safety() {
            RetrySafety::Safe => true,
            RetrySafety::SameIdempotencyKey => {
                matches!(op, Operation::Create | Operation::Restore)
            }
            RetrySafety::Never => false,
        }
    }
}

/// Adds a deadline to every operation of the inner backend.
#[derive(Debug, Clone)]
pub struct Timeout<B> {
    inner: B,
    policy: TimeoutPolicy,
}

impl<B: SandboxBackend> Timeout<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, policy: TimeoutPolicy) -> Self {
        Self { inner, policy }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    async fn run<T>(&self, op: Operation, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let after = self.policy.for_operation(op);
        match tokio::time::timeout(after, fut).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: op,
                after,
            }),
        }
    }
}

/// Retries the inner backend's failures that are safe to retry (see the module docs).
#[derive(Debug, Clone)]
pub struct Retry<B> {
    inner: B,
    policy: RetryPolicy,
}

impl<B: SandboxBackend> Retry<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    async fn run<T, F, Fut>(&self, op: Operation, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error)
                    if attempt < self.policy.max_attempts
                        && self.policy.should_retry(op, &error) =>
                {
                    let delay = self.policy.backoff(attempt, &error);
                    tracing::warn!(
                        operation = %op,
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        %error,
                        "retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Implements every method of [`SandboxBackend`] by passing it through `self.run(op, ..)`.
/// `$wrap` turns the inner call (an expression building a future) into what `run` takes.
macro_rules! layer_impl {
    ($ty:ident, |$call:ident| $wrap:expr) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<B: SandboxBackend> SandboxBackend for $ty<B> {
            fn kind(&self) -> BackendKind {
                self.inner.kind()
            }
            fn capabilities(&self) -> Capabilities {
                self.inner.capabilities()
            }
            async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
                let $call = || self.inner.create(spec.clone());
                self.run(Operation::Create, $wrap).await
            }
            async fn warm(&self, spec: WarmSpec) -> Result<WarmStatus> {
                let $call = || self.inner.warm(spec.clone());
                self.run(Operation::Warm, $wrap).await
            }
            async fn snapshot(&self, id: &SandboxId, options: SnapshotOptions) -> Result<Snapshot> {
                let $call = || self.inner.snapshot(id, options.clone());
                self.run(Operation::Snapshot, $wrap).await
            }
            async fn restore(&self, snapshot: &SnapshotRef, spec: SandboxSpec) -> Result<Sandbox> {
                let $call = || self.inner.restore(snapshot, spec.clone());
                self.run(Operation::Restore, $wrap).await
            }
            async fn terminate(&self, id: &SandboxId) -> Result<()> {
                let $call = || self.inner.terminate(id);
                self.run(Operation::Terminate, $wrap).await
            }
            async fn status(&self, id: &SandboxId) -> Result<SandboxStatus> {
                let $call = || self.inner.status(id);
                self.run(Operation::Status, $wrap).await
            }
            async fn exec(&self, id: &SandboxId, request: ExecRequest) -> Result<ExecStream> {
                let $call = || self.inner.exec(id, request.clone());
                self.run(Operation::Exec, $wrap).await
            }
            async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Bytes> {
                let $call = || self.inner.read_file(id, path);
                self.run(Operation::ReadFile, $wrap).await
            }
            async fn write_file(&self, id: &SandboxId, path: &str, contents: Bytes) -> Result<()> {
                let $call = || self.inner.write_file(id, path, contents.clone());
                self.run(Operation::WriteFile, $wrap).await
            }
            async fn list(&self, filter: ListFilter) -> Result<Vec<Sandbox>> {
                let $call = || self.inner.list(filter.clone());
                self.run(Operation::List, $wrap).await
            }
            async fn list_snapshots(&self, filter: SnapshotFilter) -> Result<Vec<Snapshot>> {
                let $call = || self.inner.list_snapshots(filter.clone());
                self.run(Operation::ListSnapshots, $wrap).await
            }
            async fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
                let $call = || self.inner.delete_snapshot(id);
                self.run(Operation::DeleteSnapshot, $wrap).await
            }
            async fn reap_expired(&self) -> Result<Vec<SandboxId>> {
                let $call = || self.inner.reap_expired();
                self.run(Operation::ReapExpired, $wrap).await
            }
            fn events(&self) -> EventStream {
                self.inner.events()
            }
        }
    };
}

layer_impl!(Timeout, |call| call());
layer_impl!(Retry, |call| call);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A backend whose `create` and `status` fail with the queued errors, then succeed, and
    /// whose `exec` hangs.
    #[derive(Debug, Default)]
    struct Flaky {
        failures: Mutex<Vec<Error>>,
        calls: AtomicU32,
    }

    impl Flaky {
        fn failing(errors: Vec<Error>) -> Self {
            Self {
                failures: Mutex::new(errors),
                calls: AtomicU32::new(0),
            }
        }
        fn next(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.failures.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        fn unsupported<T>(&self, op: Operation) -> Result<T> {
            Err(Error::unsupported(op, BackendKind::Local, "test double"))
        }
    }

    #[async_trait]
    impl SandboxBackend for Flaky {
        fn kind(&self) -> BackendKind {
            BackendKind::Local
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn create(&self, spec: SandboxSpec) -> Result<Sandbox> {
            self.next()?;
            let mut sb = Sandbox::new(
                SandboxId::generate(),
                BackendKind::Local,
                SandboxStatus::Running,
                std::time::SystemTime::now(),
            );
            sb.session_id = Some(spec.session_id().clone());
            Ok(sb)
        }
        async fn warm(&self, _: WarmSpec) -> Result<WarmStatus> {
            self.unsupported(Operation::Warm)
        }
        async fn snapshot(&self, _: &SandboxId, _: SnapshotOptions) -> Result<Snapshot> {
            self.next()?;
            self.unsupported(Operation::Snapshot)
        }
        async fn restore(&self, _: &SnapshotRef, _: SandboxSpec) -> Result<Sandbox> {
            self.unsupported(Operation::Restore)
        }
        async fn terminate(&self, _: &SandboxId) -> Result<()> {
            Ok(())
        }
        async fn status(&self, _: &SandboxId) -> Result<SandboxStatus> {
            self.next()?;
            Ok(SandboxStatus::Running)
        }
        async fn exec(&self, _: &SandboxId, _: ExecRequest) -> Result<ExecStream> {
            std::future::pending().await
        }
        async fn read_file(&self, _: &SandboxId, _: &str) -> Result<Bytes> {
            self.unsupported(Operation::ReadFile)
        }
        async fn write_file(&self, _: &SandboxId, _: &str, _: Bytes) -> Result<()> {
            self.unsupported(Operation::WriteFile)
        }
        async fn list(&self, _: ListFilter) -> Result<Vec<Sandbox>> {
            Ok(Vec::new())
        }
        async fn list_snapshots(&self, _: SnapshotFilter) -> Result<Vec<Snapshot>> {
            Ok(Vec::new())
        }
        async fn delete_snapshot(&self, _: &SnapshotId) -> Result<()> {
            Ok(())
        }
        async fn reap_expired(&self) -> Result<Vec<SandboxId>> {
            Ok(Vec::new())
        }
        fn events(&self) -> EventStream {
            crate::EventBus::new().subscribe()
        }
    }

    fn unavailable() -> Error {
        Error::Unavailable {
            backend: BackendKind::Local,
            message: "down".into(),
            source: None,
        }
    }

    fn unknown() -> Error {
        Error::OutcomeUnknown {
            operation: Operation::Create,
            backend: BackendKind::Local,
            message: "reply lost".into(),
            source: None,
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        }
    }

    fn spec() -> SandboxSpec {
        SandboxSpec::builder("s1").build().unwrap()
    }

    #[tokio::test]
    async fn retries_transient_failures_until_success() {
        let b = Retry::new(Flaky::failing(vec![unavailable(), unavailable()]), fast());
        b.status(&SandboxId::generate()).await.unwrap();
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let errors = (0..10).map(|_| unavailable()).collect();
        let b = Retry::new(Flaky::failing(errors), fast());
        assert!(
            b.status(&SandboxId::generate())
                .await
                .unwrap_err()
                .is_retryable()
        );
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn unknown_outcome_is_retried_only_for_idempotent_create() {
        let b = Retry::new(Flaky::failing(vec![unknown()]), fast());
        let sb = b.create(spec()).await.unwrap();
        assert_eq!(sb.session_id.unwrap().as_str(), "s1");
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 2);

        // A snapshot whose outcome is unknown must not be taken twice.
        let b = Retry::new(Flaky::failing(vec![unknown()]), fast());
        let err = b
            .snapshot(&SandboxId::generate(), SnapshotOptions::new())
            .await
            .unwrap_err();
        assert!(err.is_outcome_unknown());
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let b = Retry::new(
            Flaky::failing(vec![Error::invalid_spec("x", "bad")]),
            fast(),
        );
        assert!(b.status(&SandboxId::generate()).await.is_err());
        assert_eq!(b.inner().calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_gives_a_typed_error() {
        let policy = TimeoutPolicy {
            call: Duration::from_secs(3),
            ..TimeoutPolicy::default()
        };
        let b = Timeout::new(Flaky::default(), policy);
        let req = ExecRequest::new(["true"]).unwrap();
        match b.exec(&SandboxId::generate(), req).await {
            Err(Error::Timeout { operation, after }) => {
                assert_eq!(operation, Operation::Exec);
                assert_eq!(after, Duration::from_secs(3));
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let p = RetryPolicy::default();
        for attempt in 1..20 {
            assert!(p.backoff(attempt, &unavailable()) <= p.max_backoff);
        }
        let limited = Error::RateLimited {
            backend: BackendKind::Modal,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(p.backoff(1, &limited), Duration::from_secs(2));
    }
}
