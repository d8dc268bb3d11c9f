//! `agora chat`: an interactive terminal chat, and one-shot `send`, `history` and `who`.

use agora_nats::chat::client::{ChatInbox, ChatSession, Incoming, SessionStatus};
use agora_nats::chat::wire::{
    HistoryRequest, PresenceEvent, SearchRequest, StoredMessage, WhoReply, WhoRequest,
};
use agora_nats::{AgoraClient, ClientError, ErrorCode};
use clap::{Args, Subcommand};
use tokio::io::AsyncBufReadExt;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ChatArgs {
    #[command(subcommand)]
    command: Option<ChatCommand>,
    /// Chat interactively as this name (default: who `agora login` signed in).
    #[arg(long)]
    name: Option<String>,
    /// The room to talk in first (joined if it is not `all`).
    #[arg(long, default_value = "all")]
    room: String,
}

#[derive(Debug, Subcommand)]
enum ChatCommand {
    /// Send one message to a room or to a user, and wait until it is in history.
    Send {
        /// Send as this name (default: who `agora login` signed in; on a server without
        /// authorization, any name).
        #[arg(long)]
        name: Option<String>,
        /// The room (default `all`).
        #[arg(long, conflicts_with = "to")]
        room: Option<String>,
        /// A user, for a direct message.
        #[arg(long)]
        to: Option<String>,
        /// Reply in the thread of this message (its history number).
        #[arg(long)]
        reply_to: Option<u64>,
        /// The text.
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Change the text of one of your messages (its earlier text is kept).
    Edit {
        seq: u64,
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Delete one of your messages.
    Delete { seq: u64 },
    /// A message's earlier texts.
    Edits { seq: u64 },
    /// React to a message (`--off` takes your reaction back).
    React {
        seq: u64,
        emoji: String,
        #[arg(long)]
        off: bool,
    },
    /// Mark a room or a direct conversation read up to a message.
    Read {
        #[arg(long, conflicts_with = "with", required_unless_present = "with")]
        room: Option<String>,
        #[arg(long)]
        with: Option<String>,
        seq: u64,
    },
    /// Your conversations with what you have not read.
    Unread,
    /// Search the messages you may read: every word must appear (`deploy*`: a prefix).
    Search {
        #[arg(required = true)]
        words: Vec<String>,
        #[arg(long, conflicts_with = "with")]
        room: Option<String>,
        #[arg(long)]
        with: Option<String>,
        /// Only messages before this history position (the next page).
        #[arg(long)]
        before: Option<u64>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show history: a room's, a direct conversation's (`--with bob --as alice`), or everything
    /// a name could see (`--as alice`).
    History {
        #[arg(long)]
        room: Option<String>,
        #[arg(long, requires = "as_user")]
        with: Option<String>,
        #[arg(long = "as")]
        as_user: Option<String>,
        /// Only messages before this history position (page back).
        #[arg(long)]
        before: Option<u64>,
        /// Only messages after this history position.
        #[arg(long)]
        after: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only the replies to this message (its thread).
        #[arg(long, conflicts_with_all = ["room", "with", "as_user"])]
        thread: Option<u64>,
    },
    /// Who is online (with since / last seen).
    Who {
        /// Only members of this room.
        #[arg(long)]
        room: Option<String>,
        /// Also list names that are offline.
        #[arg(long)]
        offline: bool,
    },
}

/// The name to chat as: the one given, else the signed-in user's.
async fn chat_name(client: &AgoraClient, given: Option<String>) -> anyhow::Result<String> {
    if let Some(name) = given {
        return Ok(name);
    }
    match client.whoami().await {
        Ok(agora_nats::auth::wire::WhoamiReply { name: Some(name), .. }) => Ok(name),
        _ => anyhow::bail!("give --name, or `agora login` first"),
    }
}

pub async fn run(client: &AgoraClient, args: ChatArgs, json: bool) -> anyhow::Result<()> {
    match args.command {
        None => {
            let name = chat_name(client, args.name).await?;
            interactive(client, &name, &args.room).await
        }
        Some(ChatCommand::Send { name, room, to, reply_to, text }) => {
            let name = chat_name(client, name).await?;
            let text = text.join(" ");
            // Hold the name for the send when it is free; when someone holds it (this user in
            // another terminal), send as the known name.
            let session = match ChatSession::register(client.clone(), &name).await {
                Ok(session) => Some(session),
                Err(error) if error.code() == ErrorCode::NameTaken => None,
                Err(error) => return Err(error.into()),
            };
            let room = match &to {
                Some(_) => None,
                None => Some(room.clone().unwrap_or_else(|| "all".to_owned())),
            };
            let mut message = match &session {
                Some(session) => session.message(room.as_deref(), to.as_deref(), &text),
                None => agora_nats::chat::wire::SendRequest {
                    room,
                    to,
                    id: format!("cli-{}", nuid::next()),
                    from: Some(name.clone()),
                    text: text.clone(),
                    at: Some(agora_nats::clock::now_ms()),
                    reply_to: None,
                },
            };
            message.reply_to = reply_to;
            let sent = client.chat_send(&message).await;
            if let Some(session) = session {
                session.leave().await.ok();
            }
            let ack = sent?;
            if json {
                println!("{}", serde_json::to_value(&ack)?);
            } else {
                println!("sent (history #{})", ack.seq);
            }
            Ok(())
        }
        Some(ChatCommand::History { room, with, as_user, before, after, limit, thread }) => {
            let room = match (&room, &with, &as_user, thread) {
                (None, None, None, None) => Some("all".to_owned()),
                _ => room,
            };
            let request =
                HistoryRequest { room, with, as_user, before, after, limit: Some(limit), thread };
            let reply = client.chat_history(&request).await?;
            if json {
                println!("{}", serde_json::to_value(&reply)?);
            } else {
                for message in &reply.messages {
                    println!("{}", history_line(message));
                }
                if reply.more {
                    let first = reply.messages.first().map_or(0, |m| m.seq);
                    println!("(more: --before {first})");
                }
            }
            Ok(())
        }
        Some(ChatCommand::Edit { seq, text }) => {
            print_message(&client.chat_edit(seq, &text.join(" ")).await?, json)
        }
        Some(ChatCommand::Delete { seq }) => print_message(&client.chat_delete(seq).await?, json),
        Some(ChatCommand::Edits { seq }) => {
            let reply = client.chat_edits(seq).await?;
            if json {
                println!("{}", serde_json::to_value(&reply)?);
            } else if reply.versions.is_empty() {
                println!("#{seq} was never edited");
            } else {
                for version in &reply.versions {
                    println!("until {}: {}", crate::utc(version.replaced_ms), version.text);
                }
            }
            Ok(())
        }
        Some(ChatCommand::React { seq, emoji, off }) => {
            print_message(&client.chat_react(seq, &emoji, !off).await?, json)
        }
        Some(ChatCommand::Read { room, with, seq }) => {
            let reply = client.chat_read(room, with, seq).await?;
            if json {
                println!("{}", serde_json::to_value(&reply)?);
            } else {
                println!("read up to #{}", reply.read_seq);
            }
            Ok(())
        }
        Some(ChatCommand::Unread) => {
            let reply = client.chat_unread().await?;
            if json {
                println!("{}", serde_json::to_value(&reply)?);
            } else {
                for count in &reply.conversations {
                    let place = match (&count.room, &count.with) {
                        (Some(room), _) => format!("#{room}"),
                        (None, Some(with)) => format!("@{with}"),
                        _ => String::new(),
                    };
                    println!(
                        "{place:<34} {:>6} unread  (read to #{}, last #{})",
                        count.unread, count.read_seq, count.last_seq
                    );
                }
            }
            Ok(())
        }
        Some(ChatCommand::Search { words, room, with, before, limit }) => {
            let request =
                SearchRequest { query: words.join(" "), room, with, before, limit: Some(limit) };
            let reply = client.chat_search(&request).await?;
            if json {
                println!("{}", serde_json::to_value(&reply)?);
            } else {
                if reply.hits.is_empty() {
                    println!("nothing found");
                }
                for hit in &reply.hits {
                    let text: String = hit
                        .highlighted
                        .iter()
                        .map(|piece| {
                            if piece.matched {
                                format!("[{}]", piece.text)
                            } else {
                                piece.text.clone()
                            }
                        })
                        .collect();
                    let line = history_line(&StoredMessage { text, ..hit.message.clone() });
                    println!("{line}");
                }
                if reply.more {
                    let last = reply.hits.last().map_or(0, |hit| hit.message.seq);
                    println!("(more: --before {last})");
                }
            }
            Ok(())
        }
        Some(ChatCommand::Who { room, offline }) => {
            let reply = client.chat_who(&WhoRequest { room, offline }).await?;
            if json {
                println!("{}", serde_json::to_value(&reply)?);
            } else {
                print_who(&reply);
            }
            Ok(())
        }
    }
}

fn print_message(message: &StoredMessage, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_value(message)?);
    } else {
        println!("{}", history_line(message));
    }
    Ok(())
}

fn history_line(message: &StoredMessage) -> String {
    let place = match (&message.room, &message.to) {
        (Some(room), _) => format!("#{room}"),
        (None, Some(to)) => format!("dm -> {to}"),
        (None, None) => String::new(),
    };
    // A deleted message keeps its place, with no text: it says so instead.
    let text = if message.deleted { "(deleted)" } else { message.text.as_str() };
    let mut notes = String::new();
    if let Some(parent) = message.reply_to {
        notes.push_str(&format!(" (reply to #{parent})"));
    }
    if !message.deleted && message.edited_ms.is_some() {
        notes.push_str(" (edited)");
    }
    if message.replies > 0 {
        notes.push_str(&format!(" [{}]", crate::counted(message.replies, "reply", "replies")));
    }
    for (emoji, names) in &message.reactions {
        notes.push_str(&format!(" {emoji}{}", names.len()));
    }
    format!(
        "#{:<6} {} [{place}] {}: {text}{notes}",
        message.seq,
        crate::utc(message.at),
        message.from
    )
}

fn print_who(reply: &WhoReply) {
    if reply.users.is_empty() {
        println!("nobody is online");
    }
    for user in &reply.users {
        let rooms = if user.rooms.is_empty() {
            String::new()
        } else {
            format!("  rooms: {}", user.rooms.join(", "))
        };
        match user.since_ms {
            Some(since) if user.online => println!(
                "{:<32} online since {}, last seen {}{rooms}",
                user.name,
                crate::utc(since),
                crate::utc(user.last_seen_ms)
            ),
            _ => {
                println!(
                    "{:<32} offline, last seen {}{rooms}",
                    user.name,
                    crate::utc(user.last_seen_ms)
                )
            }
        }
    }
    if reply.truncated {
        println!("(more users than one reply holds)");
    }
}

fn presence_line(event: &PresenceEvent) -> String {
    match (event.event.as_str(), &event.room, &event.reason) {
        ("join", _, _) => format!("* {} is online", event.name),
        ("leave", _, Some(reason)) if reason == "timeout" => {
            format!("* {} went offline (no heartbeat)", event.name)
        }
        ("leave", _, _) => format!("* {} left", event.name),
        ("enter", Some(room), _) => format!("* {} joined #{room}", event.name),
        ("exit", Some(room), _) => format!("* {} left #{room}", event.name),
        (other, _, _) => format!("* {}: {other}", event.name),
    }
}

const HELP: &str = "type to talk in the current room; /dm <name> <text>, /join <room> (and \
    talk there), /part <room>, /who [room], /history [count], /help, /quit";

async fn interactive(client: &AgoraClient, name: &str, room: &str) -> anyhow::Result<()> {
    let session = ChatSession::register(client.clone(), name).await?;
    let mut inbox = ChatInbox::open(client.nats(), name, true).await?;
    let mut current = "all".to_owned();
    let mut rooms: Vec<String> = session.registration().rooms.clone();
    for joined in &rooms {
        inbox.listen(joined).await?;
    }
    if room != "all" {
        rooms = session.join(room).await?.rooms;
        inbox.listen(room).await?;
        current = room.to_owned();
    }
    println!("you are {name}, talking in #{current}. {HELP}");
    if let Some(after) = session.registration().missed_after {
        print_missed(client, name, after).await;
    }
    let mut status = session.status();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                match command(client, &session, &mut inbox, &mut current, &mut rooms, line.trim()).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(error) => println!("! {}", describe(&error)),
                }
            }
            incoming = inbox.next() => {
                let Some(incoming) = incoming else { break };
                match incoming {
                    Incoming::Room { room, message } => {
                        println!("[#{room}] {}: {}", message.from, message.text);
                    }
                    Incoming::Direct { message, .. } => {
                        println!("[dm] {} -> you: {}", message.from, message.text);
                    }
                    Incoming::Presence(event) => {
                        let relevant = event.room.as_ref().is_none_or(|r| rooms.contains(r));
                        if event.name != name && relevant {
                            println!("{}", presence_line(&event));
                        }
                    }
                }
            }
            changed = status.changed() => {
                if changed.is_err() { break }
                let now = status.borrow_and_update().clone();
                match now {
                    SessionStatus::Online => {}
                    SessionStatus::Rejoined { missed_after } => {
                        println!("* you were offline for a while; back online");
                        if let Some(after) = missed_after {
                            print_missed(client, name, after).await;
                        }
                    }
                    SessionStatus::Lost(reason) => {
                        println!("! you lost your name: {reason}");
                        return Ok(());
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    session.leave().await.ok();
    Ok(())
}

async fn print_missed(client: &AgoraClient, name: &str, after: u64) {
    let request = HistoryRequest {
        as_user: Some(name.to_owned()),
        after: Some(after),
        limit: Some(200),
        ..HistoryRequest::default()
    };
    match client.chat_history(&request).await {
        Ok(reply) if reply.messages.is_empty() => {}
        Ok(reply) => {
            println!("--- while you were away ---");
            for message in &reply.messages {
                println!("{}", history_line(message));
            }
            if reply.more {
                println!("(more: agora chat history --as {name} --after {after})");
            }
            println!("---");
        }
        Err(error) => println!("! cannot fetch what you missed: {}", describe(&error)),
    }
}

fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Service(service) => format!("[{}] {}", service.code, service.message),
        other => format!("[{}] {other}", other.code()),
    }
}

/// Handles one typed line; `Ok(false)` to quit.
async fn command(
    client: &AgoraClient,
    session: &ChatSession,
    inbox: &mut ChatInbox,
    current: &mut String,
    rooms: &mut Vec<String>,
    line: &str,
) -> Result<bool, ClientError> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    match word {
        "" => {}
        "/quit" | "/exit" => return Ok(false),
        "/help" => println!("{HELP}"),
        "/dm" => {
            let Some((to, text)) = rest.split_once(' ') else {
                println!("usage: /dm <name> <text>");
                return Ok(true);
            };
            session.dm(to, text.trim()).await?;
            println!("[dm] you -> {to}: {}", text.trim());
        }
        "/join" if !rest.is_empty() => {
            if rest != "all" {
                *rooms = session.join(rest).await?.rooms;
            }
            inbox.listen(rest).await?;
            *current = rest.to_owned();
            println!("* talking in #{rest}");
        }
        "/part" if !rest.is_empty() => {
            *rooms = session.part(rest).await?.rooms;
            inbox.ignore(rest);
            if current == rest {
                "all".clone_into(current);
            }
            println!("* left #{rest}; talking in #{current}");
        }
        "/who" => {
            let room = (!rest.is_empty()).then(|| rest.to_owned());
            print_who(&client.chat_who(&WhoRequest { room, offline: false }).await?);
        }
        "/history" => {
            let limit = rest.parse().unwrap_or(20);
            let request = HistoryRequest {
                room: Some(current.clone()),
                limit: Some(limit),
                ..HistoryRequest::default()
            };
            for message in client.chat_history(&request).await?.messages {
                println!("{}", history_line(&message));
            }
        }
        _ if word.starts_with('/') => println!("unknown command {word}; {HELP}"),
        _ => {
            session.say(current, line).await?;
        }
    }
    Ok(true)
}
