//! Switching applications from the old database to the new one, and back, without losing a
//! write.
//!
//! These functions are controllers: they never stream themselves. A `ferry run` process streams
//! old to new (and, once writes are switched, new to old) and stores each stream's checkpoint on
//! its target; the controllers fence, watch those checkpoints and move the phase. So the stream
//! keeps running across the switch, and a crash of either process loses nothing.
//!
//! Cutover, and why no acknowledged write is lost:
//! 1. The phase becomes `fenced` (stored first, so a crash leaves a record to finish or undo).
//! 2. The old database is fenced: new sessions are read-only and every other session is ended,
//!    so each write was either committed before the fence position F or failed (unacknowledged).
//! 3. Drain: wait until the forward checkpoint on the new database reaches F. Every write
//!    acknowledged on the old database is now durable on the new one (lag exactly zero).
//! 4. Sequences are copied past the source's values.
//! 5. The reverse stream is created on the new database (a slot at position R, before any
//!    application writes there) and its state is stored on the old one with every table copied.
//! 6. The phase becomes `writes-switched`; applications may now write to the new database. Every
//!    such write is after R, so the reverse stream carries it to the old database.
//!
//! Loop safety: each applier tags its transactions with its migration's replication origin, and
//! each stream leaves out the other direction's tag.
//!
//! Rollback from `writes-switched` mirrors it: fence the new database, drain the reverse stream
//! to the fence, copy sequences back, lift the old database's fence, phase `replicating`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_core::calendar::unix_micros_now;
use ferry_core::connector::{Inspector, Sink, Source, Switchover};
use ferry_core::cutover::{reverse_name, CutoverPhase, CutoverRecord};
use ferry_core::schema::{Catalog, Sequence};
use ferry_core::select::Selection;
use ferry_core::state::TableState;
use ferry_core::{failpoint, Error, Position, Result, TableName};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::lag::LagMeter;
use crate::stream::sync_sequences;
use crate::verify::{verify, Sides, VerifyOptions};

/// One database as the controllers see it.
pub struct Database<'a> {
    pub source: &'a dyn Source,
    pub sink: &'a dyn Sink,
    pub control: &'a dyn Switchover,
    /// Reads rows for verification (as a source for the old database, a target for the new).
    pub inspector: &'a dyn Inspector,
}

/// The database being left and the one being moved to.
pub struct Databases<'a> {
    pub old: Database<'a>,
    pub new: Database<'a>,
}

/// How to switch.
#[derive(Debug, Clone)]
pub struct CutoverOptions {
    pub migration: String,
    pub selection: Selection,
    /// Fence only after the lag stayed at most this long ...
    pub max_lag: Duration,
    /// ... for this long without a break.
    pub stable_for: Duration,
    /// Give up when the lag has not settled within this time.
    pub lag_wait: Duration,
    /// Abort and lift the fence when draining takes longer.
    pub fence_timeout: Duration,
    /// Rehearse everything except the fence, and predict the write downtime.
    pub dry_run: bool,
    /// Switch even though the last verification was not clean (or never ran).
    pub force: bool,
    /// How often positions are sampled.
    pub poll: Duration,
    /// While fenced, verify the tables that changed within this window (inside the downtime);
    /// any difference aborts the cutover.
    pub verify_recent: Option<Duration>,
    /// How the pair compares (types, ranges), for that re-verification.
    pub verify_options: VerifyOptions,
    /// Turns true when the operator asks to stop (Ctrl-C): a switch in progress is aborted and
    /// the fence lifted.
    pub interrupt: Option<watch::Receiver<bool>>,
}

/// What a controller did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CutoverReport {
    pub phase_before: CutoverPhase,
    pub phase: CutoverPhase,
    /// Writes were blocked this long (fence to switch), in milliseconds.
    pub write_downtime_millis: Option<u64>,
    /// A dry run's estimate of the write downtime, in milliseconds.
    pub predicted_downtime_millis: Option<u64>,
    /// The lag when the fence went up (or, in a dry run, at the end), in milliseconds.
    pub lag_millis: Option<u64>,
    /// The fence position the stream drained to.
    pub fence_position: Option<String>,
    pub sequences_synced: usize,
    pub summary: String,
}

impl CutoverReport {
    fn unchanged(phase: CutoverPhase, summary: impl Into<String>) -> CutoverReport {
        CutoverReport {
            phase_before: phase,
            phase,
            write_downtime_millis: None,
            predicted_downtime_millis: None,
            lag_millis: None,
            fence_position: None,
            sequences_synced: 0,
            summary: summary.into(),
        }
    }
}

/// `previous` moved to `phase`, with no fence in progress.
fn settled(phase: CutoverPhase, previous: &CutoverRecord) -> CutoverRecord {
    CutoverRecord {
        phase,
        before_fence: None,
        fenced_at_unix_micros: None,
        last_downtime_millis: previous.last_downtime_millis,
        updated_unix_micros: unix_micros_now(),
    }
}

/// `previous` moved to `phase` (`fenced` or `rolling-back`): a fence starts now, and an abort
/// returns to the phase `previous` was in.
fn fencing(phase: CutoverPhase, previous: &CutoverRecord) -> CutoverRecord {
    CutoverRecord {
        phase,
        before_fence: Some(previous.phase),
        fenced_at_unix_micros: Some(unix_micros_now()),
        last_downtime_millis: previous.last_downtime_millis,
        updated_unix_micros: unix_micros_now(),
    }
}

/// `fenced` moved to `phase` at the end of its fence, which lasted the returned milliseconds.
fn fence_ended(phase: CutoverPhase, fenced: &CutoverRecord) -> (CutoverRecord, Option<u64>) {
    let downtime = fenced
        .fenced_at_unix_micros
        .map(|fenced_at| ((unix_micros_now() - fenced_at).max(0) / 1000) as u64);
    let record = CutoverRecord {
        last_downtime_millis: downtime.map(|millis| millis as i64),
        ..settled(phase, fenced)
    };
    (record, downtime)
}

/// Moves readers: `replicating` to `reads-switched`.
pub async fn switch_reads(databases: &Databases<'_>, migration: &str) -> Result<CutoverReport> {
    let _lock = databases.new.control.lock_controller(migration).await?;
    let current = databases.new.control.load_cutover(migration).await?;
    match current.phase {
        CutoverPhase::Replicating => {}
        CutoverPhase::ReadsSwitched => {
            return Ok(CutoverReport::unchanged(
                current.phase,
                "readers already use the new database",
            ))
        }
        phase => {
            return Err(Error::operator(
                "cutover.phase",
                format!("readers cannot be switched in phase {phase}"),
            )
            .with_hint(
                "`ferry status` shows the phase; `ferry rollback` goes back to replicating",
            ))
        }
    }
    require_copied(databases.new.sink, migration).await?;
    databases
        .new
        .control
        .save_cutover(migration, &settled(CutoverPhase::ReadsSwitched, &current))
        .await?;
    info!(migration, "readers switched to the new database");
    Ok(CutoverReport {
        phase: CutoverPhase::ReadsSwitched,
        ..CutoverReport::unchanged(
            current.phase,
            "readers may use the new database; writes still go to the old one",
        )
    })
}

/// Switches writes to the new database (see the module notes), or rehearses it.
pub async fn cutover(databases: &Databases<'_>, options: &CutoverOptions) -> Result<CutoverReport> {
    let migration = options.migration.as_str();
    let _lock = databases.new.control.lock_controller(migration).await?;
    let mut current = databases.new.control.load_cutover(migration).await?;
    let phase_before = current.phase;
    match current.phase {
        CutoverPhase::WritesSwitched => {
            // Finishes a cutover that crashed between storing the switch and unfencing.
            unfence_new(databases, migration).await?;
            return Ok(CutoverReport::unchanged(
                current.phase,
                "writes already go to the new database",
            ));
        }
        CutoverPhase::Done => {
            return Err(Error::operator(
                "cutover.phase",
                "this migration is finished",
            ))
        }
        CutoverPhase::RollingBack => {
            return Err(Error::operator("cutover.phase", "a rollback is under way")
                .with_hint("complete it with `ferry rollback`, then cut over again"))
        }
        CutoverPhase::Replicating | CutoverPhase::ReadsSwitched | CutoverPhase::Fenced => {}
    }
    let (catalog, tables, sequences) = match prepare_cutover(databases, options).await {
        Ok(prepared) => prepared,
        // Resuming a fenced cutover that cannot go on: writes must not stay blocked.
        Err(error) if current.phase == CutoverPhase::Fenced => {
            return Err(abort_cutover(databases, migration, &current, error).await);
        }
        Err(error) => return Err(error),
    };
    let mut lag = None;
    if current.phase != CutoverPhase::Fenced {
        match databases.new.control.last_verification_clean(migration).await? {
            Some(true) => {}
            verdict if options.force => warn!(?verdict, "switching without a clean verification (--force)"),
            Some(false) => return Err(Error::operator("cutover.not_verified", "the last verification found differences or did not finish")
                .with_hint("run `ferry verify --while-streaming` (add --repair to fix differences) until it reports equal, or pass --force")),
            None => return Err(Error::operator("cutover.not_verified", "this migration was never verified")
                .with_hint("run `ferry verify --while-streaming` first, or pass --force")),
        }
        lag = Some(wait_for_low_lag(databases, options).await?);
        require_secondary_objects(databases, &catalog).await?;
        if options.dry_run {
            return rehearse(
                databases,
                options,
                &sequences,
                &tables,
                phase_before,
                lag.unwrap_or_default(),
            )
            .await;
        }
        current = fencing(CutoverPhase::Fenced, &current);
        databases
            .new
            .control
            .save_cutover(migration, &current)
            .await?;
    } else if options.dry_run {
        return Err(Error::operator("cutover.phase", "the old database is fenced already; nothing to rehearse")
            .with_hint("run cutover without --dry-run to finish the switch, or `ferry rollback` to lift the fence"));
    } else {
        info!(
            migration,
            "resuming an interrupted cutover: the old database is fenced"
        );
    }

    // From the fence on, any failure lifts the fence and restores the phase: writes must never
    // stay blocked because a step failed.
    let reverse = reverse_name(migration);
    let fence_started = Instant::now();
    let fenced = interruptible(&options.interrupt, async {
        let fence_position = databases.old.control.fence(migration).await?;
        failpoint::hit("cutover.after_fence");
        drain(
            databases.new.control,
            migration,
            &fence_position,
            options.fence_timeout,
            options.poll,
        )
        .await?;
        failpoint::hit("cutover.after_drain");
        // A fence lost while draining (a MySQL server restart forgets read_only) may have let
        // writes in after the fence position: start over rather than switch.
        if databases.old.control.reassert_fence(migration).await? {
            return Err(Error::transient("cutover.fence_lost", "the old database lost its write fence while draining (restarted?); it is back up, but writes may have arrived after the fence position")
                .with_hint("run cutover again"));
        }
        // A table that failed while draining would be missing changes on the new database.
        require_copied(databases.new.sink, migration).await?;
        within_fence(options, fence_started, sync_sequences(databases.old.source, databases.new.sink, &sequences, false)).await?;
        if let Some(window) = options.verify_recent {
            // Within what is left of the fence budget: writes are blocked meanwhile.
            let left = options.fence_timeout.saturating_sub(fence_started.elapsed());
            tokio::time::timeout(left, verify_recent(databases, options, window))
                .await
                .map_err(|_| Error::operator("cutover.fence_timeout", "re-verifying the recently written tables did not finish within --fence-timeout")
                    .with_hint("allow more with --fence-timeout, narrow --verify-recent, or verify before the cutover instead"))??;
        }
        // The reverse stream starts here, before any application writes to the new database.
        let (position, snapshot) = databases
            .new
            .source
            .create_stream(&reverse, &stored_names(databases, &tables))
            .await?;
        drop(snapshot);
        start_reverse_state(databases.old.sink, &catalog, &reverse, position).await?;
        failpoint::hit("cutover.after_reverse_stream");
        Ok::<Position, Error>(fence_position)
    })
    .await;
    let fence_position = match fenced {
        Ok(position) => position,
        Err(error) => {
            return Err(abort_cutover(databases, migration, &current, error).await);
        }
    };
    let (switched, downtime) = fence_ended(CutoverPhase::WritesSwitched, &current);
    databases
        .new
        .control
        .save_cutover(migration, &switched)
        .await?;
    // The new database may still be fenced from an earlier rollback; lifted only now, so that a
    // crash before the switch is stored never leaves it writable while the old one still is.
    unfence_new(databases, migration).await?;
    info!(
        migration,
        downtime_ms = downtime,
        "writes switched to the new database; the old one follows it"
    );
    Ok(CutoverReport {
        phase_before,
        phase: CutoverPhase::WritesSwitched,
        write_downtime_millis: downtime,
        predicted_downtime_millis: None,
        lag_millis: lag.map(|lag| lag.as_millis() as u64),
        fence_position: Some(fence_position.to_string()),
        sequences_synced: sequences.len(),
        summary: "writes go to the new database; the old one is kept in sync as a fallback (`ferry rollback` returns to it)".into(),
    })
}

/// Returns writes (and reads) to the old database from any phase, losing nothing.
pub async fn rollback(
    databases: &Databases<'_>,
    options: &CutoverOptions,
) -> Result<CutoverReport> {
    let migration = options.migration.as_str();
    let _lock = databases.new.control.lock_controller(migration).await?;
    let current = databases.new.control.load_cutover(migration).await?;
    let phase_before = current.phase;
    match current.phase {
        CutoverPhase::Replicating => {
            return Ok(CutoverReport::unchanged(
                current.phase,
                "applications already use the old database",
            ))
        }
        CutoverPhase::Done => {
            return Err(Error::operator(
                "cutover.phase",
                "this migration is finished: the old database no longer follows the new one",
            )
            .with_hint("start a new migration from the new database to the old one"))
        }
        CutoverPhase::ReadsSwitched | CutoverPhase::Fenced => {
            if databases.old.control.fenced_by().await?.is_some() {
                databases.old.control.unfence(migration).await?;
            }
            // A cutover interrupted after creating the reverse stream left its slot behind.
            let reverse = reverse_name(migration);
            if databases.new.control.stream_active(&reverse).await? == Some(false) {
                databases.new.control.drop_stream(&reverse).await?;
            }
            let back = settled(CutoverPhase::Replicating, &current);
            databases.new.control.save_cutover(migration, &back).await?;
            return Ok(CutoverReport {
                phase: CutoverPhase::Replicating,
                ..CutoverReport::unchanged(
                    phase_before,
                    "readers and writers use the old database again",
                )
            });
        }
        CutoverPhase::WritesSwitched | CutoverPhase::RollingBack => {}
    }
    let reverse = reverse_name(migration);
    // The old database is unfenced only after the drain completed: an interrupted rollback
    // that got that far just needs its phase stored.
    if current.phase == CutoverPhase::RollingBack
        && databases.old.control.fenced_by().await?.is_none()
    {
        let back = settled(CutoverPhase::Replicating, &current);
        databases.new.control.save_cutover(migration, &back).await?;
        return Ok(CutoverReport {
            phase: CutoverPhase::Replicating,
            ..CutoverReport::unchanged(
                phase_before,
                "the interrupted rollback had finished draining; writes go to the old database",
            )
        });
    }
    let prepared = async {
        if !stream_becomes_active(databases.new.control, &reverse).await? {
            return Err(Error::operator("cutover.not_streaming", format!("no ferry process is streaming the new database back to the old one (migration '{migration}')"))
                .with_hint("start `ferry run` for this migration (after a cutover it streams both ways), then roll back again"));
        }
        databases.old.control.check_switchover().await?;
        databases.new.control.check_switchover().await?;
        require_no_foreign_fence(databases, migration).await?;
        let catalog = databases.old.source.read_catalog(&options.selection).await?;
        new_sequences(databases, &catalog).await
    }
    .await;
    let sequences = match prepared {
        Ok(sequences) => sequences,
        // Resuming a fenced rollback that cannot go on: writes must not stay blocked.
        Err(error) if current.phase == CutoverPhase::RollingBack => {
            return Err(abort_rollback(databases, migration, &current, error).await);
        }
        Err(error) => return Err(error),
    };
    let mut fenced = current.clone();
    if current.phase == CutoverPhase::WritesSwitched {
        fenced = fencing(CutoverPhase::RollingBack, &current);
        databases
            .new
            .control
            .save_cutover(migration, &fenced)
            .await?;
    }
    // From the fence on, any failure lifts the new database's fence and restores the phase.
    let fence_started = Instant::now();
    let drained = interruptible(&options.interrupt, async {
        let fence_position = databases.new.control.fence(migration).await?;
        failpoint::hit("rollback.after_fence");
        drain(
            databases.old.control,
            &reverse,
            &fence_position,
            options.fence_timeout,
            options.poll,
        )
        .await?;
        if databases.new.control.reassert_fence(migration).await? {
            return Err(Error::transient("cutover.fence_lost", "the new database lost its write fence while draining (restarted?); it is back up, but writes may have arrived after the fence position")
                .with_hint("run rollback again"));
        }
        // A table whose reverse stream failed would be missing changes on the old database.
        require_copied(databases.old.sink, &reverse).await?;
        within_fence(options, fence_started, sync_sequences_back(databases, &sequences)).await?;
        Ok::<Position, Error>(fence_position)
    })
    .await;
    let fence_position = match drained {
        Ok(position) => position,
        Err(error) => {
            return Err(abort_rollback(databases, migration, &fenced, error).await);
        }
    };
    databases.old.control.unfence(migration).await?;
    let (back, downtime) = fence_ended(CutoverPhase::Replicating, &fenced);
    databases.new.control.save_cutover(migration, &back).await?;
    info!(migration, downtime_ms = downtime, "rolled back: the old database takes writes again; the new one follows it (and stays read-only for applications)");
    Ok(CutoverReport {
        phase_before,
        phase: CutoverPhase::Replicating,
        write_downtime_millis: downtime,
        predicted_downtime_millis: None,
        lag_millis: None,
        fence_position: Some(fence_position.to_string()),
        sequences_synced: sequences.len(),
        summary:
            "writes go to the old database again; every write made on the new one was carried back"
                .into(),
    })
}

/// Ends a switched migration: removes both streams (slots, publications, origins). The old
/// database stays fenced unless `unfence_old` is set.
pub async fn finish(
    databases: &Databases<'_>,
    migration: &str,
    unfence_old: bool,
) -> Result<CutoverReport> {
    let _lock = databases.new.control.lock_controller(migration).await?;
    let current = databases.new.control.load_cutover(migration).await?;
    match current.phase {
        CutoverPhase::WritesSwitched | CutoverPhase::Done => {}
        phase => {
            return Err(Error::operator(
                "cutover.phase",
                format!("cannot finish in phase {phase}: writes have not been switched"),
            )
            .with_hint("run `ferry cutover` first"))
        }
    }
    let reverse = reverse_name(migration);
    for (control, name) in [
        (databases.old.control, migration),
        (databases.new.control, reverse.as_str()),
        (databases.old.control, reverse.as_str()),
        (databases.new.control, migration),
        (databases.new.control, rehearsal_name(migration).as_str()),
    ] {
        control.drop_stream(name).await?;
    }
    if current.phase != CutoverPhase::Done {
        databases
            .new
            .control
            .save_cutover(migration, &settled(CutoverPhase::Done, &current))
            .await?;
    }
    if unfence_old && databases.old.control.fenced_by().await?.is_some() {
        databases.old.control.unfence(migration).await?;
    }
    Ok(CutoverReport {
        phase: CutoverPhase::Done,
        ..CutoverReport::unchanged(
            current.phase,
            if unfence_old {
                "streams removed; the old database takes writes again and no longer follows"
            } else {
                "streams removed; the old database stays read-only for applications (`ferry finish --unfence-source` lifts that)"
            },
        )
    })
}

/// The sequences of the new database's copies of the old database's tables (named as on the
/// new database), each owned by the old name of its table.
async fn new_sequences(databases: &Databases<'_>, old_catalog: &Catalog) -> Result<Vec<Sequence>> {
    let old_names: Vec<TableName> = old_catalog
        .tables
        .iter()
        .map(|table| table.name.clone())
        .collect();
    let names = stored_names(databases, &old_names);
    let back: HashMap<TableName, TableName> = names.iter().cloned().zip(old_names).collect();
    let new_catalog = databases
        .new
        .source
        .read_catalog(&Selection::default().restricted_to(&names))
        .await?;
    Ok(new_catalog
        .sequences
        .into_iter()
        .map(|mut sequence| {
            if let Some((table, _)) = sequence.owned_by.as_mut() {
                if let Some(old) = back.get(table) {
                    *table = old.clone();
                }
            }
            sequence
        })
        .collect())
}

/// Copies the new database's sequences (read now) to the old one, each owned by its column on
/// the old database, which finds it through that column whatever it calls it.
async fn sync_sequences_back(databases: &Databases<'_>, sequences: &[Sequence]) -> Result<()> {
    sync_sequences(databases.new.source, databases.old.sink, sequences, true).await
}

/// Refuses to switch while either database carries another migration's fence: this migration
/// could neither lift it nor take it over.
async fn require_no_foreign_fence(databases: &Databases<'_>, migration: &str) -> Result<()> {
    for (control, which) in [
        (databases.old.control, "old"),
        (databases.new.control, "new"),
    ] {
        if let Some(holder) = control.fenced_by().await? {
            if holder != migration {
                return Err(Error::operator(
                    "cutover.fenced_by_other",
                    format!("the {which} database carries the write fence of migration '{holder}'"),
                )
                .with_hint(format!("finish or roll back migration '{holder}' first (`ferry rollback --name {holder}` or `ferry finish --name {holder} --unfence-source`)")));
            }
        }
    }
    Ok(())
}

/// The names the old database's tables have on the new one.
fn stored_names(databases: &Databases<'_>, tables: &[TableName]) -> Vec<TableName> {
    tables
        .iter()
        .map(|table| databases.new.sink.stored_name(table))
        .collect()
}

/// Every index and constraint of the old database exists on the new one before applications
/// write there. `ferry run` builds unique ones and foreign keys only once its stream has caught
/// up with the copy, beside the stream; with the lag low the stream has, so whatever is still
/// missing is built here (before the fence: writes still go to the old database meanwhile).
async fn require_secondary_objects(databases: &Databases<'_>, catalog: &Catalog) -> Result<()> {
    let missing = databases.new.sink.create_secondary(&catalog.tables).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing
        .iter()
        .map(|(table, object)| format!("{object} on {table}"))
        .collect();
    Err(Error::operator(
        "cutover.objects_missing",
        format!(
            "the new database cannot have {} yet: its rows do not satisfy them",
            names.join(", ")
        ),
    )
    .with_hint("let `ferry run` stream until it has caught up, run `ferry verify --while-streaming --repair`, then cut over again"))
}

/// Every table of the migration must be copied and none failed.
async fn require_copied(sink: &dyn Sink, migration: &str) -> Result<()> {
    let state = sink.load_state(migration).await?;
    if state.stream.is_none() {
        return Err(Error::operator(
            "cutover.not_started",
            format!("migration '{migration}' has not started on this target"),
        )
        .with_hint("start it with `ferry run`"));
    }
    let unfinished: Vec<String> = state
        .tables
        .iter()
        .filter(|(_, progress)| progress.state != TableState::Copied)
        .map(|(name, progress)| format!("{name} ({})", progress.state.as_str()))
        .collect();
    if unfinished.is_empty() {
        return Ok(());
    }
    Err(Error::operator("cutover.not_copied", format!("tables not ready: {}", unfinished.join(", ")))
        .with_hint("let `ferry run` finish copying (a failed table is copied afresh when ferry run starts again)"))
}

/// Verifies, while fenced, the tables that changed within `window`.
async fn verify_recent(
    databases: &Databases<'_>,
    options: &CutoverOptions,
    window: Duration,
) -> Result<()> {
    let tables = databases
        .new
        .control
        .tables_changed_since(&options.migration, window)
        .await?;
    if tables.is_empty() {
        info!(
            window_s = window.as_secs(),
            "no table changed lately; nothing to re-verify"
        );
        return Ok(());
    }
    let started = Instant::now();
    let verify_options = VerifyOptions {
        // Its own verification record: the operator's last full verification stays as it is.
        migration: format!("{}@fence", options.migration),
        selection: options.selection.restricted_to(&tables),
        ..options.verify_options.clone()
    };
    let sides = Sides {
        source: databases.old.source,
        source_rows: databases.old.inspector,
        target_rows: databases.new.inspector,
    };
    let reports = verify(&sides, &verify_options).await?;
    let different: Vec<String> = reports
        .iter()
        .filter(|report| !report.is_equal())
        .map(|report| {
            format!(
                "{} ({} differences)",
                report.table,
                report.differences.len() + report.schema_differences.len()
            )
        })
        .collect();
    if !different.is_empty() {
        return Err(Error::operator(
            "cutover.verify_failed",
            format!("tables differ at the fence: {}", different.join(", ")),
        )
        .with_hint("run `ferry verify --repair` (the fence was lifted), then cut over again"));
    }
    info!(
        tables = tables.len(),
        verify_ms = started.elapsed().as_millis() as u64,
        "re-verified the tables written lately: equal"
    );
    Ok(())
}

/// The stream a dry run creates and drops on the new database, to time it.
fn rehearsal_name(migration: &str) -> String {
    format!("{migration}_rehearsal")
}

/// The checks before a cutover, and what it moves: (catalog, tables, sequences).
async fn prepare_cutover(
    databases: &Databases<'_>,
    options: &CutoverOptions,
) -> Result<(Catalog, Vec<TableName>, Vec<Sequence>)> {
    let migration = options.migration.as_str();
    require_copied(databases.new.sink, migration).await?;
    if !stream_becomes_active(databases.old.control, migration).await? {
        return Err(Error::operator(
            "cutover.not_streaming",
            format!("no ferry process is streaming migration '{migration}' right now"),
        )
        .with_hint("start `ferry run` for this migration (it keeps streaming through the switch), then run cutover again"));
    }
    databases.old.control.check_switchover().await?;
    databases.new.control.check_switchover().await?;
    require_no_foreign_fence(databases, migration).await?;
    // A dry run that crashed may have left its rehearsal slot behind.
    let rehearsal = rehearsal_name(migration);
    if databases.new.control.stream_active(&rehearsal).await? == Some(false) {
        databases.new.control.drop_stream(&rehearsal).await?;
    }
    if !stream_stops(databases.new.control, &reverse_name(migration)).await? {
        return Err(Error::operator(
            "cutover.stream_in_use",
            "the reverse stream of an earlier cutover is still running",
        )
        .with_hint("`ferry run` stops it within seconds after a rollback; run cutover again"));
    }
    let catalog = databases
        .old
        .source
        .read_catalog(&options.selection)
        .await?;
    // What the reverse stream will need on the old database, before anything is fenced: its
    // tables accept ferry's writes (a MySQL target with triggers refuses here, not while
    // writes are blocked).
    databases.old.sink.create_tables(&catalog).await?;
    let tables = catalog
        .tables
        .iter()
        .map(|table| table.name.clone())
        .collect();
    let sequences = catalog.sequences.clone();
    Ok((catalog, tables, sequences))
}

/// Undoes a cutover's fence on the old database after `error`, back to the phase before it.
async fn abort_cutover(
    databases: &Databases<'_>,
    migration: &str,
    fenced: &CutoverRecord,
    error: Error,
) -> Error {
    let back = fenced.before_fence.unwrap_or(CutoverPhase::Replicating);
    abort(
        databases.old.control,
        databases.new.control,
        migration,
        fenced,
        back,
        error,
        "cutover",
    )
    .await
}

/// Undoes a rollback's fence on the new database after `error`: writes go to it again.
async fn abort_rollback(
    databases: &Databases<'_>,
    migration: &str,
    fenced: &CutoverRecord,
    error: Error,
) -> Error {
    abort(
        databases.new.control,
        databases.new.control,
        migration,
        fenced,
        CutoverPhase::WritesSwitched,
        error,
        "rollback",
    )
    .await
}

/// Undoes a fence after `error`: lifts it on `fenced` and stores `back` as the phase. Returns
/// the error to report (both, when lifting the fence fails too).
async fn abort(
    fenced: &dyn Switchover,
    new: &dyn Switchover,
    migration: &str,
    current: &CutoverRecord,
    back: CutoverPhase,
    error: Error,
    what: &str,
) -> Error {
    warn!(code = error.code(), error = %error, "{what} failed while writes were fenced; lifting the fence");
    let restored = settled(back, current);
    let undone = async {
        fenced.unfence(migration).await?;
        new.save_cutover(migration, &restored).await
    }
    .await;
    match undone {
        Ok(()) => error.context(format!("{what} aborted, the fence is lifted and the phase is {back} again")),
        Err(undo_error) => Error::operator(
            "cutover.fence_stuck",
            format!("{what} failed ({}: {}) and lifting the fence failed too ({}: {})", error.code(), error.message(), undo_error.code(), undo_error.message()),
        )
        .with_hint("writes are still blocked: run `ferry rollback` once the databases are reachable (or lift it by hand: on PostgreSQL ALTER DATABASE ... RESET default_transaction_read_only; ALTER DATABASE ... RESET ferry.fence; on MySQL/MariaDB SET GLOBAL read_only = OFF; DELETE FROM _ferry.fence)"),
    }
}

/// Runs `step` within what is left of the fence budget (writes are blocked meanwhile).
async fn within_fence<T>(
    options: &CutoverOptions,
    fence_started: Instant,
    step: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let left = options
        .fence_timeout
        .saturating_sub(fence_started.elapsed());
    tokio::time::timeout(left, step).await.map_err(|_| {
        Error::operator("cutover.fence_timeout", "copying the sequences did not finish within --fence-timeout")
            .with_hint("a long transaction may hold a table the sequence sync must alter; end it, or allow more with --fence-timeout")
    })?
}

/// Runs `steps`, failing with `cutover.interrupted` if the operator asks to stop first.
async fn interruptible<T>(
    interrupt: &Option<watch::Receiver<bool>>,
    steps: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let Some(interrupt) = interrupt else {
        return steps.await;
    };
    let mut interrupt = interrupt.clone();
    tokio::select! {
        result = steps => result,
        _ = interrupt.wait_for(|stop| *stop) => Err(Error::operator("cutover.interrupted", "stopped by the operator")),
    }
}

/// Lifts ferry's fence on the new database, if it has one.
async fn unfence_new(databases: &Databases<'_>, migration: &str) -> Result<()> {
    if databases.new.control.fenced_by().await?.is_some() {
        databases.new.control.unfence(migration).await?;
    }
    Ok(())
}

/// Whether nothing reads the stream of `migration` (waiting up to 30 s for it to stop).
async fn stream_stops(control: &dyn Switchover, migration: &str) -> Result<bool> {
    let started = Instant::now();
    loop {
        if control.stream_active(migration).await? != Some(true) {
            return Ok(true);
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a `ferry run` reads the stream of `migration`, waiting up to 30 s for one that is
/// (re)starting, for instance just after a phase change.
async fn stream_becomes_active(control: &dyn Switchover, migration: &str) -> Result<bool> {
    let started = Instant::now();
    loop {
        if control.stream_active(migration).await? == Some(true) {
            return Ok(true);
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the lag has stayed at most `max_lag` for `stable_for`; returns the lag then.
async fn wait_for_low_lag(databases: &Databases<'_>, options: &CutoverOptions) -> Result<Duration> {
    let started = Instant::now();
    let mut meter = LagMeter::new();
    let mut stable_since: Option<Instant> = None;
    let mut last_report = Instant::now();
    loop {
        let source = databases.old.source.current_position().await?;
        let now = Instant::now();
        meter.source_at(now, source);
        if let Some(applied) = databases
            .new
            .control
            .applied_position(&options.migration)
            .await?
        {
            meter.applied(applied);
        }
        let lag = meter.lag(Instant::now());
        if lag <= options.max_lag {
            let since = *stable_since.get_or_insert(now);
            if now.duration_since(since) >= options.stable_for {
                info!(lag_ms = lag.as_millis() as u64, "lag is low and steady");
                return Ok(lag);
            }
        } else {
            stable_since = None;
        }
        if started.elapsed() > options.lag_wait {
            return Err(Error::operator("cutover.lag", format!("the lag did not stay under {} ms for {} s within {} s (now {} ms)", options.max_lag.as_millis(), options.stable_for.as_secs(), options.lag_wait.as_secs(), lag.as_millis()))
                .with_hint("let ferry catch up (check `ferry status`), lower the write load, or allow more with --max-lag"));
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            info!(
                lag_ms = lag.as_millis() as u64,
                bytes_behind = meter.lag_units(),
                "waiting for the lag to settle"
            );
        }
        tokio::time::sleep(options.poll).await;
    }
}

/// Waits until the checkpoint of `migration` stored by `target` reaches `position`.
async fn drain(
    target: &dyn Switchover,
    migration: &str,
    position: &Position,
    timeout: Duration,
    poll: Duration,
) -> Result<()> {
    let started = Instant::now();
    loop {
        // The budget is checked first: a zero timeout never waits (it rehearses the abort).
        if started.elapsed() >= timeout {
            return Err(Error::operator("cutover.fence_timeout", format!("the stream did not reach the fence position {position} within {} s", timeout.as_secs()))
                .with_hint("check that `ferry run` is streaming and caught up (`ferry status`), or allow more with --fence-timeout"));
        }
        if target
            .applied_position(migration)
            .await?
            .is_some_and(|applied| applied >= *position)
        {
            info!(%position, drain_ms = started.elapsed().as_millis() as u64, "drained to the fence");
            return Ok(());
        }
        tokio::time::sleep(poll).await;
    }
}

/// Stores the reverse migration's state on the old database: the stream starts at `position`
/// and every table counts as copied (the two databases are equal at the fence).
async fn start_reverse_state(
    old: &dyn Sink,
    catalog: &Catalog,
    reverse: &str,
    position: Position,
) -> Result<()> {
    old.create_tables(catalog).await?;
    old.start_stream(reverse, position).await?;
    for table in &catalog.tables {
        old.set_table_state(reverse, &table.name, TableState::Copied)
            .await?;
    }
    Ok(())
}

/// A dry run: everything but the fence, timed, to predict the write downtime.
async fn rehearse(
    databases: &Databases<'_>,
    options: &CutoverOptions,
    sequences: &[Sequence],
    tables: &[TableName],
    phase_before: CutoverPhase,
    lag: Duration,
) -> Result<CutoverReport> {
    let started = Instant::now();
    // Sequences only ever move forward, so copying them now is harmless.
    sync_sequences(databases.old.source, databases.new.sink, sequences, false).await?;
    let sequence_time = started.elapsed();
    let rehearsal = rehearsal_name(&options.migration);
    let started = Instant::now();
    let (_, snapshot) = databases
        .new
        .source
        .create_stream(&rehearsal, &stored_names(databases, tables))
        .await?;
    drop(snapshot);
    let reverse_time = started.elapsed();
    databases.new.control.drop_stream(&rehearsal).await?;
    let started = Instant::now();
    databases
        .new
        .control
        .load_cutover(&options.migration)
        .await?;
    let round_trip = started.elapsed();
    // Fence (a few round trips), drain (the lag plus how often idle positions are stored),
    // sequences, the reverse stream, two phase records.
    let predicted =
        round_trip * 6 + lag + Duration::from_millis(250) + sequence_time + reverse_time;
    info!(
        predicted_ms = predicted.as_millis() as u64,
        "dry run: nothing was fenced"
    );
    Ok(CutoverReport {
        phase_before,
        phase: phase_before,
        write_downtime_millis: None,
        predicted_downtime_millis: Some(predicted.as_millis() as u64),
        lag_millis: Some(lag.as_millis() as u64),
        fence_position: None,
        sequences_synced: sequences.len(),
        summary: "dry run: lag, verification and privileges allow a cutover; nothing was fenced"
            .into(),
    })
}
