//! The served directory on disk: names confined to the root, files resolved through symlinks
//! and written whole (a temporary file beside the target, synced, renamed over it).

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::Digest as _;

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

/// The real path of `name`, if it is a regular file inside the root (an upload in progress is
/// not one).
pub fn resolve(root: &Path, name: &str) -> Result<(PathBuf, std::fs::Metadata), ServiceError> {
    check_name(name)?;
    if name.contains(UPLOAD_MARK) {
        return Err(not_found(name));
    }
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

/// Removes file `name` under `root`: the entry of that name (a symbolic link itself, not what it
/// points to), which must be a file or a link to one, inside the root through its real parent.
/// Answers the file as it was.
pub fn remove(root: &Path, name: &str) -> Result<std::fs::Metadata, ServiceError> {
    // What it serves (the name checked): a regular file, or a link to one inside the root.
    let (_, metadata) = resolve(root, name)?;
    let entry = root.join(name);
    let (Some(parent), Some(file_name)) = (entry.parent(), entry.file_name()) else {
        return Err(not_found(name));
    };
    let real_parent = parent.canonicalize().map_err(|_| not_found(name))?;
    if !real_parent.starts_with(root) {
        return Err(not_found(name));
    }
    let entry = real_parent.join(file_name);
    match std::fs::remove_file(&entry) {
        Ok(()) => {
            // Directories of the name the removal left empty go too (up to the root; never
            // through a link), so nothing unseen stands in the way of a later upload.
            let mut directory = parent;
            while directory != root && directory.starts_with(root) {
                let real = std::fs::symlink_metadata(directory).is_ok_and(|m| m.is_dir());
                if !real || std::fs::remove_dir(directory).is_err() {
                    break;
                }
                directory = directory.parent().unwrap_or(root);
            }
            Ok(metadata)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(not_found(name)),
        Err(error) => {
            Err(ServiceError::new(ErrorCode::Unavailable, format!("cannot remove {name}: {error}")))
        }
    }
}

/// Writes `bytes` as file `name` under `root` (creating its directories), whole or not at all.
pub fn write_whole(root: &Path, name: &str, bytes: &[u8]) -> Result<(), ServiceError> {
    again_if_its_directory_went(|| write_whole_once(root, name, bytes))
}

/// Runs `write` once more if it failed because its directory was not there: a removal on
/// another server may take a directory it left empty between making it and writing in it.
fn again_if_its_directory_went<T>(
    mut write: impl FnMut() -> Result<T, (ServiceError, std::io::ErrorKind)>,
) -> Result<T, ServiceError> {
    match write() {
        Err((_, std::io::ErrorKind::NotFound)) => write().map_err(|(error, _)| error),
        result => result.map_err(|(error, _)| error),
    }
}

fn write_whole_once(
    root: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), (ServiceError, std::io::ErrorKind)> {
    let other = |error: ServiceError| (error, std::io::ErrorKind::Other);
    let target = target(root, name).map_err(other)?;
    let temporary = target.with_file_name(format!(
        ".{}{UPLOAD_MARK}{}",
        target.file_name().unwrap_or_default().to_string_lossy(),
        nuid::next()
    ));
    let written = (|| {
        use std::io::Write;
        let mut file = File::create_new(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &target)
    })();
    if let Err(error) = written {
        std::fs::remove_file(&temporary).ok();
        return Err((write_error(name, &error), error.kind()));
    }
    Ok(())
}

fn write_error(name: &str, error: &std::io::Error) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("cannot write {name}: {error}"))
}

/// Where file `name` under `root` is written: its directories made, its real parent inside
/// the root, and no directory in its place.
fn target(root: &Path, name: &str) -> Result<PathBuf, ServiceError> {
    let target = root.join(name);
    let (Some(parent), Some(file_name)) = (target.parent(), target.file_name()) else {
        return Err(invalid("a file name names a file"));
    };
    std::fs::create_dir_all(parent).map_err(|e| write_error(name, &e))?;
    // A symlinked directory must not lead the write outside the root.
    let real_parent = parent.canonicalize().map_err(|e| write_error(name, &e))?;
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
    Ok(target)
}

/// The directory of uploads sent in parts (never listed or served: its name holds
/// [`UPLOAD_MARK`]).
pub const STAGING_DIR: &str = ".agora-upload-staging";

/// One part of an upload sent in parts, and what the staging directory allows.
#[derive(Debug)]
pub struct Part<'a> {
    pub name: &'a str,
    pub upload: &'a str,
    pub offset: u64,
    pub size: u64,
    pub bytes: &'a [u8],
}

/// How the staging directory is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Staging {
    /// Uploads in progress at most (beyond: `busy`).
    pub uploads_max: usize,
    /// An upload no part of which arrived for this long is removed when another begins.
    pub idle: Duration,
}

/// Writes one part of an upload at its offset into the upload's staging file, and returns the
/// bytes the upload holds now (from 0, without gaps). The staging file is named after the
/// upload id, the size and the file's name, so parts of another file or size never mix into
/// it. A part may repeat bytes already held (a retry); one beyond them is `conflict`, naming
/// where to go on.
pub fn write_part(
    root: &Path,
    staging: Staging,
    part: &Part<'_>,
) -> Result<(PathBuf, u64), ServiceError> {
    let dir = root.join(STAGING_DIR);
    let staged = dir.join(format!(
        "{}-{}-{}",
        part.upload,
        part.size,
        &super::sha256_hex(part.name.as_bytes())[..16]
    ));
    let error = |e: std::io::Error| write_error(part.name, &e);
    let held = match std::fs::metadata(&staged) {
        Ok(metadata) => metadata.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if part.offset == 0 {
                // Refused now rather than after the last part: no directory in the file's place.
                if std::fs::symlink_metadata(root.join(part.name)).is_ok_and(|m| m.is_dir()) {
                    return Err(ServiceError::new(
                        ErrorCode::Conflict,
                        format!("{} exists and is not a regular file", part.name),
                    ));
                }
                std::fs::create_dir_all(&dir).map_err(error)?;
                begin(&dir, staging)?;
            }
            0
        }
        Err(e) => return Err(error(e)),
    };
    if part.offset > held {
        return Err(ServiceError::new(
            ErrorCode::Conflict,
            format!(
                "upload {} of {} holds {held} bytes{}: send from offset {held}",
                part.upload,
                part.name,
                if held == 0 { " (it finished, expired or never began)" } else { "" }
            ),
        ));
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&staged)
        .map_err(error)?;
    {
        use std::io::{Seek, SeekFrom, Write};
        file.seek(SeekFrom::Start(part.offset)).map_err(error)?;
        file.write_all(part.bytes).map_err(error)?;
    }
    let held = held.max(part.offset + part.bytes.len() as u64);
    if held == part.size {
        file.sync_all().map_err(error)?;
    }
    Ok((staged, held))
}

/// Before an upload begins: uploads left idle are removed, and the number in progress is
/// bounded.
fn begin(dir: &Path, staging: Staging) -> Result<(), ServiceError> {
    let mut live = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| write_error(STAGING_DIR, &e))?.flatten() {
        let idle = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= staging.idle);
        if idle {
            std::fs::remove_file(entry.path()).ok();
        } else {
            live += 1;
        }
    }
    if live >= staging.uploads_max {
        return Err(ServiceError::new(
            ErrorCode::Busy,
            format!(
                "{live} uploads are in progress (at most {}); retry later",
                staging.uploads_max
            ),
        ));
    }
    Ok(())
}

/// Puts a finished upload's staging file in place as file `name` (renamed over any file of
/// that name), if its digest is `sha256` when one is given; an upload that cannot be put in
/// place is removed. Returns its digest.
pub fn finish(
    root: &Path,
    name: &str,
    staged: &Path,
    sha256: Option<&str>,
) -> Result<String, ServiceError> {
    let result = (|| {
        let mut file = File::open(staged).map_err(|e| write_error(name, &e))?;
        let mut hasher = sha2::Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|e| write_error(name, &e))?;
        let digest = super::finish_hex(hasher);
        if let Some(expected) = sha256
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(invalid(format!(
                "the upload's sha256 is {digest}, not {expected}: it was damaged; send it again"
            )));
        }
        again_if_its_directory_went(|| {
            let target = target(root, name).map_err(|e| (e, std::io::ErrorKind::Other))?;
            std::fs::rename(staged, &target).map_err(|e| (write_error(name, &e), e.kind()))
        })?;
        Ok(digest)
    })();
    if result.is_err() {
        std::fs::remove_file(staged).ok();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write whose directory went between making it and writing in it is tried once more;
    /// any other failure, or a second one, is the answer.
    #[test]
    fn a_write_is_tried_again_only_when_its_directory_went() {
        let failed = || ServiceError::new(ErrorCode::Unavailable, "cannot write x");
        for (first, tries, ok) in [
            (std::io::ErrorKind::NotFound, 2, true),
            (std::io::ErrorKind::PermissionDenied, 1, false),
            (std::io::ErrorKind::Other, 1, false),
        ] {
            let mut calls = 0;
            let result = again_if_its_directory_went(|| {
                calls += 1;
                if calls == 1 { Err((failed(), first)) } else { Ok(()) }
            });
            assert_eq!((calls, result.is_ok()), (tries, ok), "{first:?}");
        }
        let mut calls = 0;
        let result: Result<(), _> = again_if_its_directory_went(|| {
            calls += 1;
            Err((failed(), std::io::ErrorKind::NotFound))
        });
        assert_eq!((calls, result.map_err(|e| e.code)), (2, Err(ErrorCode::Unavailable)));
    }

    /// A removal takes the directories it left empty, up to the root, and no further than one
    /// still holding something.
    #[test]
    fn a_removal_takes_the_directories_it_left_empty() {
        let dir = tempfile::tempdir().expect("a directory");
        let root = dir.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(root.join("a/b/c")).expect("dirs");
        std::fs::write(root.join("a/b/c/f.txt"), b"f").expect("file");
        std::fs::write(root.join("a/g.txt"), b"g").expect("file");
        remove(&root, "a/b/c/f.txt").expect("removed");
        assert!(!root.join("a/b").exists());
        assert!(root.join("a/g.txt").is_file());
        remove(&root, "a/g.txt").expect("removed");
        assert!(!root.join("a").exists() && root.is_dir(), "never the root");
    }
}
