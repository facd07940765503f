//! The one place that names the databases ferry knows. From a connection URL it builds an
//! [`Endpoint`]: a bundle of the connector's capabilities (source, sink, switch-over control,
//! verification readers, preflight checks, the objects script), each handed out as a trait
//! object. The binary asks an endpoint for capabilities and never names a database; what
//! depends on the pair of databases (comparing rows across engines, the checks one engine
//! makes of another's definitions) is decided here too, in `pairs.rs` and `check.rs`.
//!
//! Adding a connector: a variant of [`Engine`] and [`Endpoint`], its URL schemes in
//! [`engine_of`], and one arm in each `match` here; see docs/connectors.md.

mod check;
mod pairs;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::check::Finding;
use ferry_core::connector::{Sink, Source, Switchover};
use ferry_core::schema::Catalog;
use ferry_core::{Error, Result, TableName};

use crate::mysql::{MysqlConfig, MysqlControl, MysqlSink, MysqlSource};
use crate::postgres::{ConnectionConfig, PostgresControl, PostgresSink, PostgresSource};

pub use check::{pair_findings, CheckRequest};
pub use pairs::{comparison, pair, require_separate_servers, Comparison};

/// The kind of system a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

/// Which engine a URL is for, from its scheme.
pub fn engine_of(url: &str) -> Result<Engine> {
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres") | Some("postgresql") => Ok(Engine::Postgres),
        Some("mysql") | Some("mariadb") => Ok(Engine::Mysql),
        Some(other) => Err(Error::operator(
            "config.unsupported_engine",
            format!("unknown database kind '{other}'"),
        )
        .with_hint(
            "use a URL like postgres://user@host:5432/database or mysql://user@host:3306/database",
        )),
        None => Err(
            Error::operator("config.url", "the connection string is not a URL")
                .with_hint("use a URL like postgres://user@host:5432/database"),
        ),
    }
}

/// One side of a migration: a connector and its connection settings (the password included,
/// never printed). Cheap to clone.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Endpoint {
    Postgres(ConnectionConfig),
    Mysql(MysqlConfig),
}

/// Opens a new client of the database an endpoint names (for stores that keep their own
/// tables there, such as the relay's delivery log).
pub type ClientFactory = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<tokio_postgres::Client>> + Send>> + Send + Sync,
>;

impl Endpoint {
    /// The connector a URL names, with its password and the network timeout of its sessions.
    pub fn parse(url: &str, password: Option<&str>, timeout: Duration) -> Result<Endpoint> {
        Ok(match engine_of(url)? {
            Engine::Postgres => Endpoint::Postgres(
                ConnectionConfig::parse(url, password)?.with_network_timeout(timeout),
            ),
            Engine::Mysql => {
                Endpoint::Mysql(MysqlConfig::parse(url, password)?.with_network_timeout(timeout))
            }
        })
    }

    /// A URL setting only a target takes (MySQL's `copy-binlog=off`), when this one has it: a
    /// source URL must not (the reverse stream writes into the source through it).
    pub fn target_only_setting(&self) -> Option<&'static str> {
        match self {
            Endpoint::Mysql(config) if !config.copy_binlog() => Some("copy-binlog=off"),
            _ => None,
        }
    }

    /// `user@host:port/database`, safe to print.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Postgres(config) => config.describe(),
            Endpoint::Mysql(config) => config.describe(),
        }
    }

    pub fn source(&self) -> Box<dyn Source> {
        match self {
            Endpoint::Postgres(config) => Box::new(PostgresSource::new(config.clone())),
            Endpoint::Mysql(config) => Box::new(MysqlSource::new(config.clone())),
        }
    }

    pub fn sink(&self) -> Box<dyn Sink> {
        match self {
            Endpoint::Postgres(config) => Box::new(PostgresSink::new(config.clone())),
            Endpoint::Mysql(config) => Box::new(MysqlSink::new(config.clone())),
        }
    }

    /// Its part in a switch-over (fence, phase record, stream liveness).
    pub fn control(&self) -> Box<dyn Switchover> {
        match self {
            Endpoint::Postgres(config) => Box::new(PostgresControl::new(config.clone())),
            Endpoint::Mysql(config) => Box::new(MysqlControl::new(config.clone())),
        }
    }

    /// Whether both are the same kind of database.
    pub fn same_engine(&self, other: &Endpoint) -> bool {
        self.engine() == other.engine()
    }

    fn engine(&self) -> Engine {
        match self {
            Endpoint::Postgres(_) => Engine::Postgres,
            Endpoint::Mysql(_) => Engine::Mysql,
        }
    }

    /// The source's triggers, views, routines, policies and grants that ferry does not create
    /// on a target, for the tables of `catalog`, as a script in this database's dialect.
    pub async fn objects_script(&self, catalog: &Catalog) -> Result<String> {
        match self {
            Endpoint::Postgres(config) => crate::postgres::objects_script(config, catalog).await,
            Endpoint::Mysql(config) => crate::mysql::objects_script(config, catalog).await,
        }
    }

    /// Warnings for source tables with a row filter whose logged updates may leave out
    /// unchanged values (a row entering the filter that way must be read from the source).
    pub async fn filtered_table_findings(&self, filtered: &[TableName]) -> Vec<Finding> {
        match self {
            Endpoint::Postgres(config) => {
                crate::postgres::partial_update_findings(config, filtered).await
            }
            // The binary log carries whole rows (binlog_row_image=FULL is checked).
            Endpoint::Mysql(_) => Vec::new(),
        }
    }

    /// Whether a process streams `migration` from this source now, as far as the source can
    /// tell (`None`: it cannot). `checkpoint_micros` is when the target last stored the
    /// stream's checkpoint; `retention` what [`Source::stream_retention`] said of the stream.
    pub async fn streaming(
        &self,
        migration: &str,
        checkpoint_micros: Option<i64>,
        retention: Option<&ferry_core::state::StreamRetention>,
    ) -> Option<bool> {
        match self {
            // The replication slot says whether a process reads it.
            Endpoint::Postgres(_) => retention.map(|slot| slot.active),
            // No slot: the stream's named lock on the source says whether one runs (a
            // checkpoint stored in the last 5 s says so too).
            Endpoint::Mysql(_) => {
                let locked =
                    self.control().stream_active(migration).await.ok().flatten() == Some(true);
                let now = ferry_core::calendar::unix_micros_now();
                checkpoint_micros.map(|at| locked || now - at < 5_000_000)
            }
        }
    }

    /// Opens clients of this database for a store that keeps its tables there (the relay's
    /// delivery log), with TLS and session settings as for every connection ferry makes.
    pub fn client_factory(&self) -> Result<ClientFactory> {
        match self {
            Endpoint::Postgres(config) => {
                let config = Arc::new(config.clone());
                Ok(Arc::new(move || {
                    let config = config.clone();
                    Box::pin(async move { crate::postgres::connect(&config).await })
                }))
            }
            Endpoint::Mysql(config) => Err(Error::operator(
                "config.unsupported_engine",
                format!("{} cannot hold this store", config.describe()),
            )
            .with_hint("give a postgres:// URL, or leave the url out for a SQLite file")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_engines() {
        assert_eq!(engine_of("postgres://a@b/c").unwrap(), Engine::Postgres);
        assert_eq!(engine_of("PostgreSQL://a@b/c").unwrap(), Engine::Postgres);
        assert_eq!(engine_of("mariadb://a@b/c").unwrap(), Engine::Mysql);
        assert_eq!(
            engine_of("oracle://a@b/c").unwrap_err().code(),
            "config.unsupported_engine"
        );
        assert_eq!(engine_of("host=x").unwrap_err().code(), "config.url");
    }
}
