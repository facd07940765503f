//! What depends on the pair of databases a migration joins: how a source is read for a given
//! target, how rows are compared between them, and which pairs cannot switch over.

use std::sync::Arc;

use ferry_core::connector::Inspector;
use ferry_core::{Error, Result};

use super::Endpoint;
use crate::mysql::{require_same_flavor, server_identity, MysqlInspector};
use crate::portable::{MysqlText, PostgresText};
use crate::postgres::PostgresInspector;

/// The source prepared for this target: PostgreSQL cannot take MySQL's generation
/// expressions, so their values travel instead.
pub fn pair(source: Endpoint, target: &Endpoint) -> (Endpoint, Endpoint) {
    let source = match (source, target) {
        (Endpoint::Mysql(config), Endpoint::Postgres(_)) => {
            Endpoint::Mysql(config.with_generated_columns_materialized())
        }
        (source, _) => source,
    };
    (source, target.clone())
}

/// How rows of a pair are compared: by each side's row reader, natively for two databases of
/// one engine, in a portable text form across engines.
pub struct Comparison {
    pub source_rows: Box<dyn Inspector>,
    pub target_rows: Box<dyn Inspector>,
    /// The two render rows in the portable form: whole tables are compared (the engines order
    /// text keys differently) and column types are not.
    pub portable: bool,
    /// The target holds tables under their table name alone (a MySQL database holds no
    /// schemas), so source tables are matched to target tables by name.
    pub match_by_table_name: bool,
}

/// The row readers `verify` (and the re-verification at a cutover's fence) compare.
pub async fn comparison(source: &Endpoint, target: &Endpoint) -> Result<Comparison> {
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
                Box::new(MysqlInspector::portable_source(
                    source.clone(),
                    Arc::new(MysqlText),
                )),
                Box::new(PostgresInspector::portable_target(
                    target.clone(),
                    Arc::new(PostgresText),
                )),
            ),
            (Endpoint::Postgres(source), Endpoint::Mysql(target)) => (
                Box::new(PostgresInspector::portable_source(
                    source.clone(),
                    Arc::new(PostgresText),
                )),
                Box::new(MysqlInspector::portable_target(
                    target.clone(),
                    Arc::new(MysqlText),
                )),
            ),
        };
    let portable = !source.same_engine(target);
    Ok(Comparison {
        source_rows,
        target_rows,
        portable,
        match_by_table_name: portable && matches!(target, Endpoint::Mysql(_)),
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
