//! The contract of the `sandbox` library: one [`SandboxBackend`] trait over many sandbox
//! providers, with the types it speaks ([`SandboxSpec`], [`Sandbox`], [`ExecRequest`],
//! [`ExecStream`], [`Snapshot`], [`SandboxEvent`]), one [`Error`], [`Capabilities`] as data,
//! [`Config`], validation, HMAC request auth ([`auth`]), the seeds' wire types ([`wire`]) and
//! a conformance suite (feature `conformance`) that every backend's tests run.
//!
//! Most users depend on the facade crate `sandbox`, which re-exports this crate and picks a
//! backend from config.

pub mod auth;
mod backend;
mod capabilities;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod event;
pub mod exec;
mod id;
pub mod labels;
pub mod layer;
mod sandbox;
mod secret;
pub mod spec;
pub mod time;
pub mod validate;
pub mod wire;

pub use backend::{BackendKind, DynSandboxBackend, Operation, SandboxBackend, SandboxBackendExt};
pub use capabilities::{Capabilities, Isolation};
pub use config::Config;
pub use error::{BoxError, Error, ResourceKind, Result, RetrySafety};
pub use event::{EVENT_BUFFER, EventBus, EventStream, SandboxEvent, SandboxEventKind};
pub use exec::{
    ExecEvent, ExecOutput, ExecRequest, ExecRequestBuilder, ExecStream, ExitStatus,
    MAX_BUFFERED_OUTPUT,
};
pub use id::{SandboxId, SessionId, SnapshotId, TemplateKey};
pub use sandbox::{
    Sandbox, SandboxOrigin, SandboxStatus, Snapshot, SnapshotRef, TerminationReason, WarmStatus,
};
pub use secret::Secret;
pub use spec::{
    DEFAULT_LLM_MODEL, DEFAULT_LLM_PROVIDER, DEFAULT_TIMEOUT, DEFAULT_WORKDIR, EgressRule, EnvVar,
    Environment, ListFilter, MAX_TIMEOUT, NetworkPolicy, RepoRef, Resources, SandboxSpec,
    SandboxSpecBuilder, SandboxTemplate, SessionSettings, SnapshotFilter, SnapshotOptions,
    SnapshotReason, WarmSpec, WarmSpecBuilder,
};

/// Re-exported so backends and callers name the same versions.
pub use async_trait::async_trait;
pub use bytes::Bytes;
