//! The conformance suite of `sandbox-core` against the local backend, in both isolation modes:
//! with bubblewrap (required when `SANDBOX_TEST_BWRAP=1`, else skipped loudly when it cannot
//! run here) and without (always).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use sandbox_backend_local::{IsolationKind, IsolationMode, LocalBackend, LocalConfig};
use sandbox_core::NetworkPolicy;
use sandbox_core::conformance::Suite;

/// One state directory per test binary run, removed when the process ends normally; each
/// check cleans up after itself, and `tests/leftovers.rs` checks nothing survives.
fn root(name: &str) -> std::path::PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
        .join(name)
}

/// A fresh root per backend instance: events are per instance, so an instance must not reap
/// (and announce) what another test's instance made.
fn config(isolation: IsolationMode, name: &str) -> LocalConfig {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    LocalConfig {
        isolation,
        root_dir: Some(root(&format!("{name}-{n}"))),
        reap_interval_ms: 200,
        ..LocalConfig::default()
    }
}

async fn bwrap_suite() -> Option<Suite> {
    let required = std::env::var_os("SANDBOX_TEST_BWRAP").is_some();
    let mode = if required {
        IsolationMode::Required
    } else {
        IsolationMode::Auto
    };
    let backend = LocalBackend::new(config(mode, "bwrap"))
        .await
        .expect("local backend");
    if !matches!(backend.isolation(), IsolationKind::Bubblewrap(_)) {
        eprintln!(
            "SKIPPED: bubblewrap cannot run here; the isolated conformance run needs it \
             (set SANDBOX_TEST_BWRAP=1 to make this a failure)"
        );
        return None;
    }
    Some(Suite::new(Arc::new(backend)))
}

async fn process_suite() -> Option<Suite> {
    let backend = LocalBackend::new(config(IsolationMode::Disabled, "process"))
        .await
        .expect("local backend");
    assert_eq!(backend.isolation(), &IsolationKind::Process);
    Some(Suite::new(Arc::new(backend)).network(NetworkPolicy::Full))
}

mod bubblewrap {
    sandbox_core::conformance_tests!(super::bwrap_suite);
}

mod process {
    sandbox_core::conformance_tests!(super::process_suite);
}
