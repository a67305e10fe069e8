//! Without bubblewrap (and isolation `auto`) the backend says so loudly, and only once per
//! process. Its own test binary, because the "once" is per process.

use std::io::Write;
use std::sync::{Arc, Mutex};

use sandbox_backend_local::{IsolationKind, IsolationMode, LocalBackend, LocalConfig};

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
async fn missing_bubblewrap_is_announced_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let config = LocalConfig {
            isolation: IsolationMode::Auto,
            bwrap_path: Some("/nonexistent/bwrap".into()),
            root_dir: Some(root.path().to_path_buf()),
            ..LocalConfig::default()
        };
        let backend = LocalBackend::new(config).await.unwrap();
        assert_eq!(backend.isolation(), &IsolationKind::Process);
    }
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<_> = log.lines().filter(|l| l.contains("NOT isolated")).collect();
    assert_eq!(warnings.len(), 1, "log:\n{log}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(warnings[0].contains("bubblewrap"), "{}", warnings[0]);
}
