//! PostgreSQL as a target: schema creation, ferry's state, bulk loading of chunks with
//! `COPY ... FROM STDIN`, and sequences.

use async_trait::async_trait;
use ferry_core::connector::{
    ByteStream, ChangeApplier, ChunkFormat, ChunkWriter, SchemaTarget, Sink, StateStore,
};
use ferry_core::schema::{Catalog, SecondaryKind, SecondaryObject, Sequence};
use ferry_core::state::{Chunk, MigrationState, TableState};
use ferry_core::{failpoint, Error, Position, Result, TableName, TableSchema};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Client;
use tracing::{info, warn};

use super::apply::PostgresApplier;
use super::config::ConnectionConfig;
use super::connection::connect;
use super::ddl::{
    add_primary_key, copy_options, create_sequence, create_table, ident, index_if_not_exists,
    own_rows_on, qualified, COPY_BINARY, COPY_TEXT,
};
use super::errors::classify;
use super::state;

/// A PostgreSQL target.
pub struct PostgresSink {
    config: ConnectionConfig,
    /// Per migration: the session holding its lock, its pid and its start (to end only it).
    migration_lock: tokio::sync::Mutex<std::collections::HashMap<String, (Client, i32, f64)>>,
    /// Counts the changes this sink made to target tables' columns (added, widened): appliers
    /// opened from it forget what they cached about column types when it moves.
    altered: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PostgresSink {
    pub fn new(config: ConnectionConfig) -> Self {
        PostgresSink {
            config,
            migration_lock: tokio::sync::Mutex::new(std::collections::HashMap::new()),
            altered: Default::default(),
        }
    }

    async fn client(&self) -> Result<Client> {
        connect(&self.config).await
    }
}

const FORMATS: &[ChunkFormat] = &[COPY_BINARY, COPY_TEXT, ChunkFormat::Rows];

#[async_trait]
impl SchemaTarget for PostgresSink {
    async fn create_tables(&self, catalog: &Catalog) -> Result<()> {
        let translated = super::translate::catalog(catalog)?;
        let catalog = &translated;
        let client = self.client().await?;
        client
            .batch_execute(state::CREATE_STATE_TABLES)
            .await
            .map_err(|error| classify(error, "creating ferry's state tables on the target"))?;
        let mut schemas: Vec<&str> = catalog
            .tables
            .iter()
            .map(|table| table.name.schema.as_str())
            .chain(
                catalog
                    .types
                    .iter()
                    .map(|user_type| user_type.name.schema.as_str()),
            )
            .collect();
        schemas.sort();
        schemas.dedup();
        for schema in schemas {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema)))
                .await
                .map_err(|error| {
                    classify(error, &format!("creating schema {schema} on the target"))
                })?;
        }
        super::types::create_user_types(&client, &catalog.types).await?;
        for sequence in catalog
            .sequences
            .iter()
            .filter(|sequence| !sequence.identity)
        {
            client
                .batch_execute(&create_sequence(sequence))
                .await
                .map_err(|error| {
                    classify(
                        error,
                        &format!("creating sequence {} on the target", sequence.name),
                    )
                })?;
        }
        for table in &catalog.tables {
            let comments = super::ddl::comments(table);
            let statement = if comments.is_empty() {
                create_table(table)
            } else {
                format!("{};\n{comments}", create_table(table))
            };
            client.batch_execute(&statement).await.map_err(|error| {
                let error = classify(error, &format!("creating table {} on the target", table.name));
                if error.code() == "postgres.missing_object" {
                    error.with_hint("a type, collation or function the table uses is missing on the target: create it (for extension types, CREATE EXTENSION) and run again")
                } else {
                    error
                }
            })?;
        }
        for sequence in catalog
            .sequences
            .iter()
            .filter(|sequence| !sequence.identity)
        {
            if let Some((table, column)) = &sequence.owned_by {
                client
                    .batch_execute(&format!(
                        "ALTER SEQUENCE {} OWNED BY {}.{}",
                        qualified(&sequence.name),
                        qualified(table),
                        ident(column)
                    ))
                    .await
                    .map_err(|error| {
                        classify(
                            error,
                            &format!("attaching sequence {} to {table}", sequence.name),
                        )
                    })?;
            }
        }
        Ok(())
    }

    async fn create_secondary(&self, tables: &[TableSchema]) -> Result<Vec<(TableName, String)>> {
        let mut deferred = Vec::new();
        let from_mysql = tables.iter().any(|table| table.dialect == "mysql");
        let tables = &tables
            .iter()
            .map(super::translate::table)
            .collect::<Result<Vec<_>>>()?;
        let client = self.client().await?;
        // Only a superuser's apply can switch foreign keys off (session_replication_role); with
        // them on, rows applied in per-key order could be refused. A MySQL source's keys are then
        // left for the cutover (ferry reproduces their actions itself).
        let keys_off: bool = !from_mysql
            || client
                .query_one(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                    &[],
                )
                .await
                .map_err(|error| classify(error, "reading the target user's privileges"))?
                .get::<_, bool>(0);
        // Primary keys first: the stream applies by them, and foreign keys reference them.
        for table in tables.iter().filter(|table| !table.primary_key.is_empty()) {
            let what = format!("adding the primary key of {}", table.name);
            let exists: bool = client
                .query_one("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p')", &[&qualified(&table.name)])
                .await
                .map_err(|error| classify(error, &what))?
                .get(0);
            if !exists {
                info!(table = %table.name, "adding the primary key");
                client
                    .batch_execute(&add_primary_key(table))
                    .await
                    .map_err(|error| classify(error, &what))?;
            }
        }
        for table in tables {
            for object in &table.secondary {
                let what = format!("creating {} on {}", object.name, table.name);
                let exists = match object.kind {
                    SecondaryKind::Index => {
                        // By name, or an index of the same kind on the same columns under another
                        // name (one an earlier version named differently, say).
                        let name = qualified(&TableName::new(table.name.schema.clone(), object.name.clone()));
                        let unique = object.definition.starts_with("CREATE UNIQUE INDEX");
                        let shape = object
                            .definition
                            .rsplit_once(" USING ")
                            .map(|(_, rest)| rest.replace('"', ""))
                            .unwrap_or_default();
                        client
                            .query_one(
                                "SELECT to_regclass($1) IS NOT NULL OR EXISTS (
                                     SELECT 1 FROM pg_index i
                                     WHERE i.indrelid = $2::text::regclass AND i.indisunique = $3 AND $4 <> ''
                                       AND replace(split_part(pg_get_indexdef(i.indexrelid), ' USING ', 2), chr(34), '') = $4)",
                                &[&name, &qualified(&table.name), &unique, &shape],
                            )
                            .await
                    }
                    SecondaryKind::Constraint | SecondaryKind::ForeignKey => {
                        client.query_one("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND conname = $2)", &[&qualified(&table.name), &object.name]).await
                    }
                    SecondaryKind::Inherit => {
                        // A parent missing on the target (renamed by a transform) counts as
                        // done: the link cannot be made, the rows moved all the same.
                        client.query_one("SELECT to_regclass($2) IS NULL OR EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = $1::text::regclass AND inhparent = to_regclass($2))", &[&qualified(&table.name), &object.definition]).await
                    }
                }
                .map_err(|error| classify(error, &what))?;
                if exists.get::<_, bool>(0) {
                    continue;
                }
                if object.kind == SecondaryKind::ForeignKey && !keys_off {
                    warn!(table = %table.name, constraint = %object.name, definition = %object.definition, "foreign key not created: the target user is not a superuser, so ferry's apply could not switch it off; create it at cutover");
                    continue;
                }
                info!(table = %table.name, object = %object.name, "creating secondary object");
                let sql = match object.kind {
                    SecondaryKind::Index => index_if_not_exists(&object.definition),
                    SecondaryKind::Inherit => format!(
                        "ALTER TABLE {} INHERIT {}",
                        qualified(&table.name),
                        object.definition
                    ),
                    _ => format!(
                        "ALTER TABLE {} ADD CONSTRAINT {} {}",
                        qualified(&table.name),
                        ident(&object.name),
                        object.definition
                    ),
                };
                // (Appliers ask for a table's unique indexes with the table locked whenever they
                // know of none: `statements::unique_secondary_now`.)
                if let Err(error) = client.batch_execute(&sql).await {
                    let error = classify(error, &what);
                    if object.kind == SecondaryKind::ForeignKey {
                        // Rows copied under different snapshots may not match until the stream
                        // catches up: add the key unvalidated (it still constrains new writes).
                        let unvalidated = format!("{sql} NOT VALID");
                        match client.batch_execute(&unvalidated).await {
                            Ok(()) => {
                                warn!(table = %table.name, constraint = %object.name, error = %error, "foreign key added NOT VALID; run ALTER TABLE ... VALIDATE CONSTRAINT once the target has caught up")
                            }
                            // A key PostgreSQL cannot hold (MySQL allows one to a non-unique
                            // column): the data moves all the same, the key is named.
                            Err(second) => {
                                warn!(table = %table.name, constraint = %object.name, error = %classify(second, &what), "could not create a foreign key on the target; create it by hand if you need it")
                            }
                        }
                    } else {
                        // Rows copied under different snapshots (a unique value moving between
                        // chunks) agree once the stream has caught up: the caller tries again.
                        info!(table = %table.name, object = %object.name, error = %error, "cannot create a secondary object yet; trying again once the stream has caught up");
                        deferred.push((table.name.clone(), object.name.clone()));
                    }
                }
            }
        }
        Ok(deferred)
    }

    async fn target_columns(&self, table: &TableName) -> Result<Vec<String>> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
                &[&qualified(table)],
            )
            .await
            .map_err(|error| classify(error, &format!("reading the columns of {table} on the target")))?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    async fn add_columns(
        &self,
        table: &TableSchema,
        columns: &[String],
        relax_dropped: bool,
    ) -> Result<Vec<String>> {
        let table = super::translate::table(table)?;
        let present = self.target_columns(&table.name).await?;
        let client = self.client().await?;
        // A column the source dropped stays on the target: it must not refuse rows without it.
        for gone in present
            .iter()
            .filter(|name| relax_dropped && !columns.contains(name) && table.column(name).is_none())
        {
            if let Err(error) = client
                .batch_execute(&format!(
                    "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL",
                    qualified(&table.name),
                    ident(gone)
                ))
                .await
            {
                warn!(table = %table.name, column = %gone, error = %classify(error, "relaxing a column"), "a column dropped on the source stays NOT NULL on the target");
            }
        }
        let mut added = Vec::new();
        for name in columns.iter().filter(|name| !present.contains(name)) {
            let Some(column) = table.column(name) else {
                warn!(table = %table.name, column = %name, "a column the log carries is no longer on the source (dropped again since): not added on the target");
                continue;
            };
            let statement = format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}",
                qualified(&table.name),
                super::ddl::column_definition(column)
            );
            client.batch_execute(&statement).await.map_err(|error| {
                classify(
                    error,
                    &format!("adding column {name} to {} on the target", table.name),
                )
                .with_hint("add the column on the target by hand (as the source has it), then run ferry again")
            })?;
            added.push(name.clone());
        }
        if !added.is_empty() {
            self.altered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(added)
    }

    async fn widen_columns(
        &self,
        previous: Option<&TableSchema>,
        table: &TableSchema,
    ) -> Result<Vec<String>> {
        let table = super::translate::table(table)?;
        let previous = previous.and_then(|previous| super::translate::table(previous).ok());
        let client = self.client().await?;
        let widened = super::widen::widen_columns(&client, previous.as_ref(), &table).await?;
        if !widened.is_empty() {
            self.altered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(widened)
    }

    async fn is_empty(&self, table: &TableName) -> Result<bool> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT NOT EXISTS (SELECT 1 FROM {})",
                    own_rows_on(&client, table).await?
                ),
                &[],
            )
            .await
            .map_err(|error| classify(error, &format!("looking into {table} on the target")))?;
        Ok(row.get(0))
    }

    async fn drop_objects_held_until_caught_up(&self, table: &TableSchema) -> Result<()> {
        let table = super::translate::table(table)?;
        let client = self.client().await?;
        // Foreign keys first: a unique constraint another key needs cannot go before it.
        let mut held: Vec<&SecondaryObject> = table
            .secondary
            .iter()
            .filter(|object| object.waits_for_catch_up())
            .collect();
        held.sort_by_key(|object| object.kind != SecondaryKind::ForeignKey);
        for object in held {
            let sql = match object.kind {
                SecondaryKind::Index => format!(
                    "DROP INDEX IF EXISTS {}",
                    qualified(&TableName::new(
                        table.name.schema.clone(),
                        object.name.clone()
                    ))
                ),
                _ => {
                    // Never the primary key, whatever its name.
                    let present: bool = client
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND conname = $2 AND contype IN ('u', 'x', 'f'))",
                            &[&qualified(&table.name), &object.name],
                        )
                        .await
                        .map_err(|error| classify(error, "reading the target's constraints"))?
                        .get(0);
                    if !present {
                        continue;
                    }
                    format!(
                        "ALTER TABLE {} DROP CONSTRAINT {}",
                        qualified(&table.name),
                        ident(&object.name)
                    )
                }
            };
            match client.batch_execute(&sql).await {
                Ok(()) => {
                    info!(table = %table.name, object = %object.name, "dropped until the stream has caught up with the copy afresh")
                }
                Err(error) => {
                    warn!(table = %table.name, object = %object.name, error = %classify(error, "dropping an index or constraint"), "kept while the table is copied afresh: a change replayed over newer rows may stop the table again")
                }
            }
        }
        Ok(())
    }

    async fn truncate(&self, table: &TableName) -> Result<()> {
        let client = self.client().await?;
        let what = format!("emptying {table} on the target");
        let relation = own_rows_on(&client, table).await?;
        match client.batch_execute(&format!("TRUNCATE {relation}")).await {
            Ok(()) => Ok(()),
            // Referenced by a foreign key (re-copying a failed table, say): TRUNCATE would need
            // CASCADE, which would empty the referencing tables too. Delete the rows instead, with
            // foreign-key triggers off, as the stream applies.
            Err(error) if error.as_db_error().map(|database_error| database_error.code().code()) == Some("0A000") => client
                .batch_execute(&format!("BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM {relation}; COMMIT;"))
                .await
                .map_err(|error| classify(error, &what)),
            Err(error) => Err(classify(error, &what)),
        }
    }

    async fn set_sequences(&self, sequences: &[Sequence]) -> Result<()> {
        let client = self.client().await?;
        for sequence in sequences {
            let Some(value) = sequence.last_value else {
                continue;
            };
            // A sequence that belongs to a column is found through it (another engine, or the
            // reverse direction, may name it otherwise); any other one by its name.
            let result = match &sequence.owned_by {
                Some((table, column)) => {
                    client
                        .query(
                            "SELECT setval(owned, $4, true) FROM (SELECT pg_get_serial_sequence(format('%I.%I', $1::text, $2::text), $3)::regclass AS owned
                               WHERE to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL) found
                             WHERE owned IS NOT NULL AND (pg_sequence_last_value(owned) IS NULL OR pg_sequence_last_value(owned) < $4)",
                            &[&table.schema, &table.name, column, &value],
                        )
                        .await
                }
                None => {
                    client
                        .query(
                            "SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, $3, true) FROM pg_sequences
                             WHERE schemaname = $1 AND sequencename = $2 AND (last_value IS NULL OR last_value < $3)",
                            &[&sequence.name.schema, &sequence.name.name, &value],
                        )
                        .await
                }
            };
            if let Err(error) = result {
                warn!(sequence = %sequence.name, error = %classify(error, "setting a sequence"), "could not set a sequence on the target");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for PostgresSink {
    async fn lock_migration(
        &self,
        migration: &str,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>> {
        let mut held = self.migration_lock.lock().await;
        // Held since an earlier attempt of this process: keep it while its session lives.
        if let Some((client, _, _)) = held.get(migration) {
            let alive = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                client.simple_query("SELECT 1"),
            )
            .await;
            if matches!(alive, Ok(Ok(_))) {
                return Ok(Box::new(()));
            }
        }
        // The session that held it for this process is gone from here (a cut connection); the
        // server may not know yet. That session, and only it, may be ended to take the lock over.
        let stale = held
            .remove(migration)
            .map(|(_, pid, started)| (pid, started));
        let client = self.client().await?;
        let what = "taking the migration lock";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let locked: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended('ferry.migration.' || $1, 0))",
                    &[&migration],
                )
                .await
                .map_err(|error| classify(error, what))?
                .get(0);
            if locked {
                break;
            }
            if let Some((pid, started)) = stale {
                let _ = client
                    .query(
                        "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a
                         WHERE a.pid = $1 AND extract(epoch FROM a.backend_start)::float8 = $2
                           AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)",
                        &[&pid, &started],
                    )
                    .await;
            }
            if std::time::Instant::now() > deadline {
                return Err(ferry_core::Error::operator("migration.busy", format!("another ferry process is copying or streaming migration '{migration}' on this target"))
                    .with_hint("stop that process first, or give this command another --name; two processes on one migration would rewrite each other's stream and tables"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // The session lock lives as long as this connection: keep the server from ending it.
        let _ = client.batch_execute("SET idle_session_timeout = 0").await;
        let session = client
            .query_one(
                "SELECT pid, extract(epoch FROM backend_start)::float8 FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|error| classify(error, what))?;
        let (pid, started): (i32, f64) = (session.get(0), session.get(1));
        held.insert(migration.to_string(), (client, pid, started));
        Ok(Box::new(()))
    }

    async fn save_copy_end(&self, migration: &str, position: Position) -> Result<()> {
        state::save_copy_end(&self.client().await?, migration, position).await
    }

    async fn load_state(&self, migration: &str) -> Result<MigrationState> {
        state::load(&self.client().await?, migration).await
    }

    async fn start_stream(&self, migration: &str, position: Position) -> Result<()> {
        let mut client = self.client().await?;
        let what = "storing the new stream";
        let transaction = client
            .transaction()
            .await
            .map_err(|error| classify(error, what))?;
        state::save_checkpoint(&transaction, migration, position, None).await?;
        state::execute_for_migration(
            &transaction,
            migration,
            what,
            &[
                "DELETE FROM _ferry.chunk WHERE migration = $1",
                "DELETE FROM _ferry.table_state WHERE migration = $1",
                "DELETE FROM _ferry.copy_end WHERE migration = $1",
            ],
        )
        .await?;
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, what))
    }

    async fn save_plan(&self, migration: &str, table: &TableName, chunks: &[Chunk]) -> Result<()> {
        let mut client = self.client().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(|error| classify(error, "storing a chunk plan"))?;
        state::save_plan(&transaction, migration, table, chunks).await?;
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
        state::set_table_state(&self.client().await?, migration, table, table_state).await
    }

    async fn reset(&self, migration: &str) -> Result<()> {
        let mut client = self.client().await?;
        let what = "resetting the migration state";
        client
            .batch_execute(state::CREATE_STATE_TABLES)
            .await
            .map_err(|error| classify(error, what))?;
        let transaction = client
            .transaction()
            .await
            .map_err(|error| classify(error, what))?;
        let statements = [
            "DELETE FROM _ferry.stream WHERE migration = $1",
            "DELETE FROM _ferry.chunk WHERE migration = $1",
            "DELETE FROM _ferry.copy_end WHERE migration = $1",
            "UPDATE _ferry.table_state SET state = 'pending' WHERE migration = $1",
        ];
        state::execute_for_migration(&transaction, migration, what, &statements).await?;
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, what))
    }

    async fn recorded_failures(
        &self,
        migration: &str,
    ) -> Result<ferry_core::state::FailureSummary> {
        super::preflight::failure_summary(&self.config, migration).await
    }

    async fn record_failure(
        &self,
        migration: &str,
        at_unix_micros: i64,
        code: &str,
        message: &str,
    ) -> Result<()> {
        let client = self.client().await?;
        let what = "recording a failure";
        client
            .batch_execute(state::CREATE_STATE_TABLES)
            .await
            .map_err(|error| classify(error, what))?;
        client
            .execute(
                "INSERT INTO _ferry.failure (migration, at, code, message) VALUES ($1, to_timestamp($2::float8 / 1000000), $3, $4)",
                &[&migration, &(at_unix_micros as f64), &code, &message],
            )
            .await
            .map_err(|error| classify(error, what))?;
        Ok(())
    }

    async fn forget_table(&self, migration: &str, table: &TableName) -> Result<()> {
        let client = self.client().await?;
        for sql in ["DELETE FROM _ferry.chunk WHERE migration = $1 AND table_schema = $2 AND table_name = $3", "DELETE FROM _ferry.table_state WHERE migration = $1 AND table_schema = $2 AND table_name = $3"] {
            client.execute(sql, &[&migration, &table.schema, &table.name]).await.map_err(|error| classify(error, "forgetting a table"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for PostgresSink {
    fn accepted_formats(&self) -> &[ChunkFormat] {
        FORMATS
    }

    async fn open_chunk_writer(&self, migration: &str) -> Result<Box<dyn ChunkWriter>> {
        Ok(Box::new(PostgresChunkWriter {
            client: self.client().await?,
            migration: migration.to_string(),
        }))
    }

    async fn open_applier(&self, migration: &str) -> Result<Box<dyn ChangeApplier>> {
        let lock_holder = self
            .migration_lock
            .lock()
            .await
            .get(migration)
            .map(|(_, pid, started)| (*pid, *started));
        Ok(Box::new(
            PostgresApplier::open(
                self.client().await?,
                migration,
                self.altered.clone(),
                lock_holder,
            )
            .await?,
        ))
    }
}

/// Loads chunks with `COPY ... FROM STDIN` and marks them done in the same transaction.
pub(super) struct PostgresChunkWriter {
    client: Client,
    migration: String,
}

#[async_trait]
impl ChunkWriter for PostgresChunkWriter {
    async fn write(
        &mut self,
        table: &TableSchema,
        chunk: u32,
        format: ChunkFormat,
        rows: ByteStream,
        snapshot_position: Option<Position>,
    ) -> Result<u64> {
        let what = format!("loading {} on the target", table.name);
        let transaction = self
            .client
            .transaction()
            .await
            .map_err(|error| classify(error, &what))?;
        if let Some(count) =
            state::claim_chunk(&transaction, &self.migration, &table.name, chunk).await?
        {
            // Loaded by an earlier transaction that committed after its process gave up on
            // it: read the rows to the end (the reader serves the next chunk) and keep them out.
            let mut rows = rows;
            while let Some(item) = rows.next().await {
                item?;
            }
            warn!(table = %table.name, chunk, "chunk was loaded already; not loading it again");
            return Ok(count);
        }
        let count = copy_into(&transaction, table, format, rows, &what).await?;
        state::mark_chunk_done(
            &transaction,
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

/// Loads `rows` into `table` with `COPY ... FROM STDIN` inside `transaction`; returns the row count.
pub(crate) async fn copy_into(
    transaction: &tokio_postgres::Transaction<'_>,
    table: &TableSchema,
    format: ChunkFormat,
    rows: ByteStream,
    what: &str,
) -> Result<u64> {
    if !FORMATS.contains(&format) {
        return Err(Error::definite(
            "copy.format",
            format!("a PostgreSQL target cannot load chunks encoded as {format:?}"),
        ));
    }
    let mut rows = if format == ChunkFormat::Rows {
        super::rows::rows_to_copy_text(table, rows)
    } else {
        rows
    };
    let columns: Vec<String> = table
        .writable_columns()
        .map(|column| ident(&column.name))
        .collect();
    let sql = format!(
        "COPY {} ({}) FROM STDIN {}",
        qualified(&table.name),
        columns.join(", "),
        copy_options(format)
    );
    let sink = transaction
        .copy_in::<_, bytes::Bytes>(&sql)
        .await
        .map_err(|error| classify(error, what))?;
    futures_util::pin_mut!(sink);
    while let Some(data) = rows.next().await {
        sink.feed(data?)
            .await
            .map_err(|error| classify(error, what))?;
    }
    sink.finish().await.map_err(|error| classify(error, what))
}
