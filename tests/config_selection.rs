//! `sandbox::connect` picks the backend the config names, from env, TOML or JSON.

use sandbox::{BackendKind, Config};

#[cfg(feature = "local")]
#[tokio::test]
async fn no_configuration_means_the_local_backend() {
    let root = tempfile::tempdir().unwrap();
    let config =
        Config::from_env_vars([("SANDBOX_LOCAL_ROOT_DIR", root.path().to_str().unwrap())]).unwrap();
    let backend = sandbox::connect(&config).await.unwrap();
    assert_eq!(backend.kind(), BackendKind::Local);
}

#[cfg(feature = "local")]
#[tokio::test]
async fn toml_and_json_select_the_same_backend() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_str().unwrap();
    let toml = Config::from_toml_str(&format!(
        "backend = \"local\"\n[local]\nroot_dir = \"{root}\"\nisolation = \"disabled\"\n"
    ))
    .unwrap();
    let json = Config::from_json_str(&format!(
        r#"{{"backend":"local","local":{{"root_dir":"{root}","isolation":"disabled"}}}}"#
    ))
    .unwrap();
    for config in [toml, json] {
        let backend = sandbox::connect(&config).await.unwrap();
        assert_eq!(backend.kind(), BackendKind::Local);
        assert_eq!(
            backend.capabilities().isolation,
            sandbox::Isolation::Process
        );
    }
}

#[cfg(feature = "docker")]
#[tokio::test]
async fn docker_is_selected_by_env_and_reports_an_unreachable_daemon() {
    let config = Config::from_env_vars([
        ("SANDBOX_BACKEND", "docker"),
        (
            "SANDBOX_DOCKER_HOST",
            "unix:///nonexistent/sandbox-test.sock",
        ),
    ])
    .unwrap();
    assert_eq!(config.backend, BackendKind::Docker);
    let err = sandbox::connect(&config).await.unwrap_err();
    assert!(
        err.is_retryable(),
        "unreachable daemon should be Unavailable: {err:?}"
    );
    assert!(
        err.to_string().contains("/nonexistent/sandbox-test.sock"),
        "error should name the socket: {err}"
    );
}

#[tokio::test]
async fn an_unknown_backend_or_key_is_named() {
    let err = Config::from_env_vars([("SANDBOX_BACKEND", "podman")]).unwrap_err();
    assert_eq!(err.invalid_field(), Some("SANDBOX_BACKEND"));
    let err = Config::from_toml_str("backend = \"local\"\n[local]\nroot = \"/x\"\n").unwrap_err();
    assert_eq!(err.invalid_field(), Some("local.root"));
    let err = sandbox::connect(&Config::for_backend(BackendKind::Modal))
        .await
        .unwrap_err();
    assert_eq!(err.invalid_field(), Some("backend"));
}
