//! The PostgreSQL side of a MySQL-to-PostgreSQL verification: the same digests, buckets and
//! row hashes as the MySQL inspector computes, over rows rendered by the pair's [`PortableText`].
//!
//! The digest of a table is `count:sum:xor` exactly as MySQL writes it: the exact sum of the
//! first 60 bits of each row's MD5 and the XOR of the next 64 bits as an unsigned number
//! (PostgreSQL's bigint is signed, so a negative XOR is shifted by 2^64).

use ferry_core::connector::{Buckets, PortableText};
use ferry_core::state::KeyRange;
use ferry_core::verify::{RangeDigest, RowHash};
use ferry_core::{Error, Result, TableSchema, Value};

use super::connection::connect;
use super::errors::classify;
use super::verify::PostgresInspector;

/// Totals over `r` (the MD5 of each row's text) in a subquery named `canonical`.
const TOTALS: &str = "count(*) AS n, coalesce(sum(('x' || substr(r, 1, 15))::bit(60)::bigint), 0) AS s, coalesce(bit_xor(('x' || substr(r, 16, 16))::bit(64)::bigint), 0) AS x";

/// The digest text from the totals.
const DIGEST: &str = "s::text || ':' || (CASE WHEN x < 0 THEN x::numeric + 18446744073709551616 ELSE x::numeric END)::text";

fn unsupported(reason: String) -> Error {
    Error::operator("verify.unsupported_type", reason)
}

fn whole_table(range: &KeyRange) -> Result<()> {
    if range.lower.is_some() || range.upper.is_some() {
        return Err(Error::definite(
            "verify.across_engines",
            "a MySQL-to-PostgreSQL verification compares whole tables, not key ranges",
        ));
    }
    Ok(())
}

impl PostgresInspector {
    pub(super) async fn portable_digest(
        &self,
        portable: &dyn PortableText,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<RangeDigest> {
        whole_table(range)?;
        let row = portable.row(table).map_err(unsupported)?;
        let sql = format!(
            "SELECT n, {DIGEST} FROM (SELECT {TOTALS} FROM (SELECT md5({}) AS r FROM {}) canonical) totals",
            row,
            self.own_rows(table).await?
        );
        self.digest_in_snapshot(table, &sql).await
    }

    /// Row hashes of the rows with these key texts (`RowHash::key` holds the key text here).
    pub(super) async fn portable_hashes_for_keys(
        &self,
        portable: &dyn PortableText,
        table: &TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<Vec<RowHash>> {
        let row = portable.row(table).map_err(unsupported)?;
        let key = portable.key(table).map_err(unsupported)?;
        let texts: Vec<String> = keys
            .iter()
            .filter_map(|key| match key.first() {
                Some(Value::Text(text)) => Some(text.clone()),
                _ => None,
            })
            .collect();
        let sql = format!(
            "SELECT k, r FROM (SELECT '(' || {} || ')' AS k, md5({}) AS r FROM {}) keyed WHERE k = ANY($1)",
            key,
            row,
            self.own_rows(table).await?
        );
        self.portable_hashes(table, &sql, &[&texts]).await
    }

    pub(super) async fn portable_buckets(
        &self,
        portable: &dyn PortableText,
        table: &TableSchema,
        range: &KeyRange,
        count: u32,
    ) -> Result<Vec<(u32, RangeDigest)>> {
        whole_table(range)?;
        let row = portable.row(table).map_err(unsupported)?;
        let key = portable.key(table).map_err(unsupported)?;
        let sql = format!(
            "SELECT bucket, n, {DIGEST} FROM (SELECT bucket, {TOTALS} FROM (SELECT {} AS bucket, md5({}) AS r FROM {}) canonical GROUP BY bucket) totals",
            portable.bucket(&key, count),
            row,
            self.own_rows(table).await?
        );
        self.bucket_digests(table, &sql).await
    }

    pub(super) async fn portable_row_hashes(
        &self,
        portable: &dyn PortableText,
        table: &TableSchema,
        range: &KeyRange,
        buckets: Option<&Buckets>,
    ) -> Result<Vec<RowHash>> {
        whole_table(range)?;
        let row = portable.row(table).map_err(unsupported)?;
        let key = portable.key(table).map_err(unsupported)?;
        let predicate = match buckets {
            Some(buckets) => format!(
                "{} IN ({})",
                portable.bucket(&key, buckets.count),
                buckets.sql_list()
            ),
            None => "TRUE".into(),
        };
        let sql = format!(
            "SELECT '(' || {} || ')', md5({}) FROM {} WHERE {predicate}",
            key,
            row,
            self.own_rows(table).await?
        );
        self.portable_hashes(table, &sql, &[]).await
    }

    /// Runs a query of (key text, row hash) pairs; the key text stands for the key.
    async fn portable_hashes(
        &self,
        table: &TableSchema,
        sql: &str,
        parameters: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<RowHash>> {
        let client = connect(self.config()).await?;
        let what = format!(
            "reading row hashes of {} on the {}",
            table.name,
            self.side()
        );
        let rows = client
            .query(sql, parameters)
            .await
            .map_err(|error| classify(error, &what))?;
        Ok(rows
            .iter()
            .map(|row| {
                let key_text: String = row.get(0);
                RowHash {
                    key: vec![Value::Text(key_text.clone())],
                    key_text,
                    hash: row.get(1),
                }
            })
            .collect())
    }
}
