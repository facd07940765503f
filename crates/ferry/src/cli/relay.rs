//! `ferry relay -c relay.toml`: a database's changes to HTTP endpoints (see `ferry_relay`).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use ferry_core::Result;

use super::migrate::Listen;
use crate::connect::Endpoint;
use crate::settings::DEFAULT_NETWORK_TIMEOUT_SECONDS;
use crate::signals::shutdown_on_signals;

pub(super) async fn run(config: &Path, listen: Listen) -> Result<ExitCode> {
    let config = ferry_relay::config::load(config, &|name| std::env::var(name).ok())?;
    let listen = ferry_relay::Listen {
        address: listen.address,
        token: listen.token,
    };
    if config.source_url.starts_with("kafka://") {
        return run_kafka(config, listen).await;
    }
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
        config.log.describe()
    );
    let input = ferry_relay::Input::Database(source.source());
    let log_connect = log_connect(&config)?;
    ferry_relay::run(config, input, log_connect, listen, shutdown_on_signals()).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "kafka")]
async fn run_kafka(
    config: ferry_relay::config::RelayConfig,
    listen: ferry_relay::Listen,
) -> Result<ExitCode> {
    use ferry_relay::kafka::{KafkaInput, Start};
    let start = if config.source_start_latest {
        Start::Latest
    } else {
        Start::Earliest
    };
    let input = KafkaInput::parse(&config.source_url, config.source_options.clone(), start)
        .map_err(|error| error.context("source"))?;
    eprintln!(
        "relay '{}': Kafka {} to {} route(s); log {}",
        config.name,
        input.bootstrap,
        config.routes.len(),
        config.log.describe()
    );
    let log_connect = log_connect(&config)?;
    ferry_relay::run(
        config,
        ferry_relay::Input::Kafka(input),
        log_connect,
        listen,
        shutdown_on_signals(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "kafka"))]
async fn run_kafka(
    _: ferry_relay::config::RelayConfig,
    _: ferry_relay::Listen,
) -> Result<ExitCode> {
    Err(ferry_core::Error::operator(
        "config.unsupported_engine",
        "this ferry was built without Kafka support",
    )
    .with_hint("build it with the kafka feature: cargo build --release --features kafka"))
}

/// Opens connections to a PostgreSQL delivery log (TLS and session settings as for every
/// PostgreSQL connection ferry makes); None for a SQLite log.
fn log_connect(
    config: &ferry_relay::config::RelayConfig,
) -> Result<Option<ferry_relay::log::postgres::Connect>> {
    let ferry_relay::config::LogLocation::Postgres { url, password } = &config.log else {
        return Ok(None);
    };
    let store = Endpoint::parse(
        url,
        password.as_deref(),
        Duration::from_secs(DEFAULT_NETWORK_TIMEOUT_SECONDS),
    )
    .map_err(|error| error.context("log"))?;
    let connect = store.client_factory()?;
    Ok(Some(std::sync::Arc::new(move || {
        let connect = connect.clone();
        Box::pin(async move {
            connect()
                .await
                .map_err(|error| error.context("the delivery log"))
        })
    })))
}
