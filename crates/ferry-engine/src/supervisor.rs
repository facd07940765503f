//! Running one direction of a migration until it is done or stopped: each attempt resumes from
//! the durable checkpoint; transient failures are retried with capped exponential backoff and
//! jitter; a target that cannot take writes until the operator acts (a full disk, a read-only
//! server: `Error::waits_for_operator`) pauses the run, however long that takes; anything else
//! ends it. Failures are recorded on the target once it takes writes again.

use std::time::{Duration, Instant};

use ferry_core::calendar::unix_micros_now;
use ferry_core::connector::{Sink, Source, Switchover};
use ferry_core::{ErrorClass, Result};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::migration::{run_migration, MigrationOptions};
use crate::progress::Progress;

/// Runs one direction, retrying transient failures with capped exponential backoff: each
/// attempt resumes from the durable checkpoint. With `phase_from`, each attempt first reads the
/// switch-over phase: once applications use the target, tables are never copied again.
pub async fn supervise(
    source: &dyn Source,
    sink: &dyn Sink,
    phase_from: Option<&dyn Switchover>,
    mut options: MigrationOptions,
    progress: &dyn Progress,
    shutdown: watch::Receiver<bool>,
    max_retries: u32,
) -> Result<()> {
    let mut failures = 0;
    let mut paused = false;
    // Tables that joined the selection while the last run streamed (it started over for them).
    let mut newly_joined: Vec<ferry_core::TableName> = Vec::new();
    // Failures not yet recorded on the target (it may be the one that failed).
    let mut unrecorded: Vec<(i64, &'static str, String)> = Vec::new();
    loop {
        record_failures(sink, &options.name, &mut unrecorded).await;
        if let Some(control) = phase_from {
            if let Ok(record) = control.load_cutover(&options.name).await {
                options.stream_only = record.phase.target_in_use();
            }
        }
        let started = Instant::now();
        let result = run_migration(source, sink, &options, progress, shutdown.clone()).await;
        // Start over at most once: a retry resumes what the restart began; and a retry does not
        // re-copy tables that failed (their cause is still there).
        options.restart = false;
        options.recopy_failed = false;
        if started.elapsed() > Duration::from_secs(60) {
            // It ran a good while: whatever failed before is a past episode (the tables that
            // joined were taken in).
            failures = 0;
            paused = false;
            newly_joined.clear();
        }
        let stopping = *shutdown.borrow();
        if let Err(error) = &result {
            if error.starts_over() {
                if stopping {
                    return Ok(());
                }
                info!(migration = %options.name, reason = %error, "starting again");
                newly_joined = error.joined_tables().to_vec();
                continue;
            }
            // The tables that just joined cannot be taken in (refused by the source or the
            // target): the migration goes on without them, and says so.
            let hopeless = error.class() != ErrorClass::Transient && !error.waits_for_operator();
            if hopeless && !stopping && !newly_joined.is_empty() {
                let names: Vec<String> = newly_joined.iter().map(|name| name.to_string()).collect();
                error!(migration = %options.name, tables = %names.join(", "), code = error.code(), error = %error, "tables created on the source cannot join the migration; going on without them (fix the cause and restart ferry run to take them in)");
                progress.error(error.code(), error.message());
                options.selection = options.selection.clone().excluding(&names)?;
                newly_joined.clear();
                continue;
            }
            progress.error(error.code(), error.message());
        }
        let delay = match result {
            Ok(()) => {
                info!(migration = %options.name, "done");
                return Ok(());
            }
            // A full or read-only target: wait for the operator, however long it takes.
            Err(error) if !stopping && error.waits_for_operator() => {
                unrecorded.push((unix_micros_now(), error.code(), error.message().to_string()));
                if !paused {
                    warn!(migration = %options.name, class = %error.class(), code = error.code(), error = %error, "the target cannot take writes; paused, trying again every 5 s (free space or make it writable and ferry continues by itself)");
                    paused = true;
                }
                Duration::from_secs(5)
            }
            Err(error)
                if !stopping
                    && error.class() == ErrorClass::Transient
                    && failures < max_retries =>
            {
                unrecorded.push((unix_micros_now(), error.code(), error.message().to_string()));
                failures += 1;
                let delay = backoff(failures);
                if failures == 1 {
                    warn!(migration = %options.name, class = %error.class(), code = error.code(), error = %error, retry_in = ?delay, "transient failure; resuming from the checkpoint");
                } else {
                    info!(migration = %options.name, code = error.code(), attempt = failures, retry_in = ?delay, "still failing; retrying");
                }
                delay
            }
            Err(error) => return Err(error),
        };
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
        }
    }
}

/// Stores pending failure records on the target, keeping those it cannot take yet (at most 1,000).
async fn record_failures(
    sink: &dyn Sink,
    migration: &str,
    unrecorded: &mut Vec<(i64, &'static str, String)>,
) {
    while let Some((at, code, message)) = unrecorded.first() {
        match tokio::time::timeout(
            Duration::from_secs(5),
            sink.record_failure(migration, *at, code, message),
        )
        .await
        {
            Ok(Ok(())) => {
                unrecorded.remove(0);
            }
            _ => break,
        }
    }
    if unrecorded.len() > 1_000 {
        unrecorded.drain(..unrecorded.len() - 1_000);
    }
}

/// 1 s, 2 s, 4 s ... capped at 30 s, with up to 25% jitter from the clock.
fn backoff(attempt: u32) -> Duration {
    let base =
        Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30));
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_millis())
            .unwrap_or(0),
    ) % (base.as_millis() as u64 / 4 + 1);
    base + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= Duration::from_secs(1) && backoff(1) < Duration::from_secs(2));
        assert!(backoff(3) >= Duration::from_secs(4));
        assert!(backoff(20) <= Duration::from_millis(37_500));
    }
}
