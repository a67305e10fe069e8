//! Settings of the local backend beyond [`LocalConfig`], and how the config is resolved.

use std::path::PathBuf;
use std::time::Duration;

use sandbox_core::config::LocalConfig;

/// How long an unclaimed warm-pool sandbox lives before the reaper removes it.
pub const DEFAULT_POOL_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a `create` waits for another caller's create of the same session to finish.
pub const PEER_CREATE_WAIT: Duration = Duration::from_secs(60);
/// `PATH` of commands in a sandbox.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The host paths bound read-only into a sandbox under bubblewrap (when they exist): the
/// programs and libraries, and the few files of `/etc` that programs need. Nothing else of
/// the host is visible: no home directories, no `/etc/shadow`, no `/var`, no `/root`.
pub const READ_ONLY_HOST_PATHS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/gitconfig",
];

/// The root directory of the backend's state: the configured one, else
/// `<temp dir>/sandbox-local-<uid>` (one per user, so two users of a machine share nothing).
pub(crate) fn root_dir(config: &LocalConfig) -> PathBuf {
    config.root_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sandbox-local-{}", nix::unistd::getuid()))
    })
}
