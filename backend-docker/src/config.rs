//! Settings of the backend, from [`DockerConfig`] and the builder, and the connection to the
//! daemon.

use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use sandbox_core::config::{DockerConfig, PullPolicy};
use sandbox_core::{BackendKind, Error, Result};

/// The local daemon socket used when neither the config nor `DOCKER_HOST` names a host.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
/// The Docker network of sandboxes with [`NetworkPolicy::Full`](sandbox_core::NetworkPolicy)
/// when the config names none.
pub const DEFAULT_NETWORK: &str = "bridge";
/// The process-count limit of a sandbox whose spec sets none (threads count too).
pub const DEFAULT_PIDS_LIMIT: u32 = 4096;
/// How long an unclaimed warm-pool container may wait before the reaper removes it.
pub const DEFAULT_POOL_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Grace period between SIGTERM and SIGKILL when a sandbox is terminated.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// The oldest Docker Engine API this backend speaks (Docker 20.10).
pub const MIN_API_VERSION: (usize, usize) = (1, 41);

/// Linux capabilities a sandbox keeps; every other one is dropped (`cap_drop: ALL`).
///
/// - `CHOWN`, `FOWNER`, `DAC_OVERRIDE`: root inside the sandbox can manage files of any owner
///   (unpacking archives, package managers, fixing permissions in a cloned repository).
/// - `SETUID`, `SETGID`: tools that switch to an unprivileged user (package managers' sandboxes,
///   `su` to the agent's user). With `no-new-privileges`, setuid binaries still cannot gain
///   privileges.
/// - `KILL`: the exec timeout kills a command that runs as another user.
///
/// Dropped among Docker's defaults: `NET_RAW` (raw sockets, ARP/ICMP spoofing), `NET_BIND_SERVICE`,
/// `MKNOD`, `AUDIT_WRITE`, `SETFCAP`, `SETPCAP`, `SYS_CHROOT`, `FSETID`.
pub const ADDED_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "KILL",
];

/// The resolved settings one backend instance runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub host: String,
    pub image: String,
    pub pull_policy: PullPolicy,
    pub api_timeout: Duration,
    pub ready_timeout: Duration,
    pub network: String,
    pub runtime: Option<String>,
    pub reaper_interval: Option<Duration>,
    pub pool_lifetime: Duration,
}

impl Settings {
    pub(crate) fn new(config: &DockerConfig) -> Result<Self> {
        config.validate()?;
        let host = match &config.host {
            Some(host) => host.clone(),
            None => match std::env::var("DOCKER_HOST") {
                Ok(host) if !host.is_empty() => host,
                _ => DEFAULT_DOCKER_HOST.to_string(),
            },
        };
        Ok(Self {
            host,
            image: config.image.clone(),
            pull_policy: config.pull_policy,
            api_timeout: Duration::from_secs(config.api_timeout_seconds),
            ready_timeout: Duration::from_secs(config.ready_timeout_seconds),
            network: config
                .network
                .clone()
                .unwrap_or_else(|| DEFAULT_NETWORK.to_string()),
            runtime: config.runtime.clone(),
            reaper_interval: config.reaper_interval_seconds.map(Duration::from_secs),
            pool_lifetime: DEFAULT_POOL_LIFETIME,
        })
    }
}

/// Opens a client for `host` (no request is sent yet).
pub(crate) fn client(host: &str, timeout: Duration) -> Result<Docker> {
    let secs = timeout.as_secs().max(1);
    let unavailable = |e: bollard::errors::Error| Error::Unavailable {
        backend: BackendKind::Docker,
        message: format!("cannot open a client for the Docker daemon at {host}: {e}"),
        source: Some(Box::new(e)),
    };
    if host.starts_with("unix://") {
        Docker::connect_with_unix(host, secs, API_DEFAULT_VERSION).map_err(unavailable)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, secs, API_DEFAULT_VERSION).map_err(unavailable)
    } else {
        Err(Error::invalid_config(
            "docker.host",
            format!(
                "`{host}`: this build speaks to the daemon over unix:// sockets and plain \
                 tcp:// or http:// only (no TLS, no named pipes)"
            ),
        ))
    }
}

/// Negotiates the API version with the daemon (it may be older than bollard's default) and
/// checks that it answers; an unreachable daemon is `Unavailable` naming `host`.
pub(crate) async fn negotiate(docker: Docker, host: &str, timeout: Duration) -> Result<Docker> {
    let unreachable = |detail: String, source: Option<bollard::errors::Error>| Error::Unavailable {
        backend: BackendKind::Docker,
        message: format!("Docker daemon not reachable at {host}: {detail}"),
        source: source.map(|e| Box::new(e) as _),
    };
    let docker = match tokio::time::timeout(timeout, docker.negotiate_version()).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(unreachable(e.to_string(), Some(e))),
        Err(_) => return Err(unreachable(format!("no answer within {timeout:?}"), None)),
    };
    let version: ClientVersion = docker.client_version();
    if (version.major_version, version.minor_version) < MIN_API_VERSION {
        return Err(Error::invalid_config(
            "docker.host",
            format!(
                "the daemon at {host} speaks Docker API {}.{}; this backend needs {}.{} or newer",
                version.major_version, version.minor_version, MIN_API_VERSION.0, MIN_API_VERSION.1
            ),
        ));
    }
    match tokio::time::timeout(timeout, docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(unreachable(e.to_string(), Some(e))),
        Err(_) => Err(unreachable(
            format!("no answer to ping within {timeout:?}"),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_comes_from_config_first() {
        let config = DockerConfig {
            host: Some("unix:///tmp/x.sock".into()),
            ..DockerConfig::default()
        };
        assert_eq!(Settings::new(&config).unwrap().host, "unix:///tmp/x.sock");
    }

    #[test]
    fn tls_and_pipes_are_named_config_errors() {
        let err = client("https://example.invalid:2376", Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.invalid_field(), Some("docker.host"), "{err}");
        assert!(
            err.to_string().contains("https://example.invalid:2376"),
            "{err}"
        );
    }

    #[test]
    fn capabilities_kept_are_a_small_documented_set() {
        for cap in ADDED_CAPABILITIES {
            assert!(
                !["SYS_ADMIN", "NET_RAW", "NET_ADMIN", "SYS_PTRACE", "MKNOD"].contains(cap),
                "{cap}"
            );
        }
    }
}
