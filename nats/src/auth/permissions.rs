//! What a person's connection may publish and subscribe to: the permissions the auth callout
//! puts in the user JWT it issues. Publishing is allowed only on the services the person's
//! account imports (their requests reach Agora stamped with who sent them); subscribing only
//! on their own inbox and the events that are theirs to read. Everything else is refused by
//! the NATS server before any service sees it.

use agora_core::identity::{Role, UserName};

use super::jwt::Permission;
use crate::subjects::{self, accounts, auth, bank, chat, coins, files, likes, logs, tasks};

/// Subscriptions one person's connection may hold at most.
pub const SUBSCRIPTIONS_MAX: i64 = 1_000;

/// The services every signed-in person may call.
fn user_services() -> Vec<String> {
    let mut subjects: Vec<String> = [
        auth::TOKEN_SUBJECT,
        auth::LOGOUT_SUBJECT,
        auth::WHOAMI_SUBJECT,
        auth::PASSWORD_SUBJECT,
        bank::DEPOSIT_SUBJECT,
        bank::WITHDRAW_SUBJECT,
        bank::BALANCE_SUBJECT,
        bank::TRANSFER_SUBJECT,
        bank::TRANSFERS_SUBJECT,
        bank::HISTORY_SUBJECT,
        coins::ASSETS_SUBJECT,
        coins::BUY_SUBJECT,
        coins::SELL_SUBJECT,
        coins::ORDER_SUBJECT,
        coins::PORTFOLIO_SUBJECT,
        coins::HISTORY_SUBJECT,
        chat::REGISTER_SUBJECT,
        chat::HEARTBEAT_SUBJECT,
        chat::LEAVE_SUBJECT,
        chat::JOIN_SUBJECT,
        chat::PART_SUBJECT,
        chat::WHO_SUBJECT,
        chat::HISTORY_SUBJECT,
        chat::SEND_SUBJECT,
        chat::EDIT_SUBJECT,
        chat::DELETE_SUBJECT,
        chat::EDITS_SUBJECT,
        chat::REACT_SUBJECT,
        chat::READ_SUBJECT,
        chat::UNREAD_SUBJECT,
        chat::TYPING_SUBJECT,
        chat::SEARCH_SUBJECT,
        tasks::SUBMIT_SUBJECT,
        tasks::GET_SUBJECT,
        tasks::LIST_SUBJECT,
        tasks::CANCEL_SUBJECT,
        tasks::WAIT_SUBJECT,
        tasks::SCHEDULES_ALL,
        tasks::WORKFLOWS_ALL,
        likes::TOP_SUBJECT,
        likes::NODES_SUBJECT,
        files::LIST_SUBJECT,
        files::STAT_SUBJECT,
        files::GET_SUBJECT,
        files::CACHE_SUBJECT,
        subjects::bench::ECHO,
    ]
    .map(str::to_owned)
    .to_vec();
    subjects.extend([likes::like("*"), likes::unlike("*"), likes::count("*")]);
    subjects.push(format!("{}.>", subjects::BARRIER_PREFIX));
    subjects
}

/// The managers' operations on top.
fn manager_services() -> Vec<String> {
    let mut subjects: Vec<String> =
        [auth::USERS_SUBJECT, auth::ROLE_SUBJECT, files::PUT_SUBJECT, files::DELETE_SUBJECT]
            .map(str::to_owned)
            .to_vec();
    subjects.push(format!("{}.*", coins::ADMIN_GROUP));
    // The workers' status: every live worker answers (`agora task workers`).
    subjects.push(subjects::micro::stats(subjects::worker::SERVICE));
    subjects
}

/// The `(publish, subscribe)` permissions of a person's connection: `None` for a connection
/// that did not sign in (it may only sign up).
pub fn of(person: Option<(&UserName, Role)>) -> (Permission, Permission) {
    let Some((name, role)) = person else {
        let publish = vec![
            auth::SIGNUP_SUBJECT.to_owned(),
            auth::WHOAMI_SUBJECT.to_owned(),
            format!("{}.>", subjects::BARRIER_PREFIX),
        ];
        let subscribe = vec![format!("{}.>", accounts::inbox_prefix(None))];
        return (allow(publish), allow(subscribe));
    };
    let me = name.as_str();
    let mut publish = user_services();
    let mut subscribe = vec![
        format!("{}.>", accounts::inbox_prefix(Some(me))),
        chat::ROOM_ALL.to_owned(),
        chat::PRESENCE_ALL.to_owned(),
        chat::dm(me),
        chat::EVENTS_ROOM_ALL.to_owned(),
        chat::events_dm(me),
        chat::LIVE_ROOM_ALL.to_owned(),
        chat::live_dm(me),
        coins::PRICES_ALL.to_owned(),
    ];
    match role {
        Role::User => {
            subscribe.push(format!("{}.events.{me}", bank::GROUP));
            subscribe.push(tasks::events_of(me));
        }
        Role::Manager => {
            publish.extend(manager_services());
            subscribe.push(format!("{}.events.*", bank::GROUP));
            subscribe.push(tasks::EVENTS_ALL.to_owned());
            subscribe.push(logs::ALL.to_owned());
        }
    }
    (allow(publish), allow(subscribe))
}

fn allow(subjects: Vec<String>) -> Permission {
    Permission { allow: subjects, deny: Vec::new() }
}

#[cfg(test)]
mod tests;
