//! [`Capabilities`]: what a backend can do, as data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::{BackendKind, Operation};
use crate::error::{Error, Result};
use crate::exec::ExecRequest;
use crate::spec::{NetworkPolicy, SandboxSpec, SandboxTemplate};

/// How strongly a backend isolates a sandbox from its host.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Separate processes and a private directory only (the local backend without bubblewrap).
    #[default]
    Process,
    /// Linux namespaces without a container runtime (bubblewrap).
    Namespaces,
    /// A container (Docker, a Kubernetes pod).
    Container,
    /// A virtual machine or a user-space kernel (gVisor, Firecracker, a managed provider).
    MicroVm,
}

/// What a backend supports. An operation or spec feature marked `false` returns
/// [`Error::Unsupported`] from the backend; [`Capabilities::check_spec`] and
/// [`Capabilities::check_exec`] do that check before anything is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// `warm`: keeps pools of ready sandboxes.
    pub warm: bool,
    /// `snapshot`.
    pub snapshot: bool,
    /// `restore`.
    pub restore: bool,
    /// `list_snapshots` and `delete_snapshot`.
    pub manage_snapshots: bool,
    /// `read_file` and `write_file`.
    pub files: bool,
    /// Exec with stdin.
    pub exec_stdin: bool,
    /// Exec as another user.
    pub exec_user: bool,
    /// `NetworkPolicy::None`.
    pub network_none: bool,
    /// `NetworkPolicy::AllowList`, enforced.
    pub network_allow_list: bool,
    /// `NetworkPolicy::Full`.
    pub network_full: bool,
    /// CPU limit enforced.
    pub cpu_limit: bool,
    /// Memory limit enforced.
    pub memory_limit: bool,
    /// Process-count limit enforced.
    pub pids_limit: bool,
    /// Idle timeout enforced.
    pub idle_timeout: bool,
    /// Images other than the configured default.
    pub custom_image: bool,
    /// Longest absolute timeout the provider allows.
    #[serde(with = "crate::time::seconds")]
    pub max_timeout: Duration,
    /// Isolation level.
    pub isolation: Isolation,
}

impl Capabilities {
    /// Rejects a spec that asks for something this backend cannot do, before any side effect.
    pub fn check_spec(&self, backend: BackendKind, spec: &SandboxSpec) -> Result<()> {
        self.check_template(backend, Operation::Create, spec.template())?;
        if spec.idle_timeout().is_some() && !self.idle_timeout {
            return Err(Error::unsupported(
                Operation::Create,
                backend,
                "idle timeouts are not enforced by this backend",
            ));
        }
        if spec.timeout() > self.max_timeout {
            return Err(Error::invalid_spec(
                "timeout",
                format!(
                    "the {backend} backend allows at most {}",
                    humantime::format_duration(self.max_timeout)
                ),
            ));
        }
        Ok(())
    }

    /// Rejects a template (of a spec or a warm pool) this backend cannot honour.
    pub fn check_template(
        &self,
        backend: BackendKind,
        operation: Operation,
        template: &SandboxTemplate,
    ) -> Result<()> {
        let unsupported = |what: &str| Err(Error::unsupported(operation, backend, what));
        match template.network() {
            NetworkPolicy::None if !self.network_none => {
                return unsupported("network policy `none` cannot be enforced");
            }
            NetworkPolicy::AllowList(_) if !self.network_allow_list => {
                return unsupported(
                    "network policy `allow_list` (egress allow-list) cannot be enforced",
                );
            }
            NetworkPolicy::Full if !self.network_full => {
                return unsupported("network policy `full` is not available");
            }
            _ => {}
        }
        let r = template.resources();
        if r.cpu_millis.is_some() && !self.cpu_limit {
            return unsupported("CPU limits are not enforced");
        }
        if r.memory_bytes.is_some() && !self.memory_limit {
            return unsupported("memory limits are not enforced");
        }
        if r.pids.is_some() && !self.pids_limit {
            return unsupported("process-count limits are not enforced");
        }
        if template.image().is_some() && !self.custom_image {
            return unsupported("per-sandbox images are not available");
        }
        Ok(())
    }

    /// Rejects an exec request this backend cannot honour.
    pub fn check_exec(&self, backend: BackendKind, req: &ExecRequest) -> Result<()> {
        if req.stdin().is_some() && !self.exec_stdin {
            return Err(Error::unsupported(
                Operation::Exec,
                backend,
                "exec with stdin",
            ));
        }
        if req.user().is_some() && !self.exec_user {
            return Err(Error::unsupported(
                Operation::Exec,
                backend,
                "exec as another user",
            ));
        }
        Ok(())
    }

    /// Returns `Unsupported` for `operation` when the capabilities lack it.
    pub fn require(&self, backend: BackendKind, operation: Operation) -> Result<()> {
        let supported = match operation {
            Operation::Warm => self.warm,
            Operation::Snapshot => self.snapshot,
            Operation::Restore => self.restore,
            Operation::ListSnapshots | Operation::DeleteSnapshot => self.manage_snapshots,
            Operation::ReadFile | Operation::WriteFile => self.files,
            _ => true,
        };
        if supported {
            Ok(())
        } else {
            Err(Error::unsupported(
                operation,
                backend,
                "the backend's capabilities do not include it",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::EgressRule;

    #[test]
    fn unsupported_features_are_rejected() {
        let mut caps = Capabilities {
            network_none: true,
            max_timeout: Duration::from_secs(3600),
            ..Capabilities::default()
        };
        let kind = BackendKind::Local;
        let ok = SandboxSpec::builder("s")
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        caps.check_spec(kind, &ok).unwrap();

        let allow = SandboxSpec::builder("s")
            .timeout(Duration::from_secs(60))
            .network(NetworkPolicy::AllowList(vec![EgressRule::host("a.com")]))
            .build()
            .unwrap();
        assert!(caps.check_spec(kind, &allow).unwrap_err().is_unsupported());
        caps.network_allow_list = true;
        caps.check_spec(kind, &allow).unwrap();

        let mem = SandboxSpec::builder("s")
            .timeout(Duration::from_secs(60))
            .memory_bytes(64 << 20)
            .build()
            .unwrap();
        assert!(caps.check_spec(kind, &mem).unwrap_err().is_unsupported());

        let idle = SandboxSpec::builder("s")
            .timeout(Duration::from_secs(60))
            .idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        assert!(caps.check_spec(kind, &idle).unwrap_err().is_unsupported());

        let long = SandboxSpec::builder("s")
            .timeout(Duration::from_secs(7200))
            .build()
            .unwrap();
        assert_eq!(
            caps.check_spec(kind, &long).unwrap_err().invalid_field(),
            Some("timeout")
        );

        assert!(
            caps.require(kind, Operation::Snapshot)
                .unwrap_err()
                .is_unsupported()
        );
        caps.require(kind, Operation::Status).unwrap();
        let req = ExecRequest::builder(["cat"]).stdin("x").build().unwrap();
        assert!(caps.check_exec(kind, &req).unwrap_err().is_unsupported());
    }
}
