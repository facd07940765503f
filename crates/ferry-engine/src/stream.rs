//! The change stream loop: read events in commit order, merge them into batches, apply each
//! batch together with its checkpoint in one target transaction, then acknowledge the source.
//!
//! ```text
//!   source log --> next() --> BatchBuilder --(size or age)--> applier.apply(batch, checkpoint)
//!                                                                   | durable
//!                                                        acknowledge(checkpoint) --> source
//! ```
//!
//! Applying runs in its own task, fed through a channel of one: while batch N is applied, batch
//! N+1 is read and merged. Results come back in order; the source is acknowledged as they do.
//!
//! Progress rules, which make a crash at any instant safe:
//! - The checkpoint is the end position of the last transaction whose changes are all in the
//!   applied batches. A batch may end inside a transaction (to bound memory); the part already
//!   applied is replayed after a crash, which idempotent apply makes harmless.
//! - The source is acknowledged only up to a checkpoint that is durable on the target.
//! - While idle, positions the source reports as containing nothing for us are stored and
//!   acknowledged (about once a second) so the source does not retain its log for nothing.

use std::time::{Duration, Instant};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ferry_core::change::{Batch, Change, Relation, StreamEvent};
use ferry_core::connector::{ChangeApplier, ChangeStream, Sink, Source};
use ferry_core::schema::Sequence;
use ferry_core::select::Selection;
use ferry_core::{failpoint, Error, ErrorClass, Position, Result, TableName, TableSchema};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::merge::BatchBuilder;
use crate::progress::Progress;

/// Tuning of the apply loop.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Apply once a batch holds this many merged operations (bounds memory).
    pub max_batch_operations: usize,
    /// Apply once a batch holds about this many bytes of row data (bounds memory with large
    /// rows: 20,000 rows of 1 MB would not fit).
    pub max_batch_bytes: usize,
    /// Apply a non-empty batch at most this long after its first change arrived.
    pub max_batch_delay: Duration,
    /// How often sequences are copied while streaming.
    pub sequence_interval: Duration,
    /// How often an idle position is stored and acknowledged.
    pub idle_ack_interval: Duration,
    /// A batch whose apply takes longer is abandoned as a transient failure (a black-holed or
    /// stuck target); the run is retried from the checkpoint.
    pub apply_timeout: Duration,
    /// How often the source is asked whether new tables joined the selection (created since
    /// the run started); when some did, the run ends to start again at once and copy them.
    pub table_check_interval: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            max_batch_operations: 20_000,
            max_batch_bytes: 32 * 1024 * 1024,
            max_batch_delay: Duration::from_millis(100),
            sequence_interval: Duration::from_secs(10),
            idle_ack_interval: Duration::from_millis(250),
            apply_timeout: Duration::from_secs(300),
            table_check_interval: Duration::from_secs(10),
        }
    }
}

/// Everything the loop needs besides the stream itself.
pub struct StreamContext<'a> {
    pub source: &'a dyn Source,
    pub sink: &'a dyn Sink,
    pub sequences: &'a [Sequence],
    /// Tables whose indexes or constraints the copied data refused (see
    /// [`SchemaTarget::create_secondary`](ferry_core::connector::SchemaTarget::create_secondary)): tried again as the stream goes on, until they all exist.
    pub pending_secondary: Vec<TableSchema>,
    /// Set when this run copied tables: the source position after the copy. Until the stream
    /// passes it, rows on the target may be newer than the changes being replayed.
    pub catching_up_until: Option<Position>,
    pub progress: &'a dyn Progress,
    pub options: &'a StreamOptions,
    /// Tables without a key, with the position their copy's snapshot was exact at (if later
    /// than the stream's start): changes the copy already holds are left out, since they could
    /// not be replayed harmlessly (see [`StreamEvent::Begin`]).
    pub keyless_after: std::collections::HashMap<TableName, Position>,
    /// The selected tables as the source defined them when this run started.
    pub tables: &'a [TableSchema],
    /// Where new tables are looked for (see [`StreamOptions::table_check_interval`]); None when
    /// none may be copied now (applications use the target).
    pub watch_for_tables: Option<&'a Selection>,
}

struct Pending {
    builder: BatchBuilder,
    /// The last commit whose changes are all in `builder`: (position, commit time).
    last_commit: Option<(Position, i64)>,
    first_change_at: Option<Instant>,
    /// Tables the stream itself stops, with the reason, marked failed with the next batch.
    failing: Vec<(TableName, String)>,
    /// The builder holds changes to a table without a key from a transaction not yet
    /// committed: no batch may end there, or a crash would replay the part already applied.
    open_keyless: bool,
}

/// A batch applied and durable on the target.
struct Applied {
    checkpoint: Position,
    changes: u64,
    commit_time: Option<i64>,
}

/// Batches go to an apply task through a channel of one, so the next batch is read and merged
/// while the previous one is applied; results come back in order.
struct Pipeline {
    sender: Option<mpsc::Sender<(Batch, Position, Option<i64>)>>,
    results: mpsc::UnboundedReceiver<Result<Applied>>,
    /// Batches handed over whose result has not come back.
    in_flight: usize,
    /// The checkpoint of the last batch handed over.
    sent: Position,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    fn start(
        mut applier: Box<dyn ChangeApplier>,
        start: Position,
        timeout: Duration,
        failed: FailedTables,
    ) -> Pipeline {
        let (sender, mut receiver) = mpsc::channel::<(Batch, Position, Option<i64>)>(1);
        let (result_sender, results) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // How long the applier waited for each batch and took to apply it (debug log): an
            // applier that never waits is held back by the target, one that waits by the reading.
            let mut idle_since = Instant::now();
            while let Some((mut batch, checkpoint, commit_time)) = receiver.recv().await {
                let waited = idle_since.elapsed();
                let started = Instant::now();
                // Tables the stream itself stopped: skipped from the batch that marks them on
                // (never from an earlier one, whose checkpoint would pass their changes by).
                {
                    let mut failed = failed.lock().expect("failed tables lock");
                    for (table, _) in &batch.failed_tables {
                        failed.insert(table.clone());
                    }
                }
                let result = loop {
                    // Changes to a table that failed earlier are skipped (the table is re-copied
                    // on the next run), and so are the tables its cascades would have reached.
                    {
                        let mut failed = failed.lock().expect("failed tables lock");
                        for table in batch.reached_through(&failed) {
                            warn!(table = %table, "foreign-key actions reach this table through a stopped table: it stops too and is copied afresh on the next run");
                            failed.insert(table.clone());
                            batch.failed_tables.push((table, "[stream.cascade_through_failed] foreign-key actions reach this table through a table that stopped; run ferry again to copy it afresh".into()));
                        }
                    }
                    batch.without(&failed.lock().expect("failed tables lock"));
                    let result = match tokio::time::timeout(timeout, applier.apply(&batch, checkpoint.clone(), commit_time)).await {
                        Ok(result) => result,
                        Err(_) => Err(Error::transient("apply.timeout", format!("applying a batch took longer than {} s", timeout.as_secs()))
                            .with_hint("the target is unreachable or stuck; ferry retries from the checkpoint")),
                    };
                    match result {
                        // A change the target rejects stops only its table: apply the batch
                        // without it, marking the table failed in the same transaction.
                        Err(error) if error.class() == ErrorClass::Definite && error.table().is_some() => {
                            let table = error.table().expect("checked").clone();
                            error!(table = %table, position = %checkpoint, code = error.code(), error = %error, "the target rejected a change: this table stops, the others go on; fix the cause and run ferry again to copy it afresh");
                            failed.lock().expect("failed tables lock").insert(table.clone());
                            batch.failed_tables.push((table, format!("[{}] {}", error.code(), error.message())));
                        }
                        other => break other,
                    }
                }
                .map(|()| Applied { checkpoint, changes: batch.change_count, commit_time });
                debug!(
                    changes = batch.change_count,
                    waited_ms = waited.as_millis() as u64,
                    applied_ms = started.elapsed().as_millis() as u64,
                    "batch applied"
                );
                idle_since = Instant::now();
                let failed = result.is_err();
                if result_sender.send(result).is_err() || failed {
                    break;
                }
            }
        });
        Pipeline {
            sender: Some(sender),
            results,
            in_flight: 0,
            sent: start,
            task: Some(task),
        }
    }

    /// The error that ended the apply task, if it reported one.
    fn task_error(&mut self) -> Error {
        while let Ok(result) = self.results.try_recv() {
            if let Err(error) = result {
                return error;
            }
        }
        Error::definite("stream.apply_task", "the apply task ended")
    }

    /// Stops taking batches and waits for the one being applied to commit or fail, so that no
    /// older batch can commit after a retry has started applying newer ones.
    async fn stop(&mut self) {
        self.sender = None;
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(120), task)
                .await
                .is_err()
            {
                warn!("the batch being applied did not finish within 120 s; abandoning it");
                abort.abort();
            }
        }
    }

    async fn send(
        &mut self,
        batch: Batch,
        checkpoint: Position,
        commit_time: Option<i64>,
    ) -> Result<()> {
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| Error::definite("stream.closed", "the apply pipeline is closed"))?;
        if sender
            .send((batch, checkpoint.clone(), commit_time))
            .await
            .is_err()
        {
            // The task ended on an error it reported: return that one (it may be transient).
            return Err(self.task_error());
        }
        self.in_flight += 1;
        self.sent = checkpoint;
        Ok(())
    }
}

/// Streams until `shutdown` turns true (then applies what it holds and returns `Ok`) or an error.
pub async fn stream_changes(
    context: StreamContext<'_>,
    mut stream: Box<dyn ChangeStream>,
    applier: Box<dyn ChangeApplier>,
    start: Position,
    failed_before: HashSet<TableName>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let options = context.options;
    let mut pending_secondary = context.pending_secondary.clone();
    let mut indexing: Option<Indexing<'_>> = None;
    // Until the target holds every change up to here, the objects waiting in
    // `pending_secondary` are not built (see `StreamContext::catching_up_until`); once it does,
    // they are built at once.
    let mut catching_up = context.catching_up_until.clone();
    // Everything before `acknowledged` is durable on the target and acknowledged to the source.
    let mut acknowledged = start.clone();
    let failed: FailedTables = Arc::new(Mutex::new(failed_before));
    let mut pipeline = Pipeline::start(
        applier,
        start.clone(),
        options.apply_timeout,
        failed.clone(),
    );
    let mut pending = Pending {
        builder: BatchBuilder::new(),
        last_commit: None,
        first_change_at: None,
        failing: Vec::new(),
        open_keyless: false,
    };
    // Where the current transaction stands against snapshots (see `StreamEvent::Begin`).
    let mut transaction_at: Option<Position> = None;
    let mut in_transaction = false;
    // The last commit (or idle point) read: a change belongs to the transaction after it.
    let mut last_read_commit = start.clone();
    // Tables this loop stopped; the apply task learns of them from the batch that marks them.
    let mut stopping: HashSet<TableName> = HashSet::new();
    // Tables whose shape the stream has described in this run: the first description matches
    // the definitions read at the start; later ones are read again from the source.
    let mut described: HashSet<TableName> = HashSet::new();
    // The definition each table's changes were last followed with (types widen from it).
    let mut followed: std::collections::HashMap<TableName, ferry_core::TableSchema> =
        std::collections::HashMap::new();
    let mut last_idle_ack = Instant::now();
    let mut sequence_timer = tokio::time::interval(options.sequence_interval);
    sequence_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sequence_timer.tick().await;

    let mut table_timer = tokio::time::interval(options.table_check_interval);
    table_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    table_timer.tick().await;
    // Tables created on the source since this run started, which the selection takes in.
    let mut joined: Vec<TableName> = Vec::new();
    let mut table_look: Option<TableLook<'_>> = None;
    // Once new tables are seen: the source's end of log then. The run ends when the stream has
    // read that far (every statement before the look, an ALTER included, is behind the
    // checkpoint the next run starts from), or after a minute at most.
    let mut starting_over_at: Option<(Position, Instant)> = None;

    let result: Result<()> = loop {
        if catching_up
            .as_ref()
            .is_some_and(|until| !still_catching_up(until, &acknowledged))
        {
            catching_up = None;
            if indexing.is_none() && !pending_secondary.is_empty() {
                info!("the stream has caught up with the copy: building the indexes and constraints that waited for it");
                indexing = Some(build_secondary(context.sink, pending_secondary.clone()));
            }
        }
        if let Some((at, since)) = &starting_over_at {
            let reached = matches!(
                last_read_commit.partial_cmp(at),
                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
            );
            if !in_transaction && (reached || since.elapsed() > Duration::from_secs(60)) {
                break Ok(());
            }
        }
        let deadline = pending
            .first_change_at
            .map(|first| first + options.max_batch_delay);
        // Biased, in this order: a stop, applied batches, the batch deadline and the timers
        // before the next change, so a source that always has a change ready cannot starve them
        // (a batch would only be cut by size, indexes and sequences would wait for a pause).
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    info!("stopping the stream");
                    break Ok(());
                }
            }
            applied = pipeline.results.recv(), if pipeline.in_flight > 0 => {
                match applied {
                    Some(Ok(applied)) => acknowledge(&mut pipeline, applied, &mut *stream, &mut acknowledged, context.progress),
                    Some(Err(error)) => break Err(error),
                    None => break Err(pipeline.task_error()),
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() && !pending.open_keyless => {
                if let Err(error) = flush(&mut pending, &mut pipeline).await {
                    break Err(error);
                }
            }
            built = finished(&mut indexing), if indexing.is_some() => {
                indexing = None;
                match built {
                    Ok(Ok(left)) => {
                        pending_secondary.retain(|table| left.iter().any(|(name, _)| *name == table.name));
                        if pending_secondary.is_empty() {
                            info!("every index and constraint exists on the target now");
                        }
                    }
                    Ok(Err(error)) => warn!(code = error.code(), error = %error, "creating indexes failed; will retry"),
                    Err(_) => warn!("creating indexes timed out; will retry"),
                }
            }
            _ = sequence_timer.tick() => {
                // Indexes the copied rows refused: built beside the stream, which keeps reading.
                if indexing.is_none() && catching_up.is_none() && !pending_secondary.is_empty() {
                    indexing = Some(build_secondary(context.sink, pending_secondary.clone()));
                }
                // Bounded, so a stuck server cannot stall the stream here.
                match tokio::time::timeout(options.apply_timeout, sync_sequences(context.source, context.sink, context.sequences, false)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => warn!(code = error.code(), error = %error, "copying sequences failed; will retry"),
                    Err(_) => warn!("copying sequences timed out; will retry"),
                }
            }
            _ = table_timer.tick(), if context.watch_for_tables.is_some() && table_look.is_none() && starting_over_at.is_none() => {
                let selection = context.watch_for_tables.expect("checked in the guard");
                let source = context.source;
                let timeout = options.apply_timeout;
                table_look = Some(Box::pin(async move {
                    tokio::time::timeout(timeout, source.read_catalog(selection)).await
                }));
            }
            looked = finished(&mut table_look), if table_look.is_some() => {
                table_look = None;
                match looked {
                    Ok(Ok(catalog)) => {
                        joined = catalog
                            .tables
                            .iter()
                            .map(|table| table.name.clone())
                            .filter(|name| !context.tables.iter().any(|known| known.name == *name))
                            .collect();
                        if !joined.is_empty() {
                            match context.source.current_position().await {
                                Ok(position) => {
                                    info!(tables = ?joined.iter().map(|name| name.to_string()).collect::<Vec<_>>(), "new tables joined the selection on the source: streaming up to the source's present position, then starting again to copy them");
                                    starting_over_at = Some((position, Instant::now()));
                                }
                                Err(error) => {
                                    warn!(code = error.code(), error = %error, "cannot read the source's position; looking for new tables again later");
                                    joined.clear();
                                }
                            }
                        }
                    }
                    Ok(Err(error)) => warn!(code = error.code(), error = %error, "looking for new tables failed; will retry"),
                    Err(_) => warn!("looking for new tables timed out; will retry"),
                }
            }
            event = stream.next() => {
                let event = match event {
                    Ok(Some(event)) => event,
                    Ok(None) => break Err(Error::transient("stream.ended", "the source ended the change stream")),
                    Err(error) => break Err(error),
                };
                // Tables without a key: leave out what the target already holds.
                let event = match event {
                    StreamEvent::Change(change) => match screen_keyless(change, transaction_at.as_ref(), &start, &context.keyless_after) {
                        Screened::Apply(change) => StreamEvent::Change(change),
                        Screened::Held => continue,
                        Screened::Undecidable { apply, tables } => {
                            for table in tables {
                                if stopping.insert(table.clone()) {
                                    error!(table = %table, "cannot tell whether the copy of this table (it has no key) already holds a change: the table stops and is copied afresh on the next run");
                                    pending.failing.push((table, "[stream.keyless_position] the change stream and the copy's snapshot positions cannot be compared (another server?); run ferry again to copy the table afresh".to_string()));
                                }
                            }
                            match apply {
                                Some(change) => StreamEvent::Change(change),
                                None => continue,
                            }
                        }
                    },
                    other => other,
                };
                match event {
                    StreamEvent::Begin { at } => {
                        in_transaction = true;
                        transaction_at = at;
                    }
                    StreamEvent::Change(change) if concerns_only_failed_tables(&change, &failed, &stopping) => {}
                    // A key change that cascades, read while the copy is being caught up: applied
                    // by value it could reach child rows copied after it (and miss the ones it
                    // should), so its tables stop and are copied afresh on the next run.
                    StreamEvent::Change(Change::Cascade(operation))
                        if operation.new.is_some()
                            && context.catching_up_until.as_ref().is_some_and(|until| {
                                until.partial_cmp(&last_read_commit) == Some(std::cmp::Ordering::Greater)
                            }) =>
                    {
                        for table in operation.touched_tables() {
                            if stopping.insert(table.clone()) {
                                error!(table = %table, parent = %operation.relation.table, "a key change cascaded while the copy was catching up: this table stops and is copied afresh on the next run");
                                pending.failing.push((table, format!("[stream.cascade_during_copy] a key change of {} cascaded to this table while the copy was being caught up; run ferry again to copy it afresh", operation.relation.table)));
                            }
                        }
                    }
                    StreamEvent::Change(change) => {
                        pending.first_change_at.get_or_insert_with(Instant::now);
                        if in_transaction && change.is_keyless_row() {
                            pending.open_keyless = true;
                        }
                        if let Err(error) = pending.builder.add(change) {
                            break Err(error);
                        }
                        if pending.open_keyless
                            && pending.builder.byte_count() >= options.max_batch_bytes
                            && pending.builder.byte_count() - options.max_batch_bytes < 64 * 1024
                        {
                            warn!(bytes = pending.builder.byte_count(), "a large transaction changed a table without a key: it is held whole in memory until it commits (it cannot be applied in parts)");
                        }
                        if pending.builder.operation_count() >= options.max_batch_operations
                            || pending.builder.byte_count() >= options.max_batch_bytes
                        {
                            if let Err(error) = flush(&mut pending, &mut pipeline).await {
                                break Err(error);
                            }
                        }
                    }
                    StreamEvent::Commit { position, commit_time_unix_micros } => {
                        in_transaction = false;
                        pending.open_keyless = false;
                        last_read_commit = position.clone();
                        if is_newer(&position, &pipeline.sent) {
                            pending.last_commit = Some((position, commit_time_unix_micros));
                            pending.first_change_at.get_or_insert_with(Instant::now);
                        }
                        if pending.builder.operation_count() >= options.max_batch_operations
                            || pending.builder.byte_count() >= options.max_batch_bytes
                        {
                            if let Err(error) = flush(&mut pending, &mut pipeline).await {
                                break Err(error);
                            }
                        }
                    }
                    StreamEvent::Fence { position } => {
                        if !in_transaction {
                            last_read_commit = position.clone();
                        }
                        // Everything before the fence is received: apply it, then store the
                        // fence position right away (between transactions, so nothing is open).
                        let result = match flush(&mut pending, &mut pipeline).await {
                            Ok(()) if !in_transaction && is_newer(&position, &pipeline.sent) => pipeline.send(Batch::default(), position, None).await,
                            other => other,
                        };
                        if let Err(error) = result {
                            break Err(error);
                        }
                    }
                    StreamEvent::SchemaChanged { relation } => {
                        // Everything before the change applies in the old shape first.
                        let settled = match flush(&mut pending, &mut pipeline).await {
                            Ok(()) => settle(&mut pipeline, &mut *stream, &mut acknowledged, context.progress).await,
                            Err(error) => Err(error),
                        };
                        if let Err(error) = settled {
                            break Err(error);
                        }
                        // A table the target cannot follow stops alone (copied afresh on the
                        // next run); only a transient failure stops the stream.
                        let first = described.insert(relation.table.clone());
                        let stop = match follow_schema_change(&context, &relation, first, &mut followed).await {
                            Ok(stop) => stop,
                            Err(error) if error.class() == ErrorClass::Transient => break Err(error),
                            Err(error) => Some(format!("[{}] {error}", error.code())),
                        };
                        if let Some(reason) = stop {
                            if stopping.insert(relation.table.clone()) {
                                error!(table = %relation.table, reason = %reason, "the table's columns changed on the source in a way the target cannot follow by itself: the table stops and is copied afresh on the next run");
                                pending.failing.push((relation.table.clone(), reason));
                            }
                        }
                    }
                    StreamEvent::Idle { position } => {
                        if !in_transaction {
                            last_read_commit = position.clone();
                        }
                        let nothing_pending = !in_transaction && pending.builder.is_empty() && pending.last_commit.is_none() && pipeline.in_flight == 0;
                        if nothing_pending && is_newer(&position, &acknowledged) && last_idle_ack.elapsed() >= options.idle_ack_interval {
                            last_idle_ack = Instant::now();
                            debug!(%position, "storing an idle position");
                            if let Err(error) = pipeline.send(Batch::default(), position, None).await {
                                break Err(error);
                            }
                        }
                    }
                }
            }
        }
    };
    let outcome = match result {
        Ok(()) => {
            drain(
                &mut pending,
                &mut pipeline,
                &mut *stream,
                &mut acknowledged,
                context.progress,
            )
            .await
        }
        Err(error) => Err(error),
    };
    pipeline.stop().await;
    outcome?;
    // Stopped after catching up but before the waiting objects were built: they are built now
    // (or the build under way is finished) rather than left missing until the next run.
    let caught_up = context
        .catching_up_until
        .as_ref()
        .is_none_or(|until| !still_catching_up(until, &acknowledged));
    if caught_up && !pending_secondary.is_empty() {
        info!("building the indexes and constraints that waited for the stream before stopping");
        let building = match indexing.take() {
            Some(running) => running,
            None => build_secondary(context.sink, pending_secondary.clone()),
        };
        // Not longer than a batch may take: the stop must not wait for hours.
        match tokio::time::timeout(options.apply_timeout, building)
            .await
            .unwrap_or_else(Err)
        {
            Ok(Ok(left)) if left.is_empty() => {
                info!("every index and constraint exists on the target now")
            }
            Ok(Ok(_)) => info!("some indexes and constraints still wait; the next run builds them"),
            Ok(Err(error)) => {
                warn!(code = error.code(), error = %error, "creating indexes failed; the next run tries again")
            }
            Err(_) => warn!("creating indexes timed out; the next run tries again"),
        }
    }
    match tokio::time::timeout(
        options.apply_timeout,
        sync_sequences(context.source, context.sink, context.sequences, false),
    )
    .await
    {
        Ok(result) => result?,
        Err(_) => warn!("copying sequences at shutdown timed out; the next run copies them"),
    }
    if tokio::time::timeout(Duration::from_secs(10), stream.close())
        .await
        .is_err()
    {
        warn!("the source did not confirm the end of the stream in time; stopping anyway (the checkpoint is durable)");
    }
    if !joined.is_empty() {
        return Err(Error::transient(
            "stream.tables_joined",
            format!(
                "new tables joined the selection: {}",
                joined
                    .iter()
                    .map(|name| name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .starting_over_for(joined));
    }
    Ok(())
}

/// Graceful stop: applies what is held, waits for every batch and acknowledges it.
async fn drain(
    pending: &mut Pending,
    pipeline: &mut Pipeline,
    stream: &mut dyn ChangeStream,
    acknowledged: &mut Position,
    progress: &dyn Progress,
) -> Result<()> {
    flush(pending, pipeline).await?;
    pipeline.sender = None;
    while pipeline.in_flight > 0 {
        match pipeline.results.recv().await {
            Some(Ok(applied)) => acknowledge(pipeline, applied, stream, acknowledged, progress),
            Some(Err(error)) => return Err(error),
            None => return Err(pipeline.task_error()),
        }
    }
    Ok(())
}

/// Waits until every batch handed over is durable (and acknowledged), keeping the pipeline open.
async fn settle(
    pipeline: &mut Pipeline,
    stream: &mut dyn ChangeStream,
    acknowledged: &mut Position,
    progress: &dyn Progress,
) -> Result<()> {
    while pipeline.in_flight > 0 {
        match pipeline.results.recv().await {
            Some(Ok(applied)) => acknowledge(pipeline, applied, stream, acknowledged, progress),
            Some(Err(error)) => return Err(error),
            None => return Err(pipeline.task_error()),
        }
    }
    Ok(())
}

/// Brings the target table to the shape the source now logs `relation` with: columns the
/// target lacks are added as the source defines them. A column dropped on the source stays on
/// the target (rows written from now on leave it to its default). Returns why the table must
/// be copied afresh instead, if it must: a column whose default is not a constant (identity,
/// serial, `now()`) gave the existing source rows values the log never carried.
async fn follow_schema_change(
    context: &StreamContext<'_>,
    relation: &Relation,
    first: bool,
    followed: &mut std::collections::HashMap<TableName, ferry_core::TableSchema>,
) -> Result<Option<String>> {
    let columns: Vec<String> = relation
        .columns
        .iter()
        .map(|column| column.name.clone())
        .collect();
    // The definitions read when this run started, while the table has exactly the columns it
    // had then, with the same types where the source says (the first description of each table
    // lands here at every start); otherwise the source's definition now: a type may have
    // changed after the start's read and before the table's first change. A table gone from
    // the source since is described by the start's definition if the names agree.
    let started_with = context
        .tables
        .iter()
        .filter(|_| first)
        .find(|table| table.name == relation.table)
        .filter(|table| {
            let known: Vec<&String> = table
                .writable_columns()
                .map(|column| &column.name)
                .collect();
            known.len() == columns.len() && columns.iter().all(|name| known.contains(&name))
        })
        .cloned();
    let same_types = started_with.as_ref().is_some_and(|table| {
        relation.columns.iter().all(|logged| {
            let known = table.column(&logged.name);
            match (
                &logged.type_signature,
                known.and_then(|column| column.type_signature.as_ref()),
            ) {
                (Some(logged), Some(known)) => logged == known,
                // A source that gives no signature (MySQL describes tables only when they change):
                // read again.
                _ => false,
            }
        })
    });
    let current = if same_types {
        None
    } else {
        let selection = Selection::default().restricted_to(std::slice::from_ref(&relation.table));
        context
            .source
            .read_catalog(&selection)
            .await?
            .tables
            .into_iter()
            .find(|table| table.name == relation.table)
    };
    let table =
        match (current, started_with) {
            (Some(current), _) => current,
            (None, Some(started)) => started,
            (None, None) => return Err(Error::operator(
                "stream.table_gone",
                format!(
                    "{} changed shape on the source and no longer exists there",
                    relation.table
                ),
            )
            .with_hint(
                "leave the table out of the migration (run with --restart and the new selection)",
            )),
        };
    // A column with a computed default gave the existing source rows values the log never
    // carried: decided before anything is added, so a crash in between decides the same again.
    let present = context.sink.target_columns(&relation.table).await?;
    // A column renamed on the source looks like one dropped and one added: adding the new name
    // would leave the existing rows' values behind under the old one. (Columns the source still
    // has but does not log, such as generated ones, are not gone.)
    let same = |a: &String, b: &String| a.eq_ignore_ascii_case(b);
    let added: Vec<&String> = columns
        .iter()
        .filter(|name| !present.iter().any(|known| same(known, name)))
        .collect();
    // Gone: columns the table had when this run started that neither the log nor the source's
    // definition has now (not the target's leftovers of columns dropped long ago).
    let gone: Vec<&String> = context
        .tables
        .iter()
        .find(|known| known.name == relation.table)
        .map(|known| {
            known
                .writable_columns()
                .map(|column| &column.name)
                .filter(|known| !columns.iter().any(|name| same(known, name)))
                .filter(|known| !table.columns.iter().any(|column| same(&column.name, known)))
                .collect()
        })
        .unwrap_or_default();
    if !added.is_empty() && !gone.is_empty() {
        return Ok(Some(format!(
            "[stream.column_renamed] column(s) {} appeared on the source while {} left it: a rename would leave the existing rows' values behind; run ferry again to copy the table afresh",
            added.iter().map(|name| name.as_str()).collect::<Vec<_>>().join(", "),
            gone.iter().map(|name| name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let computed: Vec<&String> = columns
        .iter()
        .filter(|name| !present.contains(name))
        .filter(|name| {
            table
                .column(name)
                .is_some_and(|column| !constant_default(column))
        })
        .collect();
    if !computed.is_empty() {
        return Ok(Some(format!(
            "[stream.column_added] column(s) {} were added on the source with a computed default (identity, sequence, function): the existing rows' values are only on the source; run ferry again to copy the table afresh",
            computed.iter().map(|name| name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let added = context.sink.add_columns(&table, &columns, true).await?;
    if !added.is_empty() {
        info!(table = %relation.table, columns = ?added, "columns added on the source: added on the target too");
    }
    let previous = followed
        .get(&relation.table)
        .or_else(|| {
            context
                .tables
                .iter()
                .find(|known| known.name == relation.table)
        })
        .cloned();
    let widened = context
        .sink
        .widen_columns(previous.as_ref(), &table)
        .await?;
    followed.insert(relation.table.clone(), table.clone());
    if !widened.is_empty() {
        info!(table = %relation.table, columns = ?widened, "column types widened on the source: widened on the target too");
    }
    Ok(None)
}

/// True when every existing row takes the same value for a column added with this definition
/// (no default, or a literal one), as the source's rows did.
fn constant_default(column: &ferry_core::Column) -> bool {
    if column.identity.is_some() || column.generated.is_some() {
        return false;
    }
    column.default.as_deref().is_none_or(|default| {
        let upper = default.trim().to_ascii_uppercase();
        // SQL's functions without parentheses name the session that runs the ALTER (the user,
        // the time): the target's ALTER runs as ferry, at another time.
        let first = upper
            .split(|character: char| !(character.is_ascii_alphanumeric() || character == '_'))
            .next()
            .unwrap_or_default();
        !default.contains('(')
            && !upper.starts_with("CURRENT_")
            && !upper.starts_with("LOCALTIME")
            && !upper.starts_with("NOW")
            && !matches!(
                first,
                "USER" | "SESSION_USER" | "SYSTEM_USER" | "CURRENT_USER"
            )
    })
}

/// Work running beside the stream, bounded by a timeout.
type Beside<'a, T> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<Result<T>, tokio::time::error::Elapsed>,
            > + Send
            + 'a,
    >,
>;

/// A build of the indexes the copied rows refused, or that waited for the stream to catch up.
type Indexing<'a> = Beside<'a, Vec<(TableName, String)>>;

/// How long a build beside the stream may take: a unique index on a large table can take hours,
/// and abandoning one would only start the same build again beside it.
const BUILD_BESIDE_STREAM: Duration = Duration::from_secs(7 * 24 * 3600);

/// Builds the secondary objects of `tables` beside the stream (within [`BUILD_BESIDE_STREAM`]).
fn build_secondary(sink: &dyn Sink, tables: Vec<TableSchema>) -> Indexing<'_> {
    Box::pin(async move {
        tokio::time::timeout(BUILD_BESIDE_STREAM, sink.create_secondary(&tables)).await
    })
}

/// True while the target does not yet hold every change up to `until` (the copy's end): the
/// stream may still replay changes older than rows the copy took. Positions that cannot be
/// compared count as caught up, as for the cascade guard.
fn still_catching_up(until: &Position, acknowledged: &Position) -> bool {
    until.partial_cmp(acknowledged) == Some(std::cmp::Ordering::Greater)
}

/// A look at the source's tables.
type TableLook<'a> = Beside<'a, ferry_core::schema::Catalog>;

/// The outcome of the work beside the stream, once it has one (never, when there is none).
async fn finished<T>(
    work: &mut Option<Beside<'_, T>>,
) -> std::result::Result<Result<T>, tokio::time::error::Elapsed> {
    match work {
        Some(running) => running.await,
        None => std::future::pending().await,
    }
}

/// Tables whose changes are skipped because the target rejected one.
type FailedTables = Arc<Mutex<HashSet<TableName>>>;

/// True when the change concerns only failed (or stopping) tables.
/// What to do with a change, as far as tables without a key go.
enum Screened {
    Apply(Change),
    /// The target holds it already (through its copy's snapshot or an applied batch):
    /// replaying it would double it (or, for a truncate, undo the copy).
    Held,
    /// These tables' copies cannot be placed against the change: they must stop (and `apply`,
    /// what remains of the change, goes on).
    Undecidable {
        apply: Option<Change>,
        tables: Vec<TableName>,
    },
}

/// Leaves out of `change` what the target already holds of tables without a key: a row change
/// whole, a truncate's held tables, a cascade's rules into held tables. A transaction is held
/// when its place (`at`) is at or before the stream's start or the table's copy snapshot.
fn screen_keyless(
    change: Change,
    transaction_at: Option<&Position>,
    start: &Position,
    keyless_after: &std::collections::HashMap<TableName, Position>,
) -> Screened {
    use std::cmp::Ordering::{Equal, Less};
    // Some(true): held; Some(false): not held; None: cannot tell.
    let held = |table: &TableName| -> Option<bool> {
        let Some(at) = transaction_at else {
            return (!keyless_after.contains_key(table)).then_some(false);
        };
        if matches!(at.partial_cmp(start), Some(Less | Equal)) {
            return Some(true);
        }
        match keyless_after.get(table) {
            None => Some(false),
            Some(snapshot) => at
                .partial_cmp(snapshot)
                .map(|order| matches!(order, Less | Equal)),
        }
    };
    match change {
        Change::Insert { ref relation, .. }
        | Change::Update { ref relation, .. }
        | Change::Delete { ref relation, .. }
            if relation.is_keyless() =>
        {
            match held(&relation.table) {
                Some(true) => Screened::Held,
                Some(false) => Screened::Apply(change),
                None => Screened::Undecidable {
                    apply: None,
                    tables: vec![relation.table.clone()],
                },
            }
        }
        Change::Truncate {
            relations,
            cascade,
            restart_identity,
        } => {
            let mut undecidable = Vec::new();
            let kept: Vec<_> = relations
                .into_iter()
                .filter(|relation| {
                    if !relation.is_keyless() {
                        return true;
                    }
                    match held(&relation.table) {
                        Some(held) => !held,
                        None => {
                            undecidable.push(relation.table.clone());
                            false
                        }
                    }
                })
                .collect();
            let apply = (!kept.is_empty()).then_some(Change::Truncate {
                relations: kept,
                cascade,
                restart_identity,
            });
            match (apply, undecidable.is_empty()) {
                (apply, false) => Screened::Undecidable {
                    apply,
                    tables: undecidable,
                },
                (Some(change), true) => Screened::Apply(change),
                (None, true) => Screened::Held,
            }
        }
        Change::Cascade(operation) if !keyless_after.is_empty() => {
            // A cascade reaches tables by their foreign keys; a table without a key whose copy
            // holds this transaction already carries its effect.
            let keyless_touched: Vec<TableName> = operation
                .touched_tables()
                .into_iter()
                .filter(|table| keyless_after.contains_key(table))
                .collect();
            let undecidable: Vec<TableName> = keyless_touched
                .iter()
                .filter(|table| held(table).is_none())
                .cloned()
                .collect();
            let held_tables: Vec<TableName> = keyless_touched
                .into_iter()
                .filter(|table| held(table) != Some(false))
                .collect();
            if held_tables.is_empty() {
                return Screened::Apply(Change::Cascade(operation));
            }
            let mut narrowed = (*operation).clone();
            narrowed.rules = std::sync::Arc::new(
                operation
                    .rules
                    .iter()
                    .filter(|rule| !held_tables.contains(&rule.table))
                    .cloned()
                    .collect(),
            );
            let narrowed = Change::Cascade(std::sync::Arc::new(narrowed));
            if undecidable.is_empty() {
                Screened::Apply(narrowed)
            } else {
                Screened::Undecidable {
                    apply: Some(narrowed),
                    tables: undecidable,
                }
            }
        }
        change => Screened::Apply(change),
    }
}

fn concerns_only_failed_tables(
    change: &Change,
    failed: &FailedTables,
    stopping: &HashSet<TableName>,
) -> bool {
    let failed = failed.lock().expect("failed tables lock");
    if failed.is_empty() && stopping.is_empty() {
        return false;
    }
    let stopped = |table: &TableName| failed.contains(table) || stopping.contains(table);
    match change {
        Change::Insert { relation, .. }
        | Change::Update { relation, .. }
        | Change::Delete { relation, .. } => stopped(&relation.table),
        Change::Truncate { relations, .. } => {
            relations.iter().all(|relation| stopped(&relation.table))
        }
        Change::Cascade(operation) => operation.touched_tables().iter().all(stopped),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Hands what is pending to the apply task, with the last complete commit as its checkpoint
/// (or, in the middle of a transaction, the previous checkpoint again).
async fn flush(pending: &mut Pending, pipeline: &mut Pipeline) -> Result<()> {
    if pending.builder.is_empty() && pending.last_commit.is_none() && pending.failing.is_empty() {
        return Ok(());
    }
    if pending.open_keyless {
        // Not inside a transaction that changed a table without a key (see `Pending`); at a
        // stop, what is held is simply read again from the checkpoint next time.
        return Ok(());
    }
    let mut batch = pending.builder.take();
    batch.failed_tables.append(&mut pending.failing);
    let (checkpoint, commit_time) = match pending.last_commit.take() {
        Some((position, time)) => (position, Some(time)),
        None => (pipeline.sent.clone(), None),
    };
    pending.first_change_at = None;
    pipeline.send(batch, checkpoint, commit_time).await
}

/// A batch is durable: tell the source, then the progress observer.
fn acknowledge(
    pipeline: &mut Pipeline,
    applied: Applied,
    stream: &mut dyn ChangeStream,
    acknowledged: &mut Position,
    progress: &dyn Progress,
) {
    pipeline.in_flight -= 1;
    failpoint::hit("stream.after_apply_before_ack");
    if is_newer(&applied.checkpoint, acknowledged) {
        stream.acknowledge(applied.checkpoint.clone());
        *acknowledged = applied.checkpoint.clone();
    }
    progress.changes_applied(applied.changes, applied.checkpoint, applied.commit_time);
}

/// Copies the current values of these sequences (as the catalog describes them) to the target,
/// forward only. A value read without its owning column gets the one the catalog names (with
/// `owners_from_catalog`, the catalog's owner replaces the one read): a target of another engine,
/// or of the other direction, finds the sequence through it.
pub async fn sync_sequences(
    source: &dyn Source,
    sink: &dyn Sink,
    sequences: &[Sequence],
    owners_from_catalog: bool,
) -> Result<()> {
    if sequences.is_empty() {
        return Ok(());
    }
    let names: Vec<TableName> = sequences
        .iter()
        .map(|sequence| sequence.name.clone())
        .collect();
    let mut current: Vec<Sequence> = source.read_sequences(&names).await?;
    for sequence in &mut current {
        let known = sequences
            .iter()
            .find(|known| known.name == sequence.name)
            .and_then(|known| known.owned_by.clone());
        if known.is_some() && (owners_from_catalog || sequence.owned_by.is_none()) {
            sequence.owned_by = known;
        }
    }
    sink.set_sequences(&current).await
}

/// Whether the stream's `position` is past `earlier`. A position that cannot be ordered with it
/// (a MySQL position of another server without a common GTID domain) counts as newer: the
/// stream only moves forward, so holding the checkpoint back would only replay more.
fn is_newer(position: &Position, earlier: &Position) -> bool {
    match position.partial_cmp(earlier) {
        Some(std::cmp::Ordering::Less) => false,
        // The same transaction seen on another server (after a failover): take the new
        // server's position, so the checkpoint names the server the stream now reads.
        Some(std::cmp::Ordering::Equal) => position.same_point_elsewhere(earlier),
        _ => true,
    }
}

#[cfg(test)]
mod default_tests {
    #[test]
    fn session_dependent_defaults_are_not_constant() {
        let column = |default: &str| ferry_core::Column {
            type_signature: None,
            name: "c".into(),
            native_type: "text".into(),
            user_defined_type: false,
            nullable: true,
            default: Some(default.into()),
            identity: None,
            generated: None,
            collation: None,
            on_update: None,
            generated_virtual: false,
            comment: None,
        };
        for constant in ["'eu'::text", "42", "'x'::character varying", "NULL"] {
            assert!(super::constant_default(&column(constant)), "{constant}");
        }
        for computed in [
            "SESSION_USER",
            "CURRENT_USER",
            "USER",
            "now()",
            "CURRENT_TIMESTAMP",
            "LOCALTIMESTAMP",
            "nextval('s'::regclass)",
            "system_user",
        ] {
            assert!(!super::constant_default(&column(computed)), "{computed}");
        }
    }
}
