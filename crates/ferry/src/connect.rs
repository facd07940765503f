//! Turning settings into connectors (through the registry, which knows the URL schemes).

use ferry_connectors::mysql::{
    require_same_flavor, server_identity, MysqlConfig, MysqlControl, MysqlInspector, MysqlSink,
    MysqlSource,
};
use ferry_connectors::postgres::{
    ConnectionConfig, PostgresControl, PostgresInspector, PostgresSink, PostgresSource,
};
use ferry_connectors::registry::{engine_of, Engine};
use ferry_core::connector::{Inspector, Sink, Source, Switchover};
use ferry_core::{Error, Result};
use ferry_engine::verify::VerifyOptions;

use crate::settings::Settings;

/// One side of a migration. (Built a couple of times per command: its size does not matter.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Endpoint {
    Postgres(ConnectionConfig),
    Mysql(MysqlConfig),
}

impl Endpoint {
    /// The connector a URL names (`postgres://`, `mysql://`), with its password.
    pub fn parse(
        url: &str,
        password: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<Endpoint> {
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

    /// Its part in a switch-over (fence, phase record, stream liveness).
    pub fn control(&self) -> Box<dyn Switchover> {
        match self {
            Endpoint::Postgres(config) => Box::new(PostgresControl::new(config.clone())),
            Endpoint::Mysql(config) => Box::new(MysqlControl::new(config.clone())),
        }
    }

    /// Whether both are the same kind of database.
    pub fn same_engine(&self, other: &Endpoint) -> bool {
        matches!(
            (self, other),
            (Endpoint::Postgres(_), Endpoint::Postgres(_))
                | (Endpoint::Mysql(_), Endpoint::Mysql(_))
        )
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
    // PostgreSQL cannot take MySQL's generation expressions: their values travel instead.
    let source = match (source, &target) {
        (Endpoint::Mysql(config), Endpoint::Postgres(_)) => {
            Endpoint::Mysql(config.with_generated_columns_materialized())
        }
        (source, _) => source,
    };
    Ok((source, target))
}

/// What verification compares: the source (for its catalog) and the row readers of both sides.
pub struct VerifySides {
    pub source: Box<dyn Source>,
    pub source_rows: Box<dyn Inspector>,
    pub target_rows: Box<dyn Inspector>,
    /// How this pair compares (whole tables and no type comparison across engines).
    pub options: VerifyOptions,
}

/// The readers `verify` (and the re-verification at a cutover's fence) compare for this pair:
/// same-engine pairs compare natively, pairs across engines in a portable text form.
pub async fn verify_sides(source: &Endpoint, target: &Endpoint) -> Result<VerifySides> {
    let (source_rows, target_rows): (Box<dyn Inspector>, Box<dyn Inspector>) =
        match (source, target) {
            (Endpoint::Postgres(source), Endpoint::Postgres(target)) => (
                Box::new(PostgresInspector::source(source.clone())),
                Box::new(PostgresInspector::target(target.clone())),
            ),
            (Endpoint::Mysql(source), Endpoint::Mysql(target)) => {
                require_same_flavor(source, target).await?;
                (
                    Box::new(MysqlInspector::source(source.clone())),
                    Box::new(MysqlInspector::target(target.clone(), source.database())),
                )
            }
            (Endpoint::Mysql(source), Endpoint::Postgres(target)) => (
                Box::new(MysqlInspector::portable_source(source.clone())),
                Box::new(PostgresInspector::portable_target(target.clone())),
            ),
            (Endpoint::Postgres(source), Endpoint::Mysql(target)) => (
                Box::new(PostgresInspector::portable_source(source.clone())),
                Box::new(MysqlInspector::portable_target(target.clone())),
            ),
        };
    let across_engines = !source.same_engine(target);
    Ok(VerifySides {
        source: source.source(),
        source_rows,
        target_rows,
        options: VerifyOptions {
            // Across engines whole tables are compared: the engines order text keys differently.
            rows_per_range: if across_engines { u64::MAX } else { 50_000 },
            compare_types: !across_engines,
            match_by_table_name: matches!(target, Endpoint::Mysql(_)) && across_engines,
            ..VerifyOptions::default()
        },
    })
}

/// Refuses a switch-over between two databases of one MySQL server: its fence (`read_only`)
/// would block both.
pub async fn require_separate_servers(source: &Endpoint, target: &Endpoint) -> Result<()> {
    let (Endpoint::Mysql(source), Endpoint::Mysql(target)) = (source, target) else {
        return Ok(());
    };
    if server_identity(source).await? != server_identity(target).await? {
        return Ok(());
    }
    Err(Error::operator(
        "cutover.same_server",
        format!(
            "{} and {} are on the same MySQL server, whose write fence (read_only) covers both",
            source.describe(),
            target.describe()
        ),
    )
    .with_hint("move to a database on another server, or switch applications over by hand once `ferry status` shows no lag"))
}

/// Refuses a switch-over for a migration with transforms: the reverse stream would have to undo
/// them.
pub fn require_no_transforms(settings: &Settings) -> Result<()> {
    if settings.transforms.is_empty() {
        return Ok(());
    }
    Err(Error::operator(
        "config.unsupported",
        "switching over is not available for migrations with [[transform]] rules yet",
    )
    .with_hint("the reverse stream would have to undo the renames, dropped columns and filters; switch applications over by hand once `ferry status` shows no lag"))
}
