//! The auth service (`agora-auth`, one instance): users and their credentials, and the NATS
//! server's auth callout.
//!
//! People sign up (`agora.auth.signup`: a name and a password, hashed with argon2id), then sign
//! in to NATS with their name and password, or with a token (`agora.auth.token` makes one for
//! `agora login`; the gateway makes browser sessions with `agora.auth.login`). Every NATS
//! connection that is not one of Agora's components is decided here (see [`callout`]): the
//! server places the person in the `USERS` or `MANAGERS` account with permissions of their
//! own, and stamps their name on every request they send, which is how every service knows who
//! asks ([`crate::identity`]).
//!
//! The first manager is made at the first start from `--manager-name` and
//! `--manager-password`; managers list users and change roles. Tokens are stored only as their
//! SHA-256; a user holds at most `TOKENS_PER_USER_MAX` (a new one retires the oldest), and
//! changing a password or a role ends all of them. The connections signed in with ended
//! credentials are closed at once ([`live`]), all but the one that asked.

pub mod callout;
pub mod client;
pub mod jwt;
pub mod live;
pub mod permissions;
pub mod secrets;
pub mod state;
pub mod store;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agora_core::auth::{self as rules, AuthError, TokenKind, TokenRecord, UserRecord};
use agora_core::identity::{Caller, Role, UserName};
use anyhow::Context as _;
use async_nats::Client;
use async_nats::service::Request;
use bytes::Bytes;
use futures::StreamExt;
use nkeys::KeyPair;
use tokio::sync::{Semaphore, oneshot};

use crate::clock::now_ms;
use crate::error::{ErrorCode, ServiceError};
use crate::owner::{self, Limits, Mode};
use crate::service::{ErrorCounts, Replier, add_endpoint, decode, decode_or_default, encode};
use crate::subjects::auth as subject;
use secrets::Passwords;
use state::{Answer, Auth, Command, Envelope};
use wire::{
    CheckReply, LoginRequest, LogoutReply, PasswordReply, PasswordRequest, RoleRequest,
    SignupRequest, TokenBody, TokenReply, TokenRequest, UserView, UsersReply, UsersRequest,
    WhoamiReply,
};

/// Requests (callouts included) handled at once at most; beyond, `busy`.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 512;
/// Commands waiting for the owner at most.
pub const QUEUE_MAX: usize = 4_096;
/// Commands in one transaction at most.
const GROUP_MAX: usize = 256;
/// How often expired tokens are swept.
const TICK: Duration = Duration::from_secs(10);
/// Users listed per page by default, and at most.
pub const USERS_PAGE_DEFAULT: usize = 100;
pub const USERS_PAGE_MAX: usize = 1_000;
/// The callout's queue group: any number of auth instances may answer (one store each is for
/// a later issue; today one instance runs).
const CALLOUT_GROUP: &str = "agora-auth";

const ENDPOINTS: [&str; 9] = [
    subject::SIGNUP,
    subject::LOGIN,
    subject::TOKEN,
    subject::CHECK,
    subject::LOGOUT,
    subject::WHOAMI,
    subject::PASSWORD,
    subject::USERS,
    subject::ROLE,
];

/// Names nobody may sign up with: Agora's components' NATS users (a person by one of those
/// names could never sign in: the server takes the name for the component's) and accounts the
/// services use themselves.
pub const RESERVED_NAMES: &str = "auth,ledger,bank,coins,files,chat,tasks,worker,likes,gateway,\
                                  operator,auth-kick,coins-exchange,exchange,system,admin,root,\
                                  agora";

/// Auth service configuration: the flags of `agora-auth`.
#[derive(Clone, clap::Args)]
pub struct AuthConfig {
    /// Directory of the users' database.
    #[arg(long, env = "AGORA_AUTH_DATA_DIR", default_value = ".agora/auth")]
    pub data_dir: PathBuf,
    /// The seed (SA...) of the account key nats-server's auth_callout names as issuer.
    #[arg(long, env = "AGORA_AUTH_ISSUER_SEED", hide_env_values = true)]
    pub issuer_seed: String,
    /// The first manager, made at the first start when --manager-password is given.
    #[arg(long, env = "AGORA_MANAGER_NAME", default_value = "manager")]
    pub manager_name: String,
    #[arg(long, env = "AGORA_MANAGER_PASSWORD", hide_env_values = true)]
    pub manager_password: Option<String>,
    /// Names nobody may sign up with (comma-separated).
    #[arg(long, env = "AGORA_AUTH_RESERVED", default_value = RESERVED_NAMES, value_delimiter = ',')]
    pub reserved: Vec<String>,
    /// Users at most.
    #[arg(long, env = "AGORA_AUTH_USERS_MAX", default_value_t = 100_000)]
    pub users_max: u64,
    /// The system-account user that may close a connection (`auth-kick` in accounts.conf):
    /// connections signed in with credentials that ended are closed at once. Without it they
    /// keep their permissions until they reconnect.
    #[arg(long, env = "AGORA_AUTH_KICK_USER", requires = "kick_password")]
    pub kick_user: Option<String>,
    #[arg(long, env = "AGORA_AUTH_KICK_PASSWORD", hide_env_values = true)]
    pub kick_password: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("data_dir", &self.data_dir)
            .field("manager_name", &self.manager_name)
            .field("users_max", &self.users_max)
            .finish_non_exhaustive()
    }
}

/// What request tasks and the callout share.
pub struct Service {
    queue: owner::Queue<Envelope>,
    passwords: Passwords,
    issuer: KeyPair,
    reserved: Vec<String>,
    users_max: u64,
    /// The connections the callout let in, and the system-account connection that closes
    /// them when their credentials end.
    live: live::Connections,
    kicker: Option<Client>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("issuer", &self.issuer.public_key()).finish_non_exhaustive()
    }
}

fn busy() -> ServiceError {
    ServiceError::new(ErrorCode::Busy, "the auth service is overloaded; retry")
}

fn view(user: &UserRecord) -> UserView {
    UserView {
        name: user.name.to_string(),
        role: user.role.as_str().to_owned(),
        created_ms: user.created_ms,
    }
}

impl Service {
    /// Asks the owner and waits for its answer.
    async fn ask(&self, command: Command) -> Result<Answer, ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Envelope { command, reply: Some(reply) }).map_err(|_| busy())?;
        answer.await.map_err(|_| busy())?
    }

    /// The user `name`, if `password` is theirs (one answer for an unknown name and a wrong
    /// password, at one cost).
    async fn check_password(
        &self,
        name: &str,
        password: String,
    ) -> Result<UserRecord, ServiceError> {
        let user = match UserName::parse(name) {
            Ok(name) => match self.ask(Command::FindUser { name: name.to_string() }).await? {
                Answer::Found(user) => user,
                _ => None,
            },
            Err(_) => None,
        };
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        if self.passwords.check(password, hash).await? {
            user.ok_or_else(|| AuthError::BadCredentials.into())
        } else {
            Err(AuthError::BadCredentials.into())
        }
    }

    /// A new token for `name`, stored; the token itself is only in the reply.
    async fn issue(
        &self,
        name: &UserName,
        role: Role,
        kind: TokenKind,
        ttl_ms: Option<u64>,
    ) -> Result<TokenReply, ServiceError> {
        let now = now_ms();
        let expires_ms = kind.expiry(now, ttl_ms)?;
        let token = secrets::new_token()?;
        let record = TokenRecord { name: name.clone(), kind, created_ms: now, expires_ms };
        self.ask(Command::AddToken { digest: secrets::digest(&token), record }).await?;
        Ok(TokenReply { name: name.to_string(), role: role.as_str().to_owned(), token, expires_ms })
    }

    async fn signup(&self, request: SignupRequest) -> Result<UserRecord, ServiceError> {
        let name = UserName::parse_new(&request.name, &self.reserved)?;
        rules::check_password(&request.password)?;
        let password_hash = self.passwords.hash(request.password).await?;
        let user = UserRecord { name, role: Role::User, password_hash, created_ms: now_ms() };
        match self.ask(Command::AddUser { user, users_max: self.users_max }).await? {
            Answer::User(user) => Ok(user),
            _ => Err(ServiceError::new(ErrorCode::Internal, "unexpected answer")),
        }
    }

    /// Handles one request of `endpoint` from `caller`; the connections whose credentials it
    /// ended go in `ended`.
    async fn handle(
        &self,
        endpoint: &str,
        caller: &Caller,
        payload: &[u8],
        ended: &mut Vec<live::Connection>,
    ) -> Result<Bytes, ServiceError> {
        match endpoint {
            subject::SIGNUP => encode(&view(&self.signup(decode(payload)?).await?)),
            subject::LOGIN => {
                caller.require_service("signing in on behalf of a person")?;
                let request: LoginRequest = decode(payload)?;
                let kind = match request.kind.as_deref() {
                    None => TokenKind::Session,
                    Some(text) => TokenKind::parse(text).ok_or_else(|| {
                        ServiceError::invalid(format!("kind is session or api, not {text:?}"))
                    })?,
                };
                kind.expiry(0, request.ttl_ms)?;
                let user = self.check_password(&request.name, request.password).await?;
                encode(&self.issue(&user.name, user.role, kind, request.ttl_ms).await?)
            }
            subject::TOKEN => {
                let request: TokenRequest =
                    decode_or_default(payload, crate::service::NO_FIELDS_BYTES_MAX)?;
                let Caller::User { name, role } = caller else {
                    return Err(agora_core::IdentityError::UserOnly("a token").into());
                };
                encode(&self.issue(name, *role, TokenKind::Api, request.ttl_ms).await?)
            }
            subject::CHECK => {
                caller.require_service("checking a token")?;
                let request: TokenBody = decode(payload)?;
                let digest = secrets::digest(&request.token);
                let Answer::Token(found) = self.ask(Command::FindToken { digest }).await? else {
                    return Err(AuthError::BadCredentials.into());
                };
                let (record, role) = found.ok_or(AuthError::BadCredentials)?;
                record.check(now_ms())?;
                encode(&CheckReply {
                    name: record.name.to_string(),
                    role: role.as_str().to_owned(),
                    kind: record.kind.as_str().to_owned(),
                    expires_ms: record.expires_ms,
                })
            }
            subject::LOGOUT => {
                caller.signed_in("signing out")?;
                let request: TokenBody = decode(payload)?;
                let owner = caller.name().map(UserName::to_string);
                let digest = secrets::digest(&request.token);
                let command = Command::RevokeToken { digest: digest.clone(), owner: owner.clone() };
                let Answer::Revoked(revoked) = self.ask(command).await? else {
                    return Err(ServiceError::new(ErrorCode::Internal, "unexpected answer"));
                };
                if revoked > 0
                    && let Some(owner) = owner
                {
                    ended.extend(self.live.take(&owner, |c| c.token.as_ref() == Some(&digest)));
                }
                encode(&LogoutReply { revoked: revoked > 0 })
            }
            subject::WHOAMI => {
                crate::service::no_fields(payload)?;
                encode(&match caller {
                    Caller::User { name, role } => WhoamiReply {
                        name: Some(name.to_string()),
                        role: Some(role.as_str().to_owned()),
                        service: false,
                    },
                    Caller::Service => WhoamiReply { name: None, role: None, service: true },
                    Caller::Anonymous => WhoamiReply { name: None, role: None, service: false },
                })
            }
            subject::PASSWORD => {
                let request: PasswordRequest = decode(payload)?;
                let Caller::User { name, .. } = caller else {
                    return Err(agora_core::IdentityError::UserOnly("a password").into());
                };
                rules::check_password(&request.new)?;
                self.check_password(name.as_str(), request.old).await?;
                let hash = self.passwords.hash(request.new).await?;
                let command = Command::SetPassword { name: name.to_string(), hash };
                let Answer::Revoked(revoked) = self.ask(command).await? else {
                    return Err(ServiceError::new(ErrorCode::Internal, "unexpected answer"));
                };
                ended.extend(self.live.take(name.as_str(), |_| true));
                encode(&PasswordReply { revoked })
            }
            subject::USERS => {
                caller.require_manager("listing users")?;
                let request: UsersRequest =
                    decode_or_default(payload, crate::service::NO_FIELDS_BYTES_MAX)?;
                let limit = request.limit.unwrap_or(USERS_PAGE_DEFAULT);
                if !(1..=USERS_PAGE_MAX).contains(&limit) {
                    return Err(ServiceError::invalid(format!("limit is 1..={USERS_PAGE_MAX}")));
                }
                let command = Command::ListUsers { after: request.after, limit };
                let Answer::Users(users, more) = self.ask(command).await? else {
                    return Err(ServiceError::new(ErrorCode::Internal, "unexpected answer"));
                };
                encode(&UsersReply { users: users.iter().map(view).collect(), more })
            }
            subject::ROLE => {
                caller.require_manager("changing a role")?;
                let request: RoleRequest = decode(payload)?;
                let name = UserName::parse(&request.name)?;
                let role = Role::parse(&request.role)?;
                let Answer::User(user) =
                    self.ask(Command::SetRole { name: name.to_string(), role }).await?
                else {
                    return Err(ServiceError::new(ErrorCode::Internal, "unexpected answer"));
                };
                ended.extend(self.live.take(user.name.as_str(), |_| true));
                encode(&view(&user))
            }
            _ => Err(ServiceError::invalid(format!("no endpoint {endpoint}"))),
        }
    }

    /// Makes the first manager if they do not exist yet.
    async fn ensure_manager(&self, name: &str, password: &str) -> anyhow::Result<()> {
        let name = UserName::parse(name)?;
        if let Answer::Found(Some(_)) =
            self.ask(Command::FindUser { name: name.to_string() }).await?
        {
            return Ok(());
        }
        rules::check_password(password)?;
        let password_hash = self.passwords.hash(password.to_owned()).await?;
        let user = UserRecord { name, role: Role::Manager, password_hash, created_ms: now_ms() };
        self.ask(Command::AddUser { user, users_max: u64::MAX }).await?;
        tracing::info!("the first manager was made");
        Ok(())
    }
}

/// Runs the auth service until `shutdown` resolves; `kicker` (signed in as
/// [`AuthConfig::kick_user`]) closes the connections of ended credentials.
pub async fn run(
    client: Client,
    kicker: Option<Client>,
    config: AuthConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let issuer = callout::issuer(&config.issuer_seed)?;
    crate::service::refuse_second_instance(&client, subject::SERVICE).await?;
    let _data_dir = crate::sqlite::lock_dir(&config.data_dir)?;
    let conn = store::open(&config.data_dir)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let limits = Limits {
        group_max: GROUP_MAX,
        tick: TICK,
        synchronous: store::SYNCHRONOUS,
        mode: Mode::Thread,
    };
    let (queue, inbox) = owner::queue(QUEUE_MAX);
    let owner_handle = owner::spawn("auth", conn, Auth, inbox, limits)?;
    let service = Arc::new(Service {
        queue,
        passwords: Passwords::new()?,
        issuer,
        reserved: config.reserved.iter().map(|r| r.trim().to_owned()).collect(),
        users_max: config.users_max,
        live: live::Connections::default(),
        kicker,
    });
    if service.kicker.is_none() {
        tracing::warn!("no --kick-user: connections outlive the credentials they signed in with");
    }
    if let Some(password) = &config.manager_password {
        service.ensure_manager(&config.manager_name, password).await?;
    }
    let in_flight = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));

    let errors = ErrorCounts::default();
    let stats_errors = errors.clone();
    let micro = crate::service::builder(&client, HashMap::new())
        .description("Agora auth: users, passwords, tokens, and the NATS auth callout")
        .stats_handler(move |endpoint, _| stats_errors.snapshot(&endpoint))
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let group = micro.group(subject::GROUP);
    let mut loops = Vec::new();
    for name in ENDPOINTS {
        let mut endpoint = add_endpoint(&group, name, name).await?;
        let replier = Replier::new(name, errors.clone());
        let (service, in_flight) = (service.clone(), in_flight.clone());
        loops.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    replier.reply_bytes(&request, Err(busy())).await;
                    continue;
                };
                let (service, replier) = (service.clone(), replier.clone());
                tokio::spawn(async move {
                    let mut ended = Vec::new();
                    let reply = answer(&service, name, &request, &mut ended).await;
                    replier.reply_bytes(&request, reply).await;
                    if let Some(kicker) = &service.kicker {
                        live::close(kicker, ended).await;
                    }
                    drop(permit);
                });
            }
        }));
    }
    let mut callouts = client
        .queue_subscribe(subject::CALLOUT_SUBJECT, CALLOUT_GROUP.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to the auth callout: {e}"))?;
    let (callout_service, callout_client) = (service.clone(), client.clone());
    loops.push(tokio::spawn(async move {
        while let Some(message) = callouts.next().await {
            let Some(reply) = message.reply else { continue };
            // A callout waits rather than being refused: the server's own timeout bounds it.
            let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
            let (service, client) = (callout_service.clone(), callout_client.clone());
            tokio::spawn(async move {
                if let Some(answer) = service.authorize(&message.payload).await {
                    client.publish(reply, answer).await.ok();
                }
                drop(permit);
            });
        }
    }));
    crate::client::barrier(&client).await?;
    tracing::info!(issuer = %service.issuer.public_key(), "auth ready");
    crate::telemetry::announce_ready(subject::SERVICE);
    shutdown.await;
    for task in &loops {
        task.abort();
    }
    drop(loops);
    micro.stop().await.ok();
    drop(service);
    owner_handle.join().await;
    client.flush().await.ok();
    Ok(())
}

/// One request: who asks, then what they ask. The connection that asked is never among the
/// `ended` ones (it would lose the reply): it keeps going until it reconnects.
async fn answer(
    service: &Service,
    endpoint: &str,
    request: &Request,
    ended: &mut Vec<live::Connection>,
) -> Result<Bytes, ServiceError> {
    let headers = request.message.headers.as_ref();
    let caller = crate::identity::caller(headers)?;
    let reply = service.handle(endpoint, &caller, &request.message.payload, ended).await;
    if !ended.is_empty()
        && let Some(origin) = crate::identity::origin(headers)
    {
        ended.retain(|connection| !connection.is(&origin));
    }
    reply
}
