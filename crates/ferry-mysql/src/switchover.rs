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

use super::binlog::current_position;
use super::config::MysqlConfig;
use super::connection::{connect, is_mariadb};
use super::errors::classify;
use super::locks::{take_lock, STREAM_LOCK};
use super::state;

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

/// What tells one server from another (host name, port and data directory as the server sees
/// them): two databases of one migration on the same server cannot be fenced apart.
pub async fn server_identity(config: &MysqlConfig) -> Result<String> {
    let mut conn = connect(config, false).await?;
    let identity: Option<(String, u32, String)> = conn
        .query_first("SELECT @@hostname, @@port, @@datadir")
        .await
        .map_err(|error| classify(error, "reading the server's identity"))?;
    let _ = conn.disconnect().await;
    Ok(identity
        .map(|(host, port, directory)| format!("{host}:{port}:{directory}"))
        .unwrap_or_default())
}

/// The global privileges (`GRANT ... ON *.*`) of a `SHOW GRANTS` listing, upper case.
pub(crate) fn global_privileges(grants: &[String]) -> Vec<String> {
    grants
        .iter()
        .filter_map(|grant| {
            let upper = grant.to_ascii_uppercase();
            let list = upper.strip_prefix("GRANT ")?;
            let (list, on) = list.split_once(" ON ")?;
            on.trim_start().starts_with("*.*").then(|| {
                list.split(',')
                    .map(|privilege| privilege.trim().to_string())
                    .collect::<Vec<_>>()
            })
        })
        .flatten()
        .collect()
}

/// What ferry's account lacks to fence and keep writing while fenced, if anything. `version`
/// is the server's major and minor version (MariaDB 11.0 took READ_ONLY ADMIN out of SUPER).
pub(crate) fn missing_fence_privileges(
    privileges: &[String],
    mariadb: bool,
    version: (u32, u32),
) -> Vec<&'static str> {
    let has = |name: &str| {
        privileges
            .iter()
            .any(|held| held == name || held == "ALL PRIVILEGES" || held == "ALL")
    };
    let mut missing = Vec::new();
    if mariadb {
        let super_covers_read_only = version < (11, 0);
        if !has("READ_ONLY ADMIN") && (!super_covers_read_only || !has("SUPER")) {
            missing.push("READ_ONLY ADMIN");
        }
        if !has("CONNECTION ADMIN") && !has("SUPER") {
            missing.push("CONNECTION ADMIN");
        }
    } else {
        if !has("SYSTEM_VARIABLES_ADMIN") && !has("SUPER") {
            missing.push("SYSTEM_VARIABLES_ADMIN");
        }
        if !has("CONNECTION_ADMIN") && !has("SUPER") {
            missing.push("CONNECTION_ADMIN");
        }
    }
    missing
}

/// The server's version as (major, minor).
fn version_of(text: &str) -> (u32, u32) {
    let mut parts = text.split(|character: char| !character.is_ascii_digit());
    let major = parts.next().and_then(|part| part.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|part| part.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// The fence row: (migration, started at in Unix seconds, read_only before the fence).
type FenceRow = (String, f64, u8);

async fn fence_row(conn: &mut Conn) -> Result<Option<FenceRow>> {
    let what = "reading the write fence";
    if !state::table_exists(conn, "fence").await? {
        return Ok(None);
    }
    conn.query_first(
        "SELECT migration, started, previous_read_only FROM `_ferry`.`fence` WHERE id = 1",
    )
    .await
    .map_err(|error| classify(error, what))
}

/// Ends the sessions [`OTHER_SESSIONS`] lists now; returns how many. Listed once, after
/// `read_only` took effect: a session that connects later cannot write anyway (connection pools
/// reconnect at once, so waiting for none to be left would never end).
async fn end_other_sessions(conn: &mut Conn, what: &str) -> Result<usize> {
    let ids: Vec<u64> = conn
        .query(OTHER_SESSIONS)
        .await
        .map_err(|error| classify(error, what))?;
    end_sessions(conn, &ids, what).await?;
    Ok(ids.len())
}

/// Kills these sessions and waits up to 10 s for them to be gone.
async fn end_sessions(conn: &mut Conn, ids: &[u64], what: &str) -> Result<()> {
    for id in ids {
        // Gone meanwhile: "Unknown thread id" (1094).
        match conn.query_drop(format!("KILL CONNECTION {id}")).await {
            Err(mysql_async::Error::Server(error)) if error.code == 1094 => {}
            other => other.map_err(|error| classify(error, what))?,
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: Vec<u64> = conn
            .query("SELECT ID FROM information_schema.PROCESSLIST")
            .await
            .map_err(|error| classify(error, what))?;
        let left = ids.iter().filter(|id| left.contains(id)).count();
        if left == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::transient(
                "cutover.sessions_left",
                format!("{left} sessions did not end within 10 s of being killed, so they could still write"),
            )
            .with_hint("they are probably stuck in a long statement; run the command again (or end them with KILL)"));
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
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|error| classify(error, what))?;
        let grants: Vec<String> = conn
            .query("SHOW GRANTS")
            .await
            .map_err(|error| classify(error, what))?;
        let missing = missing_fence_privileges(
            &global_privileges(&grants),
            mariadb,
            version_of(&version.unwrap_or_default()),
        );
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
            .with_hint(format!("ferry fences writes with SET GLOBAL read_only, ends application sessions and keeps writing its own changes while fenced: GRANT {} ON *.* TO the user", missing.join(", "))));
        }
        // The fence refuses pending XA transactions: the list must be readable (MySQL 8 needs
        // XA_RECOVER_ADMIN for it).
        if let Err(error) = conn.query_drop("XA RECOVER").await {
            return Err(
                classify(error, "listing prepared XA transactions (XA RECOVER)")
                    .context(format!("switching over on {}", self.config.describe()))
                    .with_hint("GRANT XA_RECOVER_ADMIN ON *.* TO the user (MySQL 8)"),
            );
        }
        // Each side becomes a source (the old one now, the new one after the switch): its
        // binary log must carry full row images.
        for (name, wanted) in [
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
        ] {
            let value = super::preflight::variable(&mut conn, name)
                .await?
                .unwrap_or_default();
            if !value.eq_ignore_ascii_case(wanted) {
                return Err(Error::operator(
                    "cutover.binlog_setting",
                    format!("{} has {name} = '{value}'; after the switch it is streamed from, which needs {wanted}", self.config.describe()),
                )
                .with_hint(format!("set {name}={wanted} in the server configuration and restart it, then switch again")));
            }
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
        match take_lock(&self.config, CONTROLLER_LOCK, migration, 5).await? {
            Some(held) => Ok(Box::new(held)),
            None => Err(Error::operator(
                "cutover.busy",
                format!(
                    "another cutover, rollback or finish of migration '{migration}' is running"
                ),
            )
            .with_hint(
                "wait for it to end (the lock goes with its connection, also when it crashes, within 2 minutes)",
            )),
        }
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
        // The session that sets read_only, noted first: if this call is abandoned while the
        // statement waits (Ctrl-C, a lost network), lifting the fence ends that session before
        // it can take effect after the lift.
        conn.query_drop(
            "UPDATE `_ferry`.`fence` SET fencing_session = CONNECTION_ID() WHERE id = 1",
        )
        .await
        .map_err(|error| classify(error, &what))?;
        // Waits for commits in progress; a long-held table lock fails the fence rather than hang.
        conn.query_drop("SET SESSION lock_wait_timeout = 10")
            .await
            .map_err(|error| classify(error, &what))?;
        conn.query_drop("SET GLOBAL read_only = ON")
            .await
            .map_err(|error| classify(error, &what))?;
        let ended = end_other_sessions(&mut conn, &what).await?;
        conn.query_drop("UPDATE `_ferry`.`fence` SET fencing_session = NULL WHERE id = 1")
            .await
            .map_err(|error| classify(error, &what))?;
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

    async fn unfence(&self, migration: &str) -> Result<()> {
        let mut conn = connect(&self.config, false).await?;
        let what = format!("lifting the write fence on {}", self.config.describe());
        self.create_state(&mut conn).await?;
        let row: Option<(String, u8, Option<u64>)> = conn
            .query_first("SELECT migration, previous_read_only, fencing_session FROM `_ferry`.`fence` WHERE id = 1")
            .await
            .map_err(|error| classify(error, &what))?;
        let previous = match &row {
            Some((holder, _, _)) if holder != migration => {
                info!(server = %self.config.describe(), holder = %holder, "the fence belongs to another migration; left as it is");
                return Ok(());
            }
            Some((_, previous, _)) => *previous,
            // The row is written before read_only is set: without it, ferry never set it.
            None => return Ok(()),
        };
        // A fence statement abandoned while it waited could still take effect: end it first
        // (only while it is that statement: session ids start over when the server restarts).
        if let Some((_, _, Some(session))) = row {
            let waiting: Option<u64> = conn
                .exec_first(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE ID = ? AND INFO LIKE 'SET GLOBAL read_only%'",
                    (session,),
                )
                .await
                .map_err(|error| classify(error, &what))?;
            if let Some(session) = waiting {
                end_sessions(&mut conn, &[session], &what).await?;
            }
        }
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

    async fn reassert_fence(&self, migration: &str) -> Result<bool> {
        let mut conn = connect(&self.config, false).await?;
        let Some((holder, _, _)) = fence_row(&mut conn).await? else {
            return Ok(false);
        };
        let read_only: Option<u8> = conn
            .query_first("SELECT @@GLOBAL.read_only")
            .await
            .map_err(|error| classify(error, "reading read_only"))?;
        if holder != migration || read_only != Some(0) {
            return Ok(false);
        }
        conn.query_drop("SET GLOBAL read_only = ON")
            .await
            .map_err(|error| classify(error, "putting the write fence back"))?;
        warn!(server = %self.config.describe(), "the write fence was lost (a server restart?) and is back: applications could write meanwhile");
        Ok(true)
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
        if !state::table_exists(&mut conn, "verify_ranges").await? {
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
        Ok(ferry_core::verify::verification_verdict(
            ranges, checked, different,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_privileges_are_named() {
        let grants = |lines: &[&str]| {
            global_privileges(
                &lines
                    .iter()
                    .map(|line| line.to_string())
                    .collect::<Vec<_>>(),
            )
        };
        let root = grants(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"]);
        assert!(missing_fence_privileges(&root, true, (10, 11)).is_empty());
        let superuser = grants(&["GRANT SUPER, REPLICATION SLAVE ON *.* TO `ferry`@`%`"]);
        assert!(missing_fence_privileges(&superuser, false, (8, 0)).is_empty());
        assert!(missing_fence_privileges(&superuser, true, (10, 11)).is_empty());
        assert_eq!(
            missing_fence_privileges(&superuser, true, (11, 4)),
            vec!["READ_ONLY ADMIN"]
        );
        let partial = grants(&["GRANT READ_ONLY ADMIN, REPLICATION SLAVE ON *.* TO `ferry`@`%`"]);
        assert_eq!(
            missing_fence_privileges(&partial, true, (10, 11)),
            vec!["CONNECTION ADMIN"]
        );
        // Privileges on one database, or a name that merely contains SUPER, count for nothing.
        let local = grants(&[
            "GRANT USAGE ON *.* TO `superman`@`%`",
            "GRANT ALL PRIVILEGES ON `shop`.* TO `superman`@`%`",
        ]);
        assert_eq!(
            missing_fence_privileges(&local, false, (8, 0)),
            vec!["SYSTEM_VARIABLES_ADMIN", "CONNECTION_ADMIN"]
        );
        assert_eq!(version_of("10.11.6-MariaDB-0+deb12u1-log"), (10, 11));
    }
}
