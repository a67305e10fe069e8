//! Behaviour specific to the local backend: what bubblewrap isolation really hides, state
//! shared across instances, commands killed from the host's point of view, idle timeouts, and
//! nothing left behind.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use sandbox_backend_local::{IsolationKind, IsolationMode, LocalBackend, LocalConfig};
use sandbox_core::{
    Bytes, Error, ExecEvent, ExecRequest, ListFilter, NetworkPolicy, SandboxBackend,
    SandboxBackendExt, SandboxSpec, SandboxStatus, SnapshotOptions, TerminationReason, WarmSpec,
};

fn config(root: &Path, isolation: IsolationMode) -> LocalConfig {
    LocalConfig {
        isolation,
        root_dir: Some(root.to_path_buf()),
        reap_interval_ms: 100,
        ..LocalConfig::default()
    }
}

/// A bubblewrap backend, or `None` (said loudly; a failure with `SANDBOX_TEST_BWRAP=1`).
async fn isolated(root: &Path) -> Option<LocalBackend> {
    let required = std::env::var_os("SANDBOX_TEST_BWRAP").is_some();
    let mode = if required {
        IsolationMode::Required
    } else {
        IsolationMode::Auto
    };
    let backend = LocalBackend::new(config(root, mode))
        .await
        .expect("backend");
    if matches!(backend.isolation(), IsolationKind::Bubblewrap(_)) {
        Some(backend)
    } else {
        eprintln!(
            "SKIPPED: bubblewrap cannot run here (SANDBOX_TEST_BWRAP=1 makes this a failure)"
        );
        None
    }
}

fn spec(session: &str) -> SandboxSpec {
    SandboxSpec::builder(session)
        .timeout(Duration::from_secs(300))
        .auth_token("local-test-token")
        .build()
        .expect("spec")
}

async fn sh(
    backend: &LocalBackend,
    id: &sandbox_core::SandboxId,
    script: &str,
) -> sandbox_core::ExecOutput {
    backend
        .exec_output(id, ExecRequest::new(["sh", "-c", script]).expect("request"))
        .await
        .expect("exec")
}

/// Host processes running the command `argv` (their command line starts with it).
fn host_commands(argv: &str) -> Vec<String> {
    host_processes(argv)
        .into_iter()
        .filter(|p| {
            p.split_once(": ")
                .is_some_and(|(_, cmd)| cmd.starts_with(argv))
        })
        .collect()
}

/// Host processes whose command line mentions `needle`.
fn host_processes(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
    {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        if pid == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn bubblewrap_hides_the_host() {
    let root = tempfile::tempdir().unwrap();
    let Some(backend) = isolated(root.path()).await else {
        return;
    };
    let sb = backend.create(spec("iso")).await.unwrap();

    // The host's files are read-only where visible, and most of the host is absent.
    let out = sh(
        &backend,
        &sb.id,
        "touch /usr/sandbox-escape 2>&1; echo rc=$?",
    )
    .await;
    assert!(out.stdout_str().contains("rc=1"), "{}", out.stdout_str());
    assert!(!Path::new("/usr/sandbox-escape").exists());
    for absent in [
        "/etc/shadow",
        "/root",
        "/home",
        "/var",
        root.path().to_str().unwrap(),
    ] {
        let out = sh(&backend, &sb.id, &format!("test -e '{absent}'")).await;
        assert!(!out.success(), "{absent} is visible inside the sandbox");
    }
    // Network: only loopback.
    let out = sh(
        &backend,
        &sb.id,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    )
    .await;
    assert_eq!(out.stdout_str().trim(), "lo");
    // Processes: only the sandbox's own (a fresh pid namespace), not this test process.
    let me = std::process::id();
    let out = sh(
        &backend,
        &sb.id,
        &format!("test -e /proc/{me}/cmdline && cat /proc/{me}/cmdline"),
    )
    .await;
    assert!(
        !out.stdout_str().contains("local-"),
        "host process visible: {}",
        out.stdout_str()
    );
    let out = sh(&backend, &sb.id, "ls /proc | grep -c '^[0-9]'").await;
    let pids: u32 = out.stdout_str().trim().parse().unwrap();
    assert!(pids <= 5, "{pids} processes visible");
    // No capabilities.
    let out = sh(&backend, &sb.id, "grep CapEff /proc/self/status").await;
    assert!(
        out.stdout_str().contains("0000000000000000"),
        "{}",
        out.stdout_str()
    );
    // The workspace is writable and is the host's workspace directory.
    sh(&backend, &sb.id, "echo inside > from-sandbox.txt").await;
    let host = root
        .path()
        .join("sandboxes")
        .join(sb.id.as_str())
        .join("workspace/from-sandbox.txt");
    assert_eq!(std::fs::read_to_string(host).unwrap(), "inside\n");
    // Secrets reach the sandbox, never a command line the host can see.
    let out = sh(&backend, &sb.id, "echo $SANDBOX_AUTH_TOKEN").await;
    assert_eq!(out.stdout_str(), "local-test-token\n");
    let req = ExecRequest::new(["sleep", "3"]).unwrap();
    let stream = backend.exec(&sb.id, req).await.unwrap();
    assert!(
        host_processes("local-test-token").is_empty(),
        "token on a host command line"
    );
    drop(stream);
    backend.terminate(&sb.id).await.unwrap();
}

#[tokio::test]
async fn full_network_shares_the_host_network() {
    let root = tempfile::tempdir().unwrap();
    let Some(backend) = isolated(root.path()).await else {
        return;
    };
    let spec = SandboxSpec::builder("net")
        .network(NetworkPolicy::Full)
        .build()
        .unwrap();
    let sb = backend.create(spec).await.unwrap();
    let out = sh(
        &backend,
        &sb.id,
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort",
    )
    .await;
    assert!(
        out.stdout_str().lines().count() > 1,
        "only {:?}",
        out.stdout_str()
    );
    backend.terminate(&sb.id).await.unwrap();
}

#[tokio::test]
async fn required_isolation_fails_without_bubblewrap_and_auto_falls_back() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path(), IsolationMode::Required);
    cfg.bwrap_path = Some("/nonexistent/bwrap".into());
    let err = LocalBackend::new(cfg.clone()).await.unwrap_err();
    assert_eq!(err.invalid_field(), Some("local.isolation"), "{err}");
    assert!(err.to_string().contains("bubblewrap"), "{err}");

    cfg.isolation = IsolationMode::Auto;
    let backend = LocalBackend::new(cfg).await.unwrap();
    assert_eq!(backend.isolation(), &IsolationKind::Process);
    let caps = backend.capabilities();
    assert!(
        !caps.network_none,
        "network none claimed without a network namespace"
    );
    assert_eq!(caps.isolation, sandbox_core::Isolation::Process);
    // So a spec asking for no network is refused, not silently given the host's network.
    let err = backend.create(spec("no-net")).await.unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(
        backend
            .list(ListFilter {
                include_pool: true,
                ..ListFilter::all()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_second_instance_sees_and_manages_the_same_sandboxes() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), IsolationMode::Disabled);
    let first = LocalBackend::new(cfg.clone()).await.unwrap();
    let spec = SandboxSpec::builder("shared")
        .network(NetworkPolicy::Full)
        .label("team", "a")
        .secret("API_KEY", "k-123")
        .build()
        .unwrap();
    let sb = first.create(spec.clone()).await.unwrap();

    let second = LocalBackend::new(cfg).await.unwrap();
    assert_eq!(second.status(&sb.id).await.unwrap(), SandboxStatus::Running);
    let listed = second
        .list(ListFilter::all().label("team", "a"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sb.id);
    // Idempotent by session across instances.
    assert_eq!(second.create(spec).await.unwrap().id, sb.id);
    // The environment, secrets included, survives the instance.
    let out = second
        .exec_output(
            &sb.id,
            ExecRequest::new(["sh", "-c", "echo $API_KEY"]).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "k-123\n");

    // A command started by the first instance is killed by a terminate from the second.
    let req = ExecRequest::new(["sleep", "987654"]).unwrap();
    let mut running = first.exec(&sb.id, req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        host_commands("sleep 987654").len(),
        1,
        "the command should be running"
    );
    second.terminate(&sb.id).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match running.next().await {
                Some(Ok(ExecEvent::Exit(status))) => break status,
                Some(_) => continue,
                None => panic!("stream ended without a status"),
            }
        }
    })
    .await
    .expect("the killed command's stream ends");
    assert!(!end.success(), "{end}");
    assert!(
        host_commands("sleep 987654").is_empty(),
        "the command survived terminate"
    );
    assert!(first.status(&sb.id).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn terminate_kills_background_commands_and_exec_timeouts_kill_their_children() {
    let root = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(config(root.path(), IsolationMode::Disabled))
        .await
        .unwrap();
    let spec = SandboxSpec::builder("bg")
        .network(NetworkPolicy::Full)
        .build()
        .unwrap();
    let sb = backend.create(spec).await.unwrap();
    // A command whose child outlives it: the child dies with the command's group.
    let out = sh(&backend, &sb.id, "sleep 876543 & echo started").await;
    assert_eq!(out.stdout_str(), "started\n");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        host_commands("sleep 876543").is_empty(),
        "a background child survived its command"
    );

    let req = ExecRequest::builder(["sh", "-c", "sleep 765432 & sleep 765431"])
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let out = backend.exec_output(&sb.id, req).await.unwrap();
    assert_eq!(out.status, sandbox_core::ExitStatus::TimedOut);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        host_commands("sleep 76543").is_empty(),
        "a timed-out command's children survived"
    );
    backend.terminate(&sb.id).await.unwrap();
}

#[tokio::test]
async fn idle_timeout_reaps_only_idle_sandboxes() {
    let root = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(config(root.path(), IsolationMode::Disabled))
        .await
        .unwrap();
    let mut events = backend.events();
    let busy = SandboxSpec::builder("busy")
        .network(NetworkPolicy::Full)
        .idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let idle = SandboxSpec::builder("idle")
        .network(NetworkPolicy::Full)
        .idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let busy = backend.create(busy).await.unwrap();
    let idle = backend.create(idle).await.unwrap();
    // A command running longer than the idle timeout keeps its sandbox alive.
    let long = ExecRequest::new(["sleep", "2"]).unwrap();
    let (out, _) = tokio::join!(
        backend.exec_output(&busy.id, long),
        tokio::time::sleep(Duration::from_millis(1500))
    );
    assert!(out.unwrap().success());
    assert_eq!(
        backend.status(&busy.id).await.unwrap(),
        SandboxStatus::Running
    );
    let status = backend.status(&idle.id).await;
    assert!(
        matches!(status, Err(ref e) if e.is_not_found())
            || matches!(
                status,
                Ok(SandboxStatus::Terminated {
                    reason: Some(TerminationReason::Idle)
                })
            ),
        "{status:?}"
    );
    let terminated = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(e)) = events.next().await {
            if e.sandbox_id == idle.id
                && e.kind
                    == (sandbox_core::SandboxEventKind::Terminated {
                        reason: TerminationReason::Idle,
                    })
            {
                return;
            }
        }
    })
    .await;
    assert!(terminated.is_ok(), "no Terminated{{Idle}} event");
    backend.terminate(&busy.id).await.unwrap();
}

#[tokio::test]
async fn file_operations_refuse_links_planted_by_commands() {
    let root = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(config(root.path(), IsolationMode::Disabled))
        .await
        .unwrap();
    let spec = SandboxSpec::builder("links")
        .network(NetworkPolicy::Full)
        .build()
        .unwrap();
    let sb = backend.create(spec).await.unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "host secret").unwrap();
    let target = outside.path().display();
    sh(
        &backend,
        &sb.id,
        &format!("ln -s {target} dir-link && ln -s {target}/secret.txt file-link"),
    )
    .await;
    for path in [
        "dir-link/secret.txt",
        "file-link",
        "/workspace/dir-link/secret.txt",
    ] {
        match backend.read_file(&sb.id, path).await {
            Err(Error::InvalidSpec { field, .. }) => assert_eq!(field, "path"),
            other => panic!("read through {path}: {other:?}"),
        }
    }
    let err = backend
        .write_file(&sb.id, "dir-link/planted", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.invalid_field(), Some("path"));
    assert!(!outside.path().join("planted").exists());
    backend.terminate(&sb.id).await.unwrap();
}

/// Every kind of sandbox, a pool, a snapshot and running commands: after terminate and
/// warm(0), no workspace, mapping or process is left.
#[tokio::test]
async fn nothing_is_left_behind() {
    let root = tempfile::tempdir().unwrap();
    let backend = match isolated(root.path()).await {
        Some(b) => b,
        None => LocalBackend::new(config(root.path(), IsolationMode::Disabled))
            .await
            .unwrap(),
    };
    let network = if backend.capabilities().network_none {
        NetworkPolicy::None
    } else {
        NetworkPolicy::Full
    };
    let pool = WarmSpec::builder("leftover-pool")
        .network(network.clone())
        .size(2)
        .build()
        .unwrap();
    backend.warm(pool).await.unwrap();
    let cold = SandboxSpec::builder("leftover-cold")
        .network(network.clone())
        .build()
        .unwrap();
    let cold = backend.create(cold).await.unwrap();
    let warm = SandboxSpec::builder("leftover-warm")
        .network(network.clone())
        .template_key("leftover-pool")
        .build()
        .unwrap();
    let warm = backend.create(warm).await.unwrap();
    let snap = backend
        .snapshot(&cold.id, SnapshotOptions::new())
        .await
        .unwrap();
    let restored = SandboxSpec::builder("leftover-restored")
        .network(network.clone())
        .build()
        .unwrap();
    let restored = backend.restore(&snap.reference(), restored).await.unwrap();
    let mut streams = Vec::new();
    for sb in [&cold, &warm, &restored] {
        let req = ExecRequest::new(["sleep", "654321"]).unwrap();
        streams.push(backend.exec(&sb.id, req).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(host_commands("sleep 654321").len(), 3);

    for sb in [&cold, &warm, &restored] {
        backend.terminate(&sb.id).await.unwrap();
    }
    let empty = WarmSpec::builder("leftover-pool")
        .network(network)
        .size(0)
        .build()
        .unwrap();
    backend.warm(empty).await.unwrap();
    backend.delete_snapshot(&snap.id).await.unwrap();
    // Refills triggered by the claim may still be landing: warm(0) waited for them.
    let all = ListFilter {
        include_pool: true,
        ..ListFilter::all()
    };
    assert!(backend.list(all).await.unwrap().is_empty());
    let root = root.path();
    for dir in ["sandboxes", "sessions", "snapshots", "pools"] {
        let left: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{dir}/ still holds {left:?}");
    }
    assert!(
        host_commands("sleep 654321").is_empty(),
        "commands survived terminate"
    );
    assert!(
        host_processes(root.to_str().unwrap()).is_empty(),
        "processes still use the root"
    );
}
