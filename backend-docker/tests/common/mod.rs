//! Shared setup of the Docker tests: the gate on the daemon and the test image.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use sandbox_backend_docker::{DEFAULT_DOCKER_IMAGE, DockerBackend, DockerConfig, PullPolicy};
use sandbox_core::Error;

/// The image every test sandbox runs (built locally by the project's script).
pub const IMAGE: &str = DEFAULT_DOCKER_IMAGE;
/// An image that exists nowhere.
pub const MISSING_IMAGE: &str = "sandbox-test/does-not-exist:never";

/// The config of the tests: nothing is ever pulled (the machine has no registry).
pub fn config() -> DockerConfig {
    DockerConfig {
        image: IMAGE.to_string(),
        pull_policy: PullPolicy::Never,
        ..DockerConfig::default()
    }
}

fn required() -> bool {
    std::env::var("SANDBOX_TEST_DOCKER").is_ok_and(|v| v == "1")
}

static IMAGE_BUILT: Mutex<bool> = Mutex::new(false);

/// Builds the test image with `scripts/build-test-image.sh` unless it exists.
fn ensure_image() {
    let mut built = IMAGE_BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-image.sh");
    let status = Command::new("bash").arg(&script).arg(IMAGE).status();
    match status {
        Ok(s) if s.success() => *built = true,
        other => panic!(
            "the test image {IMAGE} is missing and {} failed ({other:?}); run it by hand to see why",
            script.display()
        ),
    }
}

/// A backend on the local daemon with `config`, or `None` (after saying so loudly) when no
/// daemon answers and `SANDBOX_TEST_DOCKER=1` is not set. With it set, an unreachable daemon
/// fails the test.
pub async fn backend_with(config: DockerConfig) -> Option<DockerBackend> {
    match DockerBackend::connect(config).await {
        Ok(b) => {
            ensure_image();
            Some(b)
        }
        Err(e @ Error::Unavailable { .. }) if !required() => {
            eprintln!(
                "SKIPPED: docker daemon not reachable ({e}); set SANDBOX_TEST_DOCKER=1 to make this a failure"
            );
            None
        }
        Err(e) => panic!("cannot connect to the Docker daemon (SANDBOX_TEST_DOCKER=1): {e}"),
    }
}

/// A backend with the tests' config.
pub async fn backend() -> Option<DockerBackend> {
    backend_with(config()).await
}
