//! Turning settings into connectors (through the registry, which knows the URL schemes).

use ferry_connectors::mysql::{MysqlConfig, MysqlSink, MysqlSource};
use ferry_connectors::postgres::{ConnectionConfig, PostgresSink, PostgresSource};
use ferry_connectors::registry::{engine_of, Engine};
use ferry_core::connector::{Sink, Source};
use ferry_core::{Error, Result};

use crate::settings::Settings;

/// One side of a migration.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Postgres(ConnectionConfig),
    Mysql(MysqlConfig),
}

impl Endpoint {
    fn parse(url: &str, password: Option<&str>, timeout: std::time::Duration) -> Result<Endpoint> {
        Ok(match engine_of(url)? {
            Engine::Postgres => Endpoint::Postgres(
                ConnectionConfig::parse(url, password)?.with_network_timeout(timeout),
            ),
            Engine::Mysql => {
                Endpoint::Mysql(MysqlConfig::parse(url, password)?.with_network_timeout(timeout))
            }
        })
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

    pub fn postgres(&self) -> Option<&ConnectionConfig> {
        match self {
            Endpoint::Postgres(config) => Some(config),
            Endpoint::Mysql(_) => None,
        }
    }
}

/// The source and target of the settings.
pub fn endpoints(settings: &Settings) -> Result<(Endpoint, Endpoint)> {
    let source = Endpoint::parse(
        &settings.source_url,
        settings.source_password.as_deref(),
        settings.network_timeout,
    )
    .map_err(|error| error.context("source"))?;
    let target = Endpoint::parse(
        &settings.target_url,
        settings.target_password.as_deref(),
        settings.network_timeout,
    )
    .map_err(|error| error.context("target"))?;
    Ok((source, target))
}

/// The source and target connection configs of a PostgreSQL-to-PostgreSQL migration, for the
/// commands that need both sides to be PostgreSQL (`verify`, `cutover`, `rollback`, `finish`).
pub fn configs(settings: &Settings) -> Result<(ConnectionConfig, ConnectionConfig)> {
    match endpoints(settings)? {
        (Endpoint::Postgres(source), Endpoint::Postgres(target)) => Ok((source, target)),
        _ => Err(Error::operator(
            "config.unsupported_engine",
            "this command supports PostgreSQL to PostgreSQL migrations only for now",
        )
        .with_hint("for MySQL/MariaDB pairs use `ferry check`, `copy`, `run` and `status`; see docs/mysql.md for what is not supported yet")),
    }
}
