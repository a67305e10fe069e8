#![doc = include_str!("../README.md")]

pub use sandbox_core::*;

/// The backend crates compiled into this build (one cargo feature each, all on by default).
pub mod backends {
    #[cfg(feature = "docker")]
    pub use sandbox_backend_docker as docker;
    #[cfg(feature = "local")]
    pub use sandbox_backend_local as local;
}

/// The backends this build can connect to (their cargo features are on).
pub fn available_backends() -> Vec<BackendKind> {
    BackendKind::ALL
        .into_iter()
        .filter(|k| feature_of(*k).is_some_and(|(_, on)| on))
        .collect()
}

/// The cargo feature of a backend and whether it is on; `None` for a backend this version of
/// the library does not have yet.
fn feature_of(kind: BackendKind) -> Option<(&'static str, bool)> {
    match kind {
        BackendKind::Local => Some(("local", cfg!(feature = "local"))),
        BackendKind::Docker => Some(("docker", cfg!(feature = "docker"))),
        _ => None,
    }
}

/// Builds the backend `config` names, ready to use.
///
/// With the default config (no variables, no file) this is the local backend, which needs
/// nothing installed. A backend whose cargo feature is off, or that this version does not
/// have, is an [`Error::InvalidConfig`] naming the `backend` key.
///
/// ```no_run
/// # async fn run() -> sandbox::Result<()> {
/// let config = sandbox::Config::load()?; // SANDBOX_BACKEND, SANDBOX_DOCKER_IMAGE, ...
/// let backend = sandbox::connect(&config).await?;
/// println!("using the {} backend", backend.kind());
/// # Ok(()) }
/// ```
pub async fn connect(config: &Config) -> Result<Box<DynSandboxBackend>> {
    config.validate()?;
    let kind = config.backend;
    tracing::debug!(backend = %kind, "connecting");
    match kind {
        #[cfg(feature = "local")]
        BackendKind::Local => Ok(Box::new(
            sandbox_backend_local::LocalBackend::new(config.local.clone()).await?,
        )),
        #[cfg(feature = "docker")]
        BackendKind::Docker => Ok(Box::new(
            sandbox_backend_docker::DockerBackend::connect(config.docker.clone()).await?,
        )),
        other => Err(not_available(other)),
    }
}

/// Reads the config from the environment ([`Config::load`]) and connects.
pub async fn connect_from_env() -> Result<Box<DynSandboxBackend>> {
    connect(&Config::load()?).await
}

fn not_available(kind: BackendKind) -> Error {
    let reason = match feature_of(kind) {
        Some((feature, _)) => format!(
            "the `{kind}` backend is not compiled in: enable the cargo feature `{feature}` of \
             the `sandbox` crate"
        ),
        None => format!(
            "the `{kind}` backend is not available in version {} of `sandbox` (available: {})",
            env!("CARGO_PKG_VERSION"),
            available_backends()
                .iter()
                .map(BackendKind::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Error::invalid_config("backend", reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backends_this_version_lacks_are_named() {
        for kind in [
            BackendKind::Kubernetes,
            BackendKind::Modal,
            BackendKind::Cloudflare,
        ] {
            let err = connect(&Config::for_backend(kind)).await.unwrap_err();
            assert_eq!(err.invalid_field(), Some("backend"), "{err}");
            assert!(err.to_string().contains(kind.as_str()), "{err}");
        }
    }

    #[cfg(not(feature = "docker"))]
    #[tokio::test]
    async fn a_backend_whose_feature_is_off_names_the_feature() {
        let err = connect(&Config::for_backend(BackendKind::Docker))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("feature `docker`"), "{err}");
    }

    #[test]
    fn available_backends_follow_features() {
        let available = available_backends();
        assert_eq!(
            available.contains(&BackendKind::Local),
            cfg!(feature = "local")
        );
        assert_eq!(
            available.contains(&BackendKind::Docker),
            cfg!(feature = "docker")
        );
    }
}
