//! `read_file` / `write_file`, confined to the workspace: a path is walked one component at a
//! time from the workspace root, and a symbolic link anywhere on it is refused, so neither an
//! absolute path, a `..`, nor a link planted by a command can reach outside.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sandbox_core::{Error, Result, validate};

use crate::error::{file_not_found, io};
use crate::store::write_atomic;

/// Mode of files written through `write_file`.
pub const FILE_MODE: u32 = 0o644;

/// The workspace-relative components of `path` (absolute inside the sandbox, or relative to
/// the workdir), or `InvalidSpec` when it is outside the workdir.
fn components(workdir: &str, path: &str) -> Result<Vec<String>> {
    let abs = validate::sandbox_path("path", workdir, path)?;
    let workdir = workdir.trim_end_matches('/');
    let rest = abs
        .strip_prefix(workdir)
        .filter(|rest| rest.starts_with('/'))
        .ok_or_else(|| {
            Error::invalid_spec(
                "path",
                format!("the local backend confines file operations to the workdir {workdir}"),
            )
        })?;
    Ok(rest
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect())
}

/// Walks the directories of `dirs` under `root`, refusing symlinks; creates missing ones when
/// `create`. Returns the host path of the last directory.
fn walk(root: &Path, dirs: &[String], create: bool, shown: &str) -> Result<PathBuf> {
    let mut here = root.to_path_buf();
    for part in dirs {
        here.push(part);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::invalid_spec(
                    "path",
                    format!(
                        "`{shown}` goes through a symbolic link, which file operations do not follow"
                    ),
                ));
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::invalid_spec(
                    "path",
                    format!("`{shown}`: a parent is not a directory"),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Err(file_not_found(shown));
                }
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&here)
                    .map_err(|e| io("create directory", &here, e))?;
            }
            Err(e) => return Err(io("inspect", &here, e)),
        }
    }
    Ok(here)
}

/// Reads a file of the workspace.
pub(crate) fn read(workspace: &Path, workdir: &str, path: &str) -> Result<Bytes> {
    let parts = components(workdir, path)?;
    let Some((name, dirs)) = parts.split_last() else {
        return Err(Error::invalid_spec(
            "path",
            "names the workdir itself, not a file",
        ));
    };
    let dir = walk(workspace, dirs, false, path)?;
    let file_path = dir.join(name);
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&file_path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(file_not_found(path)),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Error::invalid_spec(
                "path",
                format!("`{path}` is a symbolic link, which file operations do not follow"),
            ));
        }
        Err(e) => return Err(io("open", &file_path, e)),
    };
    let meta = file.metadata().map_err(|e| io("inspect", &file_path, e))?;
    if !meta.is_file() {
        return Err(Error::invalid_spec(
            "path",
            format!("`{path}` is not a regular file"),
        ));
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut buf)
        .map_err(|e| io("read", &file_path, e))?;
    Ok(buf.into())
}

/// Writes a file of the workspace (parents created, an existing file replaced atomically).
pub(crate) fn write(workspace: &Path, workdir: &str, path: &str, contents: &[u8]) -> Result<()> {
    let parts = components(workdir, path)?;
    let Some((name, dirs)) = parts.split_last() else {
        return Err(Error::invalid_spec(
            "path",
            "names the workdir itself, not a file",
        ));
    };
    let dir = walk(workspace, dirs, true, path)?;
    let file_path = dir.join(name);
    if std::fs::symlink_metadata(&file_path).is_ok_and(|m| m.is_dir()) {
        return Err(Error::invalid_spec(
            "path",
            format!("`{path}` is a directory"),
        ));
    }
    // The rename replaces a symlink at the final name rather than following it.
    write_atomic(&file_path, contents, FILE_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_confinement() {
        let ws = tempfile::tempdir().unwrap();
        let root = ws.path();
        write(root, "/workspace", "a/b/c.txt", b"hello").unwrap();
        assert_eq!(
            &read(root, "/workspace", "/workspace/a/b/c.txt").unwrap()[..],
            b"hello"
        );
        write(root, "/workspace", "a/b/c.txt", b"x").unwrap();
        assert_eq!(&read(root, "/workspace", "a/b/c.txt").unwrap()[..], b"x");
        assert!(
            read(root, "/workspace", "missing")
                .unwrap_err()
                .is_not_found()
        );
        assert!(
            read(root, "/workspace", "nodir/x")
                .unwrap_err()
                .is_not_found()
        );
        for bad in ["/etc/passwd", "../x", "/workspace/../etc", "/workspacex/y"] {
            let e = read(root, "/workspace", bad).unwrap_err();
            assert_eq!(e.invalid_field(), Some("path"), "{bad}: {e}");
        }

        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("file-link")).unwrap();
        for bad in ["link/secret", "file-link"] {
            let e = read(root, "/workspace", bad).unwrap_err();
            assert_eq!(e.invalid_field(), Some("path"), "{bad}: {e}");
        }
        let e = write(root, "/workspace", "link/new", b"x").unwrap_err();
        assert_eq!(e.invalid_field(), Some("path"));
        assert!(!outside.path().join("new").exists());
        // Writing over a symlink replaces the link, never the file it points to.
        write(root, "/workspace", "file-link", b"replaced").unwrap();
        assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"s");
    }
}
