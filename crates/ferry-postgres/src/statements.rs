//! The statements appliers run on a PostgreSQL target: text-array parameters cast to the target
//! column types, prepared once per session, and what the session caches about each table.

use std::collections::HashMap;

use ferry_core::change::Relation;
use ferry_core::{Error, Result, TableName};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Statement, Transaction};

use super::ddl::{ident, own_rows_on, qualified};
use super::errors::classify;

/// What an applier's session knows of the target: statements it prepared and, per table,
/// column types, unique indexes and how its own rows are named.
#[derive(Default)]
pub(super) struct StatementCache {
    /// Target column types (without modifiers) per table.
    pub(super) column_types: HashMap<TableName, HashMap<String, String>>,
    /// Tables known to have a unique index or an exclusion constraint besides their key (a
    /// "no" is never kept: see [`unique_secondary_now`]).
    pub(super) unique_secondary: std::collections::HashSet<TableName>,
    /// How statements name each table's own rows on the target (`ONLY`, or not for a
    /// partitioned table).
    pub(super) own_rows: HashMap<TableName, String>,
    /// Whether `session_replication_role = replica` took (triggers and cascades are off).
    pub(super) replica_role: bool,
    /// Whether the target has `MERGE` (PostgreSQL 15 and later): full images go in by it.
    pub(super) merge: bool,
    pub(super) statements: HashMap<String, Statement>,
}

pub(super) fn column_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| ident(name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `c = source.c, ...`: each column set from the same column of `source` (`s`, `EXCLUDED`).
pub(super) fn assignments(names: &[&str], source: &str) -> String {
    names
        .iter()
        .map(|name| format!("{} = {source}.{}", ident(name), ident(name)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn casts(names: &[&str], types: &HashMap<String, String>) -> String {
    names
        .iter()
        .map(|name| format!("s.{}::{}", ident(name), types[*name]))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn key_match(keys: &[&str], types: &HashMap<String, String>) -> String {
    keys.iter()
        .map(|name| format!("t.{} = s.{}::{}", ident(name), ident(name), types[*name]))
        .collect::<Vec<_>>()
        .join(" AND ")
}

pub(super) fn array_parameters(count: usize, offset: usize) -> String {
    (1..=count)
        .map(|number| format!("${}::text[]", number + offset))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) async fn prepare(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    sql: &str,
) -> Result<Statement> {
    prepare_raw(transaction, cache, sql)
        .await
        .map_err(|error| classify(error, "preparing an apply statement"))
}

async fn prepare_raw(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    sql: &str,
) -> std::result::Result<Statement, tokio_postgres::Error> {
    if let Some(statement) = cache.statements.get(sql) {
        return Ok(statement.clone());
    }
    let statement = transaction.prepare(sql).await?;
    cache.statements.insert(sql.to_string(), statement.clone());
    Ok(statement)
}

pub(super) async fn execute(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    sql: &str,
    columns: &[Vec<Option<String>>],
) -> Result<()> {
    execute_raw(transaction, cache, sql, columns)
        .await
        .map_err(|error| classify(error, "applying a batch"))
}

/// [`execute`] with the driver's error, for callers that react to one SQLSTATE.
pub(super) async fn execute_raw(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    sql: &str,
    columns: &[Vec<Option<String>>],
) -> std::result::Result<(), tokio_postgres::Error> {
    let statement = prepare_raw(transaction, cache, sql).await?;
    let parameters: Vec<&(dyn ToSql + Sync)> = columns
        .iter()
        .map(|column| column as &(dyn ToSql + Sync))
        .collect();
    transaction
        .execute(&statement, &parameters)
        .await
        .map(|_| ())
}

/// Whether `relation`'s table has a unique index or an exclusion constraint besides its key, as
/// the upsert about to run will meet it. A "yes" is remembered; a "no" is asked again every
/// time, in one round trip with a lock on the table (`ROW EXCLUSIVE`, the lock the writes take
/// anyway, which `CREATE INDEX` and `ADD CONSTRAINT` wait for), so no index can appear between
/// the answer and the upsert: the objects that wait for the stream to catch up are built on
/// another session beside the stream, and an operator may add one on the target.
pub(super) async fn unique_secondary_now(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    relation: &Relation,
    own: &str,
) -> Result<bool> {
    if cache.unique_secondary.contains(&relation.table) {
        return Ok(true);
    }
    let what = format!(
        "reading the unique indexes of {} on the target",
        relation.table
    );
    let messages = transaction
        .simple_query(&format!(
            "LOCK TABLE {own} IN ROW EXCLUSIVE MODE; SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = {}::regclass AND (indisunique OR indisexclusion) AND NOT indisprimary)",
            super::ddl::literal(&qualified(&relation.table))
        ))
        .await
        .map_err(|error| classify(error, &what))?;
    let found = messages.iter().any(|message| {
        matches!(message, tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("t"))
    });
    if found {
        cache.unique_secondary.insert(relation.table.clone());
    }
    Ok(found)
}

/// How statements name `table`'s own rows on the target (cached; see [`own_rows_on`]).
pub(super) async fn own_rows(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    table: &TableName,
) -> Result<String> {
    if let Some(known) = cache.own_rows.get(table) {
        return Ok(known.clone());
    }
    let text = own_rows_on(transaction, table).await?;
    cache.own_rows.insert(table.clone(), text.clone());
    Ok(text)
}

/// The target's column types for a relation, checked to contain every column the stream sends.
pub(super) async fn column_types(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    relation: &Relation,
) -> Result<HashMap<String, String>> {
    // A relation with a column the cached types lack: the target may have gained it since.
    let stale = cache
        .column_types
        .get(&relation.table)
        .is_some_and(|types| {
            relation
                .columns
                .iter()
                .any(|column| !types.contains_key(&column.name))
        });
    if stale || !cache.column_types.contains_key(&relation.table) {
        let rows = transaction
            .query(
                // Cast to the type without its modifier (the column's own modifier then applies
                // as an assignment, which refuses a too-long value instead of truncating it), but
                // never to `character` or `bit`, which mean length 1 when written bare.
                "SELECT a.attname::text,
                        CASE format_type(a.atttypid, NULL)
                            WHEN 'character' THEN 'bpchar' WHEN 'character[]' THEN 'bpchar[]'
                            WHEN 'bit' THEN 'varbit' WHEN 'bit[]' THEN 'varbit[]'
                            ELSE format_type(a.atttypid, NULL) END
                 FROM pg_attribute a
                 WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[&qualified(&relation.table)],
            )
            .await
            .map_err(|error| {
                classify(
                    error,
                    &format!("reading the columns of {} on the target", relation.table),
                )
            })?;
        let types: HashMap<String, String> =
            rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        cache.column_types.insert(relation.table.clone(), types);
    }
    let types = &cache.column_types[&relation.table];
    if let Some(missing) = relation
        .columns
        .iter()
        .find(|column| !types.contains_key(&column.name))
    {
        return Err(Error::definite("apply.missing_column", format!("column {} of {} does not exist on the target", missing.name, relation.table))
            .with_hint("a column was added on the source after the copy: add it on the target (same type), then run again"));
    }
    Ok(types.clone())
}
