//! Docker-specific behaviour, checked against the real daemon: what `docker inspect` shows,
//! sandboxes killed or removed behind the library's back, an unreachable daemon, missing
//! images, warm claims across backend instances, the reapers, snapshots, and secrets.
//!
//! Every test labels what it creates with a unique `docker-test` label and ends by checking
//! that no container, volume or image with that label is left.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    EventsOptions, KillContainerOptions, ListContainersOptions, ListImagesOptions,
    ListVolumesOptions, RemoveContainerOptions,
};
use futures::StreamExt;
use sandbox_backend_docker::{DockerBackend, DockerConfig, PullPolicy};
use sandbox_core::{
    Error, ExecRequest, ListFilter, NetworkPolicy, ResourceKind, SandboxBackend, SandboxBackendExt,
    SandboxSpec, SandboxSpecBuilder, SandboxStatus, SnapshotOptions, TerminationReason, WarmSpec,
};

const TEST_LABEL: &str = "docker-test";

fn run_id() -> String {
    format!(
        "t{}",
        sandbox_core::SandboxId::generate()
            .as_str()
            .trim_start_matches("sbx-")
    )
}

/// Force-removes a sandbox's container (and its volumes) directly through the daemon.
async fn remove_behind_the_librarys_back(backend: &DockerBackend, sb: &sandbox_core::Sandbox) {
    let force = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let container = sb.provider_id.as_deref().expect("a container id");
    backend
        .docker()
        .remove_container(container, Some(force))
        .await
        .unwrap();
}

fn spec(run: &str) -> SandboxSpecBuilder {
    SandboxSpec::builder(format!(
        "dt-{}",
        &sandbox_core::SandboxId::generate().as_str()[4..20]
    ))
    .label(TEST_LABEL, run)
    .timeout(Duration::from_secs(300))
}

/// Fails when anything labelled with this run is left on the daemon.
async fn assert_nothing_left(backend: &DockerBackend, run: &str) {
    let label = format!("sandbox.rs/label.{TEST_LABEL}={run}");
    let filters = HashMap::from([(
        "label".to_string(),
        vec!["sandbox.rs/managed-by=sandbox".to_string(), label],
    )]);
    let containers = backend
        .docker()
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .unwrap();
    let volumes = backend
        .docker()
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters.clone()),
        }))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default();
    let images = backend
        .docker()
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(
        containers.is_empty() && volumes.is_empty() && images.is_empty(),
        "left behind: containers {:?}, volumes {:?}, images {:?}",
        containers.iter().map(|c| &c.names).collect::<Vec<_>>(),
        volumes.iter().map(|v| &v.name).collect::<Vec<_>>(),
        images.iter().map(|i| &i.id).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_security_options_are_visible_in_inspect() {
    let Some(backend) = common::backend().await else {
        return;
    };
    let run = run_id();
    let sb = backend
        .create(
            spec(&run)
                .cpu_millis(500)
                .memory_bytes(64 << 20)
                .pids(100)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let info = backend
        .docker()
        .inspect_container(sb.provider_id.as_deref().unwrap(), None)
        .await
        .unwrap();
    let host = info.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.memory_swap, Some(64 << 20), "no swap beyond the limit");
    assert_eq!(host.pids_limit, Some(100));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    let mut added = host.cap_add.unwrap();
    added.sort();
    let mut want: Vec<String> = sandbox_backend_docker::ADDED_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    want.sort();
    assert_eq!(added, want);
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_string()])
    );
    assert_eq!(host.init, Some(true));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    // The limits hold inside: no network interface but loopback, and the memory cgroup.
    let out = backend
        .exec_output(&sb.id, ExecRequest::new(["ls", "/sys/class/net"]).unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.stdout_str().split_whitespace().collect::<Vec<_>>(),
        ["lo"]
    );
    let out = backend
        .exec_output(
            &sb.id,
            ExecRequest::new(["sh", "-c", "grep -i capeff /proc/self/status"]).unwrap(),
        )
        .await
        .unwrap();
    // CHOWN, DAC_OVERRIDE, FOWNER, KILL, SETGID, SETUID: bits 0 1 3 5 6 7 = 0xeb.
    assert!(
        out.stdout_str().trim().ends_with("00000000000000eb"),
        "{}",
        out.stdout_str()
    );

    // Full network: the configured network (default bridge).
    let full = backend
        .create(spec(&run).network(NetworkPolicy::Full).build().unwrap())
        .await
        .unwrap();
    let info = backend
        .docker()
        .inspect_container(full.provider_id.as_deref().unwrap(), None)
        .await
        .unwrap();
    let host = info.host_config.unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("bridge"));
    assert_eq!(
        host.pids_limit,
        Some(i64::from(sandbox_backend_docker::DEFAULT_PIDS_LIMIT)),
        "a default process limit"
    );
    backend.terminate(&sb.id).await.unwrap();
    backend.terminate(&full.id).await.unwrap();
    assert_nothing_left(&backend, &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_killed_or_removed_outside_the_library_shows_as_gone() {
    let Some(backend) = common::backend().await else {
        return;
    };
    let run = run_id();
    let sb = backend.create(spec(&run).build().unwrap()).await.unwrap();
    let container = sb.provider_id.clone().unwrap();
    backend
        .docker()
        .kill_container(
            &container,
            Some(KillContainerOptions {
                signal: "KILL".into(),
            }),
        )
        .await
        .unwrap();
    let status = backend.status(&sb.id).await.unwrap();
    assert_eq!(
        status,
        SandboxStatus::Terminated {
            reason: Some(TerminationReason::External)
        }
    );
    let err = backend
        .exec_output(&sb.id, ExecRequest::new(["true"]).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(
        !backend
            .list(ListFilter::all().label(TEST_LABEL, &run))
            .await
            .unwrap()
            .iter()
            .any(|s| s.id == sb.id),
        "a dead sandbox is not listed as live"
    );
    // Creating again for the session replaces the dead sandbox.
    let again = backend
        .create(
            SandboxSpec::builder(sb.session_id.clone().unwrap().as_str())
                .label(TEST_LABEL, &run)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_ne!(again.id, sb.id);
    assert!(matches!(
        backend.status(&sb.id).await,
        Err(Error::NotFound { .. })
    ));

    remove_behind_the_librarys_back(&backend, &again).await;
    let err = backend.status(&again.id).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { kind: ResourceKind::Sandbox, id } if *id == again.id.as_str()),
        "{err:?}"
    );
    let err = backend
        .exec_output(&again.id, ExecRequest::new(["true"]).unwrap())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    backend.terminate(&again.id).await.unwrap();
    assert_nothing_left(&backend, &run).await;
}

#[tokio::test]
async fn an_unreachable_daemon_is_unavailable_naming_the_socket() {
    let socket = format!("/tmp/sandbox-no-daemon-{}.sock", run_id());
    let config = DockerConfig {
        host: Some(format!("unix://{socket}")),
        ..common::config()
    };
    let err = DockerBackend::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(&socket), "{err}");
    assert!(err.is_retryable());

    let config = DockerConfig {
        host: Some("tcp://127.0.0.1:1".into()),
        api_timeout_seconds: 5,
        ..common::config()
    };
    let err = DockerBackend::connect(config).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("tcp://127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_with_pull_policy_never_names_it_and_leaves_nothing() {
    let Some(backend) = common::backend_with(DockerConfig {
        pull_policy: PullPolicy::Never,
        ..common::config()
    })
    .await
    else {
        return;
    };
    let run = run_id();
    let s = spec(&run).image(common::MISSING_IMAGE).build().unwrap();
    let session = s.session_id().clone();
    let err = backend.create(s).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NotFound {
                kind: ResourceKind::Image,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(common::MISSING_IMAGE), "{err}");
    let listed = backend
        .list(ListFilter::all().session(session))
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    // The pool of a missing image fails the same way.
    let warm = WarmSpec::builder("dt-missing")
        .image(common::MISSING_IMAGE)
        .label(TEST_LABEL, &run)
        .build()
        .unwrap();
    let err = backend.warm(warm).await.unwrap_err();
    assert!(err.to_string().contains(common::MISSING_IMAGE), "{err}");
    assert_nothing_left(&backend, &run).await;
}

async fn check_env(
    b: &DockerBackend,
    id: &sandbox_core::SandboxId,
    session: &sandbox_core::SessionId,
) {
    let argv = [
        "printenv",
        "SESSION_ID",
        "SANDBOX_ID",
        "REPO_NAME",
        "SANDBOX_AUTH_TOKEN",
        "WARM_SECRET",
    ];
    let out = b
        .exec_output(id, ExecRequest::new(argv).unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.stdout_str(),
        format!("{session}\n{id}\nwarm-repo\nwarm-token-value\nline1\nline2 $(not run)\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_warm_sandbox_keeps_its_session_env_across_backend_instances() {
    let Some(backend) = common::backend().await else {
        return;
    };
    let run = run_id();
    let key = format!("dt-{}", &run[1..12]);
    let warm = WarmSpec::builder(key.as_str())
        .size(1)
        .label(TEST_LABEL, &run)
        .build()
        .unwrap();
    let status = backend.warm(warm).await.unwrap();
    assert_eq!(status.ready, 1);
    let s = spec(&run)
        .template_key(key.as_str())
        .repo("octo", "warm-repo")
        .auth_token("warm-token-value")
        .secret("WARM_SECRET", "line1\nline2 $(not run)")
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let session = s.session_id().clone();
    let sb = backend.create(s).await.unwrap();
    assert_eq!(sb.origin, sandbox_core::SandboxOrigin::WarmPool);
    let expires = sb.expires_at.unwrap();
    check_env(&backend, &sb.id, &session).await;

    // A new instance (a restarted control plane) sees the same sandbox, session, labels,
    // expiry, and environment, from the daemon alone.
    let fresh = common::backend().await.unwrap();
    check_env(&fresh, &sb.id, &session).await;
    let listed = fresh
        .list(ListFilter::all().session(session.clone()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sb.id);
    assert_eq!(listed[0].labels.get(TEST_LABEL), Some(&run));
    assert_eq!(
        sandbox_core::time::unix_millis(listed[0].expires_at.unwrap()),
        sandbox_core::time::unix_millis(expires)
    );
    // The session file is private to root in a volume that snapshots skip.
    let out = fresh
        .exec_output(
            &sb.id,
            ExecRequest::new(["stat", "-c", "%a %u", "/run/sandbox/session.env"]).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "600 0\n");
    let snap = fresh
        .snapshot(
            &sb.id,
            SnapshotOptions::new().label(TEST_LABEL, &run).unwrap(),
        )
        .await
        .unwrap();
    let restored = fresh
        .restore(&snap.reference(), spec(&run).build().unwrap())
        .await
        .unwrap();
    let out = fresh
        .exec_output(
            &restored.id,
            ExecRequest::new(["sh", "-c", "ls -A /run/sandbox; echo ${WARM_SECRET:-none}"])
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        out.stdout_str(),
        "none\n",
        "the snapshot carries no session file"
    );

    // An idempotent create from the new instance returns the claimed sandbox.
    let again = fresh
        .create(
            SandboxSpec::builder(session.as_str())
                .template_key(key.as_str())
                .label(TEST_LABEL, &run)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(again.id, sb.id);

    let empty = WarmSpec::builder(key.as_str()).size(0).build().unwrap();
    backend.warm(empty).await.unwrap();
    fresh.terminate(&sb.id).await.unwrap();
    fresh.terminate(&restored.id).await.unwrap();
    fresh.delete_snapshot(&snap.id).await.unwrap();
    assert_nothing_left(&backend, &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapers_really_remove() {
    let Some(backend) = common::backend().await else {
        return;
    };
    let run = run_id();
    let mut events = backend.events();
    let short = backend
        .create(spec(&run).timeout(Duration::from_secs(1)).build().unwrap())
        .await
        .unwrap();
    let long = backend.create(spec(&run).build().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reaped = backend.reap_expired().await.unwrap();
    assert!(reaped.contains(&short.id), "{reaped:?}");
    assert!(!reaped.contains(&long.id));
    assert!(
        backend
            .docker()
            .inspect_container(short.provider_id.as_deref().unwrap(), None)
            .await
            .is_err(),
        "the expired container is gone"
    );
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if e.sandbox_id == short.id
            && !matches!(
                e.kind,
                sandbox_core::SandboxEventKind::Creating | sandbox_core::SandboxEventKind::Ready
            )
        {
            kinds.push(e.kind);
        }
    }
    assert_eq!(
        kinds,
        [
            sandbox_core::SandboxEventKind::Expired,
            sandbox_core::SandboxEventKind::Terminated {
                reason: TerminationReason::Expired
            }
        ]
    );

    // Orphans: a sandbox killed outside the library, and a claim volume without container.
    backend
        .docker()
        .kill_container(
            long.provider_id.as_deref().unwrap(),
            None::<KillContainerOptions>,
        )
        .await
        .unwrap();
    let orphan_volume = format!("sandbox-claim-sbx-{}", &run[1..]);
    let mut labels = HashMap::from([
        ("sandbox.rs/managed-by".to_string(), "sandbox".to_string()),
        ("sandbox.rs/docker.kind".to_string(), "claim".to_string()),
        (
            "sandbox.rs/sandbox-id".to_string(),
            format!("sbx-{}", &run[1..]),
        ),
        ("sandbox.rs/session-id".to_string(), "dt-orphan".to_string()),
        (
            "sandbox.rs/docker.created-at-ms".to_string(),
            "1".to_string(),
        ),
        (
            "sandbox.rs/docker.expires-at-ms".to_string(),
            "2".to_string(),
        ),
        (
            "sandbox.rs/docker.label-keys".to_string(),
            TEST_LABEL.to_string(),
        ),
    ]);
    labels.insert(format!("sandbox.rs/label.{TEST_LABEL}"), run.clone());
    backend
        .docker()
        .create_volume(VolumeCreateRequest {
            name: Some(orphan_volume.clone()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .unwrap();
    let report = backend.reap_orphans().await.unwrap();
    assert!(
        report
            .containers
            .iter()
            .any(|c| c.ends_with(long.session_id.as_ref().unwrap().as_str())),
        "{report:?}"
    );
    assert!(report.volumes.contains(&orphan_volume), "{report:?}");
    assert!(backend.status(&long.id).await.unwrap_err().is_not_found());
    assert_nothing_left(&backend, &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_snapshot_images_are_reaped_only_once_no_commit_can_be_in_progress() {
    // A commit creates its image before it tags it, so an untagged snapshot image may be one
    // being taken: the orphan reaper leaves it alone for twice the API deadline.
    let api_timeout = 4;
    let Some(backend) = common::backend_with(DockerConfig {
        api_timeout_seconds: api_timeout,
        ..common::config()
    })
    .await
    else {
        return;
    };
    let run = run_id();
    let sb = backend.create(spec(&run).build().unwrap()).await.unwrap();
    let snap = backend
        .snapshot(
            &sb.id,
            SnapshotOptions::new().label(TEST_LABEL, &run).unwrap(),
        )
        .await
        .unwrap();
    let committed = std::time::Instant::now();
    backend.terminate(&sb.id).await.unwrap();
    let restored = backend
        .restore(&snap.reference(), spec(&run).build().unwrap())
        .await
        .unwrap();
    let image = backend
        .docker()
        .inspect_container(restored.provider_id.as_deref().unwrap(), None)
        .await
        .unwrap()
        .image
        .unwrap();
    // Deleted while in use: only the tag goes. Then the sandbox is removed behind the
    // library's back, so nothing removes the image but the reaper.
    backend.delete_snapshot(&snap.id).await.unwrap();
    remove_behind_the_librarys_back(&backend, &restored).await;
    let untagged = backend.docker().inspect_image(&image).await.unwrap();
    assert!(untagged.repo_tags.unwrap_or_default().is_empty());

    let grace = Duration::from_secs(2 * api_timeout);
    let report = backend.reap_orphans().await.unwrap();
    assert!(
        committed.elapsed() + Duration::from_secs(1) < grace,
        "the machine is too slow for this test: {:?} since the commit",
        committed.elapsed()
    );
    assert!(!report.images.contains(&image), "{report:?}");
    backend.docker().inspect_image(&image).await.unwrap();

    // Docker keeps image times in whole seconds: wait a second beyond the grace.
    tokio::time::sleep((grace + Duration::from_secs(1)).saturating_sub(committed.elapsed())).await;
    backend.reap_orphans().await.unwrap();
    assert!(
        backend.docker().inspect_image(&image).await.is_err(),
        "an orphaned snapshot image older than the grace is removed"
    );
    assert_nothing_left(&backend, &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_pauses_the_sandbox_and_leaves_it_running_without_its_secrets() {
    let Some(backend) = common::backend().await else {
        return;
    };
    let run = run_id();
    let sb = backend
        .create(
            spec(&run)
                .repo("octo", "snap")
                .secret("SNAP_SECRET", "do-not-commit-me")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let container = sb.provider_id.clone().unwrap();
    let since = sandbox_core::time::unix_seconds(std::time::SystemTime::now());
    let snap = backend
        .snapshot(
            &sb.id,
            SnapshotOptions::new().label(TEST_LABEL, &run).unwrap(),
        )
        .await
        .unwrap();
    let until = sandbox_core::time::unix_seconds(std::time::SystemTime::now()) + 1;
    // The daemon replays its events of that window.
    let filters = HashMap::from([("container".to_string(), vec![container.clone()])]);
    let mut docker_events = backend.docker().events(Some(EventsOptions {
        since: Some(since.to_string()),
        until: Some(until.to_string()),
        filters: Some(filters),
    }));
    let mut actions = Vec::new();
    while !actions.contains(&"unpause".to_string()) {
        let e = tokio::time::timeout(Duration::from_secs(5), docker_events.next())
            .await
            .expect("pause/unpause events")
            .unwrap()
            .unwrap();
        actions.push(e.action.unwrap_or_default());
    }
    let pause = actions.iter().position(|a| a == "pause").expect("paused");
    let commit = actions
        .iter()
        .position(|a| a == "commit")
        .expect("committed");
    let unpause = actions
        .iter()
        .position(|a| a == "unpause")
        .expect("unpaused");
    assert!(pause < commit && commit < unpause, "{actions:?}");
    assert_eq!(
        backend.status(&sb.id).await.unwrap(),
        SandboxStatus::Running
    );
    let out = backend
        .exec_output(&sb.id, ExecRequest::new(["true"]).unwrap())
        .await
        .unwrap();
    assert!(out.success());

    let image = backend
        .docker()
        .inspect_image(&format!("sandbox-snapshot:{}", snap.id))
        .await
        .unwrap();
    let env = image.config.unwrap().env.unwrap_or_default();
    assert!(
        !env.iter().any(|e| e.contains("do-not-commit-me")),
        "snapshot image env {env:?}"
    );
    assert_eq!(snap.repo.as_ref().map(|r| r.name()), Some("snap"));
    backend.terminate(&sb.id).await.unwrap();
    backend.delete_snapshot(&snap.id).await.unwrap();
    assert_nothing_left(&backend, &run).await;
}

/// Captures this crate's log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_show_in_debug_errors_or_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("sandbox_backend_docker=trace,sandbox_core=trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let Some(backend) = common::backend().await else {
        return;
    };
    let run = run_id();
    let key = format!("dt-{}", &run[1..12]);
    backend
        .warm(
            WarmSpec::builder(key.as_str())
                .size(1)
                .label(TEST_LABEL, &run)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let cold = backend
        .create(
            spec(&run)
                .auth_token("TOKEN-cold-secret")
                .secret("API_KEY", "KEY-cold-secret")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let warm = backend
        .create(
            spec(&run)
                .template_key(key.as_str())
                .auth_token("TOKEN-warm-secret")
                .secret("API_KEY", "KEY-warm-secret")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let req = ExecRequest::builder(["sh", "-c", "exit 3"])
        .env("PER_EXEC", "EXEC-secret")
        .build()
        .unwrap();
    let out = backend.exec_output(&warm.id, req).await.unwrap();
    assert_eq!(out.status.code(), Some(3));
    backend.terminate(&cold.id).await.unwrap();
    let err = backend
        .exec_output(&cold.id, ExecRequest::new(["true"]).unwrap())
        .await
        .unwrap_err();
    let debug = format!("{backend:?} {cold:?} {warm:?} {err:?} {err}");
    backend
        .warm(WarmSpec::builder(key.as_str()).size(0).build().unwrap())
        .await
        .unwrap();
    backend.terminate(&warm.id).await.unwrap();
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("sandbox"), "the capture works: {logs}");
    for secret in [
        "TOKEN-cold-secret",
        "KEY-cold-secret",
        "TOKEN-warm-secret",
        "KEY-warm-secret",
        "EXEC-secret",
    ] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    assert_nothing_left(&backend, &run).await;
}

/// Installs a subscriber capturing this crate's debug lines for the current thread.
fn capture_debug() -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("sandbox_backend_docker=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

/// A spare-runner test's setup: this thread's debug lines captured, a backend, a run id and
/// one sandbox labelled with it.
struct Traced {
    logs: Captured,
    _guard: tracing::subscriber::DefaultGuard,
    backend: DockerBackend,
    run: String,
    sb: sandbox_core::Sandbox,
}

/// `None`: no daemon (the test is skipped, or fails with `SANDBOX_TEST_DOCKER=1`).
async fn traced_sandbox() -> Option<Traced> {
    let (logs, _guard) = capture_debug();
    let backend = common::backend().await?;
    let run = run_id();
    let sb = backend.create(spec(&run).build().unwrap()).await.unwrap();
    Some(Traced {
        logs,
        _guard,
        backend,
        run,
        sb,
    })
}

impl Traced {
    /// Terminates the sandbox and checks that nothing labelled with the run is left.
    async fn finish(self) {
        self.backend.terminate(&self.sb.id).await.unwrap();
        assert_nothing_left(&self.backend, &self.run).await;
    }
}

const ON_SPARE: &str = "exec on the sandbox's spare runner";
const ON_PLAIN: &str = "exec through a new Docker exec";

#[tokio::test]
async fn an_exec_on_a_spare_runner_behaves_like_a_plain_exec() {
    let Some(t) = traced_sandbox().await else {
        return;
    };
    let (logs, backend, sb) = (&t.logs, &t.backend, &t.sb);
    let tricky = [
        "",
        "@",
        "@n@a",
        "two\nlines\n",
        "  padded  ",
        "$(touch /tmp/pwned) `id` $HOME ${x:-y}; | & > < * ? [a] ' \" \\ \\n",
        "ünïcødé ✓",
    ];
    let mut printf = vec!["printf", "[%s]"];
    printf.extend(tricky);
    let cases: Vec<(&str, sandbox_core::ExecRequestBuilder)> = vec![
        ("argv", ExecRequest::builder(printf.clone())),
        (
            "env",
            ExecRequest::builder([
                "sh",
                "-c",
                "printf '[%s][%s]' \"$A\" \"$B\"; env | grep -c '^A='",
            ])
            .env("A", tricky[5])
            .env("B", "x\ny@n"),
        ),
        (
            "stdin",
            ExecRequest::builder(["sh", "-c", "cat; echo; cat /dev/stdin | wc -c"]).stdin(
                bytes::Bytes::from_static(b"go\n2\nenv\n--\nnot a request @n\x00\xff"),
            ),
        ),
        ("workdir", ExecRequest::builder(["pwd"]).workdir("/tmp")),
        (
            "exit code and stderr",
            ExecRequest::builder(["sh", "-c", "echo out; echo err >&2; exit 7"]),
        ),
        (
            "large output",
            ExecRequest::builder([
                "sh",
                "-c",
                "head -c 300000 /dev/zero | tr '\\0' x; echo; head -c 5000 /dev/zero >&2",
            ]),
        ),
        (
            "no stdin",
            ExecRequest::builder(["sh", "-c", "cat | wc -c"]),
        ),
    ];
    for (name, builder) in cases {
        let plain = backend
            .exec_output(&sb.id, builder.clone().user("0").build().unwrap())
            .await
            .unwrap();
        let before = logs.count(ON_SPARE);
        let spare = backend
            .exec_output(&sb.id, builder.build().unwrap())
            .await
            .unwrap();
        assert_eq!(
            logs.count(ON_SPARE),
            before + 1,
            "{name}: the spare was not used"
        );
        assert_eq!(spare, plain, "{name}");
    }
    // The shell never interpreted anything: no file was created by the tricky argument.
    let out = backend
        .exec_output(&sb.id, ExecRequest::new(["ls", "/tmp/pwned"]).unwrap())
        .await
        .unwrap();
    assert!(!out.success(), "a value was interpreted by a shell");

    // Failures to start: Docker's exit code 126 on both paths, naming what failed.
    for (name, builder, needle) in [
        (
            "missing command",
            ExecRequest::builder(["no-such-command-x"]),
            "no-such-command-x",
        ),
        (
            "missing workdir",
            ExecRequest::builder(["true"]).workdir("/no/such/dir"),
            "/no/such/dir",
        ),
    ] {
        let plain = backend
            .exec_output(&sb.id, builder.clone().user("0").build().unwrap())
            .await
            .unwrap();
        let spare = backend
            .exec_output(&sb.id, builder.build().unwrap())
            .await
            .unwrap();
        assert_eq!(plain.status.code(), Some(126), "{name}: {plain:?}");
        assert_eq!(spare.status.code(), Some(126), "{name}: {spare:?}");
        for out in [&plain, &spare] {
            let text = format!("{}{}", out.stdout_str(), out.stderr_str());
            assert!(text.contains(needle), "{name}: {text:?}");
        }
    }
    t.finish().await;
}

#[tokio::test]
async fn concurrent_and_back_to_back_execs_get_their_own_output() {
    let Some(t) = traced_sandbox().await else {
        return;
    };
    let (logs, backend, sb) = (&t.logs, &t.backend, &t.sb);
    for i in 0..30 {
        let out = backend
            .exec_output(&sb.id, ExecRequest::new(["echo", &i.to_string()]).unwrap())
            .await
            .unwrap();
        assert_eq!(out.stdout_str(), format!("{i}\n"));
        assert!(out.stderr.is_empty(), "{out:?}");
    }
    // Back to back, each exec finds the next spare starting and waits for it rather than
    // start a plain exec that would queue behind it.
    assert_eq!(
        (logs.count(ON_SPARE), logs.count(ON_PLAIN)),
        (30, 0),
        "sequential execs should all run on spares"
    );
    let outs = futures::future::join_all((0..24).map(|i| {
        let id = sb.id.clone();
        async move {
            let req = ExecRequest::builder(["sh", "-c", "echo $I; echo e$I >&2"])
                .env("I", i.to_string())
                .build()
                .unwrap();
            (i, backend.exec_output(&id, req).await.unwrap())
        }
    }))
    .await;
    for (i, out) in outs {
        assert!(out.success(), "{out:?}");
        assert_eq!(out.stdout_str(), format!("{i}\n"));
        assert_eq!(out.stderr_str(), format!("e{i}\n"));
    }
    assert!(logs.count(ON_SPARE) >= 1, "no exec used a spare");
    assert!(logs.count(ON_PLAIN) >= 1, "no exec found the spare taken");
    t.finish().await;
}

#[tokio::test]
async fn a_spare_runner_that_died_falls_back_and_timeouts_kill_on_both_paths() {
    let Some(t) = traced_sandbox().await else {
        return;
    };
    let (logs, backend, sb) = (&t.logs, &t.backend, &t.sb);
    // Kill the spare from inside (as another exec would), without matching this killer's own
    // command line.
    let killer = ExecRequest::builder([
        "sh",
        "-c",
        "n=sandbox-; n=${n}runner; for p in /proc/[0-9]*; do \
         case \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" in *\" $n \") kill -9 ${p#/proc/} && echo killed;; esac; done",
    ])
    .user("0")
    .build()
    .unwrap();
    let out = backend.exec_output(&sb.id, killer).await.unwrap();
    assert_eq!(out.stdout_str(), "killed\n", "{out:?}");
    let plain_before = logs.count(ON_PLAIN);
    let out = backend
        .exec_output(&sb.id, ExecRequest::new(["echo", "after"]).unwrap())
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "after\n");
    assert!(
        logs.count(ON_PLAIN) > plain_before,
        "the dead spare was used"
    );

    for user in [None, Some("0")] {
        let mut req = ExecRequest::builder(["sh", "-c", "sleep 4321 & sleep 4321; echo never"])
            .timeout(Duration::from_millis(800));
        if let Some(u) = user {
            req = req.user(u);
        }
        let out = backend
            .exec_output(&sb.id, req.build().unwrap())
            .await
            .unwrap();
        assert_eq!(
            out.status,
            sandbox_core::ExitStatus::TimedOut,
            "{user:?}: {out:?}"
        );
        assert!(
            out.stderr.is_empty(),
            "{user:?}: the pid line leaked: {out:?}"
        );
        let left = backend
            .exec_output(
                &sb.id,
                ExecRequest::new(["sh", "-c", "ps -o args | grep -c '^sleep 4321' || true"])
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            left.stdout_str().trim(),
            "0",
            "{user:?}: the command's group survived"
        );
    }
    t.finish().await;
}

/// Thaws a container frozen by a hung paused commit (cgroup v1 or v2), so the daemon recovers
/// and the test can clean up after reporting the hang.
fn thaw(container: &str) {
    for (path, value) in [
        (
            format!("/sys/fs/cgroup/freezer/docker/{container}/freezer.state"),
            "THAWED",
        ),
        (
            format!("/sys/fs/cgroup/system.slice/docker-{container}.scope/cgroup.freeze"),
            "0",
        ),
        (
            format!("/sys/fs/cgroup/docker/{container}/cgroup.freeze"),
            "0",
        ),
    ] {
        let _ = std::fs::write(path, value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_execs_start_never_hang_the_daemon() {
    // An exec starting while the daemon pauses the container for a commit hangs both: the
    // backend keeps its own exec starts (plain, spare refills, kills) out of the commit.
    let Some(backend) = common::backend().await else {
        return;
    };
    let backend = Arc::new(backend);
    let run = run_id();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .saturating_sub(1)
        .to_string();
    let sb = backend.create(spec(&run).build().unwrap()).await.unwrap();
    let container = sb.provider_id.clone().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (backend, id, stop) = (backend.clone(), sb.id.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Both paths: a user forces a new Docker exec, none may use the spare.
                    let mut req = ExecRequest::builder(["echo", "x"]);
                    if (n + w).is_multiple_of(2) {
                        req = req.user("0");
                    }
                    match backend.exec_output(&id, req.build().unwrap()).await {
                        Ok(out) if out.stdout_str() == "x\n" => n += 1,
                        Ok(out) => return Err(format!("exec {n} printed {out:?}")),
                        Err(e) => return Err(format!("exec {n} failed: {e:?}")),
                    }
                }
                Ok(n)
            })
        })
        .collect();
    let mut snaps = Vec::new();
    let mut failures = Vec::new();
    for i in 0..10 {
        let taken = tokio::time::timeout(
            Duration::from_secs(30),
            backend.snapshot(
                &sb.id,
                SnapshotOptions::new().label(TEST_LABEL, &run).unwrap(),
            ),
        )
        .await;
        match taken {
            Ok(Ok(snap)) => snaps.push(snap),
            Ok(Err(e)) => {
                failures.push(format!("snapshot {i} failed: {e:?}"));
                break;
            }
            Err(_) => {
                // Recover the daemon before anything else can reach the container.
                thaw(&container);
                failures.push(format!("snapshot {i} hung with execs starting"));
                break;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut execs = 0;
    for w in workers {
        match tokio::time::timeout(Duration::from_secs(30), w).await {
            Ok(Ok(Ok(n))) => execs += n,
            Ok(Ok(Err(e))) => failures.push(e),
            Ok(Err(e)) => failures.push(format!("exec worker panicked: {e}")),
            Err(_) => failures.push("an exec hung".to_string()),
        }
    }
    if !failures.is_empty() {
        let failure = failures.join("\n");
        // What the daemon did to the container, for the report.
        let history = std::process::Command::new("docker")
            .args(["events", "--since", &since, "--until", "0s"])
            .args(["--filter", &format!("container={container}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        // Remove what the run made, whatever state the daemon is in, then report.
        let docker = backend.docker();
        let force = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let _ = docker.remove_container(&container, Some(force)).await;
        let label = format!("sandbox.rs/label.{TEST_LABEL}={run}");
        let filters = HashMap::from([("label".to_string(), vec![label])]);
        let images = docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        for image in images {
            let _ = docker
                .remove_image(
                    &image.id,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
        panic!("{failure}\ncontainer events:\n{history}");
    }
    assert!(execs >= 10, "only {execs} execs ran during the snapshots");
    backend.terminate(&sb.id).await.unwrap();
    for snap in snaps {
        backend.delete_snapshot(&snap.id).await.unwrap();
    }
    assert_nothing_left(&backend, &run).await;
}
