//! Switching over on PostgreSQL: the write fence, stream removal and the switch-over record.
//!
//! The fence:
//! ```text
//!   ALTER DATABASE db SET default_transaction_read_only = on   -- new sessions cannot write
//!   ALTER DATABASE db SET ferry.fence = '<migration>@<epoch>'  -- ferry's sessions lift it
//!   pg_terminate_backend(every other client session, 5 s)      -- open write transactions end
//!   F = pg_current_wal_insert_lsn()                            -- every earlier commit is before F
//!   pg_logical_emit_message(false, 'ferry.fence', ...)         -- the stream moves past F now
//! ```
//! Sessions of ferry itself (application name `ferry...`) and replication connections are kept.
//! A session the server did not end within 5 s fails the fence (it could still commit after F).
//! The read-only default is a fence against applications, not a security boundary: a session can
//! still `SET default_transaction_read_only = off` on purpose.

use async_trait::async_trait;
use ferry_core::connector::Switchover;
use ferry_core::cutover::CutoverRecord;
use ferry_core::{Error, Lsn, Position, Result, TableName};
use tokio_postgres::Client;
use tracing::info;

use super::cdc::{origin_name, stream_name, FENCE_MESSAGE_PREFIX};
use super::config::ConnectionConfig;
use super::connection::{connect, ReusedConnection};
use super::ddl::{ident, literal};
use super::errors::classify;
use super::state;

/// The sessions a fence ends: other client sessions on this database that are not ferry's.
const OTHER_SESSIONS: &str = "datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND application_name NOT LIKE 'ferry%'";

/// One PostgreSQL database's part in a switch-over.
pub struct PostgresControl {
    config: ConnectionConfig,
    /// For the reads controllers and `ferry run` repeat (checkpoint, phase, slot activity).
    polling: ReusedConnection,
}

impl PostgresControl {
    pub fn new(config: ConnectionConfig) -> Self {
        PostgresControl {
            polling: ReusedConnection::new(config.clone()),
            config,
        }
    }

    async fn client(&self) -> Result<Client> {
        connect(&self.config).await
    }
}

async fn database_name(client: &Client) -> Result<String> {
    Ok(client
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(|error| classify(error, "reading the database name"))?
        .get(0))
}

/// Ends the sessions `select` lists (waiting up to 5 s for each); returns how many. The sessions
/// are listed first and ended in a second statement, so no plan can apply the termination to a
/// row the filter would have removed.
async fn end_sessions(
    client: &Client,
    select: &str,
    started: Option<f64>,
    what: &str,
) -> Result<usize> {
    let rows = match started {
        Some(started) => client.query(select, &[&started]).await,
        None => client.query(select, &[]).await,
    }
    .map_err(|error| classify(error, what))?;
    let pids: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
    if pids.is_empty() {
        return Ok(0);
    }
    // Signal all at once, then wait for them to be gone (the caller checks for survivors).
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS ended(pid)",
            &[&pids],
        )
        .await
        .map_err(|error| classify(error, what))?;
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(5) {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&pids],
            )
            .await
            .map_err(|error| classify(error, what))?
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(pids.len())
}

/// The fence marker's value: the migration and when the fence began (Unix seconds).
fn parse_marker(marker: &str) -> Option<(String, f64)> {
    let (migration, at) = marker.split_once('@')?;
    Some((migration.to_string(), at.parse().ok()?))
}

#[async_trait]
impl Switchover for PostgresControl {
    async fn check_switchover(&self) -> Result<()> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT rolsuper, current_setting('server_version_num')::int FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|error| classify(error, "reading the user's privileges"))?;
        let (superuser, version): (bool, i32) = (row.get(0), row.get(1));
        if version < 110000 {
            return Err(Error::operator(
                "cutover.version",
                format!(
                    "switching over needs PostgreSQL 11 or later ({} runs {})",
                    self.config.describe(),
                    version / 10000
                ),
            )
            .with_hint(
                "upgrade, or switch applications over by hand once `ferry status` shows no lag",
            ));
        }
        if superuser {
            return Ok(());
        }
        Err(Error::operator(
            "cutover.privilege",
            format!(
                "switching over needs a superuser on {} (user {} is not one)",
                self.config.describe(),
                self.config.user()
            ),
        )
        .with_hint("ferry fences writes with ALTER DATABASE ... SET, ends application sessions and tags its own writes with a replication origin; connect as a superuser for cutover and rollback"))
    }

    async fn lock_controller(
        &self,
        migration: &str,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>> {
        let client = self.client().await?;
        // Others hold it briefly (ferry run's cleanup) or for a whole switch: wait a little.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let locked = loop {
            let locked: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended('ferry.controller.' || $1, 0))",
                    &[&migration],
                )
                .await
                .map_err(|error| classify(error, "taking the controller lock"))?
                .get(0);
            if locked || std::time::Instant::now() > deadline {
                break locked;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        if !locked {
            return Err(Error::operator(
                "cutover.busy",
                format!(
                    "another cutover, rollback or finish of migration '{migration}' is running"
                ),
            )
            .with_hint(
                "wait for it to end (the lock goes with its connection, also when it crashes)",
            ));
        }
        // The session lock lives as long as this connection: keep the server from ending it.
        let _ = client.batch_execute("SET idle_session_timeout = 0").await;
        Ok(Box::new(client))
    }

    async fn fence(&self, migration: &str) -> Result<Position> {
        let client = self.client().await?;
        let what = format!("fencing writes on {}", self.config.describe());
        let database = database_name(&client).await?;
        let existing: Option<String> = client
            .query_one("SELECT current_setting('ferry.fence', true)", &[])
            .await
            .map_err(|error| classify(error, &what))?
            .get(0);
        // Keep the original start of a fence that is redone after a crash.
        let started: f64 = match existing.as_deref().and_then(parse_marker) {
            Some((_, at)) => at,
            None => client
                .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
                .await
                .map_err(|error| classify(error, &what))?
                .get(0),
        };
        let marker = format!("{migration}@{started}");
        client
            .batch_execute(&format!(
                "ALTER DATABASE {db} SET default_transaction_read_only = on; ALTER DATABASE {db} SET ferry.fence = {marker};",
                db = ident(&database),
                marker = literal(&marker)
            ))
            .await
            .map_err(|error| classify(error, &what))?;
        // Every session that existed before the fence committed must end; one that started
        // while the ALTER was committing may have missed it, so the cutoff is taken after it.
        let cutoff: f64 = client
            .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await
            .map_err(|error| classify(error, &what))?
            .get(0);
        let before_cutoff = format!("SELECT pid FROM pg_stat_activity WHERE {OTHER_SESSIONS} AND backend_start < to_timestamp($1::float8)");
        let mut ended = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut quiet_rounds = 0;
        // Until two listings 20 ms apart find nobody (a backend that read the settings before
        // the ALTER may show up in pg_stat_activity a moment later), or the deadline.
        while quiet_rounds < 2 && std::time::Instant::now() < deadline {
            let signalled = end_sessions(&client, &before_cutoff, Some(cutoff), &what).await?;
            ended += signalled;
            if signalled == 0 {
                quiet_rounds += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            } else {
                quiet_rounds = 0;
            }
        }
        let left = client
            .query(&before_cutoff, &[&cutoff])
            .await
            .map_err(|error| classify(error, &what))?
            .len();
        if left > 0 {
            return Err(Error::transient(
                "cutover.sessions_left",
                format!("{left} sessions did not end within 10 s of being terminated, so they could still write"),
            )
            .with_hint("they are probably stuck in a long statement; run the command again (or end them with pg_terminate_backend)"));
        }
        // A prepared transaction can still be committed (COMMIT PREPARED is allowed in a
        // read-only session) after the fence position: refuse.
        let prepared: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()",
                &[],
            )
            .await
            .map_err(|error| classify(error, &what))?
            .get(0);
        if prepared > 0 {
            return Err(Error::operator(
                "cutover.prepared_transactions",
                format!(
                    "{prepared} prepared transactions are pending on {}",
                    self.config.describe()
                ),
            )
            .with_hint(
                "commit or roll back them (pg_prepared_xacts lists them), then switch again",
            ));
        }
        let position: String = client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(|error| classify(error, &what))?
            .get(0);
        client
            .execute(
                "SELECT pg_logical_emit_message(false, $1, $2)",
                &[&FENCE_MESSAGE_PREFIX, &migration],
            )
            .await
            .map_err(|error| classify(error, &what))?;
        let position = Lsn::parse(&position).ok_or_else(|| {
            Error::definite(
                "source.position",
                format!("unreadable WAL position {position:?}"),
            )
        })?;
        info!(database = %database, sessions_ended = ended, %position, "writes fenced");
        Ok(Position::Postgres(position))
    }

    async fn unfence(&self, migration: &str) -> Result<()> {
        let client = self.client().await?;
        let what = format!("lifting the write fence on {}", self.config.describe());
        let database = database_name(&client).await?;
        let marker: Option<String> = client
            .query_one("SELECT current_setting('ferry.fence', true)", &[])
            .await
            .map_err(|error| classify(error, &what))?
            .get(0);
        if let Some((holder, _)) = marker.as_deref().and_then(parse_marker) {
            if holder != migration {
                info!(database = %database, holder = %holder, "the fence belongs to another migration; left as it is");
                return Ok(());
            }
        }
        client
            .batch_execute(&format!(
                "ALTER DATABASE {db} RESET default_transaction_read_only; ALTER DATABASE {db} RESET ferry.fence;",
                db = ident(&database)
            ))
            .await
            .map_err(|error| classify(error, &what))?;
        // Sessions opened while fenced keep their read-only default: end them so they reconnect.
        if let Some((_, started)) = marker.as_deref().and_then(parse_marker) {
            end_sessions(
                &client,
                &format!("SELECT pid FROM pg_stat_activity WHERE {OTHER_SESSIONS} AND backend_start >= to_timestamp($1::float8)"),
                Some(started),
                &what,
            )
            .await?;
        }
        info!(database = %database, "write fence lifted");
        Ok(())
    }

    async fn fenced_by(&self) -> Result<Option<String>> {
        let client = self.client().await?;
        let marker: Option<String> = client
            .query_one("SELECT current_setting('ferry.fence', true)", &[])
            .await
            .map_err(|error| classify(error, "reading the write fence"))?
            .get(0);
        Ok(marker
            .filter(|marker| !marker.is_empty())
            .map(|marker| match parse_marker(&marker) {
                Some((migration, _)) => migration,
                None => marker,
            }))
    }

    async fn stream_active(&self, migration: &str) -> Result<Option<bool>> {
        let client = self.polling.get().await?;
        let row = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
                &[&stream_name(migration)],
            )
            .await
            .map_err(|error| classify(error, "looking up the replication slot"))?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn drop_stream(&self, migration: &str) -> Result<()> {
        let client = self.client().await?;
        let what = format!("removing the change stream {}", stream_name(migration));
        if self.stream_active(migration).await? == Some(true) {
            return Err(Error::operator(
                "cutover.stream_in_use",
                format!("the change stream {} is being read", stream_name(migration)),
            )
            .with_hint("stop `ferry run` for this migration first"));
        }
        client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
                &[&stream_name(migration)],
            )
            .await
            .map_err(|error| classify(error, &what))?;
        client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                ident(&stream_name(migration))
            ))
            .await
            .map_err(|error| classify(error, &what))?;
        client
            .execute(
                "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1",
                &[&origin_name(migration)],
            )
            .await
            .map_err(|error| classify(error, &what))?;
        Ok(())
    }

    async fn applied_position(&self, migration: &str) -> Result<Option<Position>> {
        Ok(
            state::load_checkpoint(&*self.polling.get().await?, migration)
                .await?
                .map(|checkpoint| checkpoint.position),
        )
    }

    async fn load_cutover(&self, migration: &str) -> Result<CutoverRecord> {
        state::load_cutover(&*self.polling.get().await?, migration).await
    }

    async fn save_cutover(&self, migration: &str, record: &CutoverRecord) -> Result<()> {
        let client = self.client().await?;
        client
            .batch_execute(state::CREATE_STATE_TABLES)
            .await
            .map_err(|error| classify(error, "creating ferry's state tables"))?;
        state::save_cutover(&client, migration, record).await
    }

    async fn tables_changed_since(
        &self,
        migration: &str,
        within: std::time::Duration,
    ) -> Result<Vec<TableName>> {
        state::tables_changed_since(&self.client().await?, migration, within.as_secs_f64()).await
    }

    async fn last_verification_clean(&self, migration: &str) -> Result<Option<bool>> {
        let client = self.client().await?;
        let what = "reading the last verification";
        if !state::state_table_exists(&client, "verify_range", what).await? {
            return Ok(None);
        }
        let row = client
            .query_one(
                "SELECT count(*), count(outcome), count(*) FILTER (WHERE outcome IS NOT NULL AND (outcome::jsonb -> 'differences') <> '[]'::jsonb) FROM _ferry.verify_range WHERE migration = $1",
                &[&migration],
            )
            .await
            .map_err(|error| classify(error, what))?;
        let (ranges, checked, different): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        Ok(ferry_core::verify::verification_verdict(
            ranges, checked, different,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_markers_parse() {
        assert_eq!(
            parse_marker("shop@1700000000.25"),
            Some(("shop".to_string(), 1_700_000_000.25))
        );
        assert_eq!(parse_marker("shop"), None);
        assert_eq!(parse_marker("shop@soon"), None);
    }
}
