//! Named locks held by a session of their own (a streaming process on its source, a
//! controller on the target), kept alive by pings and freed when the holder vanishes.

use ferry_core::Result;
use mysql_async::prelude::Queryable;

use super::config::MysqlConfig;
use super::connection::connect;
use super::errors::classify;

/// The named lock a streaming process holds on its source (names are at most 64 characters).
pub(crate) const STREAM_LOCK: &str = "CONCAT('ferry.stream.', SHA1(?))";

/// A named lock held by a session of its own. The session pings every 20 s and lets the server
/// end it after 2 minutes of silence, so the lock outlives no vanished holder for long.
/// Dropping the guard ends the session, which frees the lock.
pub(crate) struct HeldLock {
    task: tokio::task::JoinHandle<()>,
}

impl HeldLock {
    /// Whether its session still answers (if not, the server has freed the lock).
    pub(crate) fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes `lock` (an SQL expression naming it, with `?` for `key`) on a new session, waiting up
/// to `wait_seconds`. None when another session holds it.
pub(crate) async fn take_lock(
    config: &MysqlConfig,
    lock: &str,
    key: &str,
    wait_seconds: u32,
) -> Result<Option<HeldLock>> {
    let mut conn = connect(config, false).await?;
    let locked: Option<i64> = conn
        .exec_first(format!("SELECT GET_LOCK({lock}, {wait_seconds})"), (key,))
        .await
        .map_err(|error| classify(error, "taking a named lock"))?
        .flatten();
    if locked != Some(1) {
        return Ok(None);
    }
    let _ = conn.query_drop("SET SESSION wait_timeout = 120").await;
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(20)).await;
            if conn.ping().await.is_err() {
                break;
            }
        }
    });
    Ok(Some(HeldLock { task }))
}
