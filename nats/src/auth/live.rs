//! The connections the auth callout let in, so that they can be closed when the credentials
//! they showed end: a logout ends the connections of that token, a new password or a new role
//! all of that person's. nats-server closes one on a request to
//! `$SYS.REQ.SERVER.<id>.KICK` (`{"cid":7}`), which agora-auth sends with a second connection
//! as the system account's `auth-kick` user (`accounts.conf`). Without it a connection keeps
//! the permissions it signed in with until it reconnects.
//!
//! A server's id is new at every start and it never reuses a client id while it runs, so a
//! remembered (server id, client id) names one connection only: closing one that is gone
//! already does nothing. What is remembered is bounded ([`PER_USER_MAX`], [`USERS_MAX`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use crate::identity::Origin;
use crate::subjects;

/// Connections remembered per person at most (the oldest are forgotten first).
pub const PER_USER_MAX: usize = 64;
/// People with remembered connections at most (beyond, new ones are not remembered).
pub const USERS_MAX: usize = 100_000;
/// How long closing one connection may take.
const KICK_TIMEOUT: Duration = Duration::from_secs(2);

/// One connection the callout let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The server's id (its requests' subject) and name (what `Nats-Request-Info` says).
    pub server_id: String,
    pub server_name: String,
    /// The client id on that server.
    pub cid: u64,
    /// The SHA-256 of the token it signed in with (none: a name and password).
    pub token: Option<String>,
}

impl Connection {
    /// Whether this is the connection a request came from.
    pub fn is(&self, origin: &Origin) -> bool {
        self.cid == origin.cid && self.server_name == origin.server
    }
}

/// The live connections of every person, by name.
#[derive(Debug, Default)]
pub struct Connections(Mutex<HashMap<String, VecDeque<Connection>>>);

impl Connections {
    /// Remembers that `name` signed in on `connection`.
    pub fn add(&self, name: &str, connection: Connection) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !all.contains_key(name) && all.len() >= USERS_MAX {
            tracing::warn!(user = name, "too many people connected to remember one more");
            return;
        }
        let mine = all.entry(name.to_owned()).or_default();
        if mine.len() == PER_USER_MAX {
            mine.pop_front();
        }
        mine.push_back(connection);
    }

    /// Takes (forgets and returns) the connections of `name` that `ended` picks.
    pub fn take(&self, name: &str, ended: impl Fn(&Connection) -> bool) -> Vec<Connection> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mine) = all.get_mut(name) else { return Vec::new() };
        let (taken, kept): (Vec<_>, Vec<_>) = mine.drain(..).partition(|c| ended(c));
        if kept.is_empty() {
            all.remove(name);
        } else {
            *mine = kept.into();
        }
        taken
    }
}

/// Asks each connection's server to close it (best effort: one that is gone already, or a
/// server that does not answer, is only logged).
pub async fn close(kicker: &async_nats::Client, connections: Vec<Connection>) {
    for connection in connections {
        let subject = subjects::system::kick(&connection.server_id);
        let body = serde_json::json!({ "cid": connection.cid }).to_string();
        let asked = tokio::time::timeout(KICK_TIMEOUT, kicker.request(subject, body.into())).await;
        match asked {
            Ok(Ok(_)) => {
                tracing::info!(cid = connection.cid, "closed a connection whose credentials ended")
            }
            Ok(Err(error)) => {
                tracing::warn!(cid = connection.cid, %error, "cannot close a connection")
            }
            Err(_) => tracing::warn!(cid = connection.cid, "closing a connection timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(cid: u64, token: Option<&str>) -> Connection {
        Connection {
            server_id: "NID".into(),
            server_name: "n1".into(),
            cid,
            token: token.map(str::to_owned),
        }
    }

    #[test]
    fn connections_are_taken_by_person_and_token_and_bounded() {
        let live = Connections::default();
        live.add("alice", connection(1, Some("t1")));
        live.add("alice", connection(2, None));
        live.add("alice", connection(3, Some("t2")));
        live.add("bob", connection(4, Some("t1")));
        let by_token = live.take("alice", |c| c.token.as_deref() == Some("t1"));
        assert_eq!(by_token, vec![connection(1, Some("t1"))]);
        assert!(live.take("alice", |c| c.cid == 1).is_empty(), "taken once");
        let all: Vec<u64> = live.take("alice", |_| true).iter().map(|c| c.cid).collect();
        assert_eq!(all, vec![2, 3]);
        assert!(live.take("alice", |_| true).is_empty());
        assert_eq!(live.take("bob", |_| true).len(), 1, "bob's are his own");
        for cid in 0..(PER_USER_MAX as u64 + 5) {
            live.add("carol", connection(cid, None));
        }
        let kept = live.take("carol", |_| true);
        assert_eq!(kept.len(), PER_USER_MAX);
        assert_eq!(kept[0].cid, 5, "the oldest are forgotten first");
    }

    #[test]
    fn the_asker_is_known_by_server_and_client_id() {
        let mut headers = async_nats::HeaderMap::new();
        let info = r#"{"acc":"USERS","user":"alice","id":2,"server":"n1","rtt":"1ms"}"#;
        headers.insert(crate::identity::REQUEST_INFO_HEADER, info);
        let origin = crate::identity::origin(Some(&headers)).expect("an origin");
        assert!(connection(2, None).is(&origin));
        assert!(!connection(3, None).is(&origin));
        let elsewhere = Origin { server: "n2".into(), ..origin };
        assert!(!connection(2, None).is(&elsewhere));
        assert_eq!(crate::identity::origin(None), None);
        let mut unstamped = async_nats::HeaderMap::new();
        unstamped.insert(crate::identity::REQUEST_INFO_HEADER, r#"{"acc":"AGORA"}"#);
        assert_eq!(crate::identity::origin(Some(&unstamped)), None, "no client id: no origin");
    }
}
