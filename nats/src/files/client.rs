//! The file service's calls on [`AgoraClient`]: list, stat, chunks, whole downloads that
//! resume and check the digest, uploads.

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::wire::*;
use super::{PAYLOAD_HEADROOM, hex, invalid, sha256_hex};
use crate::client::{AgoraClient, ClientError};
use crate::error::{ErrorCode, ServiceError};
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

/// The id of an upload of `size` bytes with digest `sha256` as file `name`: the same for the
/// same file, so that sending it again resumes it.
pub fn upload_id(name: &str, size: u64, sha256: &str) -> String {
    let digest = sha256_hex(format!("{name}\n{size}\n{}", sha256.to_ascii_lowercase()).as_bytes());
    digest[..32].to_owned()
}

/// Times a part of an upload is sent again when its outcome is unknown or the servers are busy.
const PART_ATTEMPTS: u32 = 3;

/// Chunks a download keeps in flight.
pub const DOWNLOAD_WINDOW: usize = 8;

impl AgoraClient {
    /// The most bytes one upload carries: the server's max payload, less room for headers.
    pub fn upload_bytes_max(&self) -> usize {
        self.nats().server_info().max_payload.saturating_sub(PAYLOAD_HEADROOM)
    }

    /// Uploads `bytes` as file `name`, replacing any file of that name whole; returns the new
    /// file's stat. What fits one message goes as one; more goes in parts
    /// ([`AgoraClient::put_file_parts`]).
    pub async fn put_file(&self, name: &str, bytes: Bytes) -> Result<FileStat, ClientError> {
        let sha256 = sha256_hex(&bytes);
        let max = self.upload_bytes_max();
        if max == 0 || bytes.len() <= max {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_NAME, name);
            headers.insert(HEADER_SHA256, sha256.as_str());
            let reply = self.request_with_headers(subject::PUT_SUBJECT, headers, bytes).await?;
            return serde_json::from_slice(&reply)
                .map_err(|e| ClientError::Transport(format!("unexpected reply to put: {e}")));
        }
        let size = bytes.len() as u64;
        let body = futures::stream::iter([Ok::<_, String>(bytes)]);
        self.put_file_parts(name, size, Some(&sha256), body).await
    }

    /// Uploads a file of `size` bytes as file `name` in parts of up to
    /// [`AgoraClient::upload_bytes_max`] each, sent one after another, its bytes read from
    /// `body` as they come (a file on disk, an HTTP body): nothing larger than a part is held.
    /// The file takes its place whole when the last part lands, if its digest is `sha256`
    /// (when given); returns the new file's stat. With a digest, the upload's id is made from
    /// the name, size and digest ([`upload_id`]), so an upload sent again after an interruption
    /// goes on from what the servers already hold.
    pub async fn put_file_parts<E: std::fmt::Display>(
        &self,
        name: &str,
        size: u64,
        sha256: Option<&str>,
        body: impl futures::Stream<Item = Result<Bytes, E>>,
    ) -> Result<FileStat, ClientError> {
        let part_max = self.upload_bytes_max().max(1);
        let upload = match sha256 {
            Some(sha256) => upload_id(name, size, sha256),
            None => nuid::next().to_string(),
        };
        let mut body = std::pin::pin!(body);
        let mut offset = 0u64;
        let mut buffer = bytes::BytesMut::new();
        let mut ended = false;
        // Bytes of the body to pass over: the server already holds them.
        let mut skip = 0u64;
        loop {
            while skip > 0 {
                if buffer.is_empty() {
                    match body.next().await {
                        Some(Ok(bytes)) => buffer.extend_from_slice(&bytes),
                        Some(Err(error)) => {
                            return Err(ClientError::Transport(format!(
                                "cannot read the file: {error}"
                            )));
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    }
                }
                let passed = buffer.len().min(usize::try_from(skip).unwrap_or(usize::MAX));
                let _ = buffer.split_to(passed);
                skip -= passed as u64;
            }
            while buffer.len() < part_max && !ended {
                match body.next().await {
                    Some(Ok(bytes)) => buffer.extend_from_slice(&bytes),
                    Some(Err(error)) => {
                        return Err(ClientError::Transport(format!(
                            "cannot read the file: {error}"
                        )));
                    }
                    None => ended = true,
                }
            }
            let part = buffer.split_to(buffer.len().min(part_max)).freeze();
            let end = offset + part.len() as u64;
            if end > size || (ended && buffer.is_empty() && end < size) {
                return Err(ClientError::Service(invalid(format!(
                    "the file was to have {size} bytes, but {} came",
                    if end > size { format!("more than {size}") } else { end.to_string() }
                ))));
            }
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_NAME, name);
            headers.insert(HEADER_UPLOAD, upload.as_str());
            headers.insert(HEADER_OFFSET, offset.to_string().as_str());
            headers.insert(HEADER_SIZE, size.to_string().as_str());
            if let Some(sha256) = sha256 {
                headers.insert(HEADER_SHA256, sha256);
            }
            // A part is sent again (the same bytes at the same offset: harmless) when its
            // outcome is unknown or the servers are busy, a few times.
            let mut attempt = 0;
            let reply = loop {
                match self
                    .request_with_headers(subject::PUT_SUBJECT, headers.clone(), part.clone())
                    .await
                {
                    Err(error)
                        if attempt < PART_ATTEMPTS
                            && matches!(error.code(), ErrorCode::Unavailable | ErrorCode::Busy) =>
                    {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                    }
                    // The last part landed, but its answer was lost: the file is in place.
                    Err(error)
                        if attempt > 0 && end == size && error.code() == ErrorCode::Conflict =>
                    {
                        let stat = self.file_stat(name).await?;
                        if sha256.is_some_and(|sha256| sha256.eq_ignore_ascii_case(&stat.sha256)) {
                            return Ok(stat);
                        }
                        return Err(error);
                    }
                    other => break other?,
                }
            };
            if end == size {
                return serde_json::from_slice(&reply)
                    .map_err(|e| ClientError::Transport(format!("unexpected reply to put: {e}")));
            }
            let progress: UploadProgress = serde_json::from_slice(&reply)
                .map_err(|e| ClientError::Transport(format!("unexpected reply to a part: {e}")))?;
            // More held than sent: an earlier attempt at the same upload (the same name, size
            // and digest) got that far, so this one goes on from there.
            if progress.received < end || progress.received >= size {
                return Err(ClientError::Transport(format!(
                    "the file server holds {} bytes of the upload, not {end}",
                    progress.received
                )));
            }
            skip = progress.received - end;
            offset = progress.received;
        }
    }

    /// Removes a file (the manager's); the reply is the file as it was.
    pub async fn delete_file(&self, name: &str) -> Result<FileEntry, ClientError> {
        self.request(subject::DELETE_SUBJECT, &StatRequest { name: name.to_owned() }).await
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
