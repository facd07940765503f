//! `ferry run` and `ferry copy`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ferry_core::connector::Sink;
use ferry_core::{ErrorClass, Result};
use ferry_engine::{run_migration, MigrationOptions, Mode, StreamOptions};
use tracing::{info, warn};

use crate::connect::connectors;
use crate::progress::Renderer;
use crate::settings::{resolve, FlagSettings};
use crate::signals::shutdown_on_signals;

/// Runs until done (copy) or stopped (run), retrying transient failures with capped exponential
/// backoff: each attempt resumes from the durable checkpoint.
pub async fn run(
    flags: &FlagSettings,
    mode: Mode,
    max_retries: u32,
    restart: bool,
) -> Result<ExitCode> {
    let settings = resolve(flags)?;
    let (source, sink) = connectors(&settings)?;
    let shutdown = shutdown_on_signals();
    let progress = Renderer::new();
    let mut options = MigrationOptions {
        name: settings.name.clone(),
        selection: settings.selection.clone(),
        mode,
        parallel: settings.parallel,
        rows_per_chunk: settings.chunk_rows,
        stream: StreamOptions {
            apply_timeout: settings.network_timeout * 4,
            ..StreamOptions::default()
        },
        chunk_timeout: settings.network_timeout * 4,
        recopy_failed: true,
        restart,
    };
    let mut failures = 0;
    let mut paused = false;
    // Failures not yet recorded on the target (it may be the one that failed).
    let mut unrecorded: Vec<(i64, &'static str, String)> = Vec::new();
    loop {
        record_failures(&sink, &settings.name, &mut unrecorded).await;
        let started = Instant::now();
        let result = run_migration(&source, &sink, &options, &progress, shutdown.clone()).await;
        // Start over at most once: a retry resumes what the restart began; and a retry does not
        // re-copy tables that failed (their cause is still there).
        options.restart = false;
        options.recopy_failed = false;
        if started.elapsed() > Duration::from_secs(60) {
            // It ran a good while: whatever failed before is a past episode.
            failures = 0;
            paused = false;
        }
        let stopping = *shutdown.borrow();
        let delay = match result {
            Ok(()) => {
                progress.finish();
                info!(migration = %settings.name, "done");
                return Ok(ExitCode::SUCCESS);
            }
            // A full or read-only target: wait for the operator, however long it takes.
            Err(error)
                if !stopping
                    && matches!(error.code(), "postgres.disk_full" | "postgres.read_only") =>
            {
                unrecorded.push((unix_micros(), error.code(), error.message().to_string()));
                if !paused {
                    warn!(class = %error.class(), code = error.code(), error = %error, "the target cannot take writes; paused, trying again every 5 s (free space or make it writable and ferry continues by itself)");
                    paused = true;
                }
                Duration::from_secs(5)
            }
            Err(error)
                if !stopping
                    && error.class() == ErrorClass::Transient
                    && failures < max_retries =>
            {
                unrecorded.push((unix_micros(), error.code(), error.message().to_string()));
                failures += 1;
                let delay = backoff(failures);
                if failures == 1 {
                    warn!(class = %error.class(), code = error.code(), error = %error, retry_in = ?delay, "transient failure; resuming from the checkpoint");
                } else {
                    info!(code = error.code(), attempt = failures, retry_in = ?delay, "still failing; retrying");
                }
                delay
            }
            Err(error) => {
                progress.finish();
                return Err(error);
            }
        };
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stopped| *stopped) => return Ok(ExitCode::SUCCESS),
        }
    }
}

fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0)
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
