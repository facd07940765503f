//! Opening sessions with pinned settings, so values read and written mean the same on every
//! connection: UTF-8 (utf8mb4) text, UTC time zone, strict SQL mode (a value that does not fit is
//! an error, never silently cut), and zero as an ordinary key value.

use ferry_core::Result;
use mysql_async::Conn;

use super::config::MysqlConfig;
use super::errors::classify;

/// A new session to the configured database (or to none, to create it).
pub(crate) async fn connect(config: &MysqlConfig, with_database: bool) -> Result<Conn> {
    let what = format!("connecting to {}", config.describe());
    let timeout = config
        .network_timeout()
        .min(std::time::Duration::from_secs(10));
    let attempt = |plain: bool| {
        tokio::time::timeout(timeout, Conn::new(config.options(with_database, plain)))
    };
    let mut outcome = attempt(false).await;
    // PREFERRED: a server that offers no TLS is spoken to in plain.
    if config.tls().mode == super::config::MysqlSslMode::Preferred
        && matches!(
            outcome,
            Ok(Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer
            )))
        )
    {
        outcome = attempt(true).await;
    }
    match outcome {
        Ok(result) => result.map_err(|error| classify(error, &what)),
        Err(_) => Err(ferry_core::Error::transient(
            "mysql.connection",
            format!("{what}: no answer within {} s", timeout.as_secs()),
        )
        .with_hint("check that the server is running and reachable at that host and port")),
    }
}

/// True when the server is MariaDB (else MySQL).
pub(crate) async fn is_mariadb(conn: &mut Conn) -> Result<bool> {
    use mysql_async::prelude::Queryable;
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|error| classify(error, "reading the server version"))?;
    Ok(version
        .unwrap_or_default()
        .to_ascii_lowercase()
        .contains("mariadb"))
}
