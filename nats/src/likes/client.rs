//! The likes calls on [`AgoraClient`]: like, unlike, count, top, nodes, digests.

use std::time::Duration;

use agora_core::ItemId;
use bytes::Bytes;

use super::wire::{
    DigestRequest, LikeCount, LikeRequest, NodeDigest, NodesReply, TopReply, TopRequest,
};
use crate::client::{AgoraClient, ClientError};
use crate::subjects::likes as subject;

/// The subject for `item`: an item that is not one subject token would reach no node (or the
/// wrong one), so it is refused here with the error a node would give.
fn item_subject(item: &str, subject: fn(&str) -> String) -> Result<String, ClientError> {
    ItemId::parse(item).map_err(|error| ClientError::Service(error.into()))?;
    Ok(subject(item))
}

impl AgoraClient {
    /// Likes `item` (anonymously, or once per `user`).
    pub async fn like(&self, item: &str, user: Option<&str>) -> Result<LikeCount, ClientError> {
        let request = LikeRequest { user: user.map(str::to_owned) };
        self.request(&item_subject(item, subject::like)?, &request).await
    }

    /// Takes `user`'s like of `item` back (`None`: the signed-in user's).
    pub async fn unlike(&self, item: &str, user: Option<&str>) -> Result<LikeCount, ClientError> {
        let request = LikeRequest { user: user.map(str::to_owned) };
        self.request(&item_subject(item, subject::unlike)?, &request).await
    }

    /// The count of `item` (and whether `user` likes it).
    pub async fn like_count(
        &self,
        item: &str,
        user: Option<&str>,
    ) -> Result<LikeCount, ClientError> {
        let request = LikeRequest { user: user.map(str::to_owned) };
        self.request(&item_subject(item, subject::count)?, &request).await
    }

    pub async fn top_likes(&self, limit: usize) -> Result<TopReply, ClientError> {
        self.request(subject::TOP_SUBJECT, &TopRequest { limit: Some(limit) }).await
    }

    /// The live nodes and the leader, from the leader.
    pub async fn like_nodes(&self) -> Result<NodesReply, ClientError> {
        self.request_bytes(subject::NODES_SUBJECT, Bytes::new()).await.and_then(|reply| {
            serde_json::from_slice(&reply)
                .map_err(|e| ClientError::Transport(format!("unexpected nodes reply: {e}")))
        })
    }

    /// Every node's digest (with the counts of `items`), gathered for `within` or until
    /// `expected` nodes answered.
    pub async fn likes_digests(
        &self,
        within: Duration,
        items: &[String],
        expected: Option<usize>,
    ) -> Result<Vec<NodeDigest>, ClientError> {
        let payload = serde_json::to_vec(&DigestRequest { items: items.to_vec() })
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let replies =
            self.gather(subject::DIGEST_SUBJECT, payload.into(), within, expected).await?;
        // An error reply (a refused request) is not a digest: it does not count either.
        let mut digests: Vec<NodeDigest> = replies
            .iter()
            .filter_map(|message| serde_json::from_slice(&message.payload).ok())
            .collect();
        digests.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(digests)
    }
}
