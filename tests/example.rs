//! `cargo run --example create_sandbox` must work end to end: run the built example binary
//! with no configuration (the local backend) and, when Docker is here, with
//! `SANDBOX_BACKEND=docker`.

#![cfg(any(feature = "local", feature = "docker"))]
use std::path::PathBuf;
use std::process::{Command, Output};

/// `cargo test` builds the examples next to the test binaries' directory.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("examples").join("create_sandbox");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds examples; run `cargo build --examples`",
        bin.display()
    );
    bin
}

fn run_example(vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(example_binary());
    // No configuration but what the test gives.
    for (key, _) in std::env::vars() {
        if key.starts_with("SANDBOX_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(vars.iter().copied());
    cmd.output().expect("the example runs")
}

fn assert_complete_run(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "example failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for expected in [
        "connected: ",
        "created sbx-",
        "stdout | hello from sbx-",
        "stdout | finished",
        "stderr | to stderr",
        "exit   | exited with code 0",
        "taking a snapshot",
        "notes.txt says \"written before the snapshot\"",
        "event: ",
        "Ready",
        "Terminated",
        "done: everything created was terminated",
    ] {
        assert!(
            stdout.contains(expected),
            "example output lacks {expected:?}:\n{stdout}"
        );
    }
}

#[cfg(feature = "local")]
#[test]
fn example_runs_end_to_end_with_no_configuration() {
    let root = tempfile::tempdir().expect("temp dir");
    // The only variable set points the local backend at a private directory, so that this
    // test can check that nothing is left there.
    let out = run_example(&[(
        "SANDBOX_LOCAL_ROOT_DIR",
        root.path().to_str().expect("utf-8 path"),
    )]);
    assert_complete_run(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("config: backend = local"), "{stdout}");
    let sandboxes = root.path().join("sandboxes");
    let left: Vec<_> = std::fs::read_dir(&sandboxes)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the example left workspaces behind: {left:?}"
    );
}

#[cfg(feature = "docker")]
fn docker_available() -> bool {
    let up = Command::new("docker")
        .args(["image", "inspect", sandbox::config::DEFAULT_DOCKER_IMAGE])
        .output()
        .is_ok_and(|o| o.status.success());
    if !up && std::env::var_os("SANDBOX_TEST_DOCKER").is_some() {
        panic!(
            "SANDBOX_TEST_DOCKER is set but the daemon or the image {} is missing \
             (start Docker, run scripts/build-test-image.sh)",
            sandbox::config::DEFAULT_DOCKER_IMAGE
        );
    }
    if !up {
        eprintln!(
            "SKIPPED: docker daemon or image {} not available; set SANDBOX_TEST_DOCKER=1 to require it",
            sandbox::config::DEFAULT_DOCKER_IMAGE
        );
    }
    up
}

#[cfg(feature = "docker")]
#[test]
fn example_runs_end_to_end_on_docker() {
    if !docker_available() {
        return;
    }
    let out = run_example(&[("SANDBOX_BACKEND", "docker")]);
    assert_complete_run(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("config: backend = docker"), "{stdout}");
}
