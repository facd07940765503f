//! Opening connections with pinned session settings.
//!
//! Every session ferry opens renders and parses values the same way, so text forms of values
//! read on one server mean exactly the same on the other: ISO dates, UTC, shortest exact floats,
//! hex bytea, UTF-8.

use std::sync::Arc;

use ferry_core::{Error, Result};
use tokio_postgres::{Client, NoTls};
use tracing::debug;

use super::config::ConnectionConfig;
use super::errors::classify;

/// Session settings applied to every connection (and, as startup options, to replication ones).
pub(crate) const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("search_path", ""),
];

/// Lifts the read-only default of a database that ferry fenced (marked by the `ferry.fence`
/// setting), for this session only.
const FENCE_OVERRIDE: &str = "SELECT set_config('default_transaction_read_only', 'off', false) WHERE coalesce(current_setting('ferry.fence', true), '') <> '';";

/// Runs a connection's I/O on a task of its own until it ends.
fn drive<F>(connection: F)
where
    F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
        + Send
        + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(error = %error, "connection ended");
        }
    });
}

/// Opens a connection, with the session settings applied (`search_path` is empty: name
/// every table with its schema).
pub async fn connect(config: &ConnectionConfig) -> Result<Client> {
    let what = format!("connecting to {}", config.describe());
    let connecting = async {
        let client = match config.tls_client() {
            None => {
                let (client, connection) = config
                    .client_config()
                    .connect(NoTls)
                    .await
                    .map_err(|error| classify(error, &what))?;
                drive(connection);
                client
            }
            Some(tls) => {
                match config
                    .client_config()
                    .connect(super::tls::MakeRustls(tls))
                    .await
                {
                    Ok((client, connection)) => {
                        drive(connection);
                        client
                    }
                    // `prefer`: a server whose TLS handshake fails is spoken to in plain, as
                    // before TLS was tried at all.
                    Err(error) if config.tls().mode == super::tls::SslMode::Prefer => {
                        debug!(error = %error, "TLS failed with sslmode=prefer; connecting without it");
                        let mut plain = config.client_config().clone();
                        plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
                        let (client, connection) = plain
                            .connect(NoTls)
                            .await
                            .map_err(|error| classify(error, &what))?;
                        drive(connection);
                        client
                    }
                    Err(error) => return Err(classify(error, &what)),
                }
            }
        };
        let mut settings: String = SESSION_SETTINGS
            .iter()
            .map(|(name, value)| format!("SET {name} = '{value}';"))
            .collect();
        // A database ferry fenced is read-only for applications, not for ferry.
        settings.push_str(FENCE_OVERRIDE);
        client
            .batch_execute(&settings)
            .await
            .map_err(|error| classify(error, &what))?;
        Ok(client)
    };
    // The driver's own timeout covers only the TCP connect; a peer that accepts and then says
    // nothing (a black-holed network) must not hang ferry.
    match tokio::time::timeout(config.network_timeout(), connecting).await {
        Ok(result) => result,
        Err(_) => Err(Error::transient(
            "postgres.connection",
            format!(
                "{what}: no answer within {} s",
                config.network_timeout().as_secs()
            ),
        )
        .with_hint("check that the server is running and reachable at that host and port")),
    }
}

/// One connection kept for small queries that are repeated (polling positions and phases), so
/// that they do not open a session on the server each time. Reopened when it breaks. Not for
/// queries that depend on settings read at session start (the fence marker).
pub(crate) struct ReusedConnection {
    config: ConnectionConfig,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl ReusedConnection {
    pub(crate) fn new(config: ConnectionConfig) -> Self {
        ReusedConnection {
            config,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The kept connection, opened (again) if there is none or it closed.
    pub(crate) async fn get(&self) -> Result<Arc<Client>> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|client| !client.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(connect(&self.config).await?);
        *slot = Some(client.clone());
        Ok(client)
    }
}

/// The same settings as startup `options` for a replication connection.
pub(crate) fn startup_options() -> String {
    SESSION_SETTINGS
        .iter()
        .filter(|(name, _)| *name != "search_path" && *name != "client_encoding")
        .map(|(name, value)| {
            format!(
                "-c {}={}",
                name.to_ascii_lowercase(),
                value.replace(", ", ",").replace(' ', "\\ ")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}
