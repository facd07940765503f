//! Reading either side for `ferry verify`: digests computed on the server, row hashes, and row
//! replacement for repair.
//!
//! A row's canonical form is `ROW(every column)::text` under the pinned session settings of
//! `connection.rs`, hashed with md5. Two PostgreSQL servers render equal values identically, so
//! equal hashes mean equal rows (a changed microsecond, a numeric scale, one byte of a string all
//! show). A range digest is order-independent and computed in one pass without sorting:
//! `count(*)`, the sum (exact, 128-bit) of a 64-bit hash of every row's text and the XOR of a
//! second, differently seeded 64-bit hash (`hashtextextended`, fast and built in). Row-level
//! comparison of a differing range uses md5 of the same text.

use async_trait::async_trait;
use std::sync::Arc;

use ferry_core::connector::{Buckets, ByteStream, ChunkFormat, Inspector, PortableText};
use ferry_core::schema::Catalog;
use ferry_core::select::Selection;
use ferry_core::state::stored::{encode_outcome, encode_range, StoredVerifiedRange};
use ferry_core::state::KeyRange;
use ferry_core::verify::{RangeDigest, RangeOutcome, RowHash, VerifiedRange};
use ferry_core::{Error, Lsn, Position, Result, TableName, TableSchema, Value};
use futures_util::StreamExt;

use super::catalog::read_catalog;
use super::config::ConnectionConfig;
use super::connection::connect;
use super::ddl::{ident, key_tuple, key_types, own_rows, own_rows_on, range_predicate};
use super::errors::classify;
use super::sink::copy_into;
use super::state;

/// One side of a verification.
pub struct PostgresInspector {
    config: ConnectionConfig,
    is_source: bool,
    /// For a verification across engines: how rows and keys are rendered so that the other
    /// engine renders them identically (the registry's `portable`); the tables passed in are
    /// the source's definitions.
    portable: Option<Arc<dyn PortableText>>,
    /// Whether each table is partitioned on this server (asked once per table).
    partitioned: std::sync::Mutex<std::collections::HashMap<TableName, bool>>,
}

impl PostgresInspector {
    pub fn source(config: ConnectionConfig) -> Self {
        PostgresInspector {
            config,
            is_source: true,
            portable: None,
            partitioned: Default::default(),
        }
    }

    pub fn target(config: ConnectionConfig) -> Self {
        PostgresInspector {
            config,
            is_source: false,
            portable: None,
            partitioned: Default::default(),
        }
    }

    /// The source of a verification across engines, rows rendered by `portable` (whole tables,
    /// no repair).
    pub fn portable_source(config: ConnectionConfig, portable: Arc<dyn PortableText>) -> Self {
        PostgresInspector {
            config,
            is_source: true,
            portable: Some(portable),
            partitioned: Default::default(),
        }
    }

    /// The target of a verification across engines, rows rendered by `portable`. Whole tables are compared (the engines
    /// order text keys differently, so key ranges would not hold the same rows), and there is
    /// no repair.
    pub fn portable_target(config: ConnectionConfig, portable: Arc<dyn PortableText>) -> Self {
        PostgresInspector {
            config,
            is_source: false,
            portable: Some(portable),
            partitioned: Default::default(),
        }
    }

    /// How statements name `table`'s own rows on this server (see [`own_rows_on`]).
    pub(super) async fn own_rows(&self, table: &TableSchema) -> Result<String> {
        let known = self
            .partitioned
            .lock()
            .expect("not poisoned")
            .get(&table.name)
            .copied();
        if let Some(partitioned) = known {
            return Ok(own_rows(&table.name, partitioned));
        }
        let text = own_rows_on(&connect(&self.config).await?, &table.name).await?;
        self.partitioned
            .lock()
            .expect("not poisoned")
            .insert(table.name.clone(), !text.starts_with("ONLY "));
        Ok(text)
    }

    /// Runs a digest query (row count, digest text) in one snapshot; a source also reads its
    /// WAL position in that snapshot, at or after every change the digest saw.
    pub(super) async fn digest_in_snapshot(
        &self,
        table: &TableSchema,
        sql: &str,
    ) -> Result<RangeDigest> {
        let client = connect(&self.config).await?;
        let what = format!("digesting {} on the {}", table.name, self.side());
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|error| classify(error, &what))?;
        let row = client
            .query_one(sql, &[])
            .await
            .map_err(|error| classify(error, &what))?;
        let position = if self.is_source {
            let lsn: String = client
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .map_err(|error| classify(error, &what))?
                .get(0);
            Lsn::parse(&lsn).map(Position::Postgres)
        } else {
            None
        };
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|error| classify(error, &what))?;
        Ok(RangeDigest {
            rows: row.get::<_, i64>(0) as u64,
            digest: row.get(1),
            position,
        })
    }

    /// Runs a bucket digest query (bucket, row count, digest text).
    pub(super) async fn bucket_digests(
        &self,
        table: &TableSchema,
        sql: &str,
    ) -> Result<Vec<(u32, RangeDigest)>> {
        let client = connect(&self.config).await?;
        let what = format!("digesting buckets of {} on the {}", table.name, self.side());
        let rows = client
            .query(sql, &[])
            .await
            .map_err(|error| classify(error, &what))?;
        Ok(rows
            .iter()
            .map(|row| {
                (
                    row.get::<_, i32>(0) as u32,
                    RangeDigest {
                        rows: row.get::<_, i64>(1) as u64,
                        digest: row.get(2),
                        position: None,
                    },
                )
            })
            .collect())
    }

    pub(super) fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    fn refuse_across_engines(&self, what: &str) -> Result<()> {
        if self.portable.is_some() {
            return Err(Error::operator(
                "verify.across_engines",
                format!("{what} is not available between MySQL and PostgreSQL"),
            ));
        }
        Ok(())
    }

    pub(super) fn side(&self) -> &'static str {
        if self.is_source {
            "source"
        } else {
            "target"
        }
    }
}

fn row_hash_expression(table: &TableSchema) -> String {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|column| ident(&column.name))
        .collect();
    format!("md5(ROW({})::text)", columns.join(", "))
}

/// The bucket (0 to count - 1) of a row's key: a hash of the key's text, the same on every side.
fn bucket_expression(table: &TableSchema, count: u32) -> String {
    format!(
        "((hashtextextended(ROW({})::text, 2) & 9223372036854775807) % {count})::integer",
        key_columns(table).join(", ")
    )
}

fn key_columns(table: &TableSchema) -> Vec<String> {
    table
        .primary_key
        .iter()
        .map(|column| ident(column))
        .collect()
}

/// `(k1, k2) IN (('v'::type, ...), ...)` for these keys.
fn keys_predicate(table: &TableSchema, keys: &[Vec<Value>]) -> Result<String> {
    let types = key_types(table)?;
    let tuples: Vec<String> = keys
        .iter()
        .map(|key| key_tuple(table, &types, key))
        .collect::<Result<_>>()?;
    Ok(format!(
        "({}) IN ({})",
        key_columns(table).join(", "),
        tuples.join(", ")
    ))
}

fn row_hashes_from(table: &TableSchema, rows: &[tokio_postgres::Row]) -> Vec<RowHash> {
    let key_count = table.primary_key.len();
    rows.iter()
        .map(|row| RowHash {
            key_text: row.get(0),
            key: (0..key_count)
                .map(|index| Value::Native {
                    type_name: table
                        .column(&table.primary_key[index])
                        .map(|column| column.native_type.clone())
                        .unwrap_or_default(),
                    text: row.get(index + 1),
                })
                .collect(),
            hash: row.get(key_count + 1),
        })
        .collect()
}

impl PostgresInspector {
    async fn hashes_where(&self, table: &TableSchema, predicate: &str) -> Result<Vec<RowHash>> {
        let client = connect(&self.config).await?;
        let keys = key_columns(table);
        let key_texts: Vec<String> = keys.iter().map(|key| format!("{key}::text")).collect();
        let sql = format!(
            "SELECT ROW({})::text, {}, {} FROM {} WHERE {predicate}",
            keys.join(", "),
            key_texts.join(", "),
            row_hash_expression(table),
            self.own_rows(table).await?
        );
        let rows = client.query(&sql, &[]).await.map_err(|error| {
            classify(
                error,
                &format!(
                    "reading row hashes of {} on the {}",
                    table.name,
                    self.side()
                ),
            )
        })?;
        Ok(row_hashes_from(table, &rows))
    }
}

#[async_trait]
impl Inspector for PostgresInspector {
    async fn read_catalog(&self, selection: &Selection) -> Result<Catalog> {
        read_catalog(&connect(&self.config).await?, selection).await
    }

    async fn digest_range(&self, table: &TableSchema, range: &KeyRange) -> Result<RangeDigest> {
        if let Some(portable) = &self.portable {
            return self.portable_digest(portable.as_ref(), table, range).await;
        }
        let sql = format!(
            "SELECT count(*), coalesce(sum(hashtextextended(r, 0)), 0)::text || ':' || coalesce(bit_xor(hashtextextended(r, 1)), 0)::text
             FROM (SELECT ROW({})::text AS r FROM {} WHERE {}) canonical",
            table.columns.iter().map(|column| ident(&column.name)).collect::<Vec<_>>().join(", "),
            self.own_rows(table).await?,
            range_predicate(table, range)?
        );
        self.digest_in_snapshot(table, &sql).await
    }

    async fn row_hashes(
        &self,
        table: &TableSchema,
        range: &KeyRange,
        buckets: Option<&Buckets>,
    ) -> Result<Vec<RowHash>> {
        if let Some(portable) = &self.portable {
            return self
                .portable_row_hashes(portable.as_ref(), table, range, buckets)
                .await;
        }
        let mut predicate = range_predicate(table, range)?;
        if let Some(buckets) = buckets {
            predicate = format!(
                "({predicate}) AND {} IN ({})",
                bucket_expression(table, buckets.count),
                buckets.sql_list()
            );
        }
        self.hashes_where(table, &predicate).await
    }

    async fn digest_buckets(
        &self,
        table: &TableSchema,
        range: &KeyRange,
        count: u32,
    ) -> Result<Vec<(u32, RangeDigest)>> {
        if let Some(portable) = &self.portable {
            return self
                .portable_buckets(portable.as_ref(), table, range, count)
                .await;
        }
        let sql = format!(
            "SELECT bucket, count(*), coalesce(sum(hashtextextended(r, 0)), 0)::text || ':' || coalesce(bit_xor(hashtextextended(r, 1)), 0)::text
             FROM (SELECT {} AS bucket, ROW({})::text AS r FROM {} WHERE {}) canonical GROUP BY bucket",
            bucket_expression(table, count),
            table.columns.iter().map(|column| ident(&column.name)).collect::<Vec<_>>().join(", "),
            self.own_rows(table).await?,
            range_predicate(table, range)?
        );
        self.bucket_digests(table, &sql).await
    }

    async fn row_hashes_for_keys(
        &self,
        table: &TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<Vec<RowHash>> {
        if let Some(portable) = &self.portable {
            return self
                .portable_hashes_for_keys(portable.as_ref(), table, keys)
                .await;
        }
        let mut hashes = Vec::new();
        for batch in keys.chunks(1000) {
            hashes.extend(
                self.hashes_where(table, &keys_predicate(table, batch)?)
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
        self.refuse_across_engines("repair")?;
        let client = connect(&self.config).await?;
        let columns: Vec<String> = table
            .writable_columns()
            .map(|column| ident(&column.name))
            .collect();
        let predicate = if keys.is_empty() {
            "FALSE".to_string()
        } else {
            keys_predicate(table, keys)?
        };
        let sql = format!(
            "COPY (SELECT {} FROM {} WHERE {predicate}) TO STDOUT (FORMAT text)",
            columns.join(", "),
            self.own_rows(table).await?
        );
        let what = format!("reading rows of {} to repair", table.name);
        let stream = client
            .copy_out(&sql)
            .await
            .map_err(|error| classify(error, &what))?;
        // The stream needs its connection: keep the client alive inside the stream.
        let stream = stream.map(move |item| {
            let _keep_alive = &client;
            item.map_err(|error| classify(error, &what))
        });
        Ok((super::ddl::COPY_TEXT, Box::pin(stream) as ByteStream))
    }

    async fn replace_rows(
        &self,
        table: &TableSchema,
        keys: &[Vec<Value>],
        format: ChunkFormat,
        rows: ByteStream,
    ) -> Result<u64> {
        self.refuse_across_engines("repair")?;
        let mut client = connect(&self.config).await?;
        let what = format!("repairing {} on the {}", table.name, self.side());
        let superuser: bool = client
            .query_one(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(|error| classify(error, &what))?
            .get(0);
        let transaction = client
            .transaction()
            .await
            .map_err(|error| classify(error, &what))?;
        if superuser {
            transaction
                .batch_execute("SET LOCAL session_replication_role = replica")
                .await
                .map_err(|error| classify(error, &what))?;
        }
        for batch in keys.chunks(1000) {
            transaction
                .batch_execute(&format!(
                    "DELETE FROM {} WHERE {}",
                    self.own_rows(table).await?,
                    keys_predicate(table, batch)?
                ))
                .await
                .map_err(|error| classify(error, &what))?;
        }
        let count = copy_into(&transaction, table, format, rows, &what).await?;
        transaction
            .commit()
            .await
            .map_err(|error| classify(error, &what))?;
        Ok(count)
    }

    async fn applied_position(&self, migration: &str) -> Result<Option<Position>> {
        let client = connect(&self.config).await?;
        Ok(state::load_checkpoint(&client, migration)
            .await?
            .map(|checkpoint| checkpoint.position))
    }

    async fn clear_verification(&self, migration: &str) -> Result<()> {
        let client = connect(&self.config).await?;
        let what = "clearing the verification state";
        client
            .batch_execute(state::CREATE_STATE_TABLES)
            .await
            .map_err(|error| classify(error, what))?;
        state::execute_for_migration(
            &client,
            migration,
            what,
            &["DELETE FROM _ferry.verify_range WHERE migration = $1"],
        )
        .await
    }

    async fn save_verification_plan(
        &self,
        migration: &str,
        table: &TableName,
        ranges: &[KeyRange],
    ) -> Result<()> {
        let client = connect(&self.config).await?;
        let indexes: Vec<i32> = (0..ranges.len() as i32).collect();
        let texts: Vec<String> = ranges.iter().map(encode_range).collect::<Result<_>>()?;
        client
            .execute(
                "INSERT INTO _ferry.verify_range (migration, table_schema, table_name, range_index, key_range)
                 SELECT $1, $2, $3, range_index, key_range FROM unnest($4::int[], $5::text[]) AS plan(range_index, key_range)
                 ON CONFLICT (migration, table_schema, table_name, range_index) DO UPDATE SET key_range = EXCLUDED.key_range, outcome = NULL",
                &[&migration, &table.schema, &table.name, &indexes, &texts],
            )
            .await
            .map_err(|error| classify(error, "storing a verification plan"))?;
        Ok(())
    }

    async fn save_verification_outcome(
        &self,
        migration: &str,
        table: &TableName,
        index: u32,
        outcome: &RangeOutcome,
    ) -> Result<()> {
        let client = connect(&self.config).await?;
        let text = encode_outcome(outcome)?;
        client
            .execute(
                "UPDATE _ferry.verify_range SET outcome = $5 WHERE migration = $1 AND table_schema = $2 AND table_name = $3 AND range_index = $4",
                &[&migration, &table.schema, &table.name, &(index as i32), &text],
            )
            .await
            .map_err(|error| classify(error, "storing a verification outcome"))?;
        Ok(())
    }

    async fn load_verification(&self, migration: &str) -> Result<Vec<VerifiedRange>> {
        let client = connect(&self.config).await?;
        let what = "reading the verification state";
        if !state::state_table_exists(&client, "verify_range", what).await? {
            return Ok(Vec::new());
        }
        let rows = client
            .query("SELECT table_schema, table_name, range_index, key_range, outcome FROM _ferry.verify_range WHERE migration = $1 ORDER BY 1, 2, 3", &[&migration])
            .await
            .map_err(|error| classify(error, what))?;
        rows.iter()
            .map(|row| {
                StoredVerifiedRange {
                    table: TableName::new(row.get::<_, String>(0), row.get::<_, String>(1)),
                    index: row.get::<_, i32>(2).into(),
                    range: row.get(3),
                    outcome: row.get(4),
                }
                .decode("_ferry.verify_range")
            })
            .collect()
    }
}
