use super::*;

impl ChatState {
    pub(super) fn who(&self, room: Option<&Name>, offline: bool) -> Result<Bytes, ServiceError> {
        let mut users: Vec<UserView> = self
            .chat
            .users()
            .filter(|(_, user)| offline || user.is_online())
            .filter(|(_, user)| {
                room.is_none_or(|room| room.is_broadcast() || user.rooms.contains(room))
            })
            .map(|(name, user)| user_view(name, user))
            .collect();
        users.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.name.cmp(&b.name)));
        let truncated = users.len() > WHO_USERS_MAX;
        users.truncate(WHO_USERS_MAX);
        encode(&WhoReply { users, truncated })
    }

    pub(super) fn history(
        &self,
        conn: &Connection,
        query: &HistoryQuery,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let known = |name: &Name| {
            self.chat.user(name).ok_or_else(|| {
                ServiceError::from(agora_core::ChatError::UnknownUser(name.to_string()))
            })
        };
        if let Some(parent) = query.thread {
            if let Err(error) = self.readable(conn, query.reader.as_ref(), parent)? {
                return Ok(Err(error));
            }
            let (messages, more) = store::history(
                conn,
                &Conversation::Thread(parent),
                query.before,
                query.after,
                query.limit,
            )?;
            return Ok(encode(&HistoryReply { messages, more }));
        }
        let conversation = match (&query.room, &query.with, &query.as_user) {
            (Some(room), _, _) => Conversation::Room(room.to_string()),
            (None, Some(with), Some(me)) => {
                if let Err(error) = known(with).and(known(me)) {
                    return Ok(Err(error));
                }
                Conversation::Direct(with.to_string(), me.to_string())
            }
            (None, None, Some(me)) => match known(me) {
                Ok(user) => Conversation::Inbox {
                    name: me.to_string(),
                    rooms: user.rooms.iter().map(Name::to_string).collect(),
                },
                Err(error) => return Ok(Err(error)),
            },
            _ => return Ok(Err(ServiceError::invalid("no conversation given"))),
        };
        let (messages, more) =
            store::history(conn, &conversation, query.before, query.after, query.limit)?;
        Ok(encode(&HistoryReply { messages, more }))
    }
}
