//! Settings of the Docker backend (`[docker]`, `SANDBOX_DOCKER_*`).

use serde::Deserialize;

use super::check;
use crate::error::{Error, Result};
use crate::validate;

/// The image sandboxes run when neither the config nor the spec names one: the busybox image
/// the project builds locally (`scripts/build-test-image.sh`), since nothing can be assumed
/// pullable.
pub const DEFAULT_DOCKER_IMAGE: &str = "sandbox-test/busybox:latest";
/// Default deadline of one Docker API call, in seconds.
pub const DEFAULT_DOCKER_API_TIMEOUT_SECONDS: u64 = 120;
/// Default deadline for a new container to become ready for exec, in seconds.
pub const DEFAULT_DOCKER_READY_TIMEOUT_SECONDS: u64 = 60;

/// When to pull an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull only when the image is not present locally.
    #[default]
    IfNotPresent,
    /// Pull before every cold create.
    Always,
    /// Never pull; a missing image is an error naming it.
    Never,
}

/// Settings of the Docker backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The daemon address (`unix:///var/run/docker.sock`, `tcp://host:2375`). Default:
    /// `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// The default image.
    pub image: String,
    /// When to pull.
    pub pull_policy: PullPolicy,
    /// Deadline of one API call, in seconds.
    pub api_timeout_seconds: u64,
    /// Deadline for a container to become ready for exec, in seconds.
    pub ready_timeout_seconds: u64,
    /// The Docker network for `NetworkPolicy::Full` (default: `bridge`).
    pub network: Option<String>,
    /// An OCI runtime (`runsc` for gVisor); default: the daemon's.
    pub runtime: Option<String>,
    /// Period of the background reaper of expired sandboxes, in seconds (none: only
    /// `reap_expired` calls reap).
    pub reaper_interval_seconds: Option<u64>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: None,
            image: DEFAULT_DOCKER_IMAGE.to_string(),
            pull_policy: PullPolicy::IfNotPresent,
            api_timeout_seconds: DEFAULT_DOCKER_API_TIMEOUT_SECONDS,
            ready_timeout_seconds: DEFAULT_DOCKER_READY_TIMEOUT_SECONDS,
            network: None,
            runtime: None,
            reaper_interval_seconds: None,
        }
    }
}

impl DockerConfig {
    /// Checks the values; errors name the key (`docker.image`).
    pub fn validate(&self) -> Result<()> {
        validate::image_ref("docker.image", &self.image).map_err(|e| match e {
            Error::InvalidSpec { reason, .. } => Error::invalid_config("docker.image", reason),
            other => other,
        })?;
        check(
            "docker.api_timeout_seconds",
            (1..=3600).contains(&self.api_timeout_seconds),
            "must be between 1 and 3600 seconds",
        )?;
        check(
            "docker.ready_timeout_seconds",
            (1..=3600).contains(&self.ready_timeout_seconds),
            "must be between 1 and 3600 seconds",
        )?;
        if let Some(host) = &self.host {
            check(
                "docker.host",
                ["unix://", "tcp://", "http://", "https://", "npipe://"]
                    .iter()
                    .any(|p| host.starts_with(p)),
                "must start with unix://, tcp://, http://, https:// or npipe://",
            )?;
        }
        if let Some(secs) = self.reaper_interval_seconds {
            check(
                "docker.reaper_interval_seconds",
                (1..=86_400).contains(&secs),
                "must be between 1 and 86400 seconds",
            )?;
        }
        Ok(())
    }
}
