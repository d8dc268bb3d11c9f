//! A typed client for Agora's request-reply subjects, used by the CLI, the benchmark, the
//! tests and by services that call other services (the bank calls the ledger).

use std::sync::Arc;
use std::time::Duration;

use async_nats::service::NATS_SERVICE_ERROR_CODE;
use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connection;
use crate::error::{ErrorBody, ErrorCode, ServiceError};
use crate::subjects;

/// How long a client waits for a reply unless told otherwise.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Why a request did not get a successful reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The service answered with a coded error.
    #[error("{0}")]
    Service(ServiceError),
    /// No service instance is subscribed to the subject.
    #[error("no service is answering on {0}")]
    NoResponders(String),
    /// No reply within the timeout: the outcome is unknown.
    #[error("no reply within {0:?} (the outcome is unknown; retry with the same id)")]
    Timeout(Duration),
    /// The connection failed, or the reply was not what the API documents.
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// The error code a caller should act on; transport failures count as `unavailable`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Service(error) => error.code,
            Self::NoResponders(_) | Self::Timeout(_) => ErrorCode::Unavailable,
            Self::Transport(_) => ErrorCode::Unavailable,
        }
    }

    /// What a service answers when its call to `service` (a change, made once per id) got no
    /// coded reply: `unavailable`, saying whether the change may have been made. Nobody
    /// answering means nobody received it; a timeout or a lost connection leaves it unknown.
    pub fn unanswered(&self, service: &str) -> ServiceError {
        let message = match self {
            Self::NoResponders(_) => {
                format!("{service} is not answering ({self}): nothing was applied; retry")
            }
            _ => format!("{service}'s answer is unknown ({self}); retry with the same id"),
        };
        ServiceError::new(ErrorCode::Unavailable, message)
    }
}

/// Waits until the server has processed everything this connection sent before, its new
/// subscriptions in particular. (`Client::flush` only waits until the bytes are written; a
/// message published on another connection right after it can still miss a subscription.) A
/// request to a subject nobody serves comes back as "no responders" once the server read it.
pub async fn barrier(client: &Client) -> Result<(), ClientError> {
    let subject = format!("{}.{}", subjects::BARRIER_PREFIX, nuid::next());
    let request = async_nats::Request::new().timeout(Some(REQUEST_TIMEOUT_DEFAULT));
    match client.send_request(subject, request).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == RequestErrorKind::NoResponders => Ok(()),
        Err(error) => Err(ClientError::Transport(format!("barrier: {error}"))),
    }
}

/// Scatter-gather: publishes `payload` on `subject` with a fresh inbox as its reply subject,
/// and collects every reply for `within`, or until `expected` replies came (whichever is
/// first). For subjects many instances answer (`$SRV.PING`, `agora.likes.digest`).
pub async fn gather(
    client: &Client,
    subject: impl Into<String>,
    payload: Bytes,
    within: Duration,
    expected: Option<usize>,
) -> Result<Vec<async_nats::Message>, ClientError> {
    let mut count = 0;
    gather_until(client, subject, payload, within, |_| {
        count += 1;
        expected.is_some_and(|n| count >= n)
    })
    .await
}

/// [`gather`], stopping after the first reply `done` accepts.
pub async fn gather_until(
    client: &Client,
    subject: impl Into<String>,
    payload: Bytes,
    within: Duration,
    mut done: impl FnMut(&async_nats::Message) -> bool,
) -> Result<Vec<async_nats::Message>, ClientError> {
    let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.map_err(|e| transport(&e))?;
    client.publish_with_reply(subject.into(), inbox, payload).await.map_err(|e| transport(&e))?;
    client.flush().await.map_err(|e| transport(&e))?;
    let mut gathered = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, replies.next()).await {
            // "No responders" comes back as an empty status message: not an answer.
            Ok(Some(message)) if message.status.is_none() => {
                let stop = done(&message);
                gathered.push(message);
                if stop {
                    break;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    Ok(gathered)
}

/// The `$SRV.PING` answers of micro service instances (of `service`, or of every service),
/// gathered for `within` or until `done` accepts one: each is the instance's JSON (`name`,
/// `id`, `version`, `metadata`).
pub async fn ping_instances(
    client: &Client,
    service: Option<&str>,
    within: Duration,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> Result<Vec<serde_json::Value>, ClientError> {
    let subject = service.map_or_else(|| subjects::micro::PING.to_owned(), subjects::micro::ping);
    let mut instances = Vec::new();
    gather_until(client, subject, Bytes::new(), within, |message| {
        match serde_json::from_slice::<serde_json::Value>(&message.payload) {
            Ok(info) if info["id"].is_string() => {
                let stop = done(&info);
                instances.push(info);
                stop
            }
            _ => false,
        }
    })
    .await?;
    Ok(instances)
}

/// The error of a request nats-server refused for the connection's user.
fn refused(denial: &connection::PermissionDenial) -> ClientError {
    ClientError::Service(ServiceError::new(
        ErrorCode::Forbidden,
        format!(
            "NATS refused to {} {} for this connection's user (permission violation)",
            denial.operation, denial.subject
        ),
    ))
}

/// A NATS connection plus a timeout, speaking Agora's JSON.
#[derive(Debug, Clone)]
pub struct AgoraClient {
    client: Client,
    timeout: Duration,
    /// The identity headers of a component acting for a person (see [`Self::acting_for`]).
    acting_for: Option<async_nats::HeaderMap>,
    /// The connection's permission denials (when [`connection`] made it).
    denials: Option<Arc<connection::Denials>>,
}

impl AgoraClient {
    pub fn new(client: Client) -> Self {
        let denials = connection::Denials::of(&client);
        Self { client, timeout: REQUEST_TIMEOUT_DEFAULT, acting_for: None, denials }
    }

    /// The same connection, each request of which says it is made for `caller` (the
    /// `Agora-User` headers of [`crate::identity`]). Only a component's connection may: the
    /// services believe those headers only from inside Agora's account.
    pub fn acting_for(&self, caller: &agora_core::Caller) -> Self {
        let headers = crate::identity::headers_for(caller);
        Self { acting_for: (!headers.is_empty()).then_some(headers), ..self.clone() }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a request waits for its reply.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn nats(&self) -> &Client {
        &self.client
    }

    /// Resolves with the first permission denial reported from now on that dooms a request
    /// to `subject` (pending forever for a connection [`connection`] did not make). The mark
    /// is taken at the call, so call it before sending.
    fn denied(&self, subject: &str) -> impl Future<Output = connection::PermissionDenial> + use<> {
        let watch = self.denials.clone().map(|denials| (denials.mark(), denials));
        let subject = subject.to_owned();
        async move {
            match watch {
                Some((mark, denials)) => denials.denial_of(mark, &subject).await,
                None => std::future::pending().await,
            }
        }
    }

    /// [`gather`] on this connection: a subject its user may not publish to is `forbidden`
    /// (nats-server drops such a request, so otherwise nobody would seem to answer).
    pub async fn gather(
        &self,
        subject: &str,
        payload: Bytes,
        within: Duration,
        expected: Option<usize>,
    ) -> Result<Vec<async_nats::Message>, ClientError> {
        let denied = self.denied(subject);
        tokio::select! {
            biased;
            denial = denied => Err(refused(&denial)),
            gathered = gather(&self.client, subject, payload, within, expected) => gathered,
        }
    }

    /// Sends raw bytes and returns the raw successful reply (for bad-input tests and tools).
    pub async fn request_bytes(&self, subject: &str, payload: Bytes) -> Result<Bytes, ClientError> {
        self.request_bytes_within(subject, payload, self.timeout).await
    }

    /// [`Self::request_bytes`] with its own timeout (for requests that wait on purpose).
    pub async fn request_bytes_within(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        self.send(subject, None, payload, timeout).await
    }

    /// Sends raw bytes with headers (an upload) and returns the raw successful reply.
    pub async fn request_with_headers(
        &self,
        subject: &str,
        headers: async_nats::HeaderMap,
        payload: Bytes,
    ) -> Result<Bytes, ClientError> {
        self.send(subject, Some(headers), payload, self.timeout).await
    }

    async fn send(
        &self,
        subject: &str,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        self.send_message(subject, headers, payload, timeout).await.map(|reply| reply.payload)
    }

    /// Sends raw bytes and returns the whole successful reply, headers included (a reply
    /// whose headers matter, such as a signed sync page).
    pub async fn request_message(
        &self,
        subject: &str,
        payload: Bytes,
    ) -> Result<async_nats::Message, ClientError> {
        self.send_message(subject, None, payload, self.timeout).await
    }

    async fn send_message(
        &self,
        subject: &str,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<async_nats::Message, ClientError> {
        // One timer per request: async-nats' own per-request timeout.
        let mut request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
        let headers = match (headers, crate::trace::current()) {
            (headers, None) => headers,
            (mut headers, Some(trace)) => {
                let headers_mut = headers.get_or_insert_with(async_nats::HeaderMap::new);
                headers_mut.insert(crate::trace::TRACEPARENT, trace.traceparent().as_str());
                headers
            }
        };
        let headers = match (headers, &self.acting_for) {
            (None, None) => None,
            (Some(headers), None) => Some(headers),
            (None, Some(acting)) => Some(acting.clone()),
            (Some(mut headers), Some(acting)) => {
                for (name, values) in acting.iter() {
                    for value in values {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                Some(headers)
            }
        };
        if let Some(headers) = headers {
            request = request.headers(headers);
        }
        let denied = self.denied(subject);
        let reply = self.client.send_request(subject.to_owned(), request);
        let result = tokio::select! {
            biased;
            result = reply => result,
            denial = denied => return Err(refused(&denial)),
        };
        let message = match result {
            Err(error) => {
                return Err(match error.kind() {
                    RequestErrorKind::NoResponders => ClientError::NoResponders(subject.to_owned()),
                    RequestErrorKind::TimedOut => ClientError::Timeout(timeout),
                    _ => ClientError::Transport(error.to_string()),
                });
            }
            Ok(message) => message,
        };
        let status = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(NATS_SERVICE_ERROR_CODE))
            .map(|value| value.as_str().parse::<u16>().unwrap_or(500));
        match status {
            None => Ok(message),
            Some(status) => {
                let error = serde_json::from_slice::<ErrorBody>(&message.payload)
                    .map(|body| body.error)
                    .unwrap_or_else(|_| {
                        let description = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR))
                            .map(|v| v.as_str().to_owned())
                            .unwrap_or_default();
                        ServiceError::new(ErrorCode::from_status(status), description)
                    });
                Err(ClientError::Service(error))
            }
        }
    }

    /// Sends a JSON request and parses the JSON reply.
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        self.request_within(subject, request, self.timeout).await
    }

    /// Sends a JSON request and returns the reply's bytes as they are (a service passing a
    /// reply on).
    pub async fn request_raw<Req: Serialize>(
        &self,
        subject: &str,
        request: &Req,
    ) -> Result<Bytes, ClientError> {
        let payload = serde_json::to_vec(request)
            .map_err(|e| ClientError::Transport(format!("cannot encode request: {e}")))?;
        self.request_bytes_within(subject, Bytes::from(payload), self.timeout).await
    }

    /// [`Self::request`] with its own timeout.
    pub async fn request_within<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        let payload = serde_json::to_vec(request)
            .map_err(|e| ClientError::Transport(format!("cannot encode request: {e}")))?;
        let reply = self.request_bytes_within(subject, Bytes::from(payload), timeout).await?;
        serde_json::from_slice(&reply)
            .map_err(|e| ClientError::Transport(format!("unexpected reply on {subject}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_change_says_whether_it_may_have_been_made() {
        let nobody =
            ClientError::NoResponders("agora.ledger.apply".into()).unanswered("the ledger");
        assert_eq!(nobody.code, ErrorCode::Unavailable);
        assert!(nobody.message.contains("nothing was applied"), "{}", nobody.message);
        for unknown in [
            ClientError::Timeout(Duration::from_secs(5)),
            ClientError::Transport("connection lost".into()),
        ] {
            let error = unknown.unanswered("the ledger");
            assert_eq!(error.code, ErrorCode::Unavailable);
            assert!(
                error.message.starts_with("the ledger's answer is unknown"),
                "{}",
                error.message
            );
            assert!(error.message.ends_with("retry with the same id"), "{}", error.message);
        }
    }
}
