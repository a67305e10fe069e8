#![doc = include_str!("../README.md")]

mod backend;
mod config;
mod convert;
mod error;
mod exec;
mod files;
mod pool;
mod reaper;
mod runner;
mod snapshot;

pub use backend::{DockerBackend, DockerBackendBuilder, ReapedOrphans};
pub use config::{
    ADDED_CAPABILITIES, DEFAULT_DOCKER_HOST, DEFAULT_NETWORK, DEFAULT_PIDS_LIMIT,
    DEFAULT_POOL_LIFETIME, MIN_API_VERSION, STOP_GRACE,
};
pub use convert::SNAPSHOT_REPOSITORY;
pub use files::{FILE_MODE, MAX_SYMLINKS};
pub use sandbox_core::config::{DEFAULT_DOCKER_IMAGE, DockerConfig, PullPolicy};
