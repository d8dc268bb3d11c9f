//! `agora signup`, `login`, `logout`, `whoami`, `password`, and the managers' `users` and
//! `role`; and the credentials file `agora login` writes for every other command.
//!
//! `agora login` signs in with the user's password and asks the auth service for an API token
//! (30 days at most); the token, not the password, goes into the credentials file (its mode
//! is 0600). Every command then connects with it. `agora logout` ends the token and removes
//! the file.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use agora_nats::AgoraClient;
use agora_nats::auth::wire::UsersRequest;
use clap::Subcommand;
use serde::{Deserialize, Serialize};

/// What `agora login` keeps.
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    pub name: String,
    pub token: String,
    pub expires_ms: u64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The credentials file: `$AGORA_CREDENTIALS`, else `~/.config/agora/credentials.json`.
pub fn credentials_path(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_owned());
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config.join("agora").join("credentials.json"))
}

/// The saved credentials, if there are (and they are readable).
pub fn load(path: &Path) -> anyhow::Result<Option<Credentials>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("{} is not an agora credentials file: {e}", path.display())
        })?)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(anyhow::anyhow!("cannot read {}: {error}", path.display())),
    }
}

fn save(path: &Path, credentials: &Credentials) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&serde_json::to_vec_pretty(credentials)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// A password: `$AGORA_PASSWORD`, else the first line of standard input when it is not a
/// terminal, else asked for without echo.
pub fn password(prompt: &str) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("AGORA_PASSWORD") {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_owned());
    }
    Ok(rpassword::prompt_password(prompt)?)
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Make a user (then `agora login`).
    Signup { name: String },
    /// Sign in: saves an API token for the other commands.
    Login {
        name: String,
        /// How long the token lives, in days (at most 30).
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// End the saved token and remove it.
    Logout,
    /// Who this connection is.
    Whoami,
    /// A new password; every token of the user ends (log in again).
    Password,
    /// Users, by name (managers).
    Users {
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Give a user the role `user` or `manager` (managers).
    Role { name: String, role: String },
}

/// Who an account command connects as.
#[derive(Debug)]
pub enum ConnectAs {
    /// The flags' credentials, else the saved token, else anonymously.
    Saved,
    /// Nobody (signing up, whoever is signed in here).
    Anonymous,
    /// A user, with their password.
    User(String, String),
}

/// Runs an account command, connecting with `connect`.
pub async fn run<F, Fut>(
    command: AccountCommand,
    credentials: Option<PathBuf>,
    connect: F,
    json: bool,
) -> anyhow::Result<()>
where
    F: Fn(ConnectAs) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<AgoraClient>>,
{
    let print = |value: serde_json::Value, text: String| crate::print(json, value, text);
    let path = || credentials.clone().ok_or_else(|| anyhow::anyhow!("no HOME: give --credentials"));
    match command {
        AccountCommand::Signup { name } => {
            let password = password("new password: ")?;
            // Anonymous: a signed-in user may not sign others up.
            let client = connect(ConnectAs::Anonymous).await?;
            let user = client.signup(&name, &password).await?;
            print(
                serde_json::to_value(&user)?,
                format!("made {} ({}); now `agora login {}`", user.name, user.role, user.name),
            );
        }
        AccountCommand::Login { name, days } => {
            let password = password(&format!("password of {name}: "))?;
            let client = connect(ConnectAs::User(name.clone(), password)).await?;
            let ttl_ms = days.clamp(1, 30) * 24 * 3_600_000;
            let issued = client.new_token(Some(ttl_ms)).await?;
            let path = path()?;
            let saved = Credentials {
                name: issued.name.clone(),
                token: issued.token,
                expires_ms: issued.expires_ms,
            };
            save(&path, &saved)?;
            print(
                serde_json::json!({"name": issued.name, "role": issued.role, "expires_ms": issued.expires_ms}),
                format!(
                    "signed in as {} ({}) until {}; the token is in {}",
                    issued.name,
                    issued.role,
                    crate::utc(issued.expires_ms),
                    path.display()
                ),
            );
        }
        AccountCommand::Logout => {
            let path = path()?;
            let Some(saved) = load(&path)? else {
                anyhow::bail!("not signed in ({} does not exist)", path.display());
            };
            // An expired or revoked token cannot sign in to revoke itself: it is over.
            let over = |error: &agora_nats::ClientError| {
                error.code() == agora_nats::ErrorCode::Unauthenticated
            };
            let revoked = match connect(ConnectAs::Saved).await {
                Ok(client) => match client.logout(&saved.token).await {
                    Ok(reply) => reply.revoked,
                    Err(error) if over(&error) => false,
                    Err(error) => return Err(error.into()),
                },
                Err(error) if error.downcast_ref().is_some_and(over) => false,
                Err(error) => return Err(error),
            };
            std::fs::remove_file(&path)?;
            print(serde_json::json!({"revoked": revoked}), format!("signed out {}", saved.name));
        }
        AccountCommand::Whoami => {
            let client = connect(ConnectAs::Saved).await?;
            let me = client.whoami().await?;
            let text = match (&me.name, &me.role) {
                (Some(name), Some(role)) => format!("{name} ({role})"),
                _ if me.service => {
                    "an Agora service (a server without users, or a component)".to_owned()
                }
                _ => "anonymous (agora login first)".to_owned(),
            };
            print(serde_json::to_value(&me)?, text);
        }
        AccountCommand::Password => {
            let old = password("current password: ")?;
            let new = password("new password: ")?;
            let client = connect(ConnectAs::Saved).await?;
            let reply = client.change_password(&old, &new).await?;
            if let Some(path) = &credentials {
                std::fs::remove_file(path).ok();
            }
            print(
                serde_json::to_value(&reply)?,
                format!("password changed; {} tokens ended: `agora login` again", reply.revoked),
            );
        }
        AccountCommand::Users { after, limit } => {
            let client = connect(ConnectAs::Saved).await?;
            let reply = client.users(&UsersRequest { after, limit: Some(limit) }).await?;
            let mut text: Vec<String> = reply
                .users
                .iter()
                .map(|u| format!("{:<32} {:<8} since {}", u.name, u.role, crate::utc(u.created_ms)))
                .collect();
            if reply.more {
                text.push("(more: --after <last name>)".to_owned());
            }
            print(serde_json::to_value(&reply)?, text.join("\n"));
        }
        AccountCommand::Role { name, role } => {
            let client = connect(ConnectAs::Saved).await?;
            let user = client.set_role(&name, &role).await?;
            print(serde_json::to_value(&user)?, format!("{} is now {}", user.name, user.role));
        }
    }
    Ok(())
}
