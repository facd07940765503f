//! The traits connectors implement. The engine drives a migration through these alone and never
//! names a database.
//!
//! Contracts that every implementation keeps:
//! - A sink call returns only when what it wrote is durable.
//! - Writing the same chunk or applying the same batch twice gives the same result.
//! - State a sink stores (plans, chunk completion, the stream checkpoint) commits in the same
//!   transaction as the data it describes.
//! - Errors are classified ([`crate::ErrorClass`]) at the connector boundary.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::change::{Batch, StreamEvent};
use crate::cutover::CutoverRecord;
use crate::error::Result;
use crate::position::Position;
use crate::schema::{Catalog, Sequence, TableName, TableSchema};
use crate::select::Selection;
use crate::state::{Chunk, FailureSummary, KeyRange, MigrationState, StreamRetention, TableState};
use crate::value::Value;
use crate::verify::{RangeDigest, RangeOutcome, RowHash, VerifiedRange};

/// Encoded rows flowing from a source to a sink without being decoded in between.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// An encoding of a chunk's rows that a source can produce and a sink can load directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkFormat {
    /// ferry's neutral encoding of [`Value`] rows ([`crate::rows`]): every source produces it
    /// and every sink loads it, so engines of different kinds can be paired.
    Rows,
    /// An encoding of one connector's own, named `engine/format` (PostgreSQL's `COPY` forms,
    /// for instance): a source produces it only when the sink lists it among its accepted
    /// formats, so only connectors that both know it use it.
    Native(&'static str),
}

/// A source database.
#[async_trait]
pub trait Source: Send + Sync {
    /// Describes the selected tables, the user types they use and the sequences that go with them.
    async fn read_catalog(&self, selection: &Selection) -> Result<Catalog>;

    /// Creates the change stream for `migration` covering `tables` (replacing any leftover one of
    /// the same name) and returns the position streaming must start from, together with a
    /// snapshot that shows exactly the data committed before that position.
    async fn create_stream(
        &self,
        migration: &str,
        tables: &[TableName],
    ) -> Result<(Position, Box<dyn Snapshot>)>;

    /// Checks that the stream of `migration` still exists and makes it cover exactly `tables`.
    /// Changes to tables added here are captured from now on.
    async fn update_stream(&self, migration: &str, tables: &[TableName]) -> Result<()>;

    /// Opens the change stream of `migration` from `position`. Changes to `tables` are keyed by
    /// their primary keys (whatever the source logs as the row identity). Transactions that
    /// ferry's applier of a migration in `ignore_writes_of` wrote are left out (still advancing
    /// the position), so two streams in opposite directions never replay each other's writes.
    async fn open_stream(
        &self,
        migration: &str,
        position: Position,
        tables: &[TableSchema],
        ignore_writes_of: &[String],
    ) -> Result<Box<dyn ChangeStream>>;

    /// The rows of `table` as they are now whose `key_columns` equal one of `keys`, each as the
    /// values of `columns` in that order; keys without a row are left out. For a stream that
    /// must complete a change its log carried partially (a PostgreSQL update that left out
    /// unchanged large values, for a row entering a row filter): a row read later than its
    /// change converges like any replayed one.
    async fn fetch_rows(
        &self,
        table: &TableName,
        key_columns: &[String],
        columns: &[String],
        keys: &[Vec<crate::Value>],
    ) -> Result<Vec<Vec<crate::Value>>>;

    /// A snapshot of the data as it is now, for copying tables after their stream already exists.
    /// With `exact`, its readers must report the position the snapshot is exact at
    /// ([`ChunkReader::snapshot_position`]): tables without a key are copied only that way.
    async fn fresh_snapshot(&self, exact: bool) -> Result<Box<dyn Snapshot>>;

    /// The current state of these sequences.
    async fn read_sequences(&self, sequences: &[TableName]) -> Result<Vec<Sequence>>;

    /// The source's current end of log, for lag.
    async fn current_position(&self) -> Result<Position>;

    /// How much log the stream of `migration` holds back, on a source that keeps log for its
    /// streams (`None` for a source that keeps none, or when the stream does not exist).
    async fn stream_retention(&self, _migration: &str) -> Result<Option<StreamRetention>> {
        Ok(None)
    }
}

/// A consistent view of the source data.
#[async_trait]
pub trait Snapshot: Send + Sync {
    /// Splits a table into key ranges of about `rows_per_chunk` rows that together cover every
    /// possible key, including keys inserted later.
    async fn plan_chunks(&self, table: &TableSchema, rows_per_chunk: u64) -> Result<Vec<KeyRange>>;

    /// Opens a reader that sees this snapshot. Readers run in parallel.
    async fn open_reader(&self) -> Result<Box<dyn ChunkReader>>;
}

/// Reads the rows of key ranges from a snapshot.
#[async_trait]
pub trait ChunkReader: Send {
    /// Streams the rows of `range` in the first of `accepted` formats this reader can produce
    /// for `table`, and says which it chose.
    async fn read(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        accepted: &[ChunkFormat],
    ) -> Result<(ChunkFormat, ByteStream)>;

    /// The position the snapshot of the last [`ChunkReader::read`] is exact at, if the source
    /// knows it: it shows every transaction that ends at or before the position and nothing
    /// else (see [`StreamEvent::Begin`](crate::change::StreamEvent)). Known once `read`
    /// returned. A table without a key is streamed only from such a position on, since its
    /// changes cannot be replayed harmlessly over rows that already hold them.
    fn snapshot_position(&self) -> Option<Position> {
        None
    }
}

/// A change stream, yielding events in source commit order.
#[async_trait]
pub trait ChangeStream: Send {
    /// The next event, or `None` when the stream ended cleanly. Cancel-safe: dropping the future
    /// loses nothing.
    async fn next(&mut self) -> Result<Option<StreamEvent>>;

    /// Tells the source that everything before `position` is durable on the target, so it may
    /// discard it. Never call it with a position the target has not made durable.
    fn acknowledge(&mut self, position: Position);

    /// Ends the stream cleanly.
    async fn close(self: Box<Self>) -> Result<()>;
}

/// A target's tables: creating them and the objects that follow the bulk load, reading and
/// changing their columns, emptying them, and moving sequences forward.
#[async_trait]
pub trait SchemaTarget: Send + Sync {
    /// The name a source table (as the engine names it) has on this target. The same by
    /// default; a target with one namespace per connection (a MySQL database) keeps only the
    /// table part.
    fn stored_name(&self, table: &TableName) -> TableName {
        table.clone()
    }

    /// Creates the state store, the user types, the sequences and the tables (with primary keys,
    /// without secondary indexes and foreign keys). Objects that exist are left as they are.
    async fn create_tables(&self, catalog: &Catalog) -> Result<()>;

    /// Creates the secondary indexes and constraints of these tables (after the bulk load) that
    /// do not exist yet. Returns (table, object name) of those the data refuses for now (a
    /// unique value two rows hold, a key whose row is missing): chunks read under different
    /// snapshots agree only once the stream has caught up, so the caller tries again later with
    /// those tables. Idempotent.
    async fn create_secondary(&self, tables: &[TableSchema]) -> Result<Vec<(TableName, String)>>;

    /// Drops those of the table's objects that wait for a stream to catch up with a copy
    /// ([`SecondaryObject::waits_for_catch_up`](crate::schema::SecondaryObject::waits_for_catch_up)
    /// and its foreign keys) where they exist, before the table is copied afresh under a stream
    /// that will replay older changes over the new rows; [`SchemaTarget::create_secondary`]
    /// builds them again once the stream has caught up. An object another one depends on (a
    /// unique index a foreign key of another table needs) may stay; it is named in the log.
    async fn drop_objects_held_until_caught_up(&self, _table: &TableSchema) -> Result<()> {
        Ok(())
    }

    /// True when the target table holds no rows.
    async fn is_empty(&self, table: &TableName) -> Result<bool>;

    /// Removes every row of the table (before copying it afresh).
    async fn truncate(&self, table: &TableName) -> Result<()>;

    /// The names of the target table's columns.
    async fn target_columns(&self, table: &TableName) -> Result<Vec<String>>;

    /// Adds to the target table those of `columns` (named in `table`, the source's current
    /// definition) that it lacks, as the source defines them: a column added on the source while
    /// streaming (or while ferry was stopped). With `relax_dropped`, target columns the source no
    /// longer has stop being NOT NULL (rows written from now on lack them). Returns the columns
    /// it added. Idempotent. A sink that cannot add columns says which are missing, with the
    /// fix, in an operator error.
    async fn add_columns(
        &self,
        table: &TableSchema,
        columns: &[String],
        relax_dropped: bool,
    ) -> Result<Vec<String>>;

    /// Widens the target table's columns whose type the source widened (`table` is the source's
    /// current definition, `previous` the one the stream followed until now, if any): a larger
    /// integer, a longer or unbounded text, more digits, more precision, so that every value the
    /// source's type now holds fits. Returns the columns it widened. A column whose type changed
    /// from `previous` in any other way is an operator error (`stream.column_retyped`: the table
    /// stops and is copied afresh); other differences between source and target types (the
    /// mapping between engines) are left alone. Idempotent. Sinks that cannot alter types widen
    /// nothing.
    async fn widen_columns(
        &self,
        _previous: Option<&TableSchema>,
        _table: &TableSchema,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Moves these sequences forward to at least their source values (never backwards).
    async fn set_sequences(&self, sequences: &[Sequence]) -> Result<()>;
}

/// Where a target keeps a migration's state: the lock that makes one process at a time
/// run it, the stream checkpoint, each table's state and chunk plan, and the failures it rode
/// out. Each write commits in the transaction of the data it describes where there is such
/// data ([`ChunkWriter::write`] marks its chunk, [`ChangeApplier::apply`] stores the
/// checkpoint); the calls here stand alone.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Takes `migration` exclusively on this target for this process: one process at a time may
    /// copy or stream a migration, so a second command with the same name can never rewrite the
    /// stream's table set or the table states under a running one. The sink keeps the lock
    /// until it is dropped (the returned guard is for callers that want to tie it to a scope);
    /// calling again re-uses it, or takes it anew when its session was lost (ending that
    /// session on the server if it still holds it). Fails (after a few seconds' wait for a
    /// predecessor's connection to close) with an operator error naming the migration when
    /// another process holds it.
    async fn lock_migration(&self, migration: &str)
        -> Result<Box<dyn std::any::Any + Send + Sync>>;

    /// Stores the source position at which a copy of `migration` ended (see
    /// [`MigrationState::copy_end`](crate::state::MigrationState)), so that a run resumed after
    /// a crash still knows it.
    async fn save_copy_end(&self, migration: &str, position: Position) -> Result<()>;

    /// The persisted state of `migration` (empty when it never ran).
    async fn load_state(&self, migration: &str) -> Result<MigrationState>;

    /// Starts a fresh stream at `position`: stores it as the checkpoint and resets every table
    /// of the migration to pending.
    async fn start_stream(&self, migration: &str, position: Position) -> Result<()>;

    /// Stores a table's chunk plan and sets it to [`TableState::Copying`].
    async fn save_plan(&self, migration: &str, table: &TableName, chunks: &[Chunk]) -> Result<()>;

    /// Sets a table's state.
    async fn set_table_state(
        &self,
        migration: &str,
        table: &TableName,
        state: TableState,
    ) -> Result<()>;

    /// Forgets the stream checkpoint and every chunk of `migration` and sets its tables to
    /// pending, so the next run starts over (a fresh stream and a full copy).
    async fn reset(&self, migration: &str) -> Result<()>;

    /// Records a failure that was retried or waited out, for `status` (best effort: the target
    /// may be the thing that failed).
    async fn record_failure(
        &self,
        migration: &str,
        at_unix_micros: i64,
        code: &str,
        message: &str,
    ) -> Result<()>;

    /// The failures [`StateStore::record_failure`] stored for `migration`.
    async fn recorded_failures(&self, _migration: &str) -> Result<FailureSummary> {
        Ok(FailureSummary::default())
    }

    /// Removes a table from the migration's state.
    async fn forget_table(&self, migration: &str, table: &TableName) -> Result<()>;
}

/// A target database: its tables ([`SchemaTarget`]), its state ([`StateStore`]), and the
/// writers that load chunks and apply batches.
#[async_trait]
pub trait Sink: SchemaTarget + StateStore {
    /// The chunk formats this sink loads directly, best first.
    fn accepted_formats(&self) -> &[ChunkFormat];

    /// Opens a writer for chunks. Writers run in parallel.
    async fn open_chunk_writer(&self, migration: &str) -> Result<Box<dyn ChunkWriter>>;

    /// Opens the applier for the change stream. Its transactions are tagged as written by
    /// `migration` where the database can tell (see [`Source::open_stream`]).
    async fn open_applier(&self, migration: &str) -> Result<Box<dyn ChangeApplier>>;
}

/// Loads chunks.
#[async_trait]
pub trait ChunkWriter: Send {
    /// Loads one chunk's rows into `table` and marks the chunk done, in one transaction, with
    /// the position its snapshot was exact at (if known). Returns the number of rows once they
    /// are durable. On error nothing of the chunk is kept.
    async fn write(
        &mut self,
        table: &TableSchema,
        chunk: u32,
        format: ChunkFormat,
        rows: ByteStream,
        snapshot_position: Option<Position>,
    ) -> Result<u64>;
}

/// Applies merged change batches.
#[async_trait]
pub trait ChangeApplier: Send {
    /// Applies the batch and, in the same transaction, stores `checkpoint` (with the commit time
    /// of the last transaction it completes, if any). Returns once durable.
    async fn apply(
        &mut self,
        batch: &Batch,
        checkpoint: Position,
        commit_time_unix_micros: Option<i64>,
    ) -> Result<()>;
}

/// A subset of key-hash buckets: `selected` out of `count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    pub count: u32,
    pub selected: Vec<u32>,
}

impl Buckets {
    /// The selected bucket numbers as an SQL list (`3, 17`), or `NULL` when none is selected
    /// (so `bucket IN (NULL)` matches nothing).
    pub fn sql_list(&self) -> String {
        if self.selected.is_empty() {
            return "NULL".into();
        }
        let numbers: Vec<String> = self.selected.iter().map(u32::to_string).collect();
        numbers.join(", ")
    }
}

/// One side's half of a verification across engines: SQL expressions, in this side's dialect,
/// that render a table's rows and keys as text the other engine computes identically for the
/// same data. The pair's rules live with the registry (`ferry-connectors`' `portable`), so a
/// connector's inspector needs no knowledge of the other engine. Errors name the column that
/// cannot be compared.
pub trait PortableText: Send + Sync {
    /// The row text of `table` (its definition on the source), comma-joined, NULL as `-`.
    fn row(&self, table: &TableSchema) -> std::result::Result<String, String>;

    /// The key text of `table`, readable in reports (text quoted, bytes in hex).
    fn key(&self, table: &TableSchema) -> std::result::Result<String, String>;

    /// The bucket (0..count) of the row whose key text is `key_text`: the same on both sides.
    fn bucket(&self, key_text: &str, count: u32) -> String;
}

/// Optional capability for verification and repair: read one side's rows by key range or key,
/// in a canonical form comparable with the other side of the same connector pair.
#[async_trait]
pub trait Inspector: Send + Sync {
    /// The definitions of the selected tables on this side.
    async fn read_catalog(&self, selection: &Selection) -> Result<Catalog>;

    /// Row count and order-independent digest of `range` (read in one consistent snapshot; a
    /// source also returns its log position at the time).
    async fn digest_range(&self, table: &TableSchema, range: &KeyRange) -> Result<RangeDigest>;

    /// The key and row hash of every row in `range`.
    async fn row_hashes(
        &self,
        table: &TableSchema,
        range: &KeyRange,
        buckets: Option<&Buckets>,
    ) -> Result<Vec<RowHash>>;

    /// Digests of `range` split into `count` buckets by a hash of the key (the same key lands in
    /// the same bucket on every side), for buckets that hold rows.
    async fn digest_buckets(
        &self,
        table: &TableSchema,
        range: &KeyRange,
        count: u32,
    ) -> Result<Vec<(u32, RangeDigest)>>;

    /// The key and row hash of the rows with these keys (absent keys are simply not returned).
    async fn row_hashes_for_keys(
        &self,
        table: &TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<Vec<RowHash>>;

    /// The rows with these keys, encoded for [`Inspector::replace_rows`] of the other side.
    async fn read_rows(
        &self,
        table: &TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<(ChunkFormat, ByteStream)>;

    /// In one transaction: deletes every row with these keys, then loads `rows`. Returns the rows
    /// loaded.
    async fn replace_rows(
        &self,
        table: &TableSchema,
        keys: &[Vec<Value>],
        format: ChunkFormat,
        rows: ByteStream,
    ) -> Result<u64>;

    /// The stream checkpoint of `migration` stored on this side (a target), if any.
    async fn applied_position(&self, migration: &str) -> Result<Option<Position>>;

    /// Forgets the verification state of `migration` kept on this side (a target).
    async fn clear_verification(&self, migration: &str) -> Result<()>;

    /// Stores a table's verification plan (all ranges unchecked).
    async fn save_verification_plan(
        &self,
        migration: &str,
        table: &TableName,
        ranges: &[KeyRange],
    ) -> Result<()>;

    /// Stores the outcome of one checked range, durably, before it is reported.
    async fn save_verification_outcome(
        &self,
        migration: &str,
        table: &TableName,
        index: u32,
        outcome: &RangeOutcome,
    ) -> Result<()>;

    /// The stored plan and outcomes of `migration`'s last verification.
    async fn load_verification(&self, migration: &str) -> Result<Vec<VerifiedRange>>;
}

/// Optional capability for switching over: one database's fence, its change streams and the
/// switch-over record. Both databases of a migration implement it; each call names the
/// migration it concerns.
#[async_trait]
pub trait Switchover: Send + Sync {
    /// Checks that ferry's user may fence this database and tag its own writes (so streams in
    /// both directions never replay them back); the error says what is missing.
    async fn check_switchover(&self) -> Result<()>;

    /// Takes the migration's controller lock on this database, held until the returned guard is
    /// dropped, so that two `cutover`/`rollback`/`finish` never interleave. Fails when another
    /// holds it for more than a few seconds.
    async fn lock_controller(
        &self,
        migration: &str,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>>;

    /// Blocks application writes on this database and ends the sessions that could still
    /// write. Returns a position that every write committed before the fence precedes, and makes
    /// sure a change stream reading this database gets past it. Idempotent. ferry's own sessions
    /// keep writing.
    async fn fence(&self, migration: &str) -> Result<Position>;

    /// Lifts the fence `migration` put up (sessions opened while fenced are ended so they
    /// reconnect writable). A fence of another migration is left as it is. Idempotent.
    async fn unfence(&self, migration: &str) -> Result<()>;

    /// The migration whose fence is on this database, if any.
    async fn fenced_by(&self) -> Result<Option<String>>;

    /// Puts the fence of `migration` back in force where it is on record but was lost (a
    /// server restart forgets a MySQL `SET GLOBAL`); true when it did. The caller holds the
    /// controller lock, so no controller lifts the fence meanwhile.
    async fn reassert_fence(&self, _migration: &str) -> Result<bool> {
        Ok(false)
    }

    /// Whether a process reads the change stream of `migration` from this database right now
    /// (`None`: the stream does not exist).
    async fn stream_active(&self, migration: &str) -> Result<Option<bool>>;

    /// Removes the change stream of `migration` from this database (slot, publication, origin).
    /// Refuses while it is read.
    async fn drop_stream(&self, migration: &str) -> Result<()>;

    /// The stream checkpoint of `migration` stored on this database as its target, if any.
    async fn applied_position(&self, migration: &str) -> Result<Option<Position>>;

    /// The switch-over record of `migration` stored here (the default record when none is).
    async fn load_cutover(&self, migration: &str) -> Result<CutoverRecord>;

    /// Stores the switch-over record durably.
    async fn save_cutover(&self, migration: &str, record: &CutoverRecord) -> Result<()>;

    /// The tables of `migration` (whose target this database is) that received changes within
    /// the last `within`.
    async fn tables_changed_since(
        &self,
        migration: &str,
        within: std::time::Duration,
    ) -> Result<Vec<TableName>>;

    /// Whether the last verification of `migration` stored here checked every range and found
    /// no difference (`None`: never verified).
    async fn last_verification_clean(&self, migration: &str) -> Result<Option<bool>>;
}
