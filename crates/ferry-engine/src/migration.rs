//! A whole run: prepare, copy what is not copied yet, then stream (in `run` mode).
//!
//! Why the copy and the stream fit together without losing or doubling a change:
//! - On the first run the source creates the stream and, atomically with it, a snapshot showing
//!   exactly the data committed before the stream's start position P. Chunks read under that
//!   snapshot plus every change after P is the whole table.
//! - A chunk interrupted by a crash is re-read on the next run under a fresh snapshot taken at
//!   some later point S. Streaming still starts from the checkpoint (at most S), so the changes
//!   between P and S are replayed over rows that already contain them. Each replayed change is
//!   an upsert of a full image, a delete, or an update of present columns only, so after the
//!   stream passes S every row equals the source again.
//! - A table added to the selection later is added to the stream first, then copied under a
//!   fresh snapshot, then streamed from the checkpoint: the same argument.
//! - Streaming starts only when every selected table is copied, so a copy never overwrites a
//!   newer streamed row with an older one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ferry_core::connector::{Sink, Snapshot, Source};
use ferry_core::schema::{Catalog, Sequence};
use ferry_core::select::Selection;
use ferry_core::state::{Chunk, TableState};
use ferry_core::{Error, Position, Result, TableName, TableSchema};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::progress::{Phase, Progress};
use crate::snapshot::{copy_chunks, CopyTask};
use crate::stream::{stream_changes, sync_sequences, StreamContext, StreamOptions};

/// Copy once, or copy and keep streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy the selected tables and exit (a dump and restore, resumable).
    Copy,
    /// Copy, then stream changes until asked to stop.
    Run,
}

/// What to migrate and how.
#[derive(Debug, Clone)]
pub struct MigrationOptions {
    /// Names the migration's stream and state; one source and target can host several.
    pub name: String,
    pub selection: Selection,
    pub mode: Mode,
    /// Parallel copy workers.
    pub parallel: usize,
    /// Target chunk size.
    pub rows_per_chunk: u64,
    pub stream: StreamOptions,
    /// A chunk whose copy takes longer is abandoned as a transient failure (then retried).
    pub chunk_timeout: std::time::Duration,
    /// Copy tables that failed in an earlier run afresh (a new invocation); automatic retries
    /// within one invocation leave them failed.
    pub recopy_failed: bool,
    /// Start over: forget the checkpoint and copy every table again (after a lost slot, say).
    pub restart: bool,
    /// Leave out what ferry's appliers of these migrations wrote to the source (the stream in
    /// the opposite direction), so two-way streaming never loops.
    pub ignore_writes_of: Vec<String>,
    /// Never copy: the stream and every table must already be set up (a reverse stream, or a
    /// migration whose target applications already use). Refuses rather than empty a table.
    pub stream_only: bool,
}

/// Runs a migration until done (copy mode) or until `shutdown` turns true (run mode).
pub async fn run_migration(
    source: &dyn Source,
    sink: &dyn Sink,
    options: &MigrationOptions,
    progress: &dyn Progress,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    progress.phase(Phase::Preparing);
    // Held until this run returns: no second process may rewrite this migration's stream or
    // table states meanwhile.
    let _lock = sink.lock_migration(&options.name).await?;
    let catalog = source.read_catalog(&options.selection).await?;
    if catalog.tables.is_empty() {
        return Err(Error::operator(
            "plan.no_tables",
            "no table on the source matches the selection",
        )
        .with_hint(
            "check --tables (patterns like 'public.*') and that the source user can see the tables",
        ));
    }
    if !catalog.unsupported.is_empty() {
        let list: Vec<String> = catalog
            .unsupported
            .iter()
            .map(|(name, reason)| format!("{name} ({reason})"))
            .collect();
        return Err(Error::operator(
            "plan.unsupported_table",
            format!("selected tables ferry cannot migrate: {}", list.join(", ")),
        )
        .with_hint("leave them out with --tables"));
    }
    if options.stream_only && options.restart {
        return Err(Error::operator(
            "plan.target_in_use",
            "cannot start over: applications already use the target of this migration",
        )
        .with_hint(
            "roll back first (`ferry rollback`), then start over with `ferry run --restart`",
        ));
    }
    sink.create_tables(&catalog).await?;
    if options.restart {
        info!(migration = %options.name, "starting over: forgetting the checkpoint and copying every table again");
        sink.reset(&options.name).await?;
    }
    let table_names: Vec<TableName> = catalog
        .tables
        .iter()
        .map(|table| table.name.clone())
        .collect();
    let mut state = sink.load_state(&options.name).await?;

    // A migration's table set never shrinks implicitly: a command with a narrower selection
    // under the same name would otherwise take tables out of a live stream without a word. Only
    // `--restart` and a table dropped on the source take a table out.
    let mut left: Vec<TableName> = state
        .tables
        .keys()
        .filter(|name| !table_names.contains(name))
        .cloned()
        .collect();
    if !left.is_empty() && !options.restart {
        let everything = source.read_catalog(&Selection::default()).await?;
        let exists = |name: &TableName| {
            everything.tables.iter().any(|table| table.name == *name)
                || everything
                    .unsupported
                    .iter()
                    .any(|(unsupported, _)| unsupported == name)
        };
        let (kept, dropped): (Vec<TableName>, Vec<TableName>) =
            left.into_iter().partition(|name| exists(name));
        if !kept.is_empty() {
            let list: Vec<String> = kept.iter().map(|name| name.to_string()).collect();
            return Err(Error::operator(
                "plan.tables_left_selection",
                format!(
                    "migration '{}' also moves {}, which this selection leaves out",
                    options.name,
                    list.join(", ")
                ),
            )
            .with_hint(format!(
                "select them too (--tables), or give this selection its own --name; to take them out of migration '{}' for good, start it over with --restart and the new selection",
                options.name
            )));
        }
        left = dropped;
    }
    for name in left {
        info!(table = %name, "forgetting a table that left the migration (--restart, or dropped on the source)");
        sink.forget_table(&options.name, &name).await?;
        state.tables.remove(&name);
    }

    if options.stream_only {
        require_streaming_state(&state, &table_names, &options.name)?;
    }

    // The snapshot the copy reads from, and where streaming starts.
    let mut snapshot: Option<Box<dyn Snapshot>> = None;
    let mut stream_start = None;
    match (options.mode, &state.stream) {
        (Mode::Run, None) => {
            refuse_foreign_rows(sink, &catalog, &state.tables).await?;
            let (position, created) = source.create_stream(&options.name, &table_names).await?;
            sink.start_stream(&options.name, position.clone()).await?;
            info!(migration = %options.name, %position, "change stream created");
            state = sink.load_state(&options.name).await?;
            snapshot = Some(created);
            stream_start = Some(position);
        }
        (Mode::Run, Some(checkpoint)) => {
            refuse_foreign_rows(sink, &catalog, &state.tables).await?;
            source.update_stream(&options.name, &table_names).await?;
            stream_start = Some(checkpoint.position.clone());
        }
        (Mode::Copy, stream) => {
            refuse_foreign_rows(sink, &catalog, &state.tables).await?;
            if stream.is_some() {
                // A later `run` streams these tables from the checkpoint: publish them before
                // their snapshot is taken, or changes in between would be lost.
                source.update_stream(&options.name, &table_names).await?;
            }
        }
    }

    // Where the stream that follows this copy starts: this run's, or, for a `copy` of a
    // migration that streams, the checkpoint its next `run` resumes from.
    let replayed_from: Option<Position> = stream_start.clone().or_else(|| {
        state
            .stream
            .as_ref()
            .map(|checkpoint| checkpoint.position.clone())
    });

    // Plan the tables that are not copied yet.
    let tables: BTreeMap<TableName, Arc<TableSchema>> = catalog
        .tables
        .iter()
        .map(|table| (table.name.clone(), Arc::new(table.clone())))
        .collect();
    // Failed tables are copied afresh on a new run (the operator fixed the cause); an automatic
    // retry leaves them failed, and the stream keeps skipping them.
    let left_failed: HashSet<TableName> = state
        .tables
        .iter()
        .filter(|(_, progress)| {
            progress.state == TableState::Failed && (!options.recopy_failed || options.stream_only)
        })
        .map(|(name, _)| name.clone())
        .collect();
    let to_copy: Vec<&Arc<TableSchema>> = tables
        .values()
        .filter(|table| {
            state.tables.get(&table.name).map(|progress| progress.state) != Some(TableState::Copied)
                && !left_failed.contains(&table.name)
        })
        .collect();
    let mut tasks = Vec::new();
    if !to_copy.is_empty() {
        progress.phase(Phase::Copying);
        if snapshot.is_none() {
            // A table without a key is copied only under a snapshot whose exact position is
            // known: the stream must leave out its changes that the copy already holds.
            let exact = replayed_from.is_some();
            let keyless = to_copy.iter().any(|table| table.primary_key.is_empty());
            snapshot = Some(source.fresh_snapshot(exact && keyless).await?);
        }
        let snapshot_ref = snapshot.as_deref().expect("set above");
        for table in &to_copy {
            let chunks = match state.tables.get(&table.name) {
                Some(existing) if existing.state == TableState::Copying => existing.chunks.clone(),
                _ => {
                    // Copied afresh under a stream that replays older changes over the new
                    // rows: its unique objects go until the stream has caught up (see below).
                    if replayed_from.is_some() {
                        sink.drop_objects_held_until_caught_up(table).await?;
                    }
                    sink.truncate(&table.name).await?;
                    // A table copied afresh (failed, say, after a column was added on the
                    // source) may lack columns the source has gained since it was created.
                    let columns: Vec<String> = table
                        .writable_columns()
                        .map(|column| column.name.clone())
                        .collect();
                    // (A target that cannot add them says so; the copy then names the column.)
                    if let Err(error) = sink.add_columns(table, &columns, false).await {
                        tracing::warn!(table = %table.name, error = %error, "the target table lacks columns the source has");
                    }
                    let ranges = snapshot_ref
                        .plan_chunks(table, options.rows_per_chunk)
                        .await?;
                    let chunks: Vec<Chunk> = ranges
                        .into_iter()
                        .enumerate()
                        .map(|(index, range)| Chunk {
                            index: index as u32,
                            range,
                            done: false,
                            rows: 0,
                            snapshot_position: None,
                        })
                        .collect();
                    sink.save_plan(&options.name, &table.name, &chunks).await?;
                    chunks
                }
            };
            let done: Vec<&Chunk> = chunks.iter().filter(|chunk| chunk.done).collect();
            progress.table_planned(
                &table.name,
                chunks.len(),
                done.len(),
                table.estimated_rows,
                done.iter().map(|chunk| chunk.rows).sum(),
            );
            let before = tasks.len();
            tasks.extend(
                chunks
                    .iter()
                    .filter(|chunk| !chunk.done)
                    .map(|chunk| CopyTask {
                        table: (*table).clone(),
                        chunk: chunk.clone(),
                    }),
            );
            if tasks.len() == before {
                sink.set_table_state(&options.name, &table.name, TableState::Copied)
                    .await?;
                progress.table_copied(&table.name);
            }
        }
        let copy = copy_chunks(
            snapshot_ref,
            sink,
            &options.name,
            tasks,
            options.parallel,
            options.chunk_timeout,
            replayed_from.is_some(),
            progress,
        );
        let mut copy_shutdown = shutdown.clone();
        tokio::select! {
            result = copy => result?,
            _ = wait_for_shutdown(&mut copy_shutdown) => {
                progress.phase(Phase::Stopped);
                info!("stopped during the copy; the next run resumes from the last committed chunk");
                return Ok(());
            }
        }
    }
    // The snapshot holds back cleanup on the source: let it go as soon as the copy is done.
    drop(snapshot);
    // Rows copied in this run may be newer than the changes the stream replays until it gets
    // here (see `StreamContext::catching_up_until`).
    let catching_up_until = if replayed_from.is_none() {
        None
    } else if to_copy.is_empty() {
        // Stored by the run that copied (this process may be a retry, or a restart).
        state.copy_end
    } else {
        let end = source.current_position().await?;
        sink.save_copy_end(&options.name, end.clone()).await?;
        Some(end)
    };

    progress.phase(Phase::Indexing);
    let table_list: Vec<TableSchema> = catalog.tables.clone();
    // Until the stream has passed the copy's end it replays changes older than rows already
    // copied: a unique value that moved from one row to another meanwhile is, for a moment,
    // held by both. Unique indexes and constraints (and the foreign keys that may need them)
    // would refuse that replay, so they wait until the stream has caught up.
    let holding = match (&replayed_from, &catching_up_until) {
        (Some(start), Some(until)) => {
            until.partial_cmp(start) == Some(std::cmp::Ordering::Greater)
                && table_list
                    .iter()
                    .any(TableSchema::has_objects_held_until_caught_up)
        }
        _ => false,
    };
    let deferred = if holding {
        if stream_start.is_some() {
            info!("unique indexes and constraints and foreign keys wait until the stream has caught up with the copy");
        } else {
            warn!("unique indexes and constraints and foreign keys are not built yet: `ferry run` builds them once its stream has caught up with this copy (cutover requires them)");
        }
        let building: Vec<TableSchema> = table_list
            .iter()
            .map(TableSchema::without_objects_held_until_caught_up)
            .collect();
        sink.create_secondary(&building).await?
    } else {
        sink.create_secondary(&table_list).await?
    };
    if !deferred.is_empty() && stream_start.is_none() && replayed_from.is_some() {
        warn!(objects = ?deferred, "the copied rows do not satisfy these yet: `ferry run` builds them once its stream has caught up with this copy (cutover requires them)");
    }
    if !deferred.is_empty() && replayed_from.is_none() {
        let names: Vec<String> = deferred
            .iter()
            .map(|(table, object)| format!("{object} on {table}"))
            .collect();
        return Err(Error::operator(
            "copy.inconsistent",
            format!(
                "the copy is done, but the copied rows do not satisfy {}: rows changed on the source while their chunks were read",
                names.join(", ")
            ),
        )
        .with_hint("stream the changes (`ferry run` with the same --name builds them once it has caught up), or copy again while the source takes no writes"));
    }
    let pending_secondary: Vec<TableSchema> = table_list
        .iter()
        .filter(|table| {
            deferred.iter().any(|(name, _)| *name == table.name)
                || (holding && table.has_objects_held_until_caught_up())
        })
        .cloned()
        .collect();
    let sequences: Vec<Sequence> = catalog.sequences.clone();
    sync_sequences(source, sink, &sequences, false).await?;

    let Some(start) = stream_start else {
        progress.phase(Phase::Stopped);
        return Ok(());
    };
    progress.phase(Phase::Streaming);
    let stream = source
        .open_stream(
            &options.name,
            start.clone(),
            &catalog.tables,
            &options.ignore_writes_of,
        )
        .await?;
    let applier = sink.open_applier(&options.name).await?;
    // Tables without a key: where their copies' snapshots stand (stored with their chunks).
    let mut keyless_after = std::collections::HashMap::new();
    if catalog
        .tables
        .iter()
        .any(|table| table.primary_key.is_empty())
    {
        let stored = sink.load_state(&options.name).await?;
        for table in catalog
            .tables
            .iter()
            .filter(|table| table.primary_key.is_empty())
        {
            let positions = stored
                .tables
                .get(&table.name)
                .into_iter()
                .flat_map(|progress| progress.chunks.iter())
                .filter_map(|chunk| chunk.snapshot_position.clone());
            let mut latest: Option<ferry_core::Position> = None;
            for position in positions {
                if latest.as_ref().is_none_or(|known| {
                    position.partial_cmp(known) == Some(std::cmp::Ordering::Greater)
                }) {
                    latest = Some(position);
                }
            }
            if let Some(latest) = latest {
                keyless_after.insert(table.name.clone(), latest);
            }
        }
    }
    let context = StreamContext {
        source,
        sink,
        sequences: &sequences,
        pending_secondary,
        catching_up_until,
        progress,
        options: &options.stream,
        keyless_after,
        tables: &catalog.tables,
        watch_for_tables: (!options.stream_only).then_some(&options.selection),
    };
    let result = stream_changes(context, stream, applier, start, left_failed, shutdown).await;
    progress.phase(Phase::Stopped);
    result
}

async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A stream-only run needs its stream and every table copied (or failed, which stays skipped):
/// it must never empty a table that applications use.
fn require_streaming_state(
    state: &ferry_core::state::MigrationState,
    tables: &[TableName],
    migration: &str,
) -> Result<()> {
    if state.stream.is_none() {
        return Err(Error::operator(
            "plan.no_stream",
            format!("migration '{migration}' has no change stream yet"),
        )
        .with_hint("a reverse stream is set up by `ferry cutover`; run it again"));
    }
    let not_copied: Vec<String> = tables
        .iter()
        .filter(|name| {
            !matches!(
                state.tables.get(*name).map(|progress| progress.state),
                Some(TableState::Copied | TableState::Failed)
            )
        })
        .map(|name| name.to_string())
        .collect();
    if not_copied.is_empty() {
        return Ok(());
    }
    Err(Error::operator(
        "plan.target_in_use",
        format!(
            "tables not fully copied while applications already use the target: {}",
            not_copied.join(", ")
        ),
    )
    .with_hint("ferry will not empty a table applications use; roll back (`ferry rollback`) to copy them again, or leave them out with --tables"))
}

/// A target table that holds rows ferry did not write is not ours to overwrite.
async fn refuse_foreign_rows(
    sink: &dyn Sink,
    catalog: &Catalog,
    known: &BTreeMap<TableName, ferry_core::state::TableProgress>,
) -> Result<()> {
    let mut occupied = Vec::new();
    for table in &catalog.tables {
        if !known.contains_key(&table.name) && !sink.is_empty(&table.name).await? {
            occupied.push(table.name.to_string());
        }
    }
    if occupied.is_empty() {
        return Ok(());
    }
    Err(Error::operator(
        "target.not_empty",
        format!("target tables already hold rows: {}", occupied.join(", ")),
    )
    .with_hint("empty or drop them on the target, or leave them out with --tables"))
}
