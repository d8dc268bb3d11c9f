//! The file service's payloads: JSON requests and replies, and the headers of chunks and
//! uploads.

use serde::{Deserialize, Serialize};

/// Headers of a chunk reply.
pub const HEADER_SIZE: &str = "Agora-File-Size";
pub const HEADER_SHA256: &str = "Agora-File-Sha256";
pub const HEADER_OFFSET: &str = "Agora-Offset";
/// Headers of an `agora.files.put` request: the name (required) and the body's sha256
/// (optional; checked when given). An upload sent in parts also names its upload
/// (`Agora-Upload`), the file's whole size (`Agora-File-Size`) and each part's offset
/// (`Agora-Offset`); the sha256, when given, is of the whole file.
pub const HEADER_NAME: &str = "Agora-File-Name";
pub const HEADER_UPLOAD: &str = "Agora-Upload";

/// The reply to a part of an upload that is not its last: the bytes held so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadProgress {
    pub name: String,
    pub upload: String,
    pub received: u64,
    pub size: u64,
}
/// Body of `agora.files.list` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFilesRequest {
    /// Only names starting with this (`docs/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub prefix: Option<String>,
    /// Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub limit: Option<usize>,
}

/// A file in a listing; also the reply of `agora.files.delete` (the file as it was).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub modified_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilesReply {
    pub files: Vec<FileEntry>,
    pub truncated: bool,
}

/// Body of `agora.files.stat`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatRequest {
    /// A relative path of normal components (`docs/report.pdf`), at most 1024 bytes.
    #[schemars(length(min = 1, max = 1024))]
    pub name: String,
}

/// Reply of `agora.files.stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub name: String,
    pub size: u64,
    pub modified_ms: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// The largest chunk `get` returns.
    pub chunk_bytes: u64,
    pub chunks: u64,
    /// Whether the file is in this server's cache now.
    pub cached: bool,
}

/// Body of `agora.files.get`: one chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    pub name: String,
    #[serde(default)]
    pub offset: u64,
    /// At most `chunk_bytes` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Only if the file still has this digest (`conflict` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedEntry {
    pub name: String,
    pub bytes: u64,
    pub modified_ms: u64,
}

/// Reply of `agora.files.cache`: what this server has cached, and its counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheReport {
    pub capacity_bytes: u64,
    pub file_bytes_max: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub invalidations: u64,
    #[serde(default)]
    pub entries: Vec<CachedEntry>,
}
