//! Comparing tables on two servers independently of ferry's code: each side streams
//! `COPY (SELECT * FROM table ORDER BY key) TO STDOUT` (text format, UTC, ISO dates, shortest
//! exact floats) and the bytes are hashed, so equal digests mean equal rows, value for value.

use std::hash::Hasher;

use futures_util::StreamExt;
use tokio_postgres::Client;

/// Rows and a hash of their text form, in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDigest {
    pub rows: u64,
    pub hash: u64,
}

/// Pins the session so both servers render values identically.
pub async fn pin_output(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; SET IntervalStyle = postgres; SET extra_float_digits = 3; SET bytea_output = hex").await
}

/// The digest of `table` (a quoted, qualified name) ordered by `order_by` (a column list).
pub async fn table_digest(
    client: &Client,
    table: &str,
    order_by: &str,
) -> Result<TableDigest, tokio_postgres::Error> {
    pin_output(client).await?;
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT * FROM {table} ORDER BY {order_by}) TO STDOUT"
        ))
        .await?;
    futures_util::pin_mut!(stream);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut rows = 0;
    while let Some(bytes) = stream.next().await {
        let bytes = bytes?;
        rows += bytes.iter().filter(|byte| **byte == b'\n').count() as u64;
        hasher.write(&bytes);
    }
    Ok(TableDigest {
        rows,
        hash: hasher.finish(),
    })
}

/// Every row of `table` in key order, as text lines (for showing differences in small tables).
pub async fn table_rows(
    client: &Client,
    table: &str,
    order_by: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    pin_output(client).await?;
    let stream = client
        .copy_out(&format!(
            "COPY (SELECT * FROM {table} ORDER BY {order_by}) TO STDOUT"
        ))
        .await?;
    futures_util::pin_mut!(stream);
    let mut text = Vec::new();
    while let Some(bytes) = stream.next().await {
        text.extend_from_slice(&bytes?);
    }
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .map(str::to_string)
        .collect())
}
