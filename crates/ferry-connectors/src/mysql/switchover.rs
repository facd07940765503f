//! Switching over on MySQL and MariaDB: the write fence, the stream's liveness, and the
//! switch-over record in `_ferry`.
//!
//! The fence:
//! ```text
//!   INSERT INTO _ferry.fence (migration, started, previous read_only)  -- who fenced, and how to undo it
//!   SET GLOBAL read_only = ON        -- waits for running commits; later commits of application sessions fail
//!   KILL every session of another account (not replication, not the server's own threads)
//!   F = SHOW MASTER STATUS           -- every commit acknowledged before the fence ends before F
//!   UPDATE _ferry.fence              -- a transaction after F, so a stream reading the log moves past it
//! ```
//! `read_only` fences the whole server, not one database: every database on it refuses writes of
//! accounts without `READ_ONLY ADMIN` (MariaDB 10.5.2+) or `SUPER` / `CONNECTION_ADMIN` (MySQL).
//! ferry's own account keeps writing (its reverse stream applies there) and must hold that
//! privilege; so does any account that bypasses the fence, which `check_switchover` names.
//! Sessions of ferry's account are not ended: applications must not share it.
//!
//! A stream is "active" while a ferry process holds the named lock `ferry.stream.<sha1>` on the
//! server it reads (the binary log has no slot to look at).

use async_trait::async_trait;
use ferry_core::connector::Switchover;
use ferry_core::cutover::CutoverRecord;
use ferry_core::{Error, Position, Result, TableName};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::config::MysqlConfig;
use super::connection::{connect, is_mariadb};
use super::errors::classify;
use super::source::current_position;
use super::state;

/// The named lock a streaming process holds on its source (names are at most 64 characters).
pub(crate) const STREAM_LOCK: &str = "CONCAT('ferry.stream.', SHA1(?))";

/// The named lock a controller holds on the target.
const CONTROLLER_LOCK: &str = "CONCAT('ferry.controller.', SHA1(?))";

/// The sessions a fence ends: every client of another account, except replication and the
/// server's own threads.
const OTHER_SESSIONS: &str = "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER <> SUBSTRING_INDEX(CURRENT_USER(), '@', 1) AND USER NOT IN ('system user', 'event_scheduler', 'unauthenticated user') AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker')";

/// One MySQL or MariaDB server's part in a switch-over.
pub struct MysqlControl {
    config: MysqlConfig,
    /// A session reused by the frequent reads (checkpoint, phase, stream liveness).
    polling: Mutex<Option<Conn>>,
}

impl MysqlControl {
    pub fn new(config: MysqlConfig) -> Self {
        MysqlControl {
            config,
            polling: Mutex::new(None),
        }
    }

    /// Runs `read` on the reused session, opening it when needed and dropping it after an error.
    async fn poll<T, F>(&self, read: F) -> Result<T>
    where
        F: for<'c> FnOnce(
            &'c mut Conn,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T>> + Send + 'c>,
        >,
    {
        let mut held = self.polling.lock().await;
        if held.is_none() {
            *held = Some(connect(&self.config, false).await?);
        }
        let conn = held.as_mut().expect("opened above");
        let result = read(conn).await;
        if result.is_err() {
            *held = None;
        }
        result
    }

    async fn create_state(&self, conn: &mut Conn) -> Result<()> {
        for statement in state::CREATE_STATE {
            conn.query_drop(*statement)
                .await
                .map_err(|error| classify(error, "creating ferry's state tables"))?;
        }
        Ok(())
    }
}

/// The privileges a list of grants holds, upper case.
fn grants_text(grants: &[String]) -> String {
    grants.join(" ").to_ascii_uppercase()
}

/// What ferry's account lacks to fence and keep writing while fenced, if anything.
pub(crate) fn missing_fence_privileges(grants: &str, mariadb: bool) -> Vec<&'static str> {
    if grants.contains("ALL PRIVILEGES ON *.*") || grants.contains("SUPER") {
        return Vec::new();
    }
    let needed: &[&'static str] = if mariadb {
        &["READ_ONLY ADMIN", "CONNECTION ADMIN"]
    } else {
        &["SYSTEM_VARIABLES_ADMIN", "CONNECTION_ADMIN"]
    };
    needed
        .iter()
        .filter(|privilege| !grants.contains(**privilege))
        .copied()
        .collect()
}

/// The fence row: (migration, started at in Unix seconds, read_only before the fence).
type FenceRow = (String, f64, u8);

async fn fence_row(conn: &mut Conn) -> Result<Option<FenceRow>> {
    let what = "reading the write fence";
    let exists: Option<u8> = conn
        .query_first("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = '_ferry' AND TABLE_NAME = 'fence'")
        .await
        .map_err(|error| classify(error, what))?;
    if exists.is_none() {
        return Ok(None);
    }
    conn.query_first(
        "SELECT migration, started, previous_read_only FROM `_ferry`.`fence` WHERE id = 1",
    )
    .await
    .map_err(|error| classify(error, what))
}

/// Ends the sessions [`OTHER_SESSIONS`] lists and waits up to 10 s for them to be gone;
/// returns how many were ended, or an error naming those left.
async fn end_other_sessions(conn: &mut Conn, what: &str) -> Result<usize> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut ended = std::collections::BTreeSet::new();
    loop {
        let ids: Vec<u64> = conn
            .query(OTHER_SESSIONS)
            .await
            .map_err(|error| classify(error, what))?;
        if ids.is_empty() {
            return Ok(ended.len());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::transient(
                "cutover.sessions_left",
                format!("{} sessions did not end within 10 s of being killed, so they could still write", ids.len()),
            )
            .with_hint("they are probably stuck in a long statement; run the command again (or end them with KILL)"));
        }
        for id in ids {
            if ended.insert(id) {
                // Gone meanwhile: "Unknown thread id" (1094).
                match conn.query_drop(format!("KILL CONNECTION {id}")).await {
                    Err(mysql_async::Error::Server(error)) if error.code == 1094 => {}
                    other => other.map_err(|error| classify(error, what))?,
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[async_trait]
impl Switchover for MysqlControl {
    async fn check_switchover(&self) -> Result<()> {
        let mut conn = connect(&self.config, false).await?;
        let what = "reading the privileges";
        let mariadb = is_mariadb(&mut conn).await?;
        let grants: Vec<String> = conn
            .query("SHOW GRANTS")
            .await
            .map_err(|error| classify(error, what))?;
        let missing = missing_fence_privileges(&grants_text(&grants), mariadb);
        if !missing.is_empty() {
            return Err(Error::operator(
                "cutover.privilege",
                format!(
                    "switching over needs {} on {} (user {} lacks them)",
                    missing.join(" and "),
                    self.config.describe(),
                    self.config.user()
                ),
            )
            .with_hint(format!("ferry fences writes with SET GLOBAL read_only, ends application sessions and keeps writing its own changes while fenced: GRANT {} ON *.* TO the user (or SUPER)", missing.join(", "))));
        }
        // Every other account that can write through the fence: name them, the fence does not hold them.
        let bypass = if mariadb {
            "'SUPER', 'READ_ONLY ADMIN'"
        } else {
            "'SUPER', 'CONNECTION_ADMIN'"
        };
        let bypassing: Vec<String> = conn
            .query(format!(
                "SELECT DISTINCT GRANTEE FROM information_schema.USER_PRIVILEGES WHERE PRIVILEGE_TYPE IN ({bypass})
                 AND GRANTEE NOT LIKE CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@%')
                 AND GRANTEE NOT LIKE '''root''@%' AND GRANTEE NOT LIKE '''mariadb.sys''@%' AND GRANTEE NOT LIKE '''mysql.%''@%'"
            ))
            .await
            .unwrap_or_default();
        if !bypassing.is_empty() {
            warn!(accounts = %bypassing.join(", "), "these accounts can write through the read_only fence: make sure no application uses them");
        }
        Ok(())
    }

    async fn lock_controller(
        &self,
        migration: &str,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>> {
        let mut conn = connect(&self.config, false).await?;
        let locked: Option<i64> = conn
            .exec_first(
                format!("SELECT GET_LOCK({CONTROLLER_LOCK}, 5)"),
                (migration,),
            )
            .await
            .map_err(|error| classify(error, "taking the controller lock"))?
            .flatten();
        if locked != Some(1) {
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
        let _ = conn.query_drop("SET SESSION wait_timeout = 31536000").await;
        Ok(Box::new(conn))
    }

    async fn fence(&self, migration: &str) -> Result<Position> {
        let mut conn = connect(&self.config, false).await?;
        let what = format!("fencing writes on {}", self.config.describe());
        self.create_state(&mut conn).await?;
        match fence_row(&mut conn).await? {
            Some((holder, _, _)) if holder != migration => {
                return Err(Error::operator(
                    "cutover.fenced_by_other",
                    format!(
                        "{} is fenced by migration '{holder}'",
                        self.config.describe()
                    ),
                )
                .with_hint(format!("finish or roll back migration '{holder}' first")))
            }
            // Redone after a crash: keep the original start and what read_only was before.
            Some(_) => {}
            None => {
                conn.exec_drop(
                    "INSERT INTO `_ferry`.`fence` (id, migration, started, previous_read_only, touched) VALUES (1, ?, UNIX_TIMESTAMP(NOW(6)), @@GLOBAL.read_only, 0)",
                    (migration,),
                )
                .await
                .map_err(|error| classify(error, &what))?;
            }
        }
        // Waits for commits in progress; a long-held table lock fails the fence rather than hang.
        conn.query_drop("SET SESSION lock_wait_timeout = 10")
            .await
            .map_err(|error| classify(error, &what))?;
        conn.query_drop("SET GLOBAL read_only = ON")
            .await
            .map_err(|error| classify(error, &what))?;
        let ended = end_other_sessions(&mut conn, &what).await?;
        // XA transactions prepared before the fence could still be committed after F.
        let prepared: Vec<mysql_async::Row> = conn
            .query("XA RECOVER")
            .await
            .map_err(|error| classify(error, &what))?;
        if !prepared.is_empty() {
            return Err(Error::operator(
                "cutover.prepared_transactions",
                format!(
                    "{} prepared XA transactions are pending on {}",
                    prepared.len(),
                    self.config.describe()
                ),
            )
            .with_hint("commit or roll them back (XA RECOVER lists them), then switch again"));
        }
        let position = current_position(&mut conn).await?;
        // A transaction after F: the stream reading this log reaches F without waiting for a
        // heartbeat.
        conn.query_drop("UPDATE `_ferry`.`fence` SET touched = touched + 1 WHERE id = 1")
            .await
            .map_err(|error| classify(error, &what))?;
        info!(server = %self.config.describe(), sessions_ended = ended, %position, "writes fenced (read_only)");
        Ok(position)
    }

    async fn unfence(&self) -> Result<()> {
        let mut conn = connect(&self.config, false).await?;
        let what = format!("lifting the write fence on {}", self.config.describe());
        self.create_state(&mut conn).await?;
        let previous = fence_row(&mut conn)
            .await?
            .map(|(_, _, previous)| previous)
            .unwrap_or(0);
        conn.query_drop(format!(
            "SET GLOBAL read_only = {}",
            if previous != 0 { "ON" } else { "OFF" }
        ))
        .await
        .map_err(|error| classify(error, &what))?;
        // Removed last: a crash before leaves the fence on record, to be lifted again.
        conn.query_drop("DELETE FROM `_ferry`.`fence` WHERE id = 1")
            .await
            .map_err(|error| classify(error, &what))?;
        info!(server = %self.config.describe(), "write fence lifted");
        Ok(())
    }

    async fn fenced_by(&self) -> Result<Option<String>> {
        let mut conn = connect(&self.config, false).await?;
        Ok(fence_row(&mut conn)
            .await?
            .map(|(migration, _, _)| migration))
    }

    async fn stream_active(&self, migration: &str) -> Result<Option<bool>> {
        let migration = migration.to_string();
        self.poll(move |conn| {
            Box::pin(async move {
                let holder: Option<Option<u64>> = conn
                    .exec_first(format!("SELECT IS_USED_LOCK({STREAM_LOCK})"), (&migration,))
                    .await
                    .map_err(|error| classify(error, "looking up the stream's lock"))?;
                // Nothing on the server stands for a stream that nobody reads.
                Ok(holder.flatten().map(|_| true))
            })
        })
        .await
    }

    async fn drop_stream(&self, migration: &str) -> Result<()> {
        if self.stream_active(migration).await? == Some(true) {
            return Err(Error::operator(
                "cutover.stream_in_use",
                format!("the change stream of migration '{migration}' is being read"),
            )
            .with_hint("stop `ferry run` for this migration first"));
        }
        // The binary log keeps no per-reader state: nothing to remove.
        Ok(())
    }

    async fn applied_position(&self, migration: &str) -> Result<Option<Position>> {
        let migration = migration.to_string();
        self.poll(move |conn| {
            Box::pin(async move {
                Ok(state::load_checkpoint(conn, &migration)
                    .await?
                    .map(|checkpoint| checkpoint.position))
            })
        })
        .await
    }

    async fn load_cutover(&self, migration: &str) -> Result<CutoverRecord> {
        let migration = migration.to_string();
        self.poll(move |conn| Box::pin(async move { state::load_cutover(conn, &migration).await }))
            .await
    }

    async fn save_cutover(&self, migration: &str, record: &CutoverRecord) -> Result<()> {
        let mut conn = connect(&self.config, false).await?;
        self.create_state(&mut conn).await?;
        state::save_cutover(&mut conn, migration, record).await
    }

    /// Every table of the migration: the MySQL target does not note when each table last
    /// changed, so a re-verification at the fence covers them all.
    async fn tables_changed_since(
        &self,
        migration: &str,
        _within: std::time::Duration,
    ) -> Result<Vec<TableName>> {
        let mut conn = connect(&self.config, false).await?;
        Ok(state::load(&mut conn, migration)
            .await?
            .tables
            .into_keys()
            .collect())
    }

    async fn last_verification_clean(&self, migration: &str) -> Result<Option<bool>> {
        let mut conn = connect(&self.config, false).await?;
        let what = "reading the last verification";
        let exists: Option<u8> = conn
            .query_first("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = '_ferry' AND TABLE_NAME = 'verify_ranges'")
            .await
            .map_err(|error| classify(error, what))?;
        if exists.is_none() {
            return Ok(None);
        }
        let row: Option<(i64, i64, i64)> = conn
            .exec_first(
                "SELECT COUNT(*), COUNT(outcome), COALESCE(SUM(outcome IS NOT NULL AND JSON_LENGTH(outcome, '$.differences') > 0), 0) FROM `_ferry`.`verify_ranges` WHERE migration = ?",
                (migration,),
            )
            .await
            .map_err(|error| classify(error, what))?;
        let (ranges, checked, different) = row.unwrap_or_default();
        if ranges == 0 {
            return Ok(None);
        }
        Ok(Some(checked == ranges && different == 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_privileges_are_named() {
        assert!(missing_fence_privileges("GRANT ALL PRIVILEGES ON *.* TO `ROOT`", true).is_empty());
        assert!(missing_fence_privileges("GRANT SUPER ON *.* TO `FERRY`", false).is_empty());
        assert_eq!(
            missing_fence_privileges(
                "GRANT READ_ONLY ADMIN, REPLICATION SLAVE ON *.* TO `FERRY`",
                true
            ),
            vec!["CONNECTION ADMIN"]
        );
        assert_eq!(
            missing_fence_privileges("GRANT SELECT ON `SHOP`.* TO `FERRY`", false),
            vec!["SYSTEM_VARIABLES_ADMIN", "CONNECTION_ADMIN"]
        );
    }
}
