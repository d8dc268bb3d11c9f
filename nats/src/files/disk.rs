//! The served directory on disk: names confined to the root, files resolved through symlinks
//! and written whole (a temporary file beside the target, synced, renamed over it).

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::{NAME_BYTES_MAX, invalid, not_found};
use crate::error::{ErrorCode, ServiceError};

/// Marks the temporary file of an upload in progress (never listed or served).
pub const UPLOAD_MARK: &str = ".agora-upload-";

/// Checks that `name` is a relative path of normal components.
pub fn check_name(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(invalid(format!("a file name is 1..={NAME_BYTES_MAX} bytes")));
    }
    if name.contains('\\') || name.contains('\0') || name.chars().any(char::is_control) {
        return Err(invalid("a file name has no backslashes or control characters"));
    }
    let path = Path::new(name);
    if path.is_absolute() || name.starts_with('/') {
        return Err(invalid("a file name is relative to the served directory"));
    }
    // Checked on the text: `Path::components` would quietly drop an inner `.` or `//`.
    let normal = name.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if !normal || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(invalid("a file name has no `..`, `.` or empty parts"));
    }
    Ok(())
}

/// Checks the name of an upload: a file name that is not an upload's temporary file.
pub fn check_upload_name(name: &str) -> Result<(), ServiceError> {
    check_name(name)?;
    if name.contains(UPLOAD_MARK) {
        return Err(invalid(format!("a file name does not contain {UPLOAD_MARK}")));
    }
    Ok(())
}

/// A file's modification time, in ms since the epoch (0 when the system gives none).
pub fn modified_ms(metadata: &std::fs::Metadata) -> u64 {
    metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The real path of `name`, if it is a regular file inside the root.
pub fn resolve(root: &Path, name: &str) -> Result<(PathBuf, std::fs::Metadata), ServiceError> {
    check_name(name)?;
    let path = root.join(name).canonicalize().map_err(|_| not_found(name))?;
    if !path.starts_with(root) {
        return Err(not_found(name));
    }
    let metadata = std::fs::metadata(&path).map_err(|_| not_found(name))?;
    if !metadata.is_file() {
        return Err(not_found(name));
    }
    Ok((path, metadata))
}

/// Writes `bytes` as file `name` under `root` (creating its directories), whole or not at all.
pub fn write_whole(root: &Path, name: &str, bytes: &[u8]) -> Result<(), ServiceError> {
    let write_error = |error: std::io::Error| {
        ServiceError::new(ErrorCode::Unavailable, format!("cannot write {name}: {error}"))
    };
    let target = root.join(name);
    let (Some(parent), Some(file_name)) = (target.parent(), target.file_name()) else {
        return Err(invalid("a file name names a file"));
    };
    std::fs::create_dir_all(parent).map_err(write_error)?;
    // A symlinked directory must not lead the write outside the root.
    let real_parent = parent.canonicalize().map_err(write_error)?;
    if !real_parent.starts_with(root) {
        return Err(invalid(format!("{name} is outside the served directory")));
    }
    let target = real_parent.join(file_name);
    if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.is_file()) {
        return Err(ServiceError::new(
            ErrorCode::Conflict,
            format!("{name} exists and is not a regular file"),
        ));
    }
    let temporary =
        real_parent.join(format!(".{}{UPLOAD_MARK}{}", file_name.to_string_lossy(), nuid::next()));
    let written = (|| {
        use std::io::Write;
        let mut file = File::create_new(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &target)
    })();
    if let Err(error) = written {
        std::fs::remove_file(&temporary).ok();
        return Err(write_error(error));
    }
    Ok(())
}
