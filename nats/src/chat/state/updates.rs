use super::*;

impl ChatState {
    /// The subjects a change to `message` goes to, with the `with` each receiver sees:
    /// the room, or both parties of a direct conversation (not `skip`).
    /// Durable updates go on `agora.chat.events.*` (kept in `AGORA_EVENTS`), ephemeral ones
    /// on `agora.chat.live.*`, which no stream keeps.
    pub(super) fn update_subjects(
        message: &StoredMessage,
        skip: Option<&str>,
        durable: bool,
    ) -> Vec<(String, Option<String>)> {
        type Subject = fn(&str) -> String;
        let (room_subject, dm_subject): (Subject, Subject) = if durable {
            (subject::events_room, subject::events_dm)
        } else {
            (subject::live_room, subject::live_dm)
        };
        match (&message.room, &message.to) {
            (Some(room), _) => vec![(room_subject(room), None)],
            (None, Some(to)) => {
                [(to.as_str(), message.from.as_str()), (message.from.as_str(), to.as_str())]
                    .into_iter()
                    .filter(|(receiver, _)| Some(*receiver) != skip)
                    .map(|(receiver, with)| (dm_subject(receiver), Some(with.to_owned())))
                    .collect()
            }
            (None, None) => Vec::new(),
        }
    }

    /// Queues `update` about `message` for its conversation: durable (in the log entry) or
    /// ephemeral.
    pub(super) fn push_update(
        out: &mut Outbox,
        message: &StoredMessage,
        update: ChatUpdate,
        durable: bool,
        skip: Option<&str>,
    ) {
        for (subject, with) in Self::update_subjects(message, skip, durable) {
            let update = ChatUpdate { room: message.room.clone(), with, ..update.clone() };
            let Ok(payload) = encode(&update) else { continue };
            if durable {
                out.messages.push(Event::new(subject, payload));
            } else {
                out.presence.push((subject, payload));
            }
        }
    }

    pub(super) fn target_of(message: &StoredMessage) -> Option<(Option<Name>, Option<Name>)> {
        match (&message.room, &message.to) {
            (Some(room), _) => Some((Name::room(room).ok(), None)),
            (None, Some(to)) => Some((None, Name::user(to).ok())),
            _ => None,
        }
    }

    /// Takes one from `name`'s message bucket for a change in `message`'s conversation.
    pub(super) fn take_rate(
        &mut self,
        now: u64,
        name: &Name,
        message: &StoredMessage,
    ) -> Result<(), ServiceError> {
        let (room, to) = Self::target_of(message).unwrap_or((None, None));
        let target = match (&room, &to) {
            (Some(room), _) => Target::Room(room),
            (None, Some(to)) => Target::Direct(to),
            _ => return Err(ServiceError::new(ErrorCode::Internal, "a message without a place")),
        };
        self.chat.accept_message(now, name, target).map_err(ServiceError::from)
    }

    /// A message `reader` may read, or why not.
    pub(super) fn readable(
        &self,
        tx: &Connection,
        reader: Option<&Name>,
        seq: u64,
    ) -> Result<Result<StoredMessage, ServiceError>, StoreError> {
        Ok(match store::message(tx, seq)? {
            Some(message) if may_read(reader, &message) => Ok(message),
            _ => Err(not_found(seq)),
        })
    }

    pub(super) fn place_conv(
        &self,
        me: &Name,
        place: &Place,
    ) -> Result<(String, Option<String>, Option<String>), ServiceError> {
        match place {
            Place::Room(room) => {
                Ok((store::room_conv(room.as_str()), Some(room.to_string()), None))
            }
            Place::With(with) => {
                if self.chat.user(with).is_none() {
                    return Err(agora_core::ChatError::UnknownUser(with.to_string()).into());
                }
                Ok((store::direct_conv(me.as_str(), with.as_str()), None, Some(with.to_string())))
            }
        }
    }

    pub(super) fn execute_update(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        command: UpdateCommand,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        match command {
            UpdateCommand::Edit { name, seq, text } | UpdateCommand::Delete { name, seq, text } => {
                let delete = text.is_none();
                let message = match self.readable(tx, Some(&name), seq)? {
                    Ok(message) => message,
                    Err(error) => return Ok(Err(error)),
                };
                if message.from != name.as_str() {
                    let what = if delete { "deletes" } else { "edits" };
                    return Ok(Err(ServiceError::new(
                        ErrorCode::Forbidden,
                        format!("only its author {what} a message"),
                    )));
                }
                if message.deleted {
                    return Ok(Err(ServiceError::new(
                        ErrorCode::Conflict,
                        format!("message {seq} was deleted"),
                    )));
                }
                if text.as_deref() == Some(message.text.as_str()) {
                    return Ok(encode(&message));
                }
                if let Err(error) = self.take_rate(now, &name, &message) {
                    return Ok(Err(error));
                }
                match &text {
                    Some(text) => store::edit(tx, seq, &message.text, text, now)?,
                    None => store::delete(tx, seq, &message.text, now)?,
                }
                let kind = if delete { "delete" } else { "edit" };
                let update =
                    ChatUpdate { seq: Some(seq), text, ..ChatUpdate::new(kind, &name, now) };
                Self::push_update(out, &message, update, true, None);
                Ok(store::message(tx, seq)?.map_or_else(|| Err(not_found(seq)), |m| encode(&m)))
            }
            UpdateCommand::React { name, seq, emoji, on } => {
                let message = match self.readable(tx, Some(&name), seq)? {
                    Ok(message) if !message.deleted => message,
                    Ok(_) => {
                        return Ok(Err(ServiceError::new(
                            ErrorCode::Conflict,
                            format!("message {seq} was deleted"),
                        )));
                    }
                    Err(error) => return Ok(Err(error)),
                };
                if let Err(error) = self.take_rate(now, &name, &message) {
                    return Ok(Err(error));
                }
                let max = agora_core::chat::REACTIONS_PER_MESSAGE_MAX;
                match store::react(tx, seq, name.as_str(), &emoji, on, now, max)? {
                    Err(()) => {
                        return Ok(Err(ServiceError::invalid(format!(
                            "message {seq} has {max} different reactions (the limit)"
                        ))));
                    }
                    Ok(false) => {}
                    Ok(true) => {
                        let update = ChatUpdate {
                            seq: Some(seq),
                            emoji: Some(emoji),
                            on: Some(on),
                            ..ChatUpdate::new("reaction", &name, now)
                        };
                        Self::push_update(out, &message, update, true, None);
                    }
                }
                Ok(store::message(tx, seq)?.map_or_else(|| Err(not_found(seq)), |m| encode(&m)))
            }
            UpdateCommand::Read { name, place, seq } => {
                let (conv, room, with) = match self.place_conv(&name, &place) {
                    Ok(found) => found,
                    Err(error) => return Ok(Err(error)),
                };
                let seq = seq.min(self.last_seq);
                let changed = store::set_read(tx, name.as_str(), &conv, seq, now)?;
                if changed && self.receipts.allow(now, name.as_str(), &conv) {
                    let at =
                        StoredMessage::placeholder(&name, room.clone(), with.clone(), seq, now);
                    let update =
                        ChatUpdate { seq: Some(seq), ..ChatUpdate::new("read", &name, now) };
                    Self::push_update(out, &at, update, true, None);
                }
                Ok(encode(&ReadReply { read_seq: seq, room, with }))
            }
            UpdateCommand::Typing { name, place } => {
                let (conv, room, with) = match self.place_conv(&name, &place) {
                    Ok(found) => found,
                    Err(error) => return Ok(Err(error)),
                };
                let sent = self.typing.allow(now, name.as_str(), &conv);
                if sent {
                    let at = StoredMessage::placeholder(&name, room, with, 0, now);
                    let update = ChatUpdate::new("typing", &name, now);
                    Self::push_update(out, &at, update, false, Some(name.as_str()));
                }
                Ok(encode(&TypingReply { sent }))
            }
            UpdateCommand::Unread { name } => {
                // A person who never chatted is in `all` only.
                let mut rooms: Vec<String> = vec![agora_core::chat::BROADCAST_ROOM.to_owned()];
                if let Some(user) = self.chat.user(&name) {
                    rooms.extend(user.rooms.iter().map(Name::to_string));
                }
                let conversations = store::unread(tx, name.as_str(), &rooms)?;
                Ok(encode(&UnreadReply { conversations }))
            }
            UpdateCommand::Search { name, query, place, before, limit } => {
                let conversation = match &place {
                    None => Conversation::Inbox {
                        name: name.to_string(),
                        rooms: self
                            .chat
                            .user(&name)
                            .map(|user| user.rooms.iter().map(Name::to_string).collect())
                            .unwrap_or_default(),
                    },
                    Some(Place::Room(room)) => Conversation::Room(room.to_string()),
                    Some(Place::With(with)) => {
                        Conversation::Direct(with.to_string(), name.to_string())
                    }
                };
                // What was recorded since the last sweep is found too.
                store::index_new(tx)?;
                let (hits, more) = store::search(tx, &query, &conversation, before, limit)?;
                Ok(encode(&SearchReply { hits, more }))
            }
            UpdateCommand::Edits { reader, seq } => {
                match self.readable(tx, reader.as_ref(), seq)? {
                    Ok(_) => Ok(encode(&EditsReply { seq, versions: store::edits(tx, seq)? })),
                    Err(error) => Ok(Err(error)),
                }
            }
        }
    }
}
