//! Creates a sandbox, runs a command in it, snapshots it, restores the snapshot and
//! terminates everything, printing what it does as it goes.
//!
//! ```sh
//! cargo run --example create_sandbox                          # local backend, no setup
//! SANDBOX_BACKEND=docker cargo run --example create_sandbox   # after scripts/build-test-image.sh
//! SANDBOX_CONFIG=sandbox.toml cargo run --example create_sandbox
//! ```
//! `RUST_LOG=debug` shows the library's own spans and events.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use sandbox::{
    Bytes, DynSandboxBackend, ExecEvent, ExecRequest, NetworkPolicy, SandboxBackendExt, SandboxId,
    SandboxSpec, SnapshotOptions, SnapshotReason,
};

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = sandbox::Config::load()?;
    println!("config: backend = {}", config.backend);
    let backend = sandbox::connect(&config).await?;
    let caps = backend.capabilities();
    println!(
        "connected: {} backend, isolation {:?}, snapshots {}, warm pools {}, files {}",
        backend.kind(),
        caps.isolation,
        caps.snapshot,
        caps.warm,
        caps.files
    );

    // Print lifecycle events as they happen, from a task of their own.
    let mut events = backend.events();
    let printer = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => println!("  event: {} {:?}", e.sandbox_id, e.kind),
                Err(e) => println!("  event stream: {e}"),
            }
        }
    });

    // Everything the example creates is terminated at the end, whatever happened.
    let mut created = Vec::new();
    let outcome = run(&*backend, &mut created).await;
    for id in &created {
        backend.terminate(id).await?;
        match backend.status(id).await {
            Ok(status) => println!("terminated {id}: status {status:?}"),
            Err(e) => println!("terminated {id}: {e}"),
        }
    }
    // Let the last events print.
    tokio::time::sleep(Duration::from_millis(200)).await;
    printer.abort();
    match outcome {
        Ok(()) => {
            println!("done: everything created was terminated");
            Ok(())
        }
        Err(e) => {
            eprintln!("failed: {e}");
            Err(e)
        }
    }
}

/// Prints a chunk of output, one prefixed line per line (a chunk may hold several lines).
fn print_lines(stream: &str, chunk: &[u8]) {
    for line in String::from_utf8_lossy(chunk).lines() {
        println!("  {stream} | {line}");
    }
}

async fn run(backend: &DynSandboxBackend, created: &mut Vec<SandboxId>) -> Result<(), Failure> {
    let caps = backend.capabilities();
    // Ask for no network; a backend that cannot enforce that says so in its capabilities.
    let network = if caps.network_none {
        NetworkPolicy::None
    } else {
        println!(
            "note: this backend cannot enforce `network = none` here; asking for full network"
        );
        NetworkPolicy::Full
    };
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let spec = SandboxSpec::builder(format!("example-{stamp}"))
        .repo("octocat", "hello-world")
        .branch("main")
        .control_plane_url("https://control-plane.example.com")
        .auth_token("example-token")
        .network(network.clone())
        .timeout(Duration::from_secs(600))
        .label("app", "create-sandbox-example")
        .build()?;

    println!("creating a sandbox for session {}", spec.session_id());
    let sandbox = backend.create(spec).await?;
    created.push(sandbox.id.clone());
    println!(
        "created {} ({:?}, from {:?}); it expires at {}",
        sandbox.id,
        sandbox.status,
        sandbox.origin,
        sandbox
            .expires_at
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_else(|| "(the provider's limit)".into())
    );

    println!("running a command, streaming its output:");
    let req = ExecRequest::new([
        "sh",
        "-c",
        "echo \"hello from $SANDBOX_ID (session $SESSION_ID, repo $REPO_OWNER/$REPO_NAME)\"; \
         echo working...; sleep 1; echo 'to stderr' >&2; echo finished",
    ])?;
    let mut stream = backend.exec(&sandbox.id, req).await?;
    while let Some(event) = stream.next().await {
        match event? {
            ExecEvent::Stdout(b) => print_lines("stdout", &b),
            ExecEvent::Stderr(b) => print_lines("stderr", &b),
            ExecEvent::Exit(status) => println!("  exit   | {status}"),
        }
    }

    println!("writing notes.txt");
    if caps.files {
        backend
            .write_file(
                &sandbox.id,
                "notes.txt",
                Bytes::from_static(b"written before the snapshot\n"),
            )
            .await?;
    } else {
        let req = ExecRequest::new(["sh", "-c", "echo 'written before the snapshot' > notes.txt"])?;
        backend.exec_output(&sandbox.id, req).await?;
    }

    if !caps.snapshot || !caps.restore {
        println!("this backend has no snapshots; skipping snapshot and restore");
        return Ok(());
    }
    println!("taking a snapshot");
    let snapshot = backend
        .snapshot(
            &sandbox.id,
            SnapshotOptions::new().reason(SnapshotReason::Manual),
        )
        .await?;
    println!(
        "snapshot {} of {:?} at {}",
        snapshot.id,
        snapshot
            .repo
            .as_ref()
            .map(|r| format!("{}/{}", r.owner(), r.name())),
        humantime::format_rfc3339_seconds(snapshot.created_at)
    );

    let spec = SandboxSpec::builder(format!("example-{stamp}-restored"))
        .repo("octocat", "hello-world")
        .network(network)
        .timeout(Duration::from_secs(600))
        .label("app", "create-sandbox-example")
        .build()?;
    println!("restoring it into a new sandbox");
    let restored = backend.restore(&snapshot.reference(), spec).await?;
    created.push(restored.id.clone());
    let out = backend
        .exec_output(&restored.id, ExecRequest::new(["cat", "notes.txt"])?)
        .await?;
    println!(
        "restored {}: notes.txt says {:?} ({})",
        restored.id,
        out.stdout_str().trim_end(),
        out.status
    );

    if caps.manage_snapshots {
        backend.delete_snapshot(&snapshot.id).await?;
        println!("deleted snapshot {}", snapshot.id);
    }
    Ok(())
}
