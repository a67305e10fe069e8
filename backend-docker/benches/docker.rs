//! The Docker backend next to the `docker` CLI (and raw bollard calls) doing the same things:
//! cold create, warm create, exec round trip, snapshot and restore. Medians and p90 over
//! `BENCH_RUNS` runs (default 20), ratios, and the issue's targets marked met or not met.
//!
//! ```sh
//! scripts/build-test-image.sh
//! cargo bench -p sandbox-backend-docker --bench docker
//! ```
//! Everything it creates is removed at the end (containers and images it made carry a
//! `sandbox-bench` label, sandboxes are terminated, snapshots deleted).

use std::future::Future;
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerConfig, ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, RemoveContainerOptions, RemoveImageOptions,
};
use futures::StreamExt;
use sandbox_backend_docker::{DockerBackend, DockerConfig, PullPolicy};
use sandbox_core::{
    ExecRequest, SandboxBackend, SandboxBackendExt, SandboxId, SandboxSpec, SnapshotOptions,
    WarmSpec,
};

const IMAGE: &str = sandbox_backend_docker::DEFAULT_DOCKER_IMAGE;
const KEEPALIVE: &str = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done";

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// The untimed pause before each exec round trip: an agent reading output and thinking.
const EXEC_PAUSE: Duration = Duration::from_millis(200);

struct Stats {
    median: Duration,
    p90: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
    }
}

fn ms(d: Duration) -> String {
    format!("{:8.1}", d.as_secs_f64() * 1000.0)
}

struct Row {
    operation: &'static str,
    what: String,
    stats: Stats,
}

async fn time<F, Fut, T>(runs: usize, mut f: F) -> Result<(Stats, Vec<T>), Failure>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(Duration, T), Failure>>,
{
    let mut samples = Vec::with_capacity(runs);
    let mut outs = Vec::with_capacity(runs);
    for i in 0..runs {
        let (d, out) = f(i).await?;
        samples.push(d);
        outs.push(out);
    }
    Ok((stats(samples), outs))
}

async fn docker_cli(args: &[&str]) -> Result<(Duration, String), Failure> {
    let started = Instant::now();
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok((
        elapsed,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// The flags that make a CLI container like the backend's (security, limits, network).
fn run_flags(label: &str) -> Vec<String> {
    let mut flags = vec![
        "run",
        "-d",
        "--init",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--pids-limit",
        "4096",
        "--workdir",
        "/workspace",
        "--label",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    flags.push(label.to_string());
    for cap in sandbox_backend_docker::ADDED_CAPABILITIES {
        flags.push("--cap-add".into());
        flags.push(cap.to_string());
    }
    flags
}

fn spec(n: &str) -> SandboxSpec {
    SandboxSpec::builder(format!("bench-{n}"))
        .image(IMAGE)
        .label("sandbox-bench", "1")
        .build()
        .expect("a valid spec")
}

fn unique() -> String {
    SandboxId::generate().as_str()[4..18].to_string()
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(2);
    let config = DockerConfig {
        image: IMAGE.to_string(),
        pull_policy: PullPolicy::Never,
        ..DockerConfig::default()
    };
    let backend = DockerBackend::connect(config).await?;
    let docker = backend.docker().clone();
    let version = docker.version().await?;
    println!(
        "sandbox-backend-docker benchmark: {runs} runs each; Docker {} (API {}), image {IMAGE}",
        version.version.unwrap_or_default(),
        version.api_version.unwrap_or_default()
    );
    let label = format!("sandbox-bench={}", unique());
    let mut rows = Vec::new();
    let mut sandboxes: Vec<SandboxId> = Vec::new();
    let mut cli_containers: Vec<String> = Vec::new();
    let key = format!("bench-{}", unique());
    let outcome = run(
        &backend,
        &docker,
        runs,
        &label,
        &key,
        &mut rows,
        &mut sandboxes,
        &mut cli_containers,
    )
    .await;

    // Cleanup, whatever happened.
    for id in &sandboxes {
        backend.terminate(id).await.ok();
    }
    for c in &cli_containers {
        docker
            .remove_container(
                c,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
            .ok();
    }
    let _ = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker ps -aq --filter label={label} | xargs -r docker rm -f >/dev/null; \
             docker images -q --filter label={label} | xargs -r docker rmi -f >/dev/null; \
             docker images -q --filter reference='sandbox-bench-img' | xargs -r docker rmi -f >/dev/null"
        ))
        .status()
        .await;
    outcome?;
    print(&rows);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    backend: &DockerBackend,
    docker: &bollard::Docker,
    runs: usize,
    label: &str,
    key: &str,
    rows: &mut Vec<Row>,
    sandboxes: &mut Vec<SandboxId>,
    cli: &mut Vec<String>,
) -> Result<(), Failure> {
    // Warm the daemon's caches once.
    let first = backend.create(spec(&unique())).await?;
    backend.terminate(&first.id).await?;

    // --- cold create --------------------------------------------------------------------
    let (s, made) = time(runs, |_| async {
        let started = Instant::now();
        let sb = backend.create(spec(&unique())).await?;
        Ok((started.elapsed(), sb.id))
    })
    .await?;
    rows.push(Row {
        operation: "cold create",
        what: "library create (create, start, exec-ready)".into(),
        stats: s,
    });
    for id in made {
        backend.terminate(&id).await?;
    }
    let flags = run_flags(label);
    let (s, made) = time(runs, |_| {
        let flags = flags.clone();
        async move {
            let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
            args.extend([IMAGE, "sh", "-c", KEEPALIVE]);
            docker_cli(&args).await
        }
    })
    .await?;
    rows.push(Row {
        operation: "cold create",
        what: "docker run -d (same flags)".into(),
        stats: s,
    });
    cli.extend(made);
    let (s, made) = time(runs, |_| async {
        let body = ContainerCreateBody {
            image: Some(IMAGE.into()),
            cmd: Some(vec!["sh".into(), "-c".into(), KEEPALIVE.into()]),
            labels: Some(
                [(
                    label.split('=').next().unwrap().to_string(),
                    label.split('=').nth(1).unwrap().to_string(),
                )]
                .into(),
            ),
            host_config: Some(HostConfig {
                init: Some(true),
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let started = Instant::now();
        let c = docker
            .create_container(None::<CreateContainerOptions>, body)
            .await?;
        docker.start_container(&c.id, None).await?;
        Ok((started.elapsed(), c.id))
    })
    .await?;
    rows.push(Row {
        operation: "cold create",
        what: "bollard create + start".into(),
        stats: s,
    });
    cli.extend(made);

    // --- warm create --------------------------------------------------------------------
    let warm = WarmSpec::builder(key)
        .image(IMAGE)
        .size(1)
        .label("sandbox-bench", "1")
        .build()?;
    backend.warm(warm.clone()).await?;
    let (s, made) = time(runs, |_| {
        let warm = warm.clone();
        async move {
            // Not timed: wait until the pool is full again.
            backend.warm(warm).await?;
            let spec = SandboxSpec::builder(format!("bench-{}", unique()))
                .image(IMAGE)
                .template_key(key)
                .label("sandbox-bench", "1")
                .build()?;
            let started = Instant::now();
            let sb = backend.create(spec).await?;
            let elapsed = started.elapsed();
            if sb.origin != sandbox_core::SandboxOrigin::WarmPool {
                return Err("warm create was not served from the pool".into());
            }
            Ok((elapsed, sb.id))
        }
    })
    .await?;
    rows.push(Row {
        operation: "warm create",
        what: "library create from a warm pool".into(),
        stats: s,
    });
    for id in made {
        backend.terminate(&id).await?;
    }
    backend
        .warm(WarmSpec::builder(key).size(0).build()?)
        .await?;
    let (s, made) = time(runs, |_| {
        let flags = flags.clone();
        async move {
            let mut args: Vec<String> = flags.clone();
            args[0] = "create".into();
            args.remove(1); // -d
            args.extend([IMAGE, "sh", "-c", KEEPALIVE].map(String::from));
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let (_, id) = docker_cli(&argv).await?;
            let (d, _) = docker_cli(&["start", &id]).await?;
            Ok((d, id))
        }
    })
    .await?;
    rows.push(Row {
        operation: "warm create",
        what: "docker start of a container created ahead".into(),
        stats: s,
    });
    cli.extend(made);

    // --- exec round trip ----------------------------------------------------------------
    // An agent runs a command, reads the result, thinks, runs the next: every run here starts
    // after a pause (not timed), the same for the library, the CLI and raw bollard. The
    // library's spare runner (see the crate docs) is started during that pause.
    let sb = backend.create(spec(&unique())).await?;
    sandboxes.push(sb.id.clone());
    let container = sb.provider_id.clone().unwrap_or_default();
    let library_exec = || async {
        let started = Instant::now();
        let out = backend
            .exec_output(&sb.id, ExecRequest::new(["true"])?)
            .await?;
        let d = started.elapsed();
        if !out.success() {
            return Err(format!("exec: {}", out.status).into());
        }
        Ok((d, ()))
    };
    let (s, _) = time(runs, |_| async {
        tokio::time::sleep(EXEC_PAUSE).await;
        library_exec().await
    })
    .await?;
    rows.push(Row {
        operation: "exec round trip",
        what: "library exec `true` (buffered)".into(),
        stats: s,
    });
    let cli_exec = || {
        let container = container.clone();
        async move { docker_cli(&["exec", &container, "true"]).await }
    };
    let (s, _) = time(runs, |_| async {
        tokio::time::sleep(EXEC_PAUSE).await;
        cli_exec().await
    })
    .await?;
    rows.push(Row {
        operation: "exec round trip",
        what: "docker exec `true`".into(),
        stats: s,
    });
    let (s, _) = time(runs, |_| async {
        tokio::time::sleep(EXEC_PAUSE).await;
        let started = Instant::now();
        let e = docker
            .create_exec(
                &container,
                CreateExecOptions::<String> {
                    cmd: Some(vec!["true".into()]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        if let StartExecResults::Attached { mut output, .. } =
            docker.start_exec(&e.id, None).await?
        {
            while output.next().await.is_some() {}
        }
        docker.inspect_exec(&e.id).await?;
        Ok((started.elapsed(), ()))
    })
    .await?;
    rows.push(Row {
        operation: "exec round trip",
        what: "bollard create_exec + start + inspect".into(),
        stats: s,
    });
    // A burst: no pause, so the spare is rarely ready and most execs start a Docker exec.
    let (s, _) = time(runs, |_| library_exec()).await?;
    rows.push(Row {
        operation: "exec burst",
        what: "library exec `true`, back to back".into(),
        stats: s,
    });
    let (s, _) = time(runs, |_| cli_exec()).await?;
    rows.push(Row {
        operation: "exec burst",
        what: "docker exec `true`, back to back".into(),
        stats: s,
    });

    // --- snapshot -----------------------------------------------------------------------
    backend
        .exec_output(
            &sb.id,
            ExecRequest::new(["sh", "-c", "echo state > /workspace/state"])?,
        )
        .await?;
    let (s, snaps) = time(runs, |_| async {
        let started = Instant::now();
        let snap = backend
            .snapshot(&sb.id, SnapshotOptions::new().label("sandbox-bench", "1")?)
            .await?;
        Ok((started.elapsed(), snap))
    })
    .await?;
    rows.push(Row {
        operation: "snapshot",
        what: "library snapshot (paused commit)".into(),
        stats: s,
    });
    let (s, _) = time(runs, |i| {
        let container = container.clone();
        async move {
            let tag = format!("sandbox-bench-img:cli{i}");
            let r = docker_cli(&["commit", &container, &tag]).await?;
            docker_cli(&["rmi", &tag]).await?;
            Ok(r)
        }
    })
    .await?;
    rows.push(Row {
        operation: "snapshot",
        what: "docker commit (pauses by default)".into(),
        stats: s,
    });
    let (s, _) = time(runs, |i| {
        let container = container.clone();
        async move {
            let tag = format!("raw{i}");
            let started = Instant::now();
            docker
                .commit_container(
                    CommitContainerOptions {
                        container: Some(container),
                        repo: Some("sandbox-bench-img".into()),
                        tag: Some(tag.clone()),
                        pause: true,
                        ..Default::default()
                    },
                    ContainerConfig::default(),
                )
                .await?;
            let d = started.elapsed();
            docker
                .remove_image(
                    &format!("sandbox-bench-img:{tag}"),
                    None::<RemoveImageOptions>,
                    None,
                )
                .await?;
            Ok((d, ()))
        }
    })
    .await?;
    rows.push(Row {
        operation: "snapshot",
        what: "bollard commit (pause)".into(),
        stats: s,
    });

    // --- restore ------------------------------------------------------------------------
    let snap = &snaps[0];
    let (s, made) = time(runs, |_| async {
        let started = Instant::now();
        let r = backend.restore(&snap.reference(), spec(&unique())).await?;
        Ok((started.elapsed(), r.id))
    })
    .await?;
    rows.push(Row {
        operation: "restore",
        what: "library restore (create from snapshot, exec-ready)".into(),
        stats: s,
    });
    for id in made {
        backend.terminate(&id).await?;
    }
    let image = format!("sandbox-snapshot:{}", snap.id);
    let (s, made) = time(runs, |_| {
        let flags = flags.clone();
        let image = image.clone();
        async move {
            let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
            args.extend([image.as_str(), "sh", "-c", KEEPALIVE]);
            docker_cli(&args).await
        }
    })
    .await?;
    rows.push(Row {
        operation: "restore",
        what: "docker run -d <snapshot image>".into(),
        stats: s,
    });
    cli.extend(made);
    for c in cli.drain(..) {
        docker
            .remove_container(
                &c,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await?;
    }
    for snap in &snaps {
        backend.delete_snapshot(&snap.id).await?;
    }
    Ok(())
}

fn median_of(rows: &[Row], operation: &str, prefix: &str) -> Duration {
    rows.iter()
        .find(|r| r.operation == operation && r.what.starts_with(prefix))
        .map(|r| r.stats.median)
        .unwrap_or_default()
}

fn print(rows: &[Row]) {
    println!();
    println!(
        "{:<16} {:<52} {:>10} {:>10} {:>12}",
        "operation", "what", "median ms", "p90 ms", "vs library"
    );
    for r in rows {
        let lib = median_of(rows, r.operation, "library");
        let ratio = if r.what.starts_with("library") {
            "1.00x".to_string()
        } else {
            format!("{:.2}x", lib.as_secs_f64() / r.stats.median.as_secs_f64())
        };
        println!(
            "{:<16} {:<52} {:>10} {:>10} {:>12}",
            r.operation,
            r.what,
            ms(r.stats.median),
            ms(r.stats.p90),
            ratio
        );
    }
    println!("(vs library = library median / this median: below 1 the library is faster)");
    println!();
    let cold = median_of(rows, "cold create", "library");
    let warm = median_of(rows, "warm create", "library");
    let exec = median_of(rows, "exec round trip", "library");
    let docker_exec = median_of(rows, "exec round trip", "docker exec");
    let raw_exec = median_of(rows, "exec round trip", "bollard");
    let snap = median_of(rows, "snapshot", "library");
    let commit = median_of(rows, "snapshot", "docker commit");
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let warm_ratio = warm.as_secs_f64() / cold.as_secs_f64();
    println!(
        "target warm create <= 1/20 of cold create: warm/cold = {:.4} (1/{:.0}): {}",
        warm_ratio,
        1.0 / warm_ratio,
        met(warm_ratio <= 1.0 / 20.0)
    );
    let exec_ratio = exec.as_secs_f64() / docker_exec.as_secs_f64();
    println!(
        "target exec round trip <= 0.6x docker exec: {:.2}x: {} (raw bollard create_exec, the floor of a plain exec: {:.2}x)",
        exec_ratio,
        met(exec_ratio <= 0.6),
        raw_exec.as_secs_f64() / docker_exec.as_secs_f64()
    );
    let snap_ratio = snap.as_secs_f64() / commit.as_secs_f64();
    println!(
        "target snapshot <= 1.1x docker commit: {:.2}x: {}",
        snap_ratio,
        met(snap_ratio <= 1.1)
    );
}
