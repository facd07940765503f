//! Connection settings: a `postgres://` URL, an optional password from elsewhere, and a
//! description of the server that never contains the password.

use ferry_core::{Error, Result};
use tokio_postgres::config::Host;

/// How to reach one PostgreSQL database.
#[derive(Clone)]
pub struct ConnectionConfig {
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    user: String,
    database: String,
    network_timeout: std::time::Duration,
    tls: super::tls::TlsSettings,
    /// Built once from `tls` (files read at parse time, so a bad path is a settings error).
    tls_client: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ConnectionConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "ConnectionConfig({})", self.describe())
    }
}

impl ConnectionConfig {
    /// Parses a `postgres://user[:password]@host[:port]/database[?options]` URL. A `password`
    /// given here (say, from the environment) replaces one in the URL. Errors never quote the URL,
    /// which may hold a password.
    pub fn parse(url: &str, password: Option<&str>) -> Result<ConnectionConfig> {
        let (url_without_tls, mut tls) = super::tls::TlsSettings::split_url(url)?;
        let mut config: tokio_postgres::Config = url_without_tls.parse().map_err(|error: tokio_postgres::Error| {
            Error::operator("config.url", format!("the PostgreSQL URL is malformed: {}", redact(&error.to_string(), url)))
                .with_hint("write it as postgres://user@host:5432/database; percent-encode special characters in the password")
        })?;
        if let Some(password) = password {
            config.password(password);
        }
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => {
                config.host("localhost");
                "localhost".to_string()
            }
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config
            .get_user()
            .map(str::to_string)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
        let database = config
            .get_dbname()
            .map(str::to_string)
            .unwrap_or_else(|| user.clone());
        config.dbname(&database);
        config.application_name("ferry");
        config.connect_timeout(std::time::Duration::from_secs(10));
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config.keepalives_interval(std::time::Duration::from_secs(10));
        config.keepalives_retries(3);
        if tls.mode_given {
            config.ssl_mode(tls.postgres_mode());
        } else {
            // A key=value string's own sslmode (or tokio-postgres' default, prefer) stands.
            tls.mode = match config.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => super::tls::SslMode::Disable,
                tokio_postgres::config::SslMode::Require => super::tls::SslMode::Require,
                _ => super::tls::SslMode::Prefer,
            };
        }
        let tls_client = match tls.mode {
            super::tls::SslMode::Disable => None,
            _ => Some(tls.client_config()?),
        };
        Ok(ConnectionConfig {
            tls_client,
            config,
            host,
            port,
            user,
            database,
            network_timeout: std::time::Duration::from_secs(90),
            tls,
        })
    }

    /// Sets how long the change stream may stay silent before the connection counts as lost
    /// (also bounds connecting).
    pub fn with_network_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.network_timeout = timeout;
        self.config
            .connect_timeout(timeout.min(std::time::Duration::from_secs(10)));
        self
    }

    pub(crate) fn network_timeout(&self) -> std::time::Duration {
        self.network_timeout
    }

    /// `user@host:port/database`, safe to print.
    pub fn describe(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    pub(crate) fn client_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub(crate) fn tls(&self) -> &super::tls::TlsSettings {
        &self.tls
    }

    /// The rustls configuration of ordinary connections (`None`: `sslmode=disable`).
    pub(crate) fn tls_client(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.tls_client.clone()
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn database(&self) -> &str {
        &self.database
    }

    pub(crate) fn password(&self) -> String {
        self.config
            .get_password()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_default()
    }
}

/// Removes anything that looks like the URL's password from a message.
fn redact(message: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(credentials, _)| credentials.split_once(':'))
        .map(|(_, password)| password)
        .filter(|password| !password.is_empty());
    match password {
        Some(password) => message.replace(password, "********"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_url_and_describes_it_without_the_password() {
        let config =
            ConnectionConfig::parse("postgres://app:s3cret@db.example:6543/shop", None).unwrap();
        assert_eq!(config.describe(), "app@db.example:6543/shop");
        assert_eq!(config.password(), "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
        let overridden =
            ConnectionConfig::parse("postgres://app:s3cret@db.example/shop", Some("other"))
                .unwrap();
        assert_eq!(overridden.password(), "other");
        assert_eq!(overridden.port(), 5432);
    }

    #[test]
    fn a_malformed_url_is_refused_without_quoting_the_password() {
        let error = ConnectionConfig::parse("postgres://app:s3cret@db.example:notaport/shop", None)
            .unwrap_err();
        assert_eq!(error.code(), "config.url");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
}
