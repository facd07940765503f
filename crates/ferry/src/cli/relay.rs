//! `ferry relay -c relay.toml`: a database's changes to HTTP endpoints (see `ferry_relay`).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use ferry_core::Result;

use super::migrate::Listen;
use crate::connect::Endpoint;
use crate::settings::DEFAULT_NETWORK_TIMEOUT_SECONDS;
use crate::signals::shutdown_on_signals;

pub async fn run(config: &Path, listen: Listen) -> Result<ExitCode> {
    let config = ferry_relay::config::load(config, &|name| std::env::var(name).ok())?;
    let source = Endpoint::parse(
        &config.source_url,
        config.source_password.as_deref(),
        Duration::from_secs(DEFAULT_NETWORK_TIMEOUT_SECONDS),
    )
    .map_err(|error| error.context("source"))?;
    eprintln!(
        "relay '{}': {} to {} route(s); log {}",
        config.name,
        source.describe(),
        config.routes.len(),
        config.log_path.display()
    );
    let listen = ferry_relay::Listen {
        address: listen.address,
        token: listen.token,
    };
    ferry_relay::run(config, source.source(), listen, shutdown_on_signals()).await?;
    Ok(ExitCode::SUCCESS)
}
