//! Every NATS subject Agora uses, in one place.
//!
//! Subjects and their JSON payloads are Agora's public API (documented in `docs/subjects.md`).
//! Nothing else in the code base spells a subject: services and clients call these constants
//! and builders, so a rename is one edit here plus one in the document.
//!
//! Per-account subjects put the account last (`agora.ledger.lock.<account>`) so NATS subject
//! mapping can later partition the ledger by account without changing any client.

use agora_core::AccountId;

/// Prefix of every Agora subject.
pub const ROOT: &str = "agora";

/// Replication of the stateful services (ledger, tasks, chat, coins; see `crate::replica`):
/// each one's log stream, the stream of durable events, the leases and the snapshots.
pub mod replica {
    /// The subject of a service's replicated log (`agora.log.ledger`): only its active
    /// instance publishes there.
    pub fn log(service: &str) -> String {
        format!("agora.log.{service}")
    }
    /// The JetStream stream holding a service's log (`AGORA_LOG_LEDGER`).
    pub fn log_stream(service: &str) -> String {
        format!("AGORA_LOG_{}", service.to_ascii_uppercase())
    }
    /// The stream of durable events: every event of a committed change, once (deduplicated by
    /// `Nats-Msg-Id`), replayable from any sequence.
    pub const EVENTS_STREAM: &str = "AGORA_EVENTS";
    /// The subjects that stream keeps.
    pub const EVENTS_SUBJECTS: [&str; 7] = [
        "agora.bank.events.*",
        "agora.tasks.events.>",
        "agora.coins.prices.*",
        "agora.chat.room.*",
        "agora.chat.dm.*",
        "agora.chat.events.room.*",
        "agora.chat.events.dm.*",
    ];
    /// The KV bucket of the active instances' leases (one key per service).
    pub const LEASE_BUCKET: &str = "AGORA_LEASES";
    /// The object store of the services' snapshots (one object per service).
    pub const SNAPSHOT_BUCKET: &str = "AGORA_SNAPSHOTS";
}

/// The NATS accounts of an authorized deployment (`nats/config/accounts.conf`): Agora's
/// components sign in to `AGORA` with their own passwords; people are placed by the auth
/// service in `USERS`, or, for managers, in `MANAGERS`. Those two import the services people
/// use (sharing who asked) and the events they may read.
pub mod accounts {
    pub const AGORA: &str = "AGORA";
    pub const USERS: &str = "USERS";
    pub const MANAGERS: &str = "MANAGERS";

    /// The inbox prefix of a person's connection: its replies come to `_INBOX.<user>.>`, which
    /// only that user may subscribe to (`_INBOX._anon` for a connection that did not sign in).
    pub fn inbox_prefix(user: Option<&str>) -> String {
        format!("_INBOX.{}", user.unwrap_or(ANONYMOUS_INBOX))
    }
    /// The inbox token of anonymous connections (no user name starts with `_`).
    pub const ANONYMOUS_INBOX: &str = "_anon";
}

/// Users and their credentials (`agora-auth`), and the NATS server's auth callout.
pub mod auth {
    /// NATS micro service name.
    pub const SERVICE: &str = "agora-auth";
    /// Group (subject prefix) of every auth endpoint.
    pub const GROUP: &str = "agora.auth";

    pub const SIGNUP: &str = "signup";
    pub const LOGIN: &str = "login";
    pub const TOKEN: &str = "token";
    pub const CHECK: &str = "check";
    pub const LOGOUT: &str = "logout";
    pub const WHOAMI: &str = "whoami";
    pub const PASSWORD: &str = "password";
    pub const USERS: &str = "users";
    pub const ROLE: &str = "role";

    pub const SIGNUP_SUBJECT: &str = "agora.auth.signup";
    pub const LOGIN_SUBJECT: &str = "agora.auth.login";
    pub const TOKEN_SUBJECT: &str = "agora.auth.token";
    pub const CHECK_SUBJECT: &str = "agora.auth.check";
    pub const LOGOUT_SUBJECT: &str = "agora.auth.logout";
    pub const WHOAMI_SUBJECT: &str = "agora.auth.whoami";
    pub const PASSWORD_SUBJECT: &str = "agora.auth.password";
    pub const USERS_SUBJECT: &str = "agora.auth.users";
    pub const ROLE_SUBJECT: &str = "agora.auth.role";

    /// Where the NATS server asks who a connecting client is (auth callout).
    pub const CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
}

/// The ledger, the data server that owns balances and locks (an internal API for the bank).
pub mod ledger {
    use super::AccountId;

    /// NATS micro service name.
    pub const SERVICE: &str = "agora-ledger";
    /// Group (subject prefix) of every ledger endpoint.
    pub const GROUP: &str = "agora.ledger";

    /// Endpoint suffixes below [`GROUP`]; `*` is the account token.
    pub const LOCK: &str = "lock.*";
    pub const UNLOCK: &str = "unlock.*";
    pub const GET: &str = "get.*";
    pub const SET: &str = "set.*";
    pub const BATCH_LOCK: &str = "batch.lock";
    pub const BATCH_GET: &str = "batch.get";
    pub const BATCH_COMMIT: &str = "batch.commit";
    pub const LOCKS: &str = "locks";
    pub const APPLY: &str = "apply";
    pub const HISTORY: &str = "history";
    pub const BALANCE: &str = "balance";
    pub const APPLY_SUBJECT: &str = "agora.ledger.apply";
    pub const HISTORY_SUBJECT: &str = "agora.ledger.history";
    pub const BALANCE_SUBJECT: &str = "agora.ledger.balance";
    pub const BALANCES: &str = "balances";
    pub const SUPPLY: &str = "supply";
    pub const OPERATIONS: &str = "operations";
    pub const BALANCES_SUBJECT: &str = "agora.ledger.balances";
    pub const SUPPLY_SUBJECT: &str = "agora.ledger.supply";
    pub const OPERATIONS_SUBJECT: &str = "agora.ledger.operations";

    pub fn lock(account: &AccountId) -> String {
        format!("{GROUP}.lock.{account}")
    }
    pub fn unlock(account: &AccountId) -> String {
        format!("{GROUP}.unlock.{account}")
    }
    pub fn get(account: &AccountId) -> String {
        format!("{GROUP}.get.{account}")
    }
    pub fn set(account: &AccountId) -> String {
        format!("{GROUP}.set.{account}")
    }
    pub const BATCH_LOCK_SUBJECT: &str = "agora.ledger.batch.lock";
    pub const BATCH_GET_SUBJECT: &str = "agora.ledger.batch.get";
    pub const BATCH_COMMIT_SUBJECT: &str = "agora.ledger.batch.commit";
    pub const LOCKS_SUBJECT: &str = "agora.ledger.locks";
}

/// The bank, the client-facing money service.
pub mod bank {
    use super::AccountId;

    /// NATS micro service name.
    pub const SERVICE: &str = "agora-bank";
    /// Group (subject prefix) of every bank endpoint.
    pub const GROUP: &str = "agora.bank";

    pub const DEPOSIT: &str = "deposit";
    pub const WITHDRAW: &str = "withdraw";
    pub const BALANCE: &str = "balance";
    pub const TRANSFER: &str = "transfer";
    pub const TRANSFERS: &str = "transfers";
    pub const HISTORY: &str = "history";

    pub const DEPOSIT_SUBJECT: &str = "agora.bank.deposit";
    pub const WITHDRAW_SUBJECT: &str = "agora.bank.withdraw";
    pub const BALANCE_SUBJECT: &str = "agora.bank.balance";
    pub const TRANSFER_SUBJECT: &str = "agora.bank.transfer";
    pub const TRANSFERS_SUBJECT: &str = "agora.bank.transfers";
    pub const HISTORY_SUBJECT: &str = "agora.bank.history";

    /// Every committed balance change is published here.
    pub fn events(account: &AccountId) -> String {
        format!("{GROUP}.events.{account}")
    }
    /// Wildcard over every account's events.
    pub const EVENTS_ALL: &str = "agora.bank.events.>";
}

/// The task service (`agora-tasks`): submissions, queries, and the workers' reports.
pub mod tasks {
    /// NATS micro service name.
    pub const SERVICE: &str = "agora-tasks";
    /// Group (subject prefix) of every task-service endpoint.
    pub const GROUP: &str = "agora.tasks";

    // Client-facing endpoints.
    pub const SUBMIT: &str = "submit";
    pub const GET: &str = "get";
    pub const LIST: &str = "list";
    pub const CANCEL: &str = "cancel";
    pub const WAIT: &str = "wait";
    // Worker-facing endpoints.
    pub const CLAIM: &str = "claim";
    pub const PROGRESS: &str = "progress";
    pub const FINISH: &str = "finish";

    pub const SUBMIT_SUBJECT: &str = "agora.tasks.submit";
    pub const GET_SUBJECT: &str = "agora.tasks.get";
    pub const LIST_SUBJECT: &str = "agora.tasks.list";
    pub const CANCEL_SUBJECT: &str = "agora.tasks.cancel";
    pub const WAIT_SUBJECT: &str = "agora.tasks.wait";
    pub const CLAIM_SUBJECT: &str = "agora.tasks.claim";
    pub const PROGRESS_SUBJECT: &str = "agora.tasks.progress";
    pub const FINISH_SUBJECT: &str = "agora.tasks.finish";

    /// A task's lifecycle events: `agora.tasks.events.<owner>.<id>`, the owner being the
    /// user who submitted it (`_agora` for a service), so a user may subscribe to their own.
    pub fn events(owner: &str, id: &str) -> String {
        format!("{GROUP}.events.{owner}.{id}")
    }
    /// Every task of one owner.
    pub fn events_of(owner: &str) -> String {
        format!("{GROUP}.events.{owner}.*")
    }
    pub const EVENTS_ALL: &str = "agora.tasks.events.>";
    /// The task service tells every worker to stop a cancelled task (plain fan-out).
    pub const CONTROL_CANCEL: &str = "agora.tasks.control.cancel";

    /// The JetStream work-queue stream. Each task is queued on its own subject,
    /// `agora.tasks.queue.<priority>.<id>`, so the stream's per-subject state tells which tasks
    /// are in it, and a cancelled task's message can be purged.
    pub const STREAM: &str = "AGORA_TASKS";
    pub const QUEUE_HIGH: &str = "agora.tasks.queue.high.*";
    pub const QUEUE_NORMAL: &str = "agora.tasks.queue.normal.*";
    pub const QUEUE_ALL: &str = "agora.tasks.queue.>";
    pub fn queue(high: bool, id: &str) -> String {
        format!("{GROUP}.queue.{}.{id}", if high { "high" } else { "normal" })
    }
    /// The durable pull consumers every worker shares, one per priority.
    pub const CONSUMER_HIGH: &str = "workers-high";
    pub const CONSUMER_NORMAL: &str = "workers-normal";
    /// Recurring schedules, one micro-service endpoint each:
    /// `agora.tasks.schedules.{put,list,pause,resume,delete}`.
    pub const SCHEDULES_GROUP: &str = "agora.tasks.schedules";
    pub const SCHEDULE_PUT: &str = "put";
    pub const SCHEDULE_LIST: &str = "list";
    pub const SCHEDULE_PAUSE: &str = "pause";
    pub const SCHEDULE_RESUME: &str = "resume";
    pub const SCHEDULE_DELETE: &str = "delete";
    pub const SCHEDULES_ALL: &str = "agora.tasks.schedules.*";
    pub fn schedules(verb: &str) -> String {
        format!("{SCHEDULES_GROUP}.{verb}")
    }
    /// Workflows, one micro-service endpoint each: `agora.tasks.workflows.{submit,get,list,cancel}`.
    pub const WORKFLOWS_GROUP: &str = "agora.tasks.workflows";
    pub const WORKFLOW_SUBMIT: &str = "submit";
    pub const WORKFLOW_GET: &str = "get";
    pub const WORKFLOW_LIST: &str = "list";
    pub const WORKFLOW_CANCEL: &str = "cancel";
    pub const WORKFLOWS_ALL: &str = "agora.tasks.workflows.*";
    pub fn workflows(verb: &str) -> String {
        format!("{WORKFLOWS_GROUP}.{verb}")
    }

    /// The JetStream stream the NATS server's scheduler works from (`allow_msg_schedules`):
    /// each schedule is the last message on its own subject, and every run lands on
    /// [`FIRE`], which the task service consumes with [`CONSUMER_FIRE`].
    pub const SCHEDULE_STREAM: &str = "AGORA_SCHEDULES";
    pub const SCHEDULE_SUBJECTS: &str = "agora.schedules.>";
    /// A delayed task's run: `agora.schedules.task.<id>`.
    pub fn scheduled_task(id: &str) -> String {
        format!("agora.schedules.task.{id}")
    }
    pub const SCHEDULED_TASKS: &str = "agora.schedules.task.*";
    /// A recurring schedule: `agora.schedules.recurring.<owner>.<name>`.
    pub fn recurring(owner: &str, name: &str) -> String {
        format!("agora.schedules.recurring.{owner}.{name}")
    }
    pub const RECURRING_ALL: &str = "agora.schedules.recurring.>";
    pub const FIRE: &str = "agora.schedules.fire";
    pub const CONSUMER_FIRE: &str = "tasks-schedules";

    /// JetStream's advisory when a message exhausted its deliveries (`.<consumer>` follows).
    pub const MAX_DELIVERIES_ADVISORY: &str =
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.AGORA_TASKS.*";
}

/// Chat (`agora-chat`): plain fan-out subjects for messages and presence, and a service that
/// keeps names, presence and history.
pub mod chat {
    /// NATS micro service name.
    pub const SERVICE: &str = "agora-chat";
    /// Group (subject prefix) of every chat-service endpoint.
    pub const GROUP: &str = "agora.chat";

    pub const REGISTER: &str = "register";
    pub const HEARTBEAT: &str = "heartbeat";
    pub const LEAVE: &str = "leave";
    pub const JOIN: &str = "join";
    pub const PART: &str = "part";
    pub const WHO: &str = "who";
    pub const HISTORY: &str = "history";
    pub const SEND: &str = "send";

    pub const REGISTER_SUBJECT: &str = "agora.chat.register";
    pub const HEARTBEAT_SUBJECT: &str = "agora.chat.heartbeat";
    pub const LEAVE_SUBJECT: &str = "agora.chat.leave";
    pub const JOIN_SUBJECT: &str = "agora.chat.join";
    pub const PART_SUBJECT: &str = "agora.chat.part";
    pub const WHO_SUBJECT: &str = "agora.chat.who";
    pub const HISTORY_SUBJECT: &str = "agora.chat.history";
    /// A message to a room or to one user: the service records it, then publishes it.
    pub const SEND_SUBJECT: &str = "agora.chat.send";

    /// Messages to a room, as the chat service recorded them: every member subscribes.
    pub fn room(room: &str) -> String {
        format!("{GROUP}.room.{room}")
    }
    pub const ROOM_ALL: &str = "agora.chat.room.*";
    /// Direct messages to one user, as recorded: only that user may subscribe.
    pub fn dm(to: &str) -> String {
        format!("{GROUP}.dm.{to}")
    }
    pub const DM_ALL: &str = "agora.chat.dm.*";
    /// Presence events of one user (online, offline, room entered or left).
    pub fn presence(name: &str) -> String {
        format!("{GROUP}.presence.{name}")
    }
    pub const PRESENCE_ALL: &str = "agora.chat.presence.*";

    pub const EDIT: &str = "edit";
    pub const DELETE: &str = "delete";
    pub const EDITS: &str = "edits";
    pub const REACT: &str = "react";
    pub const READ: &str = "read";
    pub const UNREAD: &str = "unread";
    pub const TYPING: &str = "typing";
    pub const SEARCH: &str = "search";
    pub const EDIT_SUBJECT: &str = "agora.chat.edit";
    pub const DELETE_SUBJECT: &str = "agora.chat.delete";
    pub const EDITS_SUBJECT: &str = "agora.chat.edits";
    pub const REACT_SUBJECT: &str = "agora.chat.react";
    pub const READ_SUBJECT: &str = "agora.chat.read";
    pub const UNREAD_SUBJECT: &str = "agora.chat.unread";
    pub const TYPING_SUBJECT: &str = "agora.chat.typing";
    pub const SEARCH_SUBJECT: &str = "agora.chat.search";

    /// What happens to a room's messages after they are sent (edits, deletes, reactions,
    /// replies, receipts, typing).
    pub fn events_room(room: &str) -> String {
        format!("{GROUP}.events.room.{room}")
    }
    pub const EVENTS_ROOM_ALL: &str = "agora.chat.events.room.*";
    /// The same for one person's direct conversations: only they may subscribe.
    pub fn events_dm(name: &str) -> String {
        format!("{GROUP}.events.dm.{name}")
    }
    pub const EVENTS_DM_ALL: &str = "agora.chat.events.dm.*";
    /// Typing indicators (ephemeral: never stored), for a room and for one person.
    pub fn live_room(room: &str) -> String {
        format!("{GROUP}.live.room.{room}")
    }
    pub const LIVE_ROOM_ALL: &str = "agora.chat.live.room.*";
    pub fn live_dm(name: &str) -> String {
        format!("{GROUP}.live.dm.{name}")
    }
    pub const LIVE_DM_ALL: &str = "agora.chat.live.dm.*";
}

/// The coin exchange (`agora-coins`, one instance): user operations, and manager operations
/// on subjects of their own so the server can allow them to the manager only.
pub mod coins {
    /// NATS micro service name.
    pub const SERVICE: &str = "agora-coins";
    /// Group of the user endpoints, and of the manager endpoints.
    pub const GROUP: &str = "agora.coins";
    pub const ADMIN_GROUP: &str = "agora.coins.admin";

    pub const ASSETS: &str = "assets";
    pub const BUY: &str = "buy";
    pub const SELL: &str = "sell";
    pub const ORDER: &str = "order";
    pub const PORTFOLIO: &str = "portfolio";
    pub const HISTORY: &str = "history";
    pub const ADD: &str = "add";
    pub const REMOVE: &str = "remove";
    pub const UPDATE: &str = "update";

    pub const ASSETS_SUBJECT: &str = "agora.coins.assets";
    pub const BUY_SUBJECT: &str = "agora.coins.buy";
    pub const SELL_SUBJECT: &str = "agora.coins.sell";
    pub const ORDER_SUBJECT: &str = "agora.coins.order";
    pub const PORTFOLIO_SUBJECT: &str = "agora.coins.portfolio";
    pub const HISTORY_SUBJECT: &str = "agora.coins.history";
    pub const ADD_SUBJECT: &str = "agora.coins.admin.add";
    pub const REMOVE_SUBJECT: &str = "agora.coins.admin.remove";
    pub const UPDATE_SUBJECT: &str = "agora.coins.admin.update";
    /// Every manager subject (for permissions).
    pub const ADMIN_ALL: &str = "agora.coins.admin.>";

    /// Price changes of one asset (plain fan-out).
    pub fn prices(symbol: &str) -> String {
        format!("{GROUP}.prices.{symbol}")
    }
    pub const PRICES_ALL: &str = "agora.coins.prices.*";
}

/// Files (`agora-files`, any number in one queue group).
pub mod files {
    /// NATS micro service name.
    pub const SERVICE: &str = "agora-files";
    /// Group (subject prefix) of every file-service endpoint.
    pub const GROUP: &str = "agora.files";

    pub const LIST: &str = "list";
    pub const STAT: &str = "stat";
    pub const GET: &str = "get";
    pub const CACHE: &str = "cache";
    /// Uploads (the manager role only).
    pub const PUT: &str = "put";
    /// Removals (the manager role only).
    pub const DELETE: &str = "delete";

    pub const LIST_SUBJECT: &str = "agora.files.list";
    pub const STAT_SUBJECT: &str = "agora.files.stat";
    pub const GET_SUBJECT: &str = "agora.files.get";
    pub const CACHE_SUBJECT: &str = "agora.files.cache";
    pub const PUT_SUBJECT: &str = "agora.files.put";
    pub const DELETE_SUBJECT: &str = "agora.files.delete";
}

/// Likes (`agora-likes`, any number of nodes): a queue group takes likes, every node applies
/// every node's events, and one elected leader answers `nodes` and runs anti-entropy rounds.
pub mod likes {
    /// NATS micro service name (every node is an instance).
    pub const SERVICE: &str = "agora-likes";
    /// Group (subject prefix) of every likes endpoint.
    pub const GROUP: &str = "agora.likes";

    /// Endpoint names; `like`, `unlike` and `count` end with the item (`like.<item>`).
    pub const LIKE: &str = "like";
    pub const UNLIKE: &str = "unlike";
    pub const COUNT: &str = "count";
    pub const TOP: &str = "top";
    /// Each node's own anti-entropy endpoint (`sync.<node>`).
    pub const SYNC: &str = "sync";

    pub fn like(item: &str) -> String {
        format!("{GROUP}.{LIKE}.{item}")
    }
    pub fn unlike(item: &str) -> String {
        format!("{GROUP}.{UNLIKE}.{item}")
    }
    pub fn count(item: &str) -> String {
        format!("{GROUP}.{COUNT}.{item}")
    }
    pub const TOP_SUBJECT: &str = "agora.likes.top";
    /// Answered by the leader only: the live nodes with their load.
    pub const NODES_SUBJECT: &str = "agora.likes.nodes";
    /// Every node answers (scatter-gather): its coverage, counts and load.
    pub const DIGEST_SUBJECT: &str = "agora.likes.digest";
    /// One node's anti-entropy endpoint: pages of the records the asker lacks.
    pub fn sync(node: &str) -> String {
        format!("{GROUP}.{}", sync_endpoint(node))
    }
    /// The same, below [`GROUP`] (the endpoint's subject in the node's service group).
    pub fn sync_endpoint(node: &str) -> String {
        format!("{SYNC}.{node}")
    }
    /// The leader's order to one node: pull from these peers.
    pub fn pull(node: &str) -> String {
        format!("{GROUP}.pull.{node}")
    }
    /// Every batch of likes a node took, per item (plain fan-out; every node subscribes).
    pub fn events(item: &str) -> String {
        format!("{GROUP}.events.{item}")
    }
    pub const EVENTS_ALL: &str = "agora.likes.events.*";
    /// The JetStream KV bucket holding the leader lease, and its key.
    pub const LEADER_BUCKET: &str = "AGORA_LIKES";
    pub const LEADER_KEY: &str = "leader";
    /// The JetStream KV bucket of the nodes that exist: key = node id, value = its public
    /// signing key. A batch or a sync page from a node not in it, or not signed by its key,
    /// is refused.
    pub const NODES_BUCKET: &str = "AGORA_LIKES_NODES";
    /// The header carrying a node's signature: on the last event of a batch, and on a sync
    /// page.
    pub const SIGNATURE_HEADER: &str = "Agora-Signature";
}

/// Workers (`agora-worker`): each one is an instance of one micro service.
pub mod worker {
    /// NATS micro service name.
    pub const SERVICE: &str = "agora-worker";
    /// Endpoint name of a worker's status.
    pub const STATUS: &str = "status";

    /// The prefix of every worker endpoint.
    pub const GROUP: &str = "agora.worker";

    /// One worker's status subject, `agora.worker.<worker>.status`.
    pub fn status(worker: &str) -> String {
        format!("{GROUP}.{}", status_endpoint(worker))
    }
    /// The same subject within [`GROUP`].
    pub fn status_endpoint(worker: &str) -> String {
        format!("{worker}.{STATUS}")
    }

    /// The JetStream KV bucket of worker ids in use: key = worker id, held by the running
    /// worker of that id (created, renewed by revision, deleted at its stop).
    pub const ID_BUCKET: &str = "AGORA_WORKERS";
}

/// Log records: every component publishes its info, warn and error events (plain fan-out).
pub mod logs {
    /// `agora.logs.<service>`, the service being the component's short name (`bank`).
    pub fn subject(service: &str) -> String {
        format!("agora.logs.{service}")
    }
    pub const ALL: &str = "agora.logs.>";
}

/// Prometheus metrics, gathered over NATS (see `crate::metrics`): a request on [`ALL`] is
/// answered by every instance of every component, one on `agora.metrics.<service>` by every
/// instance of that component.
pub mod metrics {
    pub const ALL: &str = "agora.metrics";
    pub fn subject(service: &str) -> String {
        format!("agora.metrics.{service}")
    }
    /// Headers of an answer: which component and instance it describes.
    pub const HEADER_SERVICE: &str = "Agora-Service";
    pub const HEADER_INSTANCE: &str = "Agora-Instance";
}

/// Subjects of `agora bench`'s raw NATS baselines (served by the benchmark itself).
pub mod bench {
    /// Raw request-reply echo: the reply is the request payload.
    pub const ECHO: &str = "agora.bench.echo";
    /// Raw fan-out: plain subscribers, the baseline of `agora bench chat`.
    pub const FANOUT: &str = "agora.bench.fanout";
    /// Raw chunks: the reply is as many bytes as the request asks (`agora bench files`).
    pub const CHUNK: &str = "agora.bench.chunk";

    /// `agora.bench.routes.<node>`: answered by a probe on one node of a benchmark's local
    /// cluster until every other node reaches it (the routes are up).
    pub fn routes_probe(node: usize) -> String {
        format!("agora.bench.routes.{node}")
    }
}

/// nats-server's own requests in the system account (`SYS` in `accounts.conf`).
pub mod system {
    /// Closes one client connection of server `server_id` (`{"cid":7}`): agora-auth's, when
    /// the credentials the connection signed in with have ended.
    pub fn kick(server_id: &str) -> String {
        format!("$SYS.REQ.SERVER.{server_id}.KICK")
    }
}

/// The discovery subjects every NATS micro service answers (`nats micro ls`, `nats micro stats`).
pub mod micro {
    /// Every service instance answers: `{"name","id","version","metadata"}`.
    pub const PING: &str = "$SRV.PING";
    /// Every service instance answers with its endpoints' counters and `data`.
    pub const STATS: &str = "$SRV.STATS";
    /// Every service instance answers with its description and endpoints (name, subject,
    /// queue group).
    pub const INFO: &str = "$SRV.INFO";

    /// The instances of one service.
    pub fn ping(service: &str) -> String {
        format!("{PING}.{service}")
    }
    pub fn stats(service: &str) -> String {
        format!("{STATS}.{service}")
    }
}

/// Requests to `_AGORA.barrier.<unique>` have no responders on purpose: the "no responders"
/// answer proves the server processed everything the connection sent before (see
/// [`crate::client::barrier`]).
pub const BARRIER_PREFIX: &str = "_AGORA.barrier";

/// The last token of a subject (the account of a per-account subject).
pub fn last_token(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

#[cfg(test)]
mod tests;
