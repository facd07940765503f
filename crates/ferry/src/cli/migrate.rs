//! `ferry run` and `ferry copy`.
//!
//! `run` supervises both directions of a migration: the forward stream (old to new) always, and,
//! while the switch-over phase says so, the reverse stream (new to old) that keeps the old
//! database a fallback. It follows the phase stored on the target (set by `ferry cutover` and
//! `ferry rollback`) once a second, and serves the control plane when asked to listen.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::connector::{Sink, Source, Switchover};
use ferry_core::cutover::{reverse_name, CutoverPhase};
use ferry_core::select::Selection;
use ferry_core::transform::{TableTransform, Transforms};
use ferry_core::{Error, ErrorClass, Result, TableName};
use ferry_engine::{supervise, MigrationOptions, Mode, StreamOptions, TransformedSource};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::connect::{endpoints, Endpoint};
use crate::progress::Renderer;
use crate::settings::{resolve, FlagSettings, Settings};
use crate::signals::shutdown_on_signals;
use crate::telemetry::{Direction, Retention, Telemetry};

/// Where the control plane listens, and its token.
#[derive(Debug, Clone, Default)]
pub(super) struct Listen {
    pub address: Option<String>,
    pub token: Option<String>,
}

fn options_for(settings: &Settings, name: String, mode: Mode, restart: bool) -> MigrationOptions {
    MigrationOptions {
        name,
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
        ignore_writes_of: Vec::new(),
        stream_only: false,
    }
}

/// Runs until done (copy) or stopped (run).
pub(super) async fn run(
    flags: &FlagSettings,
    mode: Mode,
    max_retries: u32,
    restart: bool,
    listen: &Listen,
) -> Result<ExitCode> {
    let settings = resolve(flags)?;
    let (source_endpoint, target_endpoint) = endpoints(&settings)?;
    // With transforms there is no switch-over (the reverse stream would have to undo them).
    let switchable = settings.transforms.is_empty();
    let source: Box<dyn Source> = if switchable {
        source_endpoint.source()
    } else {
        Box::new(TransformedSource::new(
            source_endpoint.source(),
            settings.transforms.clone(),
        ))
    };
    let sink = target_endpoint.sink();
    let target_control = target_endpoint.control();
    let record = match switchable {
        true => target_control.load_cutover(&settings.name).await?,
        false => Default::default(),
    };
    if record.phase == CutoverPhase::Done {
        return Err(Error::operator(
            "cutover.phase",
            format!(
                "migration '{}' is finished (its streams were removed)",
                settings.name
            ),
        )
        .with_hint("start a new migration under another --name"));
    }
    let shutdown = shutdown_on_signals();
    let telemetry = Arc::new(Telemetry::new(
        &settings.name,
        Direction::new("forward", Some(Renderer::new())),
        Direction::new("reverse", None),
    ));
    telemetry.set_record(record.clone());
    if let Some(address) = &listen.address {
        crate::http::serve(address, listen.token.clone(), telemetry.clone()).await?;
    }
    let mut options = options_for(&settings, settings.name.clone(), mode, restart);
    options.ignore_writes_of = vec![reverse_name(&settings.name)];
    options.stream_only = record.phase.target_in_use();

    let (stop_watcher, watcher_stopped) = watch::channel(false);
    let watcher = (mode == Mode::Run && switchable).then(|| {
        tokio::spawn(follow_phase(
            settings.clone(),
            (source_endpoint.clone(), target_endpoint.clone()),
            telemetry.clone(),
            max_retries,
            watcher_stopped.clone(),
        ))
    });
    let sampler = tokio::spawn(sample_positions(
        settings.name.clone(),
        (source_endpoint, target_endpoint),
        telemetry.clone(),
    ));
    let result = supervise(
        source.as_ref(),
        sink.as_ref(),
        switchable.then_some(target_control.as_ref()),
        options,
        telemetry.forward.as_ref(),
        shutdown,
        max_retries,
    )
    .await;
    let _ = stop_watcher.send(true);
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    sampler.abort();
    telemetry.forward.finish();
    result.map(|()| ExitCode::SUCCESS)
}

/// A running reverse direction.
struct Reverse {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Follows the switch-over phase stored on the target: starts the reverse stream when writes
/// are switched, stops it (and removes its slot) after a rollback.
async fn follow_phase(
    settings: Settings,
    (old, new): (Endpoint, Endpoint),
    telemetry: Arc<Telemetry>,
    max_retries: u32,
    mut stopped: watch::Receiver<bool>,
) {
    let name = settings.name.clone();
    let reverse_migration = reverse_name(&name);
    let target_control = new.control();
    let guard = tokio::spawn(guard_fences(name.clone(), (old.control(), new.control())));
    let mut reverse: Option<Reverse> = None;
    let mut last_cleanup: Option<Instant> = None;
    loop {
        match target_control.load_cutover(&name).await {
            Ok(record) => {
                telemetry.set_record(record.clone());
                let wanted = record.phase.streams_back();
                if wanted && reverse.is_none() {
                    info!(phase = %record.phase, "writes go to the new database: streaming it back to the old one");
                    let (stop, receiver) = watch::channel(false);
                    let mut options =
                        options_for(&settings, reverse_migration.clone(), Mode::Run, false);
                    options.recopy_failed = false;
                    options.ignore_writes_of = vec![name.clone()];
                    options.stream_only = true;
                    let (old, new) = (old.clone(), new.clone());
                    let telemetry = telemetry.clone();
                    telemetry.set_reverse_running(true);
                    let task = tokio::spawn(async move {
                        let old_sink = old.sink();
                        let result = async {
                            // Retried like the stream itself: a passing failure here must not
                            // leave the old database without its reverse stream.
                            let mut stop = receiver.clone();
                            let new_source = loop {
                                match reverse_source(&new, old_sink.as_ref(), &mut options).await {
                                    Ok(source) => break source,
                                    Err(error) if error.class() == ErrorClass::Transient => {
                                        warn!(code = error.code(), error = %error, "cannot prepare the reverse stream yet; retrying");
                                        tokio::select! {
                                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                                            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
                                        }
                                    }
                                    Err(error) => return Err(error),
                                }
                            };
                            supervise(
                                new_source.as_ref(),
                                old_sink.as_ref(),
                                None,
                                options,
                                telemetry.reverse.as_ref(),
                                receiver,
                                max_retries,
                            )
                            .await
                        }
                        .await;
                        if let Err(error) = result {
                            error!(class = %error.class(), code = error.code(), error = %error, "the reverse stream stopped: the old database no longer follows the new one; fix the cause and restart ferry run");
                        }
                    });
                    reverse = Some(Reverse { stop, task });
                } else if !wanted {
                    if let Some(running) = reverse.take() {
                        info!(phase = %record.phase, "writes go to the old database again: stopping the reverse stream");
                        let _ = running.stop.send(true);
                        let _ = running.task.await;
                        telemetry.set_reverse_running(false);
                        last_cleanup = None;
                    }
                    if last_cleanup
                        .is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(10))
                    {
                        last_cleanup = Some(Instant::now());
                        remove_leftover_reverse(target_control.as_ref(), &name, &reverse_migration)
                            .await;
                    }
                }
            }
            Err(error) => {
                warn!(code = error.code(), error = %error, "cannot read the switch-over phase; trying again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped.wait_for(|stopped| *stopped) => break,
        }
    }
    if let Some(running) = reverse.take() {
        let _ = running.stop.send(true);
        let _ = running.task.await;
    }
    guard.abort();
}

/// Every 10 s, under the controller lock, puts back a fence of this migration that a database
/// lost (a MySQL server restart forgets `read_only`).
async fn guard_fences(name: String, (old, new): (Box<dyn Switchover>, Box<dyn Switchover>)) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let Ok(_lock) = new.lock_controller(&name).await else {
            continue;
        };
        for control in [&old, &new] {
            if let Err(error) = control.reassert_fence(&name).await {
                warn!(code = error.code(), error = %error, "cannot check the write fence");
            }
        }
    }
}

/// The new database as the reverse stream's source, its tables named as on the old database.
/// The reverse state on the old database (stored by the cutover) lists the tables by their old
/// names; where the new database names them otherwise (a MySQL database holds no schemas), the
/// source is read through renames and `options` select the tables by their new names.
async fn reverse_source(
    new: &Endpoint,
    old_sink: &dyn Sink,
    options: &mut MigrationOptions,
) -> Result<Box<dyn Source>> {
    let state = old_sink.load_state(&options.name).await?;
    let new_sink = new.sink();
    // (name on the new database, name on the old one) of every table the reverse stream moves.
    let names: Vec<(TableName, TableName)> = state
        .tables
        .keys()
        .map(|old_name| (new_sink.stored_name(old_name), old_name.clone()))
        .collect();
    if names
        .iter()
        .all(|(new_name, old_name)| new_name == old_name)
    {
        return Ok(new.source());
    }
    let rules = names
        .iter()
        .filter(|(new_name, old_name)| new_name != old_name)
        .map(|(new_name, old_name)| TableTransform {
            table: new_name.to_string(),
            rename: Some(old_name.to_string()),
            ..TableTransform::default()
        })
        .collect();
    let patterns: Vec<String> = names
        .iter()
        .map(|(new_name, _)| new_name.to_string())
        .collect();
    options.selection = Selection::parse(&patterns)?;
    Ok(Box::new(TransformedSource::new(
        new.source(),
        Transforms::new(rules)?,
    )))
}

/// Drops the reverse stream's slot on the new database once no phase needs it (it would keep
/// WAL there for nothing). Reads the phase first: a cutover creates the slot only after storing
/// `fenced`, and waits for a running reverse stream to stop before it does.
async fn remove_leftover_reverse(control: &dyn Switchover, name: &str, reverse_migration: &str) {
    // Under the controller lock, so no cutover can create the slot between the checks and the
    // drop; a busy lock means a controller runs: leave everything to it.
    let Ok(_lock) = control.lock_controller(name).await else {
        return;
    };
    // (Waiting for the lock may take seconds: the phase is read only now.)
    let Ok(record) = control.load_cutover(name).await else {
        return;
    };
    if !matches!(
        record.phase,
        CutoverPhase::Replicating | CutoverPhase::ReadsSwitched
    ) {
        return;
    }
    if let Ok(Some(false)) = control.stream_active(reverse_migration).await {
        match control.drop_stream(reverse_migration).await {
            Ok(()) => info!(
                stream = reverse_migration,
                "removed the reverse stream's slot"
            ),
            Err(error) => {
                warn!(code = error.code(), error = %error, "cannot remove the reverse stream's slot")
            }
        }
    }
}

/// Samples both databases' end of log once a second (for lag) and, on a source that keeps log
/// for its stream (a PostgreSQL slot), how much every 30 s, warning before the source would
/// drop log ferry still needs.
async fn sample_positions(
    name: String,
    (old, new): (Endpoint, Endpoint),
    telemetry: Arc<Telemetry>,
) {
    let (old_source, new_source) = (old.source(), new.source());
    let mut last_retention_check: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    loop {
        if let Ok(position) = old_source.current_position().await {
            telemetry.forward.source_position(position);
        }
        if telemetry.record().phase.streams_back() {
            if let Ok(position) = new_source.current_position().await {
                telemetry.reverse.source_position(position);
            }
        }
        let retention_due =
            last_retention_check.is_none_or(|at| at.elapsed() >= Duration::from_secs(30));
        if retention_due {
            last_retention_check = Some(Instant::now());
            if let Ok(Some(status)) = old_source.stream_retention(&name).await {
                if let Some(warning) = &status.warning {
                    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(300)) {
                        last_warning = Some(Instant::now());
                        warn!(
                            retained_bytes = status.retained_bytes,
                            safe_wal_bytes = status.safe_wal_bytes,
                            wal_status = status.wal_status.as_deref(),
                            "{warning}"
                        );
                    }
                }
                telemetry.set_retention(Retention {
                    retained_bytes: Some(status.retained_bytes),
                    safe_wal_bytes: status.safe_wal_bytes,
                    wal_status: status.wal_status,
                });
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
