//! Connection settings: a `mysql://` (or `mariadb://`) URL, an optional password from elsewhere,
//! and a description of the server that never contains the password.

use std::time::Duration;

use ferry_core::{Error, Result};
use mysql_async::{Opts, OptsBuilder};

/// How to reach one MySQL or MariaDB database.
#[derive(Clone)]
pub struct MysqlConfig {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    database: String,
    network_timeout: Duration,
    tls: MysqlTls,
    /// Generated columns are read as plain ones (for a target of another engine, which cannot
    /// take MySQL's expressions): their values travel, their expressions do not.
    materialize_generated: bool,
    /// Whether the copy's loads go to the target's binary log (`copy-binlog=off` in the URL
    /// keeps them out; see [`MysqlConfig::copy_binlog`]).
    copy_binlog: bool,
}

/// TLS as the MySQL client spells it in the URL: `ssl-mode` (`DISABLED` (the default),
/// `PREFERRED`, `REQUIRED`, `VERIFY_IDENTITY`; `VERIFY_CA` is refused for now), `ssl-ca` (the CA to trust; else the
/// public web roots), `ssl-cert` and `ssl-key` (a client certificate). `PREFERRED` and `REQUIRED`
/// encrypt without checking who answers, `VERIFY_CA` checks the chain, `VERIFY_IDENTITY` the
/// chain and the host name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MysqlTls {
    pub mode: MysqlSslMode,
    pub ca: Option<std::path::PathBuf>,
    pub certificate: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum MysqlSslMode {
    #[default]
    Disabled,
    Preferred,
    Required,
    VerifyIdentity,
}

impl MysqlTls {
    fn parse(query: &str) -> Result<MysqlTls> {
        let mut tls = MysqlTls::default();
        for parameter in parameters(query) {
            let (key, value) = parameter?;
            match key.as_str() {
                "ssl-mode" | "sslmode" => tls.mode = match value
                    .to_ascii_uppercase()
                    .replace('-', "_")
                    .as_str()
                {
                    "DISABLED" | "DISABLE" => MysqlSslMode::Disabled,
                    "PREFERRED" | "PREFER" => MysqlSslMode::Preferred,
                    "REQUIRED" | "REQUIRE" => MysqlSslMode::Required,
                    "VERIFY_CA" => return Err(Error::operator(
                        "config.url",
                        "ssl-mode=VERIFY_CA is not supported yet",
                    )
                    .with_hint(
                        "use ssl-mode=VERIFY_IDENTITY (the chain and the host name), or REQUIRED",
                    )),
                    "VERIFY_IDENTITY" | "VERIFY_FULL" => MysqlSslMode::VerifyIdentity,
                    _ => return Err(Error::operator(
                        "config.url",
                        format!("ssl-mode={value} is not a TLS mode"),
                    )
                    .with_hint(
                        "use ssl-mode=DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY",
                    )),
                },
                "ssl-ca" => tls.ca = Some(value.into()),
                "ssl-cert" => tls.certificate = Some(value.into()),
                "ssl-key" => tls.key = Some(value.into()),
                // Other driver parameters are left as they always were: ignored (and never
                // echoed: a part of a password could look like one).
                _ => {}
            }
        }
        if tls.certificate.is_some() != tls.key.is_some() {
            return Err(Error::operator(
                "config.url",
                "a client certificate needs both ssl-cert and ssl-key",
            )
            .with_hint("give both paths (PEM files), or neither"));
        }
        for path in [&tls.ca, &tls.certificate, &tls.key].into_iter().flatten() {
            if std::fs::metadata(path).is_err() {
                return Err(Error::operator(
                    "config.tls",
                    format!("the TLS file {} cannot be read", path.display()),
                )
                .with_hint("give the path of a readable PEM file"));
            }
        }
        Ok(tls)
    }

    /// The driver's TLS options (`None`: plain).
    fn ssl_opts(&self) -> Option<mysql_async::SslOpts> {
        if self.mode == MysqlSslMode::Disabled {
            return None;
        }
        // The driver builds its rustls configuration with the process's provider.
        ferry_sql::install_tls_provider();
        let mut options = mysql_async::SslOpts::default()
            .with_danger_accept_invalid_certs(matches!(
                self.mode,
                MysqlSslMode::Preferred | MysqlSslMode::Required
            ))
            .with_danger_skip_domain_validation(self.mode != MysqlSslMode::VerifyIdentity);
        if let Some(ca) = &self.ca {
            // Only this CA: the public roots would let any public certificate through.
            options = options
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        if let (Some(certificate), Some(key)) = (&self.certificate, &self.key) {
            options = options.with_client_identity(Some(mysql_async::ClientIdentity::new(
                certificate.clone().into(),
                key.clone().into(),
            )));
        }
        Some(options)
    }
}

impl std::fmt::Debug for MysqlConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "MysqlConfig({})", self.describe())
    }
}

fn url_error(message: &str) -> Error {
    Error::operator("config.url", format!("the MySQL URL is malformed: {message}")).with_hint(
        "write it as mysql://user@host:3306/database; percent-encode special characters in the password",
    )
}

/// The URL's parameters as (name, value): the name in lower case with `_` read as `-`, the
/// value `%XX`-decoded.
fn parameters(query: &str) -> impl Iterator<Item = Result<(String, String)>> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((
                key.to_ascii_lowercase().replace('_', "-"),
                percent_decode(value)?,
            ))
        })
}

/// The URL's `copy-binlog` parameter: `on` (the default) or `off`.
fn copy_binlog(query: &str) -> Result<bool> {
    let mut logged = true;
    for parameter in parameters(query) {
        let (key, value) = parameter?;
        if key != "copy-binlog" {
            continue;
        }
        logged = match value.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" => true,
            "off" | "false" | "0" => false,
            other => {
                return Err(Error::operator(
                    "config.url",
                    format!("copy-binlog={other} is neither on nor off"),
                )
                .with_hint("write copy-binlog=off to keep the copy out of the target's binary log, or leave it out"))
            }
        };
    }
    Ok(logged)
}

/// Decodes `%XX` escapes ([`ferry_sql::syntax::percent_decode`]), or says the URL is malformed.
fn percent_decode(text: &str) -> Result<String> {
    ferry_sql::syntax::percent_decode(text)
        .ok_or_else(|| url_error("a % escape is incomplete, or an escaped part is not UTF-8"))
}

impl MysqlConfig {
    /// Parses `mysql://user[:password]@host[:port]/database`. A `password` given here (say,
    /// from the environment) replaces one in the URL. Errors never quote the URL.
    pub fn parse(url: &str, password: Option<&str>) -> Result<MysqlConfig> {
        let (_, rest) = url
            .split_once("://")
            .ok_or_else(|| url_error("it has no scheme"))?;
        // The query starts after the credentials (a password may hold a '?').
        let after_credentials = rest.rfind('@').map_or(0, |at| at + 1);
        let (rest, query) = match rest[after_credentials..].find('?') {
            Some(question) => (
                &rest[..after_credentials + question],
                &rest[after_credentials + question + 1..],
            ),
            None => (rest, ""),
        };
        let tls = MysqlTls::parse(query)?;
        let copy_binlog = copy_binlog(query)?;
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, authority),
        };
        let (user, url_password) = match credentials {
            Some(credentials) => match credentials.split_once(':') {
                Some((user, password)) => (percent_decode(user)?, Some(percent_decode(password)?)),
                None => (percent_decode(credentials)?, None),
            },
            None => ("root".to_string(), None),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || address.starts_with('[') => (
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port.parse::<u16>()
                    .map_err(|_| url_error("the port is not a number"))?,
            ),
            _ => (address.to_string(), 3306),
        };
        // An '@' in a parameter (`ssl-ca=/certs/a@b.pem`) is read as the credentials' end, and the
        // parameters then land in the database name: refused rather than silently dropped.
        if database.contains('?') {
            return Err(url_error("an '@' after the database name is taken for the credentials' end")
                .with_hint("percent-encode '@' in parameters as %40: mysql://user@host:3306/database?ssl-ca=/certs/a%40b.pem"));
        }
        let database = percent_decode(database)?;
        if database.is_empty() {
            return Err(url_error("it names no database")
                .with_hint("add the database to the URL: mysql://user@host:3306/database"));
        }
        Ok(MysqlConfig {
            host: if host.is_empty() {
                "localhost".into()
            } else {
                host
            },
            port,
            user,
            password: password.map(str::to_string).or(url_password),
            database,
            network_timeout: Duration::from_secs(90),
            tls,
            materialize_generated: false,
            copy_binlog,
        })
    }

    /// False when the URL says `copy-binlog=off`: as a target, the copy's loads run with
    /// `sql_log_bin = 0`, so the copied rows never reach the target's binary log (what
    /// `myloader` does unless told `--enable-binlog`). Faster, and harmless for a target whose
    /// binary log nobody replays (ferry's own reverse stream starts at the cutover); a replica
    /// of the target would miss the copied rows, and so would the other members of a cluster
    /// that replicates through the binary log. Streamed changes, schema statements and table
    /// states are logged either way; the copy's chunk marks are not (they commit with the
    /// rows). Needs `BINLOG ADMIN` (MariaDB), `SUPER` or `SESSION_VARIABLES_ADMIN` (MySQL).
    pub fn copy_binlog(&self) -> bool {
        self.copy_binlog
    }

    /// How long a connection may stay silent before it counts as lost.
    pub fn with_network_timeout(mut self, timeout: Duration) -> Self {
        self.network_timeout = timeout;
        self
    }

    pub(crate) fn network_timeout(&self) -> Duration {
        self.network_timeout
    }

    /// `user@host:port/database`, safe to print.
    pub fn describe(&self) -> String {
        format!(
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    /// With generated columns read as plain ones (see the field).
    pub fn with_generated_columns_materialized(mut self) -> Self {
        self.materialize_generated = true;
        self
    }

    pub(crate) fn materializes_generated(&self) -> bool {
        self.materialize_generated
    }

    /// The account ferry logs in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub(crate) fn tls(&self) -> &MysqlTls {
        &self.tls
    }

    /// Driver options: no database selected when `with_database` is false (to create it);
    /// without TLS when `plain` (a `PREFERRED` server that offers none).
    pub(crate) fn options(&self, with_database: bool, plain: bool) -> Opts {
        let builder = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .db_name(with_database.then(|| self.database.clone()))
            .prefer_socket(false)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .tcp_nodelay(true)
            .stmt_cache_size(64)
            .wait_timeout(Some(28_800))
            .setup(session_setup())
            .local_infile_handler(Some(super::infile::serve_registered))
            .ssl_opts(if plain { None } else { self.tls.ssl_opts() });
        builder.into()
    }
}

/// Statements every ferry session runs first.
fn session_setup() -> Vec<String> {
    vec![
        "SET NAMES utf8mb4".into(),
        "SET time_zone = '+00:00'".into(),
        // The server's info lines (`Records: 3  Deleted: 1  Skipped: 0  Warnings: 0` after a
        // load) are read, so they must not be translated.
        "SET SESSION lc_messages = 'en_US'".into(),
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,NO_BACKSLASH_ESCAPES'".into(),
        "SET SESSION group_concat_max_len = 1048576".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_at_sign_in_a_parameter_is_refused_not_dropped() {
        let error = MysqlConfig::parse(
            "mysql://app:s3cret@db/shop?ssl-mode=REQUIRED&ssl-ca=/certs/a@b.pem",
            None,
        )
        .unwrap_err();
        assert_eq!(error.code(), "config.url");
        assert!(!error.to_string().contains("s3cret"));
        let config =
            MysqlConfig::parse("mysql://app:s3cret@db/shop?copy-binlog=off&x=a%40b", None).unwrap();
        assert_eq!((config.database(), config.copy_binlog()), ("shop", false));
    }

    #[test]
    fn copy_binlog_is_on_unless_the_url_turns_it_off() {
        let parse = |url: &str| MysqlConfig::parse(url, None).map(|config| config.copy_binlog());
        assert!(parse("mysql://app@db/shop").unwrap());
        assert!(parse("mysql://app@db/shop?ssl-mode=DISABLED&copy-binlog=on").unwrap());
        assert!(!parse("mysql://app@db/shop?copy-binlog=off").unwrap());
        assert!(!parse("mysql://app@db/shop?ssl-mode=DISABLED&COPY_BINLOG=OFF").unwrap());
        let error = parse("mysql://app:s3cret@db/shop?copy-binlog=maybe").unwrap_err();
        assert_eq!(error.code(), "config.url");
        assert!(error.to_string().contains("copy-binlog=maybe"), "{error}");
        assert!(!error.to_string().contains("s3cret"));
    }

    #[test]
    fn parses_a_url_and_describes_it_without_the_password() {
        let config = MysqlConfig::parse("mysql://app:s%40cret@db.example:3307/shop", None).unwrap();
        assert_eq!(config.describe(), "app@db.example:3307/shop");
        assert_eq!(config.password.as_deref(), Some("s@cret"));
        assert!(!format!("{config:?}").contains("cret"));
        let other = MysqlConfig::parse("mariadb://app@db/shop", Some("x")).unwrap();
        assert_eq!((other.port, other.password.as_deref()), (3306, Some("x")));
        let error = MysqlConfig::parse("mysql://app:s3cret@db:port/shop", None).unwrap_err();
        assert_eq!(error.code(), "config.url");
        assert!(!error.to_string().contains("s3cret"));
        assert!(MysqlConfig::parse("mysql://app@db:3306", None).is_err());
    }
}
