//! `read_file` / `write_file` through Docker's archive API (a tar archive each way).
//!
//! Paths are checked with [`sandbox_core::validate::sandbox_path`] against the container's
//! working directory. A write is one tar entry extracted at `/`: the daemon creates missing
//! parent directories (mode 0755, root) and replaces an existing file, and refuses to replace a
//! directory with a file (`noOverwriteDirNonDir`). Written files are mode 0644, owned by root.
//! A read follows a symbolic link at the path (up to [`MAX_SYMLINKS`] of them).

use std::io::Read;
use std::time::SystemTime;

use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use bytes::Bytes;
use futures::StreamExt;
use sandbox_core::{Error, Operation, ResourceKind, Result, SandboxId, validate};

use crate::backend::Inner;
use crate::error::{DockerError, Target, status_of};

/// Most symbolic links a read follows.
pub const MAX_SYMLINKS: usize = 8;
/// Mode of files `write_file` creates.
pub const FILE_MODE: u32 = 0o644;

/// The working directory of a sandbox (cached: it never changes).
async fn workdir(inner: &Inner, operation: Operation, id: &SandboxId) -> Result<(String, String)> {
    let located = inner.locate(operation, id).await?;
    if let Some(dir) = &located.workdir {
        return Ok((located.container_id, dir.clone()));
    }
    let info = inner
        .api
        .call(
            operation,
            Target::Sandbox(id.as_str()),
            inner
                .docker()
                .inspect_container(&located.container_id, None),
        )
        .await
        .inspect_err(|e| {
            if e.is_not_found() {
                inner.forget(id);
            }
        })?;
    let dir = info
        .config
        .and_then(|c| c.working_dir)
        .filter(|d| d.starts_with('/'))
        .unwrap_or_else(|| "/".to_string());
    let mut updated = located.clone();
    updated.workdir = Some(dir.clone());
    inner.cache(id, updated);
    Ok((located.container_id, dir))
}

fn tar_error(path: &str, source: std::io::Error) -> Error {
    DockerError::Tar {
        path: path.to_string(),
        source,
    }
    .into_error()
}

pub(crate) async fn write_file(
    inner: &Inner,
    id: &SandboxId,
    path: &str,
    contents: Bytes,
) -> Result<()> {
    let op = Operation::WriteFile;
    inner
        .capabilities()
        .require(sandbox_core::BackendKind::Docker, op)?;
    let (container, dir) = workdir(inner, op, id).await?;
    let abs = validate::sandbox_path("path", &dir, path)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(FILE_MODE);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(sandbox_core::time::unix_seconds(SystemTime::now()));
    header.set_entry_type(tar::EntryType::Regular);
    let mut builder = tar::Builder::new(Vec::with_capacity(contents.len() + 2048));
    builder
        .append_data(&mut header, abs.trim_start_matches('/'), &contents[..])
        .map_err(|e| tar_error(&abs, e))?;
    let archive = builder.into_inner().map_err(|e| tar_error(&abs, e))?;
    let options = UploadToContainerOptions {
        path: "/".to_string(),
        no_overwrite_dir_non_dir: Some("true".to_string()),
        copy_uidgid: None,
    };
    match inner
        .api
        .call_raw(
            op,
            inner.docker().upload_to_container(
                &container,
                Some(options),
                bollard::body_full(archive.into()),
            ),
        )
        .await?
    {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => {
            inner.forget(id);
            Err(Error::sandbox_not_found(id))
        }
        Err(e)
            if matches!(status_of(&e), Some(400 | 500)) && e.to_string().contains("directory") =>
        {
            Err(Error::invalid_spec(
                "path",
                format!("`{abs}` cannot be written: {e}"),
            ))
        }
        Err(e) => Err(inner.api.map(op, Target::Sandbox(id.as_str()), e)),
    }
}

pub(crate) async fn read_file(inner: &Inner, id: &SandboxId, path: &str) -> Result<Bytes> {
    let op = Operation::ReadFile;
    inner
        .capabilities()
        .require(sandbox_core::BackendKind::Docker, op)?;
    let (container, dir) = workdir(inner, op, id).await?;
    let abs = validate::sandbox_path("path", &dir, path)?;
    read_path(inner, op, &container, &abs).await
}

/// Reads the regular file at absolute `path` of a container, following symbolic links.
pub(crate) async fn read_path(
    inner: &Inner,
    operation: Operation,
    container: &str,
    path: &str,
) -> Result<Bytes> {
    let mut path = path.to_string();
    for _ in 0..=MAX_SYMLINKS {
        match read_entry(inner, operation, container, &path).await? {
            Entry::File(bytes) => return Ok(bytes),
            Entry::Link(target) => {
                path = if target.starts_with('/') {
                    target
                } else {
                    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                    format!("{parent}/{target}")
                };
                validate::absolute_path("path", &path).map_err(|_| {
                    Error::invalid_spec(
                        "path",
                        format!(
                            "a symbolic link leads to `{path}`, outside the rules of sandbox paths"
                        ),
                    )
                })?;
            }
            Entry::Directory => {
                return Err(Error::invalid_spec(
                    "path",
                    format!("`{path}` is a directory, not a file"),
                ));
            }
            Entry::Other => {
                return Err(Error::invalid_spec(
                    "path",
                    format!("`{path}` is not a regular file"),
                ));
            }
        }
    }
    Err(Error::invalid_spec(
        "path",
        format!("more than {MAX_SYMLINKS} symbolic links to follow"),
    ))
}

enum Entry {
    File(Bytes),
    Link(String),
    Directory,
    Other,
}

async fn read_entry(
    inner: &Inner,
    operation: Operation,
    container: &str,
    path: &str,
) -> Result<Entry> {
    let options = DownloadFromContainerOptions {
        path: path.to_string(),
    };
    let download = async {
        let mut stream = inner
            .docker()
            .download_from_container(container, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            archive.extend_from_slice(&chunk?);
        }
        Ok::<_, bollard::errors::Error>(archive)
    };
    let archive = match inner.api.call_raw(operation, download).await? {
        Ok(a) => a,
        Err(e) if status_of(&e) == Some(404) => {
            return Err(Error::NotFound {
                kind: ResourceKind::File,
                id: path.to_string(),
            });
        }
        Err(e) => return Err(inner.api.map(operation, Target::File(path), e)),
    };
    let mut tar = tar::Archive::new(&archive[..]);
    let mut entries = tar.entries().map_err(|e| tar_error(path, e))?;
    let Some(entry) = entries.next() else {
        return Err(tar_error(
            path,
            std::io::Error::other("the daemon sent an empty archive"),
        ));
    };
    let mut entry = entry.map_err(|e| tar_error(path, e))?;
    match entry.header().entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| tar_error(path, e))?;
            Ok(Entry::File(data.into()))
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(|e| tar_error(path, e))?
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(Entry::Link(target))
        }
        tar::EntryType::Directory => Ok(Entry::Directory),
        _ => Ok(Entry::Other),
    }
}
