//! Applying merged change batches to PostgreSQL.
//!
//! Each table's merged changes become a few set-based statements whose parameters are text
//! arrays, one per column, cast to the target column types on the server:
//!
//! ```text
//!   upserts  MERGE INTO t USING (SELECT s.c::type AS c, ... FROM unnest($1::text[], ...) AS s(...)) AS s
//!            ON t.key = s.key WHEN MATCHED THEN UPDATE SET c = s.c, ...
//!            WHEN NOT MATCHED THEN INSERT (...) OVERRIDING SYSTEM VALUE VALUES (s.c, ...)
//!            (before PostgreSQL 15: INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE SET c = EXCLUDED.c)
//!   updates  UPDATE t SET c = s.c::type FROM unnest(...) AS s(key..., c...) WHERE t.key = s.key::type   (present columns only)
//!   deletes  DELETE FROM t USING unnest(...) AS s(key...) WHERE t.key = s.key::type
//! ```
//!
//! Statements of keyed rows run with hash and merge joins off (`SET LOCAL`), so each batch row
//! is looked up through the target's key index: the planner, seeing thousands of rows from
//! `unnest`, would otherwise scan the whole table to hash it. Measured on one PostgreSQL 15
//! server, 1,000,000 full images of existing pgbench rows in batches of 20,000 took 3.8-4.0 s
//! by `MERGE` with nested loops, 4.3-4.7 s by `INSERT ... ON CONFLICT` and 6.0 s by `MERGE` or
//! `UPDATE ... FROM` with the planner's own choice; 1,000,000 new rows 2.5 s against 2.9 s. In
//! ferry's catch-up of a 1,000,000-row UPDATE (source, target and ferry on 2 cores), the 50
//! batches took 6.93 s to apply against 7.63 s (medians of 3 alternating runs).
//!
//! The whole batch and the checkpoint commit in one transaction. The session runs with
//! `session_replication_role = replica`, as PostgreSQL's own apply worker does, so target
//! triggers and foreign-key checks do not fire for rows the source already validated.

use std::collections::HashMap;

use async_trait::async_trait;
use ferry_core::change::{Batch, Segment, TableChanges};
use ferry_core::connector::ChangeApplier;
use ferry_core::{failpoint, Cell, Error, Position, Result, TableName};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};
use tracing::warn;

use super::cdc::origin_name;
use super::codec::encode_text;
use super::ddl::{ident, literal, qualified};
use super::errors::{classify, is_table_specific};
use super::state;
use super::statements::{
    array_parameters, assignments, casts, column_list, column_types, execute, execute_raw,
    key_match, own_rows, prepare, unique_secondary_now, StatementCache,
};

/// Applies batches on one target connection.
pub(super) struct PostgresApplier {
    client: Client,
    migration: String,
    cache: StatementCache,
    /// The sink's count of column changes, and the value the cache was filled under.
    altered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    cached_under: u64,
    /// The server process of the session holding the migration lock and when it started,
    /// when this process holds it: a batch commits only while that session still holds it.
    lock_holder: Option<(i32, f64)>,
}

impl PostgresApplier {
    pub(crate) async fn open(
        client: Client,
        migration: &str,
        altered: std::sync::Arc<std::sync::atomic::AtomicU64>,
        lock_holder: Option<(i32, f64)>,
    ) -> Result<PostgresApplier> {
        let replica_role = match client
            .batch_execute("SET session_replication_role = replica")
            .await
        {
            Ok(()) => true,
            Err(error) => {
                warn!(error = %classify(error, "disabling triggers for apply"), "applying with triggers and foreign keys enabled: target triggers may fire and foreign keys may reject out-of-order rows; connect to the target as a superuser to avoid this");
                false
            }
        };
        tag_writes(&client, migration).await?;
        let merge: bool = client
            .query_one(
                "SELECT current_setting('server_version_num')::int >= 150000",
                &[],
            )
            .await
            .map_err(|error| classify(error, "reading the target's version"))?
            .get(0);
        Ok(PostgresApplier {
            client,
            migration: migration.to_string(),
            cache: StatementCache {
                replica_role,
                merge,
                ..StatementCache::default()
            },
            cached_under: altered.load(std::sync::atomic::Ordering::SeqCst),
            altered,
            lock_holder,
        })
    }
}

/// Tags this session's transactions with the migration's replication origin, so that a stream
/// in the other direction (after cutover) leaves them out. Refuses to apply untagged: an untagged
/// write could be replayed back over a newer one.
async fn tag_writes(client: &Client, migration: &str) -> Result<()> {
    let origin = origin_name(migration);
    let tagged = client
        .batch_execute(&format!(
            "SELECT pg_replication_origin_create({name}) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = {name});
             SELECT pg_replication_origin_session_setup({name});",
            name = literal(&origin)
        ))
        .await;
    match tagged {
        Ok(()) => Ok(()),
        Err(error) if error.code() == Some(&SqlState::OBJECT_IN_USE) => Err(Error::transient(
            "postgres.origin_busy",
            format!("replication origin {origin} is still held by an earlier session"),
        )
        .with_hint("the server has not yet noticed that the previous ferry ended; ferry retries")),
        Err(error) => Err(classify(error, "tagging ferry's writes with a replication origin")
            .with_hint("ferry tags its writes so that a reverse stream (after cutover) never replays them: use a superuser, or GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_session_setup(text); origins also count against max_replication_slots")),
    }
}

#[async_trait]
impl ChangeApplier for PostgresApplier {
    async fn apply(
        &mut self,
        batch: &Batch,
        checkpoint: Position,
        commit_time_unix_micros: Option<i64>,
    ) -> Result<()> {
        let what = "applying changes on the target";
        // Columns changed on the target since the cache was filled (a widened type): the
        // statements cast to the old types.
        let altered = self.altered.load(std::sync::atomic::Ordering::SeqCst);
        if altered != self.cached_under {
            self.cache.column_types.clear();
            self.cache.statements.clear();
            self.cached_under = altered;
        }
        let transaction = self
            .client
            .transaction()
            .await
            .map_err(|error| classify(error, what))?;
        // Keyed rows are looked up by their key, batch rows against the target's key index:
        // nested loops (see the module notes), except where rows are matched without a key.
        let mut key_lookups = false;
        for segment in &batch.segments {
            let keyed = matches!(segment, Segment::Rows(_));
            if self.cache.merge && keyed != key_lookups {
                transaction
                    .batch_execute(if keyed {
                        "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"
                    } else {
                        "SET LOCAL enable_hashjoin = DEFAULT; SET LOCAL enable_mergejoin = DEFAULT"
                    })
                    .await
                    .map_err(|error| classify(error, what))?;
                key_lookups = keyed;
            }
            match segment {
                Segment::Rows(tables) => {
                    for changes in tables {
                        apply_table(&transaction, &mut self.cache, changes)
                            .await
                            .map_err(|error| {
                                let error = error.context(format!(
                                    "applying changes to {}",
                                    changes.relation.table
                                ));
                                // Only an error about this table's data or definition stops
                                // just this table.
                                if is_table_specific(&error) {
                                    error.with_table(changes.relation.table.clone())
                                } else {
                                    error
                                }
                            })?;
                    }
                }
                Segment::Keyless(tables) => {
                    for changes in tables {
                        super::keyless::apply_keyless(&transaction, &mut self.cache, changes)
                            .await
                            .map_err(|error| {
                                let error = error.context(format!(
                                    "applying changes to {}",
                                    changes.relation.table
                                ));
                                if is_table_specific(&error) {
                                    error.with_table(changes.relation.table.clone())
                                } else {
                                    error
                                }
                            })?;
                    }
                }
                Segment::Cascade(operations) => {
                    let mut target = super::cascade::PostgresCascade {
                        transaction: &transaction,
                        cache: &mut self.cache,
                    };
                    ferry_sql::cascade::reproduce_all(&mut target, operations).await?;
                }
                // Never CASCADE: the source lists every table its cascade emptied, and a cascade
                // here could empty target tables that are not migrated.
                Segment::Truncate {
                    relations,
                    cascade: _,
                    restart_identity,
                } => {
                    let mut names = Vec::new();
                    for relation in relations {
                        names.push(own_rows(&transaction, &mut self.cache, &relation.table).await?);
                    }
                    let restart = if *restart_identity {
                        " RESTART IDENTITY"
                    } else {
                        ""
                    };
                    let sql = format!("TRUNCATE {}{restart}", names.join(", "));
                    transaction
                        .batch_execute(&sql)
                        .await
                        .map_err(|error| classify(error, "replicating a TRUNCATE"))?;
                }
            }
        }
        let changed = batch.tables();
        let changed: Vec<&TableName> = changed.iter().collect();
        state::touch_tables(&transaction, &self.migration, &changed).await?;
        for (table, reason) in &batch.failed_tables {
            state::set_table_failed(&transaction, &self.migration, table, reason).await?;
        }
        // The lock's session may have ended (a killed backend) while this one lives on: then
        // another process may hold the migration and apply too, and two streams interleaving
        // their batches could put older values over newer ones. Committed only while held.
        // (The lock of this migration, held by that very session: a number the server gave
        // to a newer session does not count.)
        if let Some((holder, started)) = self.lock_holder {
            let held = prepare(
                &transaction,
                &mut self.cache,
                "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $1 AND l.objsubid = 1
                     AND ((l.classid::int8 << 32) | l.objid::int8) = hashtextextended('ferry.migration.' || $2, 0)
                     AND extract(epoch FROM a.backend_start)::float8 = $3)",
            )
            .await?;
            let held: bool = transaction
                .query_one(&held, &[&holder, &self.migration, &started])
                .await
                .map_err(|error| classify(error, what))?
                .get(0);
            if !held {
                return Err(Error::transient(
                    "migration.lock_lost",
                    "the session holding this migration's lock on the target ended",
                )
                .with_hint("ferry takes the lock again, or stops with migration.busy if another process took it"));
            }
        }
        state::save_checkpoint(
            &transaction,
            &self.migration,
            checkpoint,
            commit_time_unix_micros,
        )
        .await?;
        failpoint::hit("apply.before_commit");
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, what))
    }
}

/// Full images of a table as one `MERGE` joined on the key: an image whose row exists updates
/// it, any other is inserted. On PostgreSQL 15 this costs the target less than `INSERT ... ON
/// CONFLICT DO UPDATE` (which first tries each row as an insert), with nested loops over the
/// key index (set by the caller for keyed segments).
fn merge_statement(
    own: &str,
    names: &[&str],
    key_names: &[&str],
    non_keys: &[&str],
    types: &HashMap<String, String>,
) -> String {
    let typed: Vec<String> = names
        .iter()
        .map(|name| format!("s.{}::{} AS {}", ident(name), types[*name], ident(name)))
        .collect();
    let on: Vec<String> = key_names
        .iter()
        .map(|name| format!("t.{} = s.{}", ident(name), ident(name)))
        .collect();
    let matched = if non_keys.is_empty() {
        String::new()
    } else {
        format!(
            " WHEN MATCHED THEN UPDATE SET {}",
            assignments(non_keys, "s")
        )
    };
    format!(
        "MERGE INTO {own} AS t USING (SELECT {} FROM unnest({}) AS s({})) AS s ON {}{matched} \
         WHEN NOT MATCHED THEN INSERT ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
        typed.join(", "),
        array_parameters(names.len(), 0),
        column_list(names),
        on.join(" AND "),
        column_list(names),
        names
            .iter()
            .map(|name| format!("s.{}", ident(name)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Full images of a table as `INSERT ... ON CONFLICT (key) DO UPDATE` (before PostgreSQL 15).
fn on_conflict_statement(
    table: &str,
    names: &[&str],
    key_names: &[&str],
    non_keys: &[&str],
    types: &HashMap<String, String>,
) -> String {
    let conflict = if non_keys.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", assignments(non_keys, "EXCLUDED"))
    };
    format!(
        "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM unnest({}) AS s({}) ON CONFLICT ({}) {conflict}",
        column_list(names),
        casts(names, types),
        array_parameters(names.len(), 0),
        column_list(names),
        column_list(key_names)
    )
}

async fn apply_table(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    changes: &TableChanges,
) -> Result<()> {
    let relation = &changes.relation;
    let types = column_types(transaction, cache, relation).await?;
    let names: Vec<&str> = relation
        .columns
        .iter()
        .map(|column| column.name.as_str())
        .collect();
    let keys: Vec<usize> = relation.key_indexes();
    let own = own_rows(transaction, cache, &relation.table).await?;

    let key_names: Vec<&str> = keys.iter().map(|&index| names[index]).collect();
    let delete_sql = format!(
        "DELETE FROM {own} AS t USING unnest({}) AS s({}) WHERE {}",
        array_parameters(key_names.len(), 0),
        column_list(&key_names),
        key_match(&key_names, &types)
    );
    if !changes.deletes.is_empty() {
        let columns: Vec<Vec<Option<String>>> = (0..keys.len())
            .map(|position| {
                changes
                    .deletes
                    .iter()
                    .map(|key| encode_text(&key[position]))
                    .collect()
            })
            .collect();
        execute(transaction, cache, &delete_sql, &columns).await?;
    }

    if !changes.upserts.is_empty() {
        let non_keys: Vec<&str> = (0..names.len())
            .filter(|index| !keys.contains(index))
            .map(|index| names[index])
            .collect();
        let key_names: Vec<&str> = keys.iter().map(|&index| names[index]).collect();
        let sql = if cache.merge {
            merge_statement(&own, &names, &key_names, &non_keys, &types)
        } else {
            on_conflict_statement(
                &qualified(&relation.table),
                &names,
                &key_names,
                &non_keys,
                &types,
            )
        };
        let columns: Vec<Vec<Option<String>>> = (0..names.len())
            .map(|index| {
                changes
                    .upserts
                    .iter()
                    .map(|row| cell_text(&row[index]))
                    .collect::<Result<_>>()
            })
            .collect::<Result<_>>()?;
        // Row by row, an upsert can meet a value another row of the batch still holds on the
        // target (two rows swapping a unique email) even though the final images are unique
        // together (or two rows swapping ranges under an exclusion constraint). On such a
        // violation the rows are deleted first and inserted again, inside a savepoint; only when
        // triggers and cascades are off (a deletion must not fire them) and only for tables with
        // another unique index or an exclusion constraint.
        let careful =
            cache.replica_role && unique_secondary_now(transaction, cache, relation, &own).await?;
        if !careful {
            execute(transaction, cache, &sql, &columns).await?;
        } else {
            let savepoint = |command: &'static str| async move {
                transaction
                    .batch_execute(command)
                    .await
                    .map_err(|error| classify(error, "applying a batch"))
            };
            savepoint("SAVEPOINT ferry_upsert").await?;
            match execute_raw(transaction, cache, &sql, &columns).await {
                Ok(()) => {}
                // Not when the target has columns the stream does not send: a re-inserted row
                // would lose their values.
                Err(error)
                    if (error.code() == Some(&SqlState::UNIQUE_VIOLATION)
                        || error.code() == Some(&SqlState::EXCLUSION_VIOLATION))
                        && types.len() == names.len() =>
                {
                    savepoint("ROLLBACK TO SAVEPOINT ferry_upsert").await?;
                    let key_columns: Vec<Vec<Option<String>>> =
                        keys.iter().map(|&index| columns[index].clone()).collect();
                    execute(transaction, cache, &delete_sql, &key_columns).await?;
                    execute(transaction, cache, &sql, &columns).await?;
                }
                Err(error) => return Err(classify(error, "applying a batch")),
            }
            savepoint("RELEASE SAVEPOINT ferry_upsert").await?;
        }
    }

    if !changes.updates.is_empty() {
        // Rows with the same present columns share a statement.
        let mut groups: HashMap<Vec<bool>, Vec<&Vec<Cell>>> = HashMap::new();
        for row in &changes.updates {
            groups
                .entry(row.iter().map(|cell| !cell.is_unchanged()).collect())
                .or_default()
                .push(row);
        }
        for (present, rows) in groups {
            let set: Vec<usize> = (0..names.len())
                .filter(|index| present[*index] && !keys.contains(index))
                .collect();
            if set.is_empty() {
                continue;
            }
            let used: Vec<usize> = keys.iter().copied().chain(set.iter().copied()).collect();
            let used_names: Vec<&str> = used.iter().map(|&index| names[index]).collect();
            let key_names: Vec<&str> = keys.iter().map(|&index| names[index]).collect();
            let assignments: Vec<String> = set
                .iter()
                .map(|&index| {
                    format!(
                        "{} = s.{}::{}",
                        ident(names[index]),
                        ident(names[index]),
                        types[names[index]]
                    )
                })
                .collect();
            let sql = format!(
                "UPDATE {own} AS t SET {} FROM unnest({}) AS s({}) WHERE {}",
                assignments.join(", "),
                array_parameters(used.len(), 0),
                column_list(&used_names),
                key_match(&key_names, &types)
            );
            let columns: Vec<Vec<Option<String>>> = used
                .iter()
                .map(|&index| {
                    rows.iter()
                        .map(|row| cell_text(&row[index]))
                        .collect::<Result<_>>()
                })
                .collect::<Result<_>>()?;
            execute(transaction, cache, &sql, &columns).await?;
        }
    }

    // A row whose key changed while its large values stayed out of the log. Against the state
    // before the statement: with a row at the new key (a replay), update it and drop any row left
    // at the old key; otherwise move the row at the old key, keeping its unlogged values. A row
    // matching both keys (keys equal on the target, say citext) is only updated, never deleted.
    for (old_key, row) in &changes.moves {
        let present: Vec<usize> = (0..names.len())
            .filter(|&index| !row[index].is_unchanged())
            .collect();
        let parameter = |index: usize, number: usize| {
            format!(
                "{} = ${number}::text::{}",
                ident(names[index]),
                types[names[index]]
            )
        };
        let assignments: Vec<String> = present
            .iter()
            .enumerate()
            .map(|(position, &index)| parameter(index, position + 1))
            .collect();
        let at_new: Vec<String> = keys
            .iter()
            .map(|&index| {
                parameter(
                    index,
                    present
                        .iter()
                        .position(|&present_index| present_index == index)
                        .map_or(0, |position| position + 1),
                )
            })
            .collect();
        let at_old: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(position, &index)| parameter(index, present.len() + position + 1))
            .collect();
        if at_new.iter().any(|condition| condition.contains("= $0::")) {
            return Err(Error::definite(
                "apply.key_missing",
                format!("a key change of {} carries no new key", relation.table),
            ));
        }
        let (table, assignments, at_new, at_old) = (
            &own,
            assignments.join(", "),
            at_new.join(" AND "),
            at_old.join(" AND "),
        );
        let sql = format!(
            "WITH at_new AS (UPDATE {table} SET {assignments} WHERE {at_new} RETURNING 1),
                  moved AS (UPDATE {table} SET {assignments} WHERE {at_old} AND NOT EXISTS (SELECT 1 FROM {table} WHERE {at_new}) RETURNING 1)
             DELETE FROM {table} WHERE {at_old} AND NOT ({at_new}) AND EXISTS (SELECT 1 FROM {table} WHERE {at_new})"
        );
        let mut parameters: Vec<Option<String>> = present
            .iter()
            .map(|&index| cell_text(&row[index]))
            .collect::<Result<_>>()?;
        parameters.extend(old_key.iter().map(encode_text));
        let references: Vec<&(dyn ToSql + Sync)> = parameters
            .iter()
            .map(|parameter| parameter as &(dyn ToSql + Sync))
            .collect();
        let statement = prepare(transaction, cache, &sql).await?;
        transaction
            .execute(&statement, &references)
            .await
            .map_err(|error| classify(error, "moving a row to its new key"))?;
    }
    Ok(())
}

fn cell_text(cell: &Cell) -> Result<Option<String>> {
    match cell {
        Cell::Value(value) => Ok(encode_text(value)),
        Cell::Unchanged => Err(Error::definite(
            "apply.unchanged",
            "an unchanged value reached a statement that writes it",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> HashMap<String, String> {
        [("id", "integer"), ("b", "text")]
            .into_iter()
            .map(|(name, type_name)| (name.to_string(), type_name.to_string()))
            .collect()
    }

    #[test]
    fn full_images_are_merged_on_the_key_or_upserted_before_postgresql_15() {
        let names = ["id", "b"];
        assert_eq!(
            merge_statement("ONLY \"public\".\"t\"", &names, &["id"], &["b"], &types()),
            "MERGE INTO ONLY \"public\".\"t\" AS t USING (SELECT s.\"id\"::integer AS \"id\", s.\"b\"::text AS \"b\" \
             FROM unnest($1::text[], $2::text[]) AS s(\"id\", \"b\")) AS s ON t.\"id\" = s.\"id\" \
             WHEN MATCHED THEN UPDATE SET \"b\" = s.\"b\" \
             WHEN NOT MATCHED THEN INSERT (\"id\", \"b\") OVERRIDING SYSTEM VALUE VALUES (s.\"id\", s.\"b\")"
        );
        assert_eq!(
            on_conflict_statement("\"public\".\"t\"", &names, &["id"], &["b"], &types()),
            "INSERT INTO \"public\".\"t\" (\"id\", \"b\") OVERRIDING SYSTEM VALUE \
             SELECT s.\"id\"::integer, s.\"b\"::text FROM unnest($1::text[], $2::text[]) AS s(\"id\", \"b\") \
             ON CONFLICT (\"id\") DO UPDATE SET \"b\" = EXCLUDED.\"b\""
        );
        // A table of key columns only: nothing to update when the row exists.
        let keys_only = ["id"];
        assert!(!merge_statement("t", &keys_only, &keys_only, &[], &types())
            .contains("MATCHED THEN UPDATE"));
        assert!(
            on_conflict_statement("t", &keys_only, &keys_only, &[], &types())
                .ends_with("ON CONFLICT (\"id\") DO NOTHING")
        );
    }
}
