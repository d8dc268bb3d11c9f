//! `agora-auth`: users, passwords and tokens, and the NATS server's auth callout.

use agora_nats::auth::{self, AuthConfig};
use agora_nats::connection::NatsArgs;
use agora_nats::telemetry;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora auth: sign-up, sign-in, tokens; decides who every connecting person is.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    auth: AuthConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-auth").await?;
    telemetry::observe(&client, "auth", &telemetry::process_instance());
    // The system account's user that closes connections whose credentials ended.
    let kicker = match (&args.auth.kick_user, &args.auth.kick_password) {
        (Some(user), Some(password)) => {
            let kick = NatsArgs::user(args.nats.server.clone(), user, password)
                .with_tls_ca(args.nats.tls_ca.clone());
            Some(telemetry::connect(&kick, "agora-auth-kick").await?)
        }
        _ => None,
    };
    auth::run(client, kicker, args.auth, telemetry::shutdown_signal()).await
}
