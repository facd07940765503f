//! Applying the changes of tables without a key ([`KeylessChanges`]) to PostgreSQL, in source
//! order: runs of inserts as one statement, each update or delete on exactly one row found by
//! its whole old image (`LIMIT 1` on `(tableoid, ctid)`, which also names the partition), so
//! duplicate rows stay duplicates. Columns compare by their text form as the column's type
//! renders it (identity, not equality: `1.0` is not `1.00`, citext `'A'` is not `'a'`).

use ferry_core::change::{KeylessChange, KeylessChanges};
use ferry_core::{Result, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;
use tracing::warn;

use super::codec::encode_text;
use super::ddl::{ident, qualified};
use super::errors::classify;
use super::statements::{
    array_parameters, casts, column_list, column_types, execute, own_rows, prepare, StatementCache,
};

/// Applies one table's changes, in order, inside the batch transaction.
pub(super) async fn apply_keyless(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    changes: &KeylessChanges,
) -> Result<()> {
    let relation = &changes.relation;
    let types = column_types(transaction, cache, relation).await?;
    let own = own_rows(transaction, cache, &relation.table).await?;
    let names: Vec<&str> = relation
        .columns
        .iter()
        .map(|column| column.name.as_str())
        .collect();
    let matching = |offset: usize| -> String {
        names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                // Identity, not equality: the text forms, both made by the column's type (so
                // 1.0 and 1.00, 'A' and 'a' in citext, or -0 and 0 stay apart, and types
                // without an equality operator compare too).
                let type_name = &types[*name];
                let number = offset + index + 1;
                format!(
                    "t.{}::text IS NOT DISTINCT FROM (${number}::text::{type_name})::text",
                    ident(name)
                )
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let one_row = |offset: usize| {
        format!(
            "(tableoid, ctid) = (SELECT tableoid, ctid FROM {own} AS t WHERE {} LIMIT 1)",
            matching(offset)
        )
    };
    let insert_sql = format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM unnest({}) AS s({})",
        qualified(&relation.table),
        column_list(&names),
        casts(&names, &types),
        array_parameters(names.len(), 0),
        column_list(&names),
    );
    let delete_sql = format!("DELETE FROM {own} WHERE {}", one_row(0));
    let assignments: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(index, name)| format!("{} = ${}::text::{}", ident(name), index + 1, types[*name]))
        .collect();
    let update_sql = format!(
        "UPDATE {own} SET {} WHERE {}",
        assignments.join(", "),
        one_row(names.len())
    );

    let mut inserts: Vec<&Vec<Value>> = Vec::new();
    for change in &changes.changes {
        if let KeylessChange::Insert(row) = change {
            inserts.push(row);
            continue;
        }
        insert_all(transaction, cache, &insert_sql, names.len(), &mut inserts).await?;
        let (sql, parameters): (&str, Vec<Option<String>>) = match change {
            KeylessChange::Delete(old) => (&delete_sql, old.iter().map(encode_text).collect()),
            KeylessChange::Update { old, new } => (
                &update_sql,
                new.iter().chain(old).map(encode_text).collect(),
            ),
            KeylessChange::Insert(_) => unreachable!("handled above"),
        };
        let statement = prepare(transaction, cache, sql).await?;
        let parameters: Vec<&(dyn ToSql + Sync)> = parameters
            .iter()
            .map(|value| value as &(dyn ToSql + Sync))
            .collect();
        let changed = transaction
            .execute(&statement, &parameters)
            .await
            .map_err(|error| classify(error, "applying a change to a table without a key"))?;
        if changed == 0 {
            warn!(table = %relation.table, "a row to change or delete is not on the target: the table differs from the source (verify it, and copy it afresh if so)");
        }
    }
    insert_all(transaction, cache, &insert_sql, names.len(), &mut inserts).await
}

/// Inserts the pending rows in one statement and forgets them.
async fn insert_all(
    transaction: &Transaction<'_>,
    cache: &mut StatementCache,
    sql: &str,
    width: usize,
    rows: &mut Vec<&Vec<Value>>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let columns: Vec<Vec<Option<String>>> = (0..width)
        .map(|index| rows.iter().map(|row| encode_text(&row[index])).collect())
        .collect();
    rows.clear();
    execute(transaction, cache, sql, &columns).await
}
