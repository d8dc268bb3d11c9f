//! The file service's calls on [`AgoraClient`]: list, stat, chunks, whole downloads that
//! resume and check the digest, uploads.

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::wire::*;
use super::{PAYLOAD_HEADROOM, hex, invalid, sha256_hex};
use crate::client::{AgoraClient, ClientError};
use crate::error::ServiceError;
use crate::subjects::files as subject;

/// A download's progress, reported after each chunk.
pub trait Progress {
    fn started(&mut self, stat: &FileStat, resumed_from: u64);
    fn advanced(&mut self, bytes: u64);
}

impl Progress for () {
    fn started(&mut self, _: &FileStat, _: u64) {}
    fn advanced(&mut self, _: u64) {}
}

/// Chunks a download keeps in flight.
pub const DOWNLOAD_WINDOW: usize = 8;

impl AgoraClient {
    /// The most bytes one upload carries: the server's max payload, less room for headers.
    pub fn upload_bytes_max(&self) -> usize {
        self.nats().server_info().max_payload.saturating_sub(PAYLOAD_HEADROOM)
    }

    /// Uploads `bytes` as file `name` (at most the server's max payload, less some room for
    /// headers), replacing any file of that name whole; returns the new file's stat.
    pub async fn put_file(&self, name: &str, bytes: Bytes) -> Result<FileStat, ClientError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_NAME, name);
        headers.insert(HEADER_SHA256, sha256_hex(&bytes).as_str());
        let max = self.upload_bytes_max();
        if max > 0 && bytes.len() > max {
            return Err(ClientError::Service(invalid(format!(
                "{} bytes is more than an upload carries ({max} bytes)",
                bytes.len()
            ))));
        }
        let reply = self.request_with_headers(subject::PUT_SUBJECT, headers, bytes).await?;
        serde_json::from_slice(&reply)
            .map_err(|e| ClientError::Transport(format!("unexpected reply to put: {e}")))
    }

    pub async fn file_stat(&self, name: &str) -> Result<FileStat, ClientError> {
        self.request(subject::STAT_SUBJECT, &StatRequest { name: name.to_owned() }).await
    }

    pub async fn list_files(
        &self,
        request: &ListFilesRequest,
    ) -> Result<ListFilesReply, ClientError> {
        self.request(subject::LIST_SUBJECT, request).await
    }

    pub async fn file_cache(&self) -> Result<CacheReport, ClientError> {
        self.request_bytes(subject::CACHE_SUBJECT, Bytes::new()).await.and_then(|reply| {
            serde_json::from_slice(&reply)
                .map_err(|e| ClientError::Transport(format!("unexpected cache reply: {e}")))
        })
    }

    /// One chunk of `name` at `offset`, if the file still has digest `sha256`.
    pub async fn file_chunk(
        &self,
        name: &str,
        offset: u64,
        sha256: Option<&str>,
    ) -> Result<Bytes, ClientError> {
        self.file_range(name, offset, None, sha256).await
    }

    /// At most `length` bytes (one chunk when absent) of `name` at `offset`, if the file still
    /// has digest `sha256`.
    pub async fn file_range(
        &self,
        name: &str,
        offset: u64,
        length: Option<u64>,
        sha256: Option<&str>,
    ) -> Result<Bytes, ClientError> {
        let request =
            GetRequest { name: name.to_owned(), offset, length, sha256: sha256.map(str::to_owned) };
        let payload = serde_json::to_vec(&request)
            .map_err(|e| ClientError::Transport(format!("cannot encode request: {e}")))?;
        self.request_bytes(subject::GET_SUBJECT, Bytes::from(payload)).await
    }

    /// Downloads `name` into `out` from byte `resume_from` on (the bytes before it are already
    /// in `out`, and are fed to `hasher` by the caller): chunks fetched [`DOWNLOAD_WINDOW`] at
    /// a time, in order, all of one version of the file. Returns the stat; the caller checks
    /// the digest (`hasher` has seen every byte written).
    pub async fn download(
        &self,
        name: &str,
        resume_from: u64,
        out: &mut (impl std::io::Write + ?Sized),
        hasher: &mut Sha256,
        progress: &mut (dyn Progress + Send),
    ) -> Result<FileStat, ClientError> {
        let stat = self.file_stat(name).await?;
        if resume_from > stat.size {
            return Err(ClientError::Service(ServiceError::invalid(
                "the local part is longer than the file",
            )));
        }
        progress.started(&stat, resume_from);
        let offsets = (resume_from..stat.size).step_by(stat.chunk_bytes.max(1) as usize);
        let sha256 = stat.sha256.clone();
        let mut chunks = futures::stream::iter(offsets)
            .map(|offset| {
                let sha256 = sha256.clone();
                async move { self.file_chunk(name, offset, Some(&sha256)).await }
            })
            .buffered(DOWNLOAD_WINDOW);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if chunk.is_empty() {
                return Err(ClientError::Transport("an empty chunk before the end".into()));
            }
            out.write_all(&chunk)
                .map_err(|e| ClientError::Transport(format!("cannot write: {e}")))?;
            hasher.update(&chunk);
            progress.advanced(chunk.len() as u64);
        }
        Ok(stat)
    }

    /// Downloads a whole file into memory and checks its digest.
    pub async fn fetch_file(&self, name: &str) -> Result<(FileStat, Vec<u8>), ClientError> {
        let mut bytes = Vec::new();
        let mut hasher = Sha256::new();
        let stat = self.download(name, 0, &mut bytes, &mut hasher, &mut ()).await?;
        let digest = hex(&hasher.finalize());
        if digest != stat.sha256 {
            return Err(ClientError::Transport(format!(
                "digest mismatch: got {digest}, the server said {}",
                stat.sha256
            )));
        }
        Ok((stat, bytes))
    }
}
