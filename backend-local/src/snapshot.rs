//! Snapshots: a tar archive of the workspace (symlinks stored as links, never followed) and
//! its metadata, verified after writing; restore extracts it into a new workspace.

use std::path::Path;

use sandbox_core::{Result, Snapshot, SnapshotFilter};

use crate::error::{LocalError, io};
use crate::store::{Store, read_json, remove_file_if_exists, write_json};

/// Archives `workspace` into `archive` (atomically) and returns (entries, bytes).
pub(crate) fn archive(workspace: &Path, archive: &Path) -> Result<(u64, u64)> {
    let tmp = archive.with_extension("tar.partial");
    let result = (|| -> std::io::Result<u64> {
        let file = std::fs::File::create(&tmp)?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        builder.follow_symlinks(false);
        builder.mode(tar::HeaderMode::Complete);
        let mut entries = 0;
        for entry in walk(workspace)? {
            let rel = entry.strip_prefix(workspace).unwrap_or(&entry);
            builder.append_path_with_name(&entry, rel)?;
            entries += 1;
        }
        builder
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        Ok(entries)
    })();
    let entries = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("write snapshot archive", archive, e));
        }
    };
    std::fs::rename(&tmp, archive).map_err(|e| io("rename", archive, e))?;
    // Verify what was written: read it back and count.
    let read_back = (|| -> std::io::Result<u64> {
        let mut ar = tar::Archive::new(std::fs::File::open(archive)?);
        let mut n = 0;
        for entry in ar.entries()? {
            entry?;
            n += 1;
        }
        Ok(n)
    })()
    .map_err(|e| io("verify snapshot archive", archive, e))?;
    if read_back != entries {
        let _ = std::fs::remove_file(archive);
        return Err(LocalError::SnapshotVerify {
            path: archive.to_path_buf(),
            detail: format!("wrote {entries} entries, read back {read_back}"),
        }
        .into());
    }
    let bytes = std::fs::metadata(archive)
        .map_err(|e| io("inspect", archive, e))?
        .len();
    Ok((entries, bytes))
}

/// Every path under `root` (directories before their contents), not following symlinks.
fn walk(root: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        children.sort();
        for child in children {
            let is_dir = std::fs::symlink_metadata(&child)?.is_dir();
            out.push(child.clone());
            if is_dir {
                stack.push(child);
            }
        }
    }
    Ok(out)
}

/// Extracts an archive into an (empty) workspace. The tar crate refuses entries that would
/// land outside the destination.
pub(crate) fn extract(archive: &Path, workspace: &Path) -> Result<()> {
    let file = std::fs::File::open(archive).map_err(|e| io("open snapshot archive", archive, e))?;
    let mut ar = tar::Archive::new(file);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    ar.unpack(workspace)
        .map_err(|e| io("extract snapshot archive", archive, e))
}

pub(crate) fn write_meta(store: &Store, snapshot: &Snapshot) -> Result<()> {
    write_json(&store.snapshot_meta(snapshot.id.as_str()), snapshot, 0o600)
}

pub(crate) fn read_meta(store: &Store, id: &str) -> Result<Option<Snapshot>> {
    read_json(&store.snapshot_meta(id))
}

/// Snapshots matching `filter`, newest first.
pub(crate) fn list(store: &Store, filter: &SnapshotFilter) -> Result<Vec<Snapshot>> {
    let dir = store.snapshots_dir();
    let entries = std::fs::read_dir(&dir).map_err(|e| io("list", &dir, e))?;
    let mut out = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Some(snapshot) = read_json::<Snapshot>(&path)?
            && store.snapshot_archive(snapshot.id.as_str()).exists()
            && filter.matches(&snapshot)
        {
            out.push(snapshot);
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(out)
}

/// Removes a snapshot (idempotent).
pub(crate) fn delete(store: &Store, id: &str) -> Result<()> {
    remove_file_if_exists(&store.snapshot_meta(id))?;
    remove_file_if_exists(&store.snapshot_archive(id))
}
