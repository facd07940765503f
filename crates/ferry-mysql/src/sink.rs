//! MySQL and MariaDB as a target: tables translated from either engine, chunk loads streamed
//! with `LOAD DATA LOCAL` (multi-row INSERTs where the server refuses LOCAL) that commit with
//! their chunk mark, and state in `_ferry`.
//!
//! Sessions run with `foreign_key_checks = 0` (the source already validated the rows, and
//! cascades must not change what the source wrote) and strict mode (a value that does not fit
//! is an error, never cut).

use std::collections::HashMap;

use async_trait::async_trait;
use ferry_core::change::Batch;
use ferry_core::connector::{
    ByteStream, ChangeApplier, ChunkFormat, ChunkWriter, SchemaTarget, Sink, StateStore,
};
use ferry_core::rows::RowReader;
use ferry_core::schema::{Catalog, Sequence};
use ferry_core::state::{Chunk, MigrationState, TableState};
use ferry_core::{failpoint, Error, Position, Result, TableName, TableSchema};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};
use tracing::warn;

use super::apply::apply_batch;
use super::config::MysqlConfig;
use super::connection::{connect, is_mariadb};
use super::ddl::{
    column_definition, create_table, ident, secondary_indexes, untranslatable, Flavor,
};
use super::errors::classify;
use super::load::{self, Loaded};
use super::state;
use super::target_columns::TargetColumns;
use super::types::Kind;
use super::values::literal;

/// A MySQL or MariaDB target database.
pub struct MysqlSink {
    config: MysqlConfig,
    /// Per migration: the session holding its lock and its connection id (to end only it).
    migration_lock: tokio::sync::Mutex<HashMap<String, (Conn, u64)>>,
    /// Counts the changes this sink made to target tables' columns (added, widened): appliers
    /// opened from it forget what they know of the columns when it moves. (Unique indexes, which
    /// decide the in-place paths, are read afresh in every apply transaction.)
    altered: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

const FORMATS: &[ChunkFormat] = &[ChunkFormat::Rows];

/// The named lock of a migration (names are at most 64 characters: the migration's name goes
/// in hashed), with `?` for the migration.
const MIGRATION_LOCK: &str = "CONCAT('ferry.migration.', SHA1(?))";

/// Statements are cut at about this size (servers accept 16 MiB or more by default).
const STATEMENT_BYTES: usize = 2 * 1024 * 1024;

impl MysqlSink {
    pub fn new(config: MysqlConfig) -> Self {
        MysqlSink {
            config,
            migration_lock: tokio::sync::Mutex::new(HashMap::new()),
            altered: Default::default(),
        }
    }

    async fn conn(&self) -> Result<Conn> {
        let mut conn = connect(&self.config, true).await?;
        conn.query_drop("SET foreign_key_checks = 0")
            .await
            .map_err(|error| classify(error, "preparing a target session"))?;
        Ok(conn)
    }

    async fn flavor(conn: &mut Conn) -> Result<Flavor> {
        Ok(Flavor {
            mariadb: is_mariadb(conn).await?,
        })
    }
}

/// What to do about triggers on target tables.
pub(crate) const TRIGGERS_HINT: &str = "MySQL cannot turn triggers off for one session: drop them on the target for the migration (SHOW CREATE TRIGGER keeps their definition) and create them again at cutover";

/// The triggers on these tables of `database` (`table.trigger (EVENT)`): MySQL fires them for
/// ferry's loads and changes too, so they would change what the source wrote.
pub(crate) async fn triggers_on<Q: Queryable>(
    conn: &mut Q,
    database: &str,
    tables: &[&str],
) -> Result<Vec<String>> {
    let rows: Vec<(String, String, String)> = conn
        .exec(
            "SELECT EVENT_OBJECT_TABLE, TRIGGER_NAME, EVENT_MANIPULATION FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY 1, 2",
            (database,),
        )
        .await
        .map_err(|error| classify(error, "reading the target's triggers"))?;
    Ok(rows
        .into_iter()
        // Case-insensitively: with lower_case_table_names the server reports lower-case names.
        .filter(|(table, _, _)| tables.iter().any(|name| name.eq_ignore_ascii_case(table)))
        .map(|(table, trigger, event)| format!("{table}.{trigger} ({event})"))
        .collect())
}

#[async_trait]
impl SchemaTarget for MysqlSink {
    fn stored_name(&self, table: &TableName) -> TableName {
        TableName::new(self.config.database(), table.name.as_str())
    }

    async fn create_tables(&self, catalog: &Catalog) -> Result<()> {
        let mut server = connect(&self.config, false).await?;
        server
            .query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
                ident(self.config.database())
            ))
            .await
            .map_err(|error| classify(error, "creating the target database"))?;
        let _ = server.disconnect().await;
        let mut conn = self.conn().await?;
        let flavor = Self::flavor(&mut conn).await?;
        let problems = untranslatable(catalog, flavor);
        if !problems.is_empty() {
            return Err(Error::operator(
                "target.unsupported_type",
                format!("these cannot be created on the MySQL target without losing data: {}", problems.join("; ")),
            )
            .with_hint("see the type mapping in docs/mysql.md: change the columns on the source, or leave the tables out with --tables"));
        }
        for statement in state::CREATE_STATE {
            conn.query_drop(*statement).await.map_err(|error| {
                classify(
                    error,
                    "creating ferry's state database `_ferry` on the target",
                )
                .with_hint("grant CREATE and write privileges on `_ferry`.* to ferry's user")
            })?;
        }
        state::add_new_columns(&mut conn).await?;
        for table in &catalog.tables {
            let sql = create_table(table, catalog, flavor)?;
            conn.query_drop(sql).await.map_err(|error| {
                classify(
                    error,
                    &format!("creating table {} on the target", table.name.name),
                )
            })?;
        }
        let names: Vec<&str> = catalog
            .tables
            .iter()
            .map(|table| table.name.name.as_str())
            .collect();
        let triggers = triggers_on(&mut conn, self.config.database(), &names).await?;
        if !triggers.is_empty() {
            return Err(Error::operator(
                "target.triggers",
                format!(
                    "the target tables have triggers, which would change what the source wrote: {}",
                    triggers.join(", ")
                ),
            )
            .with_hint(TRIGGERS_HINT));
        }
        Ok(())
    }

    async fn create_secondary(&self, tables: &[TableSchema]) -> Result<Vec<(TableName, String)>> {
        let mut deferred = Vec::new();
        let mut conn = self.conn().await?;
        // Indexes of every table first, then foreign keys: a key needs the referenced table's
        // index, which may come later in the list.
        for foreign_keys in [false, true] {
            for table in tables {
                // A foreign key counts as existing only as a constraint: InnoDB names the index
                // it makes for a key after the key (and the source lists that index too).
                let existing = names_on_target(
                    &mut conn,
                    if foreign_keys {
                        FOREIGN_KEY_NAMES
                    } else {
                        INDEX_NAMES
                    },
                    self.config.database(),
                    &table.name.name,
                )
                .await?;
                let (statements, skipped) = secondary_indexes(table);
                let key_count = table.foreign_keys.len();
                // The foreign keys' statements come last.
                let first_key = statements.len() - key_count;
                let statements: Vec<(String, String)> = statements
                    .into_iter()
                    .enumerate()
                    .filter(|(index, _)| (*index >= first_key) == foreign_keys)
                    .map(|(_, statement)| statement)
                    .collect();
                if !skipped.is_empty() && !foreign_keys {
                    warn!(table = %table.name, indexes = ?skipped, "indexes and constraints not created on the MySQL target (expressions, partial indexes, exclusion constraints and foreign keys of PostgreSQL sources are not translated): create them by hand if you need them");
                }
                for (name, statement) in statements {
                    if existing.iter().any(|existing| existing == &name) {
                        continue;
                    }
                    if let Err(error) = conn.query_drop(statement).await {
                        // A duplicate (1062) or a missing referenced row (1452): rows copied under
                        // different snapshots agree once the stream has caught up; tried again then.
                        let data = matches!(&error, mysql_async::Error::Server(server) if matches!(server.code, 1062 | 1452));
                        let error = classify(
                            error,
                            &format!(
                                "creating index or foreign key {name} on {}",
                                table.name.name
                            ),
                        );
                        if !data {
                            return Err(error);
                        }
                        tracing::info!(table = %table.name, object = %name, error = %error, "cannot create a secondary object yet; trying again once the stream has caught up");
                        deferred.push((table.name.clone(), name));
                    }
                }
            }
        }
        Ok(deferred)
    }

    /// Checks that the target has the columns; adding them is left to the operator (the type
    /// mapping of a single column from another engine is not reproduced here yet).
    async fn target_columns(&self, table: &TableName) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        conn.exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (self.config.database(), &table.name),
        )
        .await
        .map_err(|error| classify(error, &format!("reading the columns of {table} on the target")))
    }

    async fn add_columns(
        &self,
        table: &TableSchema,
        columns: &[String],
        _relax_dropped: bool,
    ) -> Result<Vec<String>> {
        let present = self.target_columns(&table.name).await?;
        let missing: Vec<&String> = columns
            .iter()
            .filter(|name| {
                !present
                    .iter()
                    .any(|column| column.eq_ignore_ascii_case(name))
            })
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let flavor = Self::flavor(&mut conn).await?;
        // Waits for a metadata lock behind open transactions: briefly (a stuck target fails
        // the table, which is retried, instead of holding the stream forever).
        let _ = conn.query_drop("SET SESSION lock_wait_timeout = 30").await;
        let mut added = Vec::new();
        self.altered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for name in missing {
            let Some(column) = table.column(name) else {
                warn!(table = %table.name, column = %name, "a column the log carries is no longer on the source (dropped again since): not added on the target");
                continue;
            };
            let definition = column_definition(table, column, &Catalog::default(), flavor)?;
            conn.query_drop(format!(
                "ALTER TABLE {} ADD COLUMN {definition}",
                ident(&table.name.name)
            ))
            .await
            .map_err(|error| {
                classify(error, &format!("adding column {name} to {} on the target", table.name))
                    .with_hint("add the column on the target by hand (as the source has it), then run ferry again")
            })?;
            added.push(name.clone());
        }
        Ok(added)
    }

    async fn widen_columns(
        &self,
        previous: Option<&TableSchema>,
        table: &TableSchema,
    ) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        let flavor = Self::flavor(&mut conn).await?;
        let widened = super::widen::widen_columns(&mut conn, previous, table, flavor).await?;
        if !widened.is_empty() {
            self.altered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(widened)
    }

    async fn is_empty(&self, table: &TableName) -> Result<bool> {
        let mut conn = self.conn().await?;
        let row: Option<u8> = conn
            .query_first(format!("SELECT 1 FROM {} LIMIT 1", ident(&table.name)))
            .await
            .map_err(|error| classify(error, &format!("reading {} on the target", table.name)))?;
        Ok(row.is_none())
    }

    async fn drop_objects_held_until_caught_up(&self, table: &TableSchema) -> Result<()> {
        let mut conn = self.conn().await?;
        let database_name = self.config.database();
        let table_name = &table.name.name;
        let keys = names_on_target(&mut conn, FOREIGN_KEY_NAMES, database_name, table_name).await?;
        let unique = names_on_target(
            &mut conn,
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY'",
            database_name,
            table_name,
        )
        .await?;
        let (statements, _) = secondary_indexes(table);
        // Foreign keys first: an index a key uses cannot go before it.
        let drops = table
            .foreign_keys
            .iter()
            .filter(|key| keys.contains(&key.name))
            .map(|key| {
                (
                    key.name.clone(),
                    format!(
                        "ALTER TABLE {} DROP FOREIGN KEY {}",
                        ident(table_name),
                        ident(&key.name)
                    ),
                )
            })
            .chain(
                statements
                    .iter()
                    .filter(|(name, statement)| {
                        statement.starts_with("CREATE UNIQUE ") && unique.contains(name)
                    })
                    .map(|(name, _)| {
                        (
                            name.clone(),
                            format!(
                                "ALTER TABLE {} DROP INDEX {}",
                                ident(table_name),
                                ident(name)
                            ),
                        )
                    }),
            );
        for (name, statement) in drops {
            match conn.query_drop(statement).await {
                Ok(()) => {
                    tracing::info!(table = %table.name, object = %name, "dropped until the stream has caught up with the copy afresh")
                }
                Err(error) => {
                    warn!(table = %table.name, object = %name, error = %classify(error, "dropping an index or foreign key"), "kept while the table is copied afresh: a change replayed over newer rows may stop the table again")
                }
            }
        }
        Ok(())
    }

    async fn truncate(&self, table: &TableName) -> Result<()> {
        let mut conn = self.conn().await?;
        conn.query_drop(format!("TRUNCATE TABLE {}", ident(&table.name)))
            .await
            .map_err(|error| classify(error, &format!("emptying {} on the target", table.name)))
    }

    async fn set_sequences(&self, sequences: &[Sequence]) -> Result<()> {
        // AUTO_INCREMENT moves past every explicit value ferry inserts; only a sequence ahead of
        // its table's values (numbers handed out, rows not kept) needs setting.
        let mut conn = self.conn().await?;
        // ALTER TABLE waits for a metadata lock behind open transactions: briefly, never for
        // the server's default of a year (a cutover runs this while writes are fenced).
        let _ = conn.query_drop("SET SESSION lock_wait_timeout = 5").await;
        for sequence in sequences {
            let (Some(value), Some((table, _))) = (sequence.last_value, &sequence.owned_by) else {
                continue;
            };
            let next: Option<Option<i64>> = conn
                .exec_first(
                    "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (self.config.database(), &table.name),
                )
                .await
                .map_err(|error| classify(error, "reading AUTO_INCREMENT"))?;
            if let Some(Some(next)) = next {
                if next <= value {
                    if let Err(error) = conn
                        .query_drop(format!(
                            "ALTER TABLE {} AUTO_INCREMENT = {}",
                            ident(&table.name),
                            value + 1
                        ))
                        .await
                    {
                        warn!(table = %table, error = %classify(error, "moving AUTO_INCREMENT"), "could not move AUTO_INCREMENT forward on the target");
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for MysqlSink {
    async fn lock_migration(
        &self,
        migration: &str,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>> {
        let mut held = self.migration_lock.lock().await;
        // Held since an earlier attempt of this process: keep it while its session lives.
        if let Some((conn, _)) = held.get_mut(migration) {
            let alive = tokio::time::timeout(std::time::Duration::from_secs(10), conn.ping()).await;
            if matches!(alive, Ok(Ok(()))) {
                return Ok(Box::new(()));
            }
        }
        // The session that held it for this process is gone from here; the server may not know
        // yet. That session, and only it (it holds this very lock), may be ended to take over.
        let stale = held.remove(migration).map(|(_, id)| id);
        let mut conn = connect(&self.config, false).await?;
        // Refused privileges show before anything is created (the lock's session writes
        // nothing, so it may keep its binary log off).
        if !self.config.copy_binlog() {
            keep_out_of_binlog(&mut conn).await?;
        }
        let what = "taking the migration lock";
        let name = MIGRATION_LOCK;
        if let Some(id) = stale {
            let holder: Option<Option<u64>> = conn
                .exec_first(format!("SELECT IS_USED_LOCK({name})"), (migration,))
                .await
                .map_err(|error| classify(error, what))?;
            if holder.flatten() == Some(id) {
                let _ = conn.query_drop(format!("KILL CONNECTION {id}")).await;
            }
        }
        // GET_LOCK waits up to 5 s for a predecessor's connection to close.
        let locked: Option<i64> = conn
            .exec_first(format!("SELECT GET_LOCK({name}, 5)"), (migration,))
            .await
            .map_err(|error| classify(error, what))?
            .flatten();
        if locked != Some(1) {
            return Err(Error::operator("migration.busy", format!("another ferry process is copying or streaming migration '{migration}' on this target"))
                .with_hint("stop that process first, or give this command another --name; two processes on one migration would rewrite each other's stream and tables"));
        }
        // The lock lives as long as this connection: keep the server from ending it.
        let _ = conn.query_drop("SET SESSION wait_timeout = 31536000").await;
        // The server's own number for the session (what IS_USED_LOCK answers); the handshake's
        // is 32 bits and, behind a proxy, the proxy's.
        let id: u64 = conn
            .query_first("SELECT CONNECTION_ID()")
            .await
            .map_err(|error| classify(error, what))?
            .unwrap_or(conn.id() as u64);
        held.insert(migration.to_string(), (conn, id));
        Ok(Box::new(()))
    }

    async fn save_copy_end(&self, migration: &str, position: Position) -> Result<()> {
        let mut conn = self.conn().await?;
        state::save_copy_end(&mut conn, migration, position).await
    }

    async fn load_state(&self, migration: &str) -> Result<MigrationState> {
        let mut conn = self.conn().await?;
        state::load(&mut conn, migration).await
    }

    async fn start_stream(&self, migration: &str, position: Position) -> Result<()> {
        let mut conn = self.conn().await?;
        let mut transaction = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|error| classify(error, "starting the stream"))?;
        state::store_checkpoint(&mut transaction, migration, position, None).await?;
        state::reset_tables(&mut transaction, migration).await?;
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, "starting the stream"))
    }

    async fn save_plan(&self, migration: &str, table: &TableName, chunks: &[Chunk]) -> Result<()> {
        let mut conn = self.conn().await?;
        let mut transaction = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|error| classify(error, "storing a chunk plan"))?;
        state::save_plan(&mut transaction, migration, table, chunks).await?;
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, "storing a chunk plan"))
    }

    async fn set_table_state(
        &self,
        migration: &str,
        table: &TableName,
        table_state: TableState,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        state::set_table_state(&mut conn, migration, table, table_state, None).await
    }

    async fn reset(&self, migration: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        if !state::exists(&mut conn).await? {
            return Ok(());
        }
        let mut transaction = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|error| classify(error, "resetting ferry's state"))?;
        state::forget_stream(&mut transaction, migration).await?;
        state::reset_tables(&mut transaction, migration).await?;
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, "resetting ferry's state"))
    }

    async fn recorded_failures(
        &self,
        migration: &str,
    ) -> Result<ferry_core::state::FailureSummary> {
        let mut conn = self.conn().await?;
        if !state::table_exists(&mut conn, "failures").await? {
            return Ok(Default::default());
        }
        state::recorded_failures(&mut conn, migration).await
    }

    async fn record_failure(
        &self,
        migration: &str,
        at_unix_micros: i64,
        code: &str,
        message: &str,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        if !state::exists(&mut conn).await? {
            return Ok(());
        }
        state::record_failure(&mut conn, migration, at_unix_micros, code, message).await
    }

    async fn forget_table(&self, migration: &str, table: &TableName) -> Result<()> {
        let mut conn = self.conn().await?;
        state::forget_table(&mut conn, migration, table).await
    }
}

#[async_trait]
impl Sink for MysqlSink {
    fn accepted_formats(&self) -> &[ChunkFormat] {
        FORMATS
    }

    async fn open_chunk_writer(&self, migration: &str) -> Result<Box<dyn ChunkWriter>> {
        let mut conn = self.conn().await?;
        if !self.config.copy_binlog() {
            keep_out_of_binlog(&mut conn).await?;
        }
        Ok(Box::new(MysqlChunkWriter {
            conn,
            migration: migration.to_string(),
            database: self.config.database().to_string(),
            columns: TargetColumns::default(),
            local_infile: true,
        }))
    }

    async fn open_applier(&self, migration: &str) -> Result<Box<dyn ChangeApplier>> {
        let lock_holder = self
            .migration_lock
            .lock()
            .await
            .get(migration)
            .map(|(_, id)| *id);
        Ok(Box::new(MysqlApplier {
            conn: self.conn().await?,
            migration: migration.to_string(),
            database: self.config.database().to_string(),
            lock_holder,
            columns: TargetColumns::default(),
            altered: self.altered.clone(),
            cached_under: self.altered.load(std::sync::atomic::Ordering::SeqCst),
        }))
    }
}

/// Turns the session's binary logging off (`copy-binlog=off`), or says which privilege it lacks.
pub(crate) async fn keep_out_of_binlog(conn: &mut Conn) -> Result<()> {
    conn.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .map_err(|error| match &error {
            mysql_async::Error::Server(server) if server.code == 1227 => {
                Error::operator(
                    "target.binlog_privilege",
                    "the target URL says copy-binlog=off, but ferry's user may not turn its session's binary log off (SET sql_log_bin = 0)",
                )
                .with_hint("GRANT BINLOG ADMIN ON *.* to the user (MariaDB 10.5 and later; SUPER before; SESSION_VARIABLES_ADMIN on MySQL 8.0.14 and later), or drop copy-binlog=off from the URL (managed services that grant none of these need it dropped)")
            }
            _ => classify(error, "turning the copy's binary logging off on the target"),
        })
}

/// Loads chunks with `LOAD DATA LOCAL` (or multi-row INSERTs) and marks them done in the same
/// transaction.
pub(super) struct MysqlChunkWriter {
    conn: Conn,
    migration: String,
    database: String,
    columns: TargetColumns,
    /// False once the server refused `LOCAL`: the session loads with INSERTs from then on.
    local_infile: bool,
}

#[async_trait]
impl ChunkWriter for MysqlChunkWriter {
    async fn write(
        &mut self,
        table: &TableSchema,
        chunk: u32,
        format: ChunkFormat,
        rows: ByteStream,
        snapshot_position: Option<Position>,
    ) -> Result<u64> {
        if format != ChunkFormat::Rows {
            return Err(Error::operator(
                "copy.format",
                format!("the MySQL target cannot load {format:?} chunks"),
            ));
        }
        let what = format!("loading {} on the target", table.name);
        let (names, kinds) = self
            .columns
            .writable(&mut self.conn, &self.database, table)
            .await?;
        // The load's infile handler goes on the connection before the transaction borrows it.
        let (prepared, mut rows) = if self.local_infile {
            let prepared = load::prepare(&mut self.conn, &table.name, &names, &kinds, rows);
            let none: ByteStream = Box::pin(futures_util::stream::empty());
            (Some(prepared), none)
        } else {
            (None, rows)
        };
        let mut transaction = self
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|error| classify(error, &what))?;
        let mut count = None;
        if let Some(prepared) = &prepared {
            match prepared.run(&mut transaction).await? {
                Loaded::Rows(loaded) => count = Some(loaded),
                Loaded::Refused(back) => {
                    warn!(table = %table.name, "the target refuses LOAD DATA LOCAL (local_infile is off); loading with INSERT statements, which is slower");
                    self.local_infile = false;
                    rows = back;
                }
            }
        }
        let count = match count {
            Some(count) => count,
            None => insert_rows(&mut transaction, table, &names, &kinds, rows, &what).await?,
        };
        state::mark_chunk_done(
            &mut transaction,
            &self.migration,
            &table.name,
            chunk,
            count,
            snapshot_position,
        )
        .await?;
        failpoint::hit("copy.before_chunk_commit");
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, &what))?;
        Ok(count)
    }
}

/// Loads the rows with multi-row INSERT statements of about [`STATEMENT_BYTES`] each.
pub(crate) async fn insert_rows<Q: Queryable>(
    conn: &mut Q,
    table: &TableSchema,
    names: &[&str],
    kinds: &[Kind],
    mut rows: ByteStream,
    what: &str,
) -> Result<u64> {
    let prefix = format!(
        "INSERT INTO {} ({}) VALUES ",
        ident(&table.name.name),
        names
            .iter()
            .map(|name| ident(name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut count = 0u64;
    let mut statement = String::with_capacity(STATEMENT_BYTES + 65_536);
    while let Some(item) = rows.next().await {
        let item = item?;
        let mut reader = RowReader::new(&item);
        while let Some(row) = reader.next_row()? {
            statement.push_str(if statement.is_empty() { &prefix } else { "," });
            statement.push('(');
            for (index, (value, kind)) in row.iter().zip(kinds).enumerate() {
                if index > 0 {
                    statement.push(',');
                }
                statement.push_str(
                    &literal(value, kind).map_err(|error| {
                        error.context(format!("{}.{}", table.name, names[index]))
                    })?,
                );
            }
            statement.push(')');
            count += 1;
            if statement.len() >= STATEMENT_BYTES {
                conn.query_drop(std::mem::take(&mut statement))
                    .await
                    .map_err(|error| classify(error, what))?;
            }
        }
    }
    if !statement.is_empty() {
        conn.query_drop(statement)
            .await
            .map_err(|error| classify(error, what))?;
    }
    Ok(count)
}
/// Applies merged batches on one target connection.
pub(super) struct MysqlApplier {
    conn: Conn,
    migration: String,
    database: String,
    /// The connection holding the migration lock, when this process holds it: a batch
    /// commits only while that connection still holds it.
    lock_holder: Option<u64>,
    columns: TargetColumns,
    /// The sink's count of table changes, and the value `columns` was filled under.
    altered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    cached_under: u64,
}

#[async_trait]
impl ChangeApplier for MysqlApplier {
    async fn apply(
        &mut self,
        batch: &Batch,
        checkpoint: Position,
        commit_time_unix_micros: Option<i64>,
    ) -> Result<()> {
        let what = "applying changes on the target";
        // Tables changed since the cache was filled (an index created, a column added).
        let altered = self.altered.load(std::sync::atomic::Ordering::SeqCst);
        if altered != self.cached_under {
            self.columns = TargetColumns::default();
            self.cached_under = altered;
        }
        let mut transaction = self
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|error| classify(error, what))?;
        // The checkpoint first: a stream reading this database's log in the other direction
        // recognises ferry's own transactions by it before any of their rows.
        state::store_checkpoint(
            &mut transaction,
            &self.migration,
            checkpoint,
            commit_time_unix_micros,
        )
        .await?;
        apply_batch(&mut transaction, &mut self.columns, &self.database, batch).await?;
        for (table, reason) in &batch.failed_tables {
            state::set_table_state(
                &mut transaction,
                &self.migration,
                table,
                TableState::Failed,
                Some(reason),
            )
            .await?;
        }
        // The lock's connection may have ended (killed) while this one lives on: then another
        // process may hold the migration and apply too, and two streams interleaving their
        // batches could put older values over newer ones. Committed only while held.
        if let Some(holder) = self.lock_holder {
            let current: Option<Option<u64>> = transaction
                .exec_first(
                    format!("SELECT IS_USED_LOCK({MIGRATION_LOCK})"),
                    (&self.migration,),
                )
                .await
                .map_err(|error| classify(error, what))?;
            if current.flatten() != Some(holder) {
                return Err(Error::transient(
                    "migration.lock_lost",
                    "the connection holding this migration's lock on the target ended",
                )
                .with_hint("ferry takes the lock again, or stops with migration.busy if another process took it"));
            }
        }
        failpoint::hit("apply.before_commit");
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, what))
    }
}

/// The indexes of a target table, by name (`names_on_target`).
const INDEX_NAMES: &str =
    "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";

/// The foreign keys of a target table, by name (`names_on_target`).
const FOREIGN_KEY_NAMES: &str = "SELECT CONSTRAINT_NAME FROM information_schema.TABLE_CONSTRAINTS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_TYPE = 'FOREIGN KEY'";

/// The names `query` (taking the schema and the table) lists for a target table: its indexes or
/// foreign keys.
async fn names_on_target(
    conn: &mut mysql_async::Conn,
    query: &str,
    database: &str,
    table: &str,
) -> Result<Vec<String>> {
    conn.exec(query, (database, table))
        .await
        .map_err(|error| classify(error, "reading the target's indexes and foreign keys"))
}
