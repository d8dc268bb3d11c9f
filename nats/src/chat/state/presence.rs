use super::*;

pub(super) fn user_view(name: &Name, user: &chat::User) -> UserView {
    UserView {
        name: name.to_string(),
        online: user.is_online(),
        since_ms: user.session.as_ref().map(|s| s.since_ms),
        last_seen_ms: user.session.as_ref().map_or(user.last_seen_ms, |s| s.last_seen_ms),
        rooms: user.rooms.iter().map(Name::to_string).collect(),
    }
}

/// The presence event for `event`; room events happen at `now_ms`.
pub(super) fn presence_payload(now_ms: u64, event: &ChatEvent) -> (String, PresenceEvent) {
    let (name, wire) = match event {
        ChatEvent::Online { name, since_ms, .. } => (
            name,
            PresenceEvent {
                name: name.to_string(),
                event: "join".into(),
                room: None,
                reason: None,
                since_ms: Some(*since_ms),
                at_ms: *since_ms,
            },
        ),
        ChatEvent::Offline { name, reason, since_ms, at_ms } => (
            name,
            PresenceEvent {
                name: name.to_string(),
                event: "leave".into(),
                room: None,
                reason: Some(reason.as_str().into()),
                since_ms: Some(*since_ms),
                at_ms: *at_ms,
            },
        ),
        ChatEvent::Entered { name, room } | ChatEvent::Exited { name, room } => (
            name,
            PresenceEvent {
                name: name.to_string(),
                event: if matches!(event, ChatEvent::Entered { .. }) { "enter" } else { "exit" }
                    .into(),
                room: Some(room.to_string()),
                reason: None,
                since_ms: None,
                at_ms: now_ms,
            },
        ),
    };
    (subject::presence(name.as_str()), wire)
}
