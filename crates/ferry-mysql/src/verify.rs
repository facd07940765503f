//! Reading either side of a MySQL-to-MySQL migration for `ferry verify`: digests computed on
//! the server, row hashes, and row replacement for repair.
//!
//! A row's canonical form is every column cast to bytes and hex-encoded (NULL as `-`, which
//! no hex string equals), joined by commas, under the pinned session settings of
//! `connection.rs` (UTC, utf8mb4). Two MySQL-family servers render equal values identically, so
//! equal MD5s mean equal rows. A range digest is order-independent and needs no sort: the row
//! count, the exact (DECIMAL) sum of the first 60 bits of every row's MD5 and the XOR of the
//! next 64 bits.
//!
//! The two sides may use different database names: a target inspector reports its tables under
//! the source's database name, so the engine matches tables by name alone. Verification state
//! lives in `_ferry`.`verify_ranges` on the target.

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

use ferry_core::connector::{Buckets, ByteStream, ChunkFormat, Inspector, PortableText};
use ferry_core::rows::encode_row;
use ferry_core::schema::Catalog;
use ferry_core::select::Selection;
use ferry_core::state::stored::{encode_outcome, encode_range, StoredVerifiedRange};
use ferry_core::state::KeyRange;
use ferry_core::verify::{RangeDigest, RangeOutcome, RowHash, VerifiedRange};
use ferry_core::{Error, Position, Result, TableName, TableSchema, Value};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};

use super::binlog::{log_end, position_of, server_id_of};
use super::catalog::{kind_of, read_catalog_for};
use super::config::MysqlConfig;
use super::connection::{connect, is_mariadb};
use super::ddl::{ident, range_predicate};
use super::errors::classify;
use super::sink::insert_rows;
use super::snapshot::{decode_row, params};
use super::state;
use super::target_columns::TargetColumns;
use super::types::Kind;
use super::values::decode;

/// Keys per statement when reading or replacing rows by key.
const KEYS_PER_STATEMENT: usize = 1_000;

/// One side of a verification.
pub struct MysqlInspector {
    config: MysqlConfig,
    is_source: bool,
    /// For a verification across engines: how rows and keys are rendered so that the other
    /// engine renders its copy of them identically (the registry's `portable`).
    portable: Option<Arc<dyn PortableText>>,
    /// The database name tables are reported under (the source's).
    report_as: String,
}

impl MysqlInspector {
    pub fn source(config: MysqlConfig) -> Self {
        let report_as = config.database().to_string();
        MysqlInspector {
            config,
            is_source: true,
            portable: None,
            report_as,
        }
    }

    /// The source of a verification across engines: rows rendered by `portable`, as the other
    /// engine renders its copy of them. Repair is not available.
    pub fn portable_source(config: MysqlConfig, portable: Arc<dyn PortableText>) -> Self {
        MysqlInspector {
            portable: Some(portable),
            ..Self::source(config)
        }
    }

    /// The target of a verification across engines: rows rendered by `portable`, as the other
    /// engine renders its originals (tables keep this database's name; the engine matches them
    /// by table name).
    pub fn portable_target(config: MysqlConfig, portable: Arc<dyn PortableText>) -> Self {
        let report_as = config.database().to_string();
        MysqlInspector {
            config,
            is_source: false,
            portable: Some(portable),
            report_as,
        }
    }

    /// The target side, reporting its tables under the source's database name.
    pub fn target(config: MysqlConfig, source_database: &str) -> Self {
        MysqlInspector {
            config,
            is_source: false,
            portable: None,
            report_as: source_database.to_string(),
        }
    }

    fn refuse_repair_across_engines(&self) -> Result<()> {
        if self.portable.is_some() {
            return Err(Error::operator(
                "verify.repair_across_engines",
                "repair between MySQL and PostgreSQL is not available",
            )
            .with_hint("re-copy the table with `ferry run --restart --tables ...`"));
        }
        Ok(())
    }

    fn side(&self) -> &'static str {
        if self.is_source {
            "source"
        } else {
            "target"
        }
    }

    async fn conn(&self) -> Result<Conn> {
        let mut conn = connect(&self.config, true).await?;
        conn.query_drop("SET foreign_key_checks = 0")
            .await
            .map_err(|error| classify(error, "preparing a session"))?;
        Ok(conn)
    }

    /// The SQL text of a row of `table`.
    fn row_text(&self, table: &TableSchema) -> Result<String> {
        if let Some(portable) = &self.portable {
            return portable
                .row(table)
                .map_err(|reason| Error::operator("verify.unsupported_type", reason));
        }
        Ok(canonical_row(table))
    }

    /// The SQL bucket of a row of `table`.
    fn bucket(&self, table: &TableSchema, count: u32) -> Result<String> {
        if let Some(portable) = &self.portable {
            return portable
                .key(table)
                .map(|key| portable.bucket(&key, count))
                .map_err(|reason| Error::operator("verify.unsupported_type", reason));
        }
        Ok(bucket_expression(table, count))
    }

    /// Key and row hash of the rows matching `predicate` (with `?` placeholders for `values`).
    async fn hashes_where(
        &self,
        conn: &mut Conn,
        table: &TableSchema,
        predicate: &str,
        values: &[Value],
    ) -> Result<Vec<RowHash>> {
        if let Some(portable) = &self.portable {
            let key = portable
                .key(table)
                .map_err(|reason| Error::operator("verify.unsupported_type", reason))?;
            let sql = format!(
                "SELECT CONCAT('(', {}, ')'), MD5({}) FROM {} WHERE {predicate}",
                key,
                self.row_text(table)?,
                ident(&table.name.name)
            );
            let what = format!(
                "reading row hashes of {} on the {}",
                table.name,
                self.side()
            );
            let rows: Vec<(String, String)> = conn
                .exec(sql, params(values))
                .await
                .map_err(|error| classify(error, &what))?;
            return Ok(rows
                .into_iter()
                .map(|(key_text, hash)| RowHash {
                    key: vec![Value::Text(key_text.clone())],
                    key_text,
                    hash,
                })
                .collect());
        }
        let sql = format!(
            "SELECT {}, MD5({}) FROM {} WHERE {predicate}",
            key_columns(table).join(", "),
            canonical_row(table),
            ident(&table.name.name)
        );
        let what = format!(
            "reading row hashes of {} on the {}",
            table.name,
            self.side()
        );
        let rows: Vec<mysql_async::Row> = conn
            .exec(sql, params(values))
            .await
            .map_err(|error| classify(error, &what))?;
        let kinds = key_kinds(table);
        rows.into_iter()
            .map(|row| {
                let mut values = row.unwrap();
                let hash = match values.pop() {
                    Some(mysql_async::Value::Bytes(bytes)) => String::from_utf8(bytes).ok(),
                    _ => None,
                }
                .ok_or_else(|| Error::definite("verify.row", "a row hash is missing"))?;
                let key = values
                    .into_iter()
                    .zip(&kinds)
                    .map(|(raw, kind)| decode(kind, raw, false))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|error| error.context(format!("reading keys of {}", table.name)))?;
                Ok(RowHash {
                    key_text: key_text(&key),
                    key,
                    hash,
                })
            })
            .collect()
    }
}

fn key_columns(table: &TableSchema) -> Vec<String> {
    table.primary_key.iter().map(|name| ident(name)).collect()
}

fn key_kinds(table: &TableSchema) -> Vec<Kind> {
    table
        .primary_key
        .iter()
        .filter_map(|name| table.column(name).map(kind_of))
        .collect()
}

/// The canonical text of a row: every column as hex of its bytes (long types as the MD5 of their
/// bytes, so the row's text stays far below `max_allowed_packet`), NULL as `-`. FLOAT goes
/// through DOUBLE: FLOAT's own text has only six significant digits.
fn canonical_row(table: &TableSchema) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|column| {
            let name = ident(&column.name);
            match kind_of(column) {
                Kind::Text { .. } | Kind::Binary { .. } | Kind::Spatial | Kind::Json => {
                    format!("IFNULL(MD5(CAST({name} AS BINARY)), '-')")
                }
                Kind::Float => format!("IFNULL(HEX(CAST({name} + 0E0 AS BINARY)), '-')"),
                _ => format!("IFNULL(HEX(CAST({name} AS BINARY)), '-')"),
            }
        })
        .collect();
    format!("CONCAT_WS(',', {})", columns.join(", "))
}

/// The bucket (0 to count - 1) of a row's key, the same on every side.
fn bucket_expression(table: &TableSchema, count: u32) -> String {
    let columns: Vec<String> = table
        .primary_key
        .iter()
        .map(|name| format!("HEX(CAST({} AS BINARY))", ident(name)))
        .collect();
    format!(
        "CAST(CONV(SUBSTRING(MD5(CONCAT_WS(',', {})), 1, 8), 16, 10) AS UNSIGNED) % {count}",
        columns.join(", ")
    )
}

/// Count and digest columns over `canonical.r` (the MD5 of each row).
const DIGEST: &str = "COUNT(*), SUM(r IS NULL), CONCAT(IFNULL(SUM(CAST(CONV(SUBSTRING(r, 1, 15), 16, 10) AS UNSIGNED)), 0), ':', IFNULL(BIT_XOR(CAST(CONV(SUBSTRING(r, 16, 16), 16, 10) AS UNSIGNED)), 0))";

/// A key in a stable text form: `(42)`, `(7,'sku-1')`.
pub(crate) fn key_text(key: &[Value]) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|value| match value {
            Value::Null => "NULL".into(),
            Value::Bool(flag) => flag.to_string(),
            Value::Int16(number) => number.to_string(),
            Value::Int32(number) => number.to_string(),
            Value::Int64(number) => number.to_string(),
            Value::UInt64(number) => number.to_string(),
            Value::Float32(number) => number.to_string(),
            Value::Float64(number) => number.to_string(),
            Value::Numeric(text) => text.clone(),
            Value::Text(text) | Value::Json(text) | Value::Uuid(text) => {
                format!("'{}'", text.replace('\'', "''"))
            }
            Value::Native { text, .. } => format!("'{}'", text.replace('\'', "''")),
            Value::Bytes(bytes) => format!(
                "x'{}'",
                bytes
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>()
            ),
        })
        .collect();
    format!("({})", parts.join(","))
}

/// `key IN (?, ...)` for a one-column key, else `(a = ? AND b = ?) OR ...`, with its values.
fn keys_predicate(table: &TableSchema, keys: &[Vec<Value>]) -> (String, Vec<Value>) {
    if keys.is_empty() {
        return ("FALSE".into(), Vec::new());
    }
    let columns = key_columns(table);
    let values: Vec<Value> = keys.iter().flatten().cloned().collect();
    if let [column] = &columns[..] {
        let marks = vec!["?"; keys.len()].join(", ");
        return (format!("{column} IN ({marks})"), values);
    }
    let one: Vec<String> = columns
        .iter()
        .map(|column| format!("{column} = ?"))
        .collect();
    let one = format!("({})", one.join(" AND "));
    (vec![one; keys.len()].join(" OR "), values)
}

/// A digest from `(rows, rows without a canonical text, digest)`; every row must have its text.
fn digest_of(
    table: &TableSchema,
    row: (u64, Option<u64>, String),
    position: Option<Position>,
) -> Result<RangeDigest> {
    if row.1.unwrap_or(0) > 0 {
        return Err(Error::definite(
            "verify.row_text",
            format!(
                "{}: the server could not build the canonical text of {} rows",
                table.name,
                row.1.unwrap_or(0)
            ),
        )
        .with_hint("raise max_allowed_packet on both servers"));
    }
    Ok(RangeDigest {
        rows: row.0,
        digest: row.2,
        position,
    })
}

/// Refuses a verification between MariaDB and MySQL: they render JSON (and some column types)
/// differently, so equal rows would not compare equal.
pub async fn require_same_flavor(source: &MysqlConfig, target: &MysqlConfig) -> Result<()> {
    let mut source_conn = connect(source, true).await?;
    let mut target_conn = connect(target, true).await?;
    let source_mariadb = is_mariadb(&mut source_conn).await?;
    let target_mariadb = is_mariadb(&mut target_conn).await?;
    if source_mariadb != target_mariadb {
        let name = |mariadb: bool| if mariadb { "MariaDB" } else { "MySQL" };
        return Err(Error::operator(
            "verify.mixed_flavors",
            format!(
                "verify compares two MariaDB or two MySQL servers; this is {} to {}",
                name(source_mariadb),
                name(target_mariadb)
            ),
        )
        .with_hint(
            "they render JSON and some types differently; compare counts and sample rows yourself",
        ));
    }
    Ok(())
}

#[async_trait]
impl Inspector for MysqlInspector {
    async fn read_catalog(&self, selection: &Selection) -> Result<Catalog> {
        let mut conn = connect(&self.config, true).await?;
        // Select after renaming: the patterns name the source's database.
        let (mut catalog, _) =
            read_catalog_for(&mut conn, &self.config, &Selection::default()).await?;
        for table in &mut catalog.tables {
            table.name = TableName::new(self.report_as.clone(), table.name.name.clone());
        }
        catalog
            .tables
            .retain(|table| selection.matches(&table.name));
        Ok(catalog)
    }

    async fn digest_range(&self, table: &TableSchema, range: &KeyRange) -> Result<RangeDigest> {
        let mut conn = self.conn().await?;
        let what = format!("digesting {} on the {}", table.name, self.side());
        let (predicate, values) = range_predicate(table, range);
        let sql = format!(
            "SELECT {DIGEST} FROM (SELECT MD5({}) AS r FROM {} WHERE {predicate}) canonical",
            self.row_text(table)?,
            ident(&table.name.name)
        );
        let row: Option<(u64, Option<u64>, String)> = conn
            .exec_first(sql, params(&values))
            .await
            .map_err(|error| classify(error, &what))?;
        // Read after the digest: a position at or after every change the digest saw. Without
        // the privilege to read it there is no stream to wait for either.
        let position = if self.is_source {
            match log_end(&mut conn).await {
                Ok((file, offset)) => {
                    Some(position_of(&file, offset, server_id_of(&mut conn).await?)?)
                }
                Err(_) => None,
            }
        } else {
            None
        };
        let _ = conn.disconnect().await;
        digest_of(table, row.unwrap_or((0, None, "0:0".into())), position)
    }

    async fn row_hashes(
        &self,
        table: &TableSchema,
        range: &KeyRange,
        buckets: Option<&Buckets>,
    ) -> Result<Vec<RowHash>> {
        let (mut predicate, values) = range_predicate(table, range);
        if let Some(buckets) = buckets {
            predicate = format!(
                "({predicate}) AND {} IN ({})",
                self.bucket(table, buckets.count)?,
                buckets.sql_list()
            );
        }
        let mut conn = self.conn().await?;
        self.hashes_where(&mut conn, table, &predicate, &values)
            .await
    }

    async fn digest_buckets(
        &self,
        table: &TableSchema,
        range: &KeyRange,
        count: u32,
    ) -> Result<Vec<(u32, RangeDigest)>> {
        let mut conn = self.conn().await?;
        let what = format!("digesting buckets of {} on the {}", table.name, self.side());
        let (predicate, values) = range_predicate(table, range);
        let sql = format!(
            "SELECT bucket, {DIGEST} FROM (SELECT {} AS bucket, MD5({}) AS r FROM {} WHERE {predicate}) canonical GROUP BY bucket",
            self.bucket(table, count)?,
            self.row_text(table)?,
            ident(&table.name.name)
        );
        let rows: Vec<(u32, u64, Option<u64>, String)> = conn
            .exec(sql, params(&values))
            .await
            .map_err(|error| classify(error, &what))?;
        rows.into_iter()
            .map(|(bucket, rows, without, digest)| {
                Ok((bucket, digest_of(table, (rows, without, digest), None)?))
            })
            .collect()
    }

    async fn row_hashes_for_keys(
        &self,
        table: &TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<Vec<RowHash>> {
        let mut conn = self.conn().await?;
        let mut hashes = Vec::new();
        if let Some(portable) = &self.portable {
            // Across engines a key is its key text (`RowHash::key` holds it).
            let key = portable
                .key(table)
                .map_err(|reason| Error::operator("verify.unsupported_type", reason))?;
            for batch in keys.chunks(KEYS_PER_STATEMENT) {
                let texts: Vec<Value> = batch
                    .iter()
                    .filter_map(|key| key.first().cloned())
                    .collect();
                let predicate = format!(
                    "CONCAT('(', {}, ')') IN ({})",
                    key,
                    vec!["?"; texts.len().max(1)].join(", ")
                );
                let texts = if texts.is_empty() {
                    vec![Value::Null]
                } else {
                    texts
                };
                hashes.extend(
                    self.hashes_where(&mut conn, table, &predicate, &texts)
                        .await?,
                );
            }
            return Ok(hashes);
        }
        for batch in keys.chunks(KEYS_PER_STATEMENT) {
            let (predicate, values) = keys_predicate(table, batch);
            hashes.extend(
                self.hashes_where(&mut conn, table, &predicate, &values)
                    .await?,
            );
        }
        Ok(hashes)
    }

    async fn read_rows(
        &self,
        table: &TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<(ChunkFormat, ByteStream)> {
        self.refuse_repair_across_engines()?;
        let mut conn = self.conn().await?;
        let what = format!("reading rows of {} to repair", table.name);
        let columns: Vec<String> = table
            .writable_columns()
            .map(|column| ident(&column.name))
            .collect();
        let kinds: Vec<Kind> = table.writable_columns().map(kind_of).collect();
        let mut encoded = Vec::new();
        for batch in keys.chunks(KEYS_PER_STATEMENT) {
            let (predicate, values) = keys_predicate(table, batch);
            let rows: Vec<mysql_async::Row> = conn
                .exec(
                    format!(
                        "SELECT {} FROM {} WHERE {predicate}",
                        columns.join(", "),
                        ident(&table.name.name)
                    ),
                    params(&values),
                )
                .await
                .map_err(|error| classify(error, &what))?;
            for row in rows {
                encode_row(&decode_row(table, &kinds, row)?, &mut encoded);
            }
        }
        let stream = futures_util::stream::iter([Ok(Bytes::from(encoded))]);
        Ok((ChunkFormat::Rows, Box::pin(stream) as ByteStream))
    }

    async fn replace_rows(
        &self,
        table: &TableSchema,
        keys: &[Vec<Value>],
        format: ChunkFormat,
        rows: ByteStream,
    ) -> Result<u64> {
        if format != ChunkFormat::Rows {
            return Err(Error::operator(
                "verify.format",
                format!("the MySQL {} cannot load {format:?} rows", self.side()),
            ));
        }
        let mut conn = self.conn().await?;
        let what = format!("repairing {} on the {}", table.name, self.side());
        let (names, kinds) = TargetColumns::default()
            .writable(&mut conn, self.config.database(), table)
            .await?;
        let mut transaction = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|error| classify(error, &what))?;
        for batch in keys.chunks(KEYS_PER_STATEMENT) {
            let (predicate, values) = keys_predicate(table, batch);
            transaction
                .exec_drop(
                    format!("DELETE FROM {} WHERE {predicate}", ident(&table.name.name)),
                    params(&values),
                )
                .await
                .map_err(|error| classify(error, &what))?;
        }
        let count = insert_rows(&mut transaction, table, &names, &kinds, rows, &what).await?;
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, &what))?;
        Ok(count)
    }

    async fn applied_position(&self, migration: &str) -> Result<Option<Position>> {
        let mut conn = self.conn().await?;
        let checkpoint = state::load_checkpoint(&mut conn, migration).await?;
        let _ = conn.disconnect().await;
        Ok(checkpoint.map(|checkpoint| checkpoint.position))
    }

    async fn clear_verification(&self, migration: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let what = "clearing the verification state";
        create_state(&mut conn).await?;
        conn.exec_drop(
            "DELETE FROM `_ferry`.`verify_ranges` WHERE migration = ?",
            (migration,),
        )
        .await
        .map_err(|error| classify(error, what))
    }

    async fn save_verification_plan(
        &self,
        migration: &str,
        table: &TableName,
        ranges: &[KeyRange],
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        let what = "storing a verification plan";
        create_state(&mut conn).await?;
        let mut transaction = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|error| classify(error, what))?;
        for (index, range) in ranges.iter().enumerate() {
            let text = encode_range(range)?;
            transaction
                .exec_drop(
                    "INSERT INTO `_ferry`.`verify_ranges` (migration, schema_name, table_name, range_index, key_range) VALUES (?, ?, ?, ?, ?)
                     ON DUPLICATE KEY UPDATE key_range = VALUES(key_range), outcome = NULL",
                    (migration, &table.schema, &table.name, index as u32, text),
                )
                .await
                .map_err(|error| classify(error, what))?;
        }
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, what))
    }

    async fn save_verification_outcome(
        &self,
        migration: &str,
        table: &TableName,
        index: u32,
        outcome: &RangeOutcome,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        let text = encode_outcome(outcome)?;
        conn.exec_drop(
            "UPDATE `_ferry`.`verify_ranges` SET outcome = ? WHERE migration = ? AND schema_name = ? AND table_name = ? AND range_index = ?",
            (text, migration, &table.schema, &table.name, index),
        )
        .await
        .map_err(|error| classify(error, "storing a verification outcome"))
    }

    async fn load_verification(&self, migration: &str) -> Result<Vec<VerifiedRange>> {
        let mut conn = self.conn().await?;
        let what = "reading the verification state";
        if !state::table_exists(&mut conn, "verify_ranges").await? {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, u32, String, Option<String>)> = conn
            .exec(
                "SELECT schema_name, table_name, range_index, key_range, outcome FROM `_ferry`.`verify_ranges` WHERE migration = ? ORDER BY 1, 2, 3",
                (migration,),
            )
            .await
            .map_err(|error| classify(error, what))?;
        rows.into_iter()
            .map(|(schema, name, index, range, outcome)| {
                StoredVerifiedRange {
                    table: TableName::new(schema, name),
                    index: index.into(),
                    range,
                    outcome,
                }
                .decode("`_ferry`.`verify_ranges`")
            })
            .collect()
    }
}

/// Creates `_ferry` and its tables, the verification table included, when missing.
async fn create_state(conn: &mut Conn) -> Result<()> {
    for statement in state::CREATE_STATE.iter().chain([&CREATE_VERIFY_RANGES]) {
        conn.query_drop(*statement)
            .await
            .map_err(|error| classify(error, "creating ferry's state on the target"))?;
    }
    Ok(())
}

/// Names compare exactly (`Orders` and `orders` are two tables where the file system allows it).
const CREATE_VERIFY_RANGES: &str = "CREATE TABLE IF NOT EXISTS `_ferry`.`verify_ranges` (migration VARCHAR(190) COLLATE utf8mb4_bin NOT NULL, schema_name VARCHAR(190) COLLATE utf8mb4_bin NOT NULL, table_name VARCHAR(190) COLLATE utf8mb4_bin NOT NULL, range_index INT UNSIGNED NOT NULL, key_range LONGTEXT NOT NULL, outcome LONGTEXT NULL, PRIMARY KEY (migration, schema_name, table_name, range_index)) ENGINE=InnoDB";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_texts_are_stable_and_quoted() {
        assert_eq!(key_text(&[Value::Int64(42)]), "(42)");
        assert_eq!(
            key_text(&[Value::UInt64(7), Value::Text("it's".into())]),
            "(7,'it''s')"
        );
        assert_eq!(key_text(&[Value::Bytes(vec![0, 255])]), "(x'00ff')");
    }

    #[test]
    fn key_predicates_bind_every_key_value() {
        let (sql, values) =
            keys_predicate_for(&["id"], &[vec![Value::Int64(1)], vec![Value::Int64(2)]]);
        assert_eq!(sql, "`id` IN (?, ?)");
        assert_eq!(values.len(), 2);
        let (sql, values) = keys_predicate_for(
            &["a", "b"],
            &[
                vec![Value::Int64(1), Value::Int64(2)],
                vec![Value::Int64(3), Value::Int64(4)],
            ],
        );
        assert_eq!(sql, "(`a` = ? AND `b` = ?) OR (`a` = ? AND `b` = ?)");
        assert_eq!(values.len(), 4);
    }

    fn keys_predicate_for(key: &[&str], keys: &[Vec<Value>]) -> (String, Vec<Value>) {
        let table = TableSchema {
            name: TableName::new("shop", "t"),
            dialect: "mysql".into(),
            columns: Vec::new(),
            primary_key: key.iter().map(|name| name.to_string()).collect(),
            primary_key_name: None,
            checks: Vec::new(),
            secondary: Vec::new(),
            foreign_keys: Vec::new(),
            estimated_rows: 0,
            partitioning: None,
            comment: None,
        };
        keys_predicate(&table, keys)
    }
}
