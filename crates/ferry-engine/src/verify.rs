//! Verification: prove the target equals the source, down to the differing rows, and repair.
//!
//! ```text
//!   plan key ranges on the source ──> per range, in parallel:
//!       digest(source) == digest(target) ? ──yes──> equal
//!            │ no (and --while-streaming: wait until the target's checkpoint passes the source
//!            │     position the digest was read at, read both again, a few times)
//!            v
//!       row hashes of the range on both sides ──> missing / extra / different / duplicate keys
//!            │ (--while-streaming: re-read just those keys after the stream passed them)
//!            v
//!       --repair: delete those keys on the target and load the source's rows, then re-check them
//! ```
//!
//! Memory is bounded by one range's row hashes per worker, whatever the table size. Digests are
//! computed by the servers; only differing ranges are read row by row.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_core::connector::{Buckets, Inspector, Source};
use ferry_core::select::Selection;
use ferry_core::state::KeyRange;
use ferry_core::verify::{
    Difference, DifferenceKind, RangeDigest, RangeOutcome, RowHash, StoredDifference, TableReport,
    VerifiedRange,
};
use ferry_core::{Error, Position, Result, TableName, TableSchema, Value};
use futures_util::future::try_join_all;
use tracing::{debug, info};

/// Key-hash buckets a differing range is split into before its rows are read.
const BUCKETS: u32 = 256;

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The migration whose checkpoint tells how far the target has caught up.
    pub migration: String,
    pub selection: Selection,
    pub parallel: usize,
    pub rows_per_range: u64,
    /// Re-check differences once the stream has passed the position they were read at.
    pub while_streaming: bool,
    pub repair: bool,
    /// Continue the last, interrupted verification: ranges it checked are not checked again.
    pub resume: bool,
    /// How many times a differing range or key is re-checked while streaming.
    pub rechecks: u32,
    /// How long to wait for the stream to pass a position before re-checking anyway.
    pub catch_up_timeout: Duration,
    /// Compare column types and collations (false across engines, where the target has the
    /// translated types; names, nullability and keys are still compared).
    pub compare_types: bool,
    /// Match a source table with the one target table of the same name when no target table
    /// has its schema too (PostgreSQL schemas all land in one MySQL database).
    pub match_by_table_name: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            compare_types: true,
            match_by_table_name: false,
            migration: "main".into(),
            selection: Selection::default(),
            parallel: 4,
            rows_per_range: 50_000,
            while_streaming: false,
            repair: false,
            resume: false,
            rechecks: 8,
            catch_up_timeout: Duration::from_secs(60),
        }
    }
}

/// The sides of a verification.
pub struct Sides<'a> {
    /// Plans key ranges and reports the source's current position.
    pub source: &'a dyn Source,
    pub source_rows: &'a dyn Inspector,
    pub target_rows: &'a dyn Inspector,
}

/// Compares one range's rows. Pure: both lists in any order.
pub fn compare_rows(source: &[RowHash], target: &[RowHash]) -> Vec<Difference> {
    let mut source_by_key: HashMap<&str, &RowHash> = HashMap::with_capacity(source.len());
    for row in source {
        source_by_key.insert(&row.key_text, row);
    }
    let mut target_count: HashMap<&str, (usize, &RowHash)> = HashMap::with_capacity(target.len());
    for row in target {
        target_count
            .entry(&row.key_text)
            .and_modify(|(count, _)| *count += 1)
            .or_insert((1, row));
    }
    let mut differences = Vec::new();
    for (key, (count, row)) in &target_count {
        let kind = match source_by_key.get(key) {
            _ if *count > 1 => Some(DifferenceKind::Duplicate),
            None => Some(DifferenceKind::Extra),
            Some(source_row) if source_row.hash != row.hash => Some(DifferenceKind::Different),
            Some(_) => None,
        };
        if let Some(kind) = kind {
            differences.push(Difference {
                kind,
                key: key.to_string(),
                key_values: row.key.clone(),
            });
        }
    }
    for (key, row) in &source_by_key {
        if !target_count.contains_key(key) {
            differences.push(Difference {
                kind: DifferenceKind::Missing,
                key: key.to_string(),
                key_values: row.key.clone(),
            });
        }
    }
    differences
        .sort_by(|left, right| (left.kind as u8, &left.key).cmp(&(right.kind as u8, &right.key)));
    differences
}

/// A checked range of the `table`-th comparable table.
struct Checked {
    table: usize,
    outcome: RangeOutcome,
}

/// Waits until the target's checkpoint reaches `position` (or the timeout passes).
async fn wait_for_target(
    sides: &Sides<'_>,
    options: &VerifyOptions,
    position: Option<&Position>,
) -> Result<()> {
    let Some(position) = position else {
        return Ok(());
    };
    let deadline = Instant::now() + options.catch_up_timeout;
    loop {
        match sides
            .target_rows
            .applied_position(&options.migration)
            .await?
        {
            Some(applied) if applied >= *position => return Ok(()),
            Some(_) => {}
            // No stream to wait for.
            None => return Ok(()),
        }
        if Instant::now() >= deadline {
            debug!(%position, "the stream did not reach the position in time; re-checking anyway");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn check_range(
    sides: &Sides<'_>,
    options: &VerifyOptions,
    table: &TableSchema,
    range: &KeyRange,
) -> Result<(u64, u64, Vec<Difference>)> {
    let mut attempts = 0;
    let (source_digest, target_digest) = loop {
        let (source, target) = if attempts > 0 || options.while_streaming {
            // The target is read once the stream has passed what the source digest saw.
            let source = sides.source_rows.digest_range(table, range).await?;
            wait_for_target(sides, options, source.position.as_ref()).await?;
            (source, sides.target_rows.digest_range(table, range).await?)
        } else {
            let (source, target) = tokio::join!(
                sides.source_rows.digest_range(table, range),
                sides.target_rows.digest_range(table, range)
            );
            (source?, target?)
        };
        if source.rows == target.rows && source.digest == target.digest {
            return Ok((source.rows, target.rows, Vec::new()));
        }
        attempts += 1;
        if !options.while_streaming || attempts > options.rechecks {
            break (source, target);
        }
    };
    if table.primary_key.is_empty() {
        // Without a key, rows have no identity to report them by: the table is one range whose
        // digest (a multiset digest: duplicates count) differs.
        return Ok((
            source_digest.rows,
            target_digest.rows,
            vec![Difference {
                kind: DifferenceKind::Different,
                key: format!(
                    "(the table has no key: {} rows on the source, {} on the target, contents differ)",
                    source_digest.rows, target_digest.rows
                ),
                key_values: Vec::new(),
            }],
        ));
    }
    // Down to the rows.
    // Narrow the range to the key-hash buckets that differ, then read just their rows.
    let (source_buckets, target_buckets) = tokio::join!(
        sides.source_rows.digest_buckets(table, range, BUCKETS),
        sides.target_rows.digest_buckets(table, range, BUCKETS)
    );
    let (source_buckets, target_buckets): (HashMap<u32, RangeDigest>, HashMap<u32, RangeDigest>) = (
        source_buckets?.into_iter().collect(),
        target_buckets?.into_iter().collect(),
    );
    let mut selected: Vec<u32> = (0..BUCKETS)
        .filter(|bucket| source_buckets.get(bucket) != target_buckets.get(bucket))
        .collect();
    if selected.is_empty() {
        // Equal now (changed since the range digest): look at every row to be sure.
        selected = (0..BUCKETS).collect();
    }
    let buckets = Buckets {
        count: BUCKETS,
        selected,
    };
    let (source_hashes, target_hashes) = tokio::join!(
        sides.source_rows.row_hashes(table, range, Some(&buckets)),
        sides.target_rows.row_hashes(table, range, Some(&buckets))
    );
    let (source_hashes, target_hashes) = (source_hashes?, target_hashes?);
    let source_rows = source_buckets.values().map(|digest| digest.rows).sum();
    let target_rows = target_buckets.values().map(|digest| digest.rows).sum();
    let mut differences = compare_rows(&source_hashes, &target_hashes);
    drop((source_hashes, target_hashes));
    let mut rechecks = 0;
    while options.while_streaming && !differences.is_empty() && rechecks < options.rechecks {
        rechecks += 1;
        differences = recheck_keys(sides, options, table, &differences).await?;
    }
    Ok((source_rows, target_rows, differences))
}

/// Reads just these keys again on both sides, after the stream passed the source's position.
async fn recheck_keys(
    sides: &Sides<'_>,
    options: &VerifyOptions,
    table: &TableSchema,
    differences: &[Difference],
) -> Result<Vec<Difference>> {
    let keys: Vec<Vec<Value>> = differences
        .iter()
        .map(|difference| difference.key_values.clone())
        .collect();
    let source_hashes = sides.source_rows.row_hashes_for_keys(table, &keys).await?;
    if options.while_streaming {
        let position = sides.source.current_position().await?;
        wait_for_target(sides, options, Some(&position)).await?;
    }
    let target_hashes = sides.target_rows.row_hashes_for_keys(table, &keys).await?;
    Ok(compare_rows(&source_hashes, &target_hashes))
}

fn compare_definitions(
    source: &TableSchema,
    target: &TableSchema,
    compare_types: bool,
) -> Vec<String> {
    let mut differences = Vec::new();
    for column in &source.columns {
        match target.column(&column.name) {
            None => differences.push(format!("column {} is missing on the target", column.name)),
            Some(other) if compare_types && other.native_type != column.native_type => differences
                .push(format!(
                    "column {}: source type {}, target type {}",
                    column.name, column.native_type, other.native_type
                )),
            Some(other) if other.nullable != column.nullable => {
                differences.push(format!("column {}: nullable on one side only", column.name))
            }
            Some(other) if compare_types && other.collation != column.collation => differences
                .push(format!(
                    "column {}: source collation {}, target collation {}",
                    column.name,
                    column.collation.as_deref().unwrap_or("(default)"),
                    other.collation.as_deref().unwrap_or("(default)")
                )),
            Some(_) => {}
        }
    }
    for column in &target.columns {
        if source.column(&column.name).is_none() {
            differences.push(format!("column {} exists only on the target", column.name));
        }
    }
    if source.primary_key != target.primary_key {
        differences.push(format!(
            "primary key: source ({}), target ({})",
            source.primary_key.join(", "),
            target.primary_key.join(", ")
        ));
    }
    differences
}

/// The table of `among` that stands for `name`: the same schema and name, or with
/// `by_table_name` the only one of that name.
fn counterpart<'a>(
    name: &TableName,
    among: &'a [TableSchema],
    by_table_name: bool,
) -> Option<&'a TableSchema> {
    among.iter().find(|other| &other.name == name).or_else(|| {
        let mut same = among
            .iter()
            .filter(|other| by_table_name && other.name.name == name.name);
        match (same.next(), same.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    })
}

/// Verifies the selected tables; repairs them with `options.repair`.
pub async fn verify(sides: &Sides<'_>, options: &VerifyOptions) -> Result<Vec<TableReport>> {
    let source_catalog = sides.source_rows.read_catalog(&options.selection).await?;
    let target_catalog = sides.target_rows.read_catalog(&options.selection).await?;
    if source_catalog.tables.is_empty() {
        return Err(Error::operator(
            "verify.no_tables",
            "no table on the source matches the selection",
        )
        .with_hint("check --tables"));
    }
    let mut reports: Vec<TableReport> = Vec::new();
    let mut comparable: Vec<(usize, TableSchema)> = Vec::new();
    for table in &source_catalog.tables {
        let mut report = TableReport {
            table: table.name.to_string(),
            ..TableReport::default()
        };
        match counterpart(
            &table.name,
            &target_catalog.tables,
            options.match_by_table_name,
        ) {
            None => report
                .schema_differences
                .push("table is missing on the target".into()),
            Some(target_table) => {
                report.schema_differences =
                    compare_definitions(table, target_table, options.compare_types);
                if table.primary_key.is_empty() {
                    // Compared whole, as multisets (see `check_range`).
                    comparable.push((reports.len(), table.clone()));
                } else if table
                    .primary_key
                    .iter()
                    .all(|column| target_table.column(column).is_some())
                {
                    // Rows are matched by the source's key, even where the target lacks the
                    // constraint (that is how duplicates on the target are found).
                    comparable.push((reports.len(), table.clone()));
                }
            }
        }
        reports.push(report);
    }
    for table in &target_catalog.tables {
        if counterpart(
            &table.name,
            &source_catalog.tables,
            options.match_by_table_name,
        )
        .is_none()
        {
            reports.push(TableReport {
                table: table.name.to_string(),
                schema_differences: vec!["table exists only on the target".into()],
                ..TableReport::default()
            });
        }
    }

    // Plan ranges on the source, or take them and their outcomes from the run being resumed.
    let mut stored: HashMap<TableName, Vec<VerifiedRange>> = HashMap::new();
    if options.resume {
        for range in sides
            .target_rows
            .load_verification(&options.migration)
            .await?
        {
            stored.entry(range.table.clone()).or_default().push(range);
        }
    } else {
        sides
            .target_rows
            .clear_verification(&options.migration)
            .await?;
    }
    let mut snapshot = None;
    let mut work: Vec<(usize, u32, KeyRange)> = Vec::new();
    let mut done: Vec<Checked> = Vec::new();
    for (position, (report_index, table)) in comparable.iter().enumerate() {
        let ranges: Vec<VerifiedRange> = match stored.remove(&table.name) {
            Some(ranges) if !ranges.is_empty() => ranges,
            _ => {
                if snapshot.is_none() {
                    snapshot = Some(sides.source.fresh_snapshot(false).await?);
                }
                let planned = snapshot
                    .as_ref()
                    .expect("set above")
                    .plan_chunks(table, options.rows_per_range)
                    .await?;
                sides
                    .target_rows
                    .save_verification_plan(&options.migration, &table.name, &planned)
                    .await?;
                planned
                    .into_iter()
                    .enumerate()
                    .map(|(index, range)| VerifiedRange {
                        table: table.name.clone(),
                        index: index as u32,
                        range,
                        outcome: None,
                    })
                    .collect()
            }
        };
        reports[*report_index].ranges = ranges.len();
        for range in ranges {
            match range.outcome {
                Some(outcome) => done.push(Checked {
                    table: position,
                    outcome,
                }),
                None => work.push((position, range.index, range.range)),
            }
        }
    }
    drop(snapshot);
    info!(
        tables = comparable.len(),
        ranges = work.len(),
        resumed = done.len(),
        "verifying"
    );

    let queue = Mutex::new(work);
    let outcomes: Mutex<Vec<Checked>> = Mutex::new(done);
    let worker = || async {
        loop {
            let Some((position, index, range)) = queue.lock().expect("queue lock").pop() else {
                break;
            };
            let table = &comparable[position].1;
            let (source_rows, target_rows, differences) =
                check_range(sides, options, table, &range)
                    .await
                    .map_err(|error| error.context(format!("verifying {}", table.name)))?;
            let outcome = RangeOutcome {
                source_rows,
                target_rows,
                differences: differences.iter().map(StoredDifference::from).collect(),
            };
            sides
                .target_rows
                .save_verification_outcome(&options.migration, &table.name, index, &outcome)
                .await?;
            outcomes.lock().expect("outcomes lock").push(Checked {
                table: position,
                outcome,
            });
        }
        Ok::<(), Error>(())
    };
    try_join_all((0..options.parallel.max(1)).map(|_| worker())).await?;
    for checked in outcomes.into_inner().expect("outcomes lock") {
        let report = &mut reports[comparable[checked.table].0];
        report.source_rows += checked.outcome.source_rows;
        report.target_rows += checked.outcome.target_rows;
        if !checked.outcome.differences.is_empty() {
            report.ranges_different += 1;
        }
        report.differences.extend(
            checked
                .outcome
                .differences
                .into_iter()
                .map(Difference::from),
        );
    }
    for report in &mut reports {
        report.differences.sort_by(|left, right| {
            (left.kind as u8, &left.key).cmp(&(right.kind as u8, &right.key))
        });
    }

    if options.repair {
        for (index, table) in &comparable {
            let report = &mut reports[*index];
            if report.differences.is_empty() {
                continue;
            }
            repair(sides, options, table, report)
                .await
                .map_err(|error| error.context(format!("repairing {}", table.name)))?;
        }
    }
    Ok(reports)
}

/// Rewrites the differing rows on the target from the source and re-checks them.
async fn repair(
    sides: &Sides<'_>,
    options: &VerifyOptions,
    table: &TableSchema,
    report: &mut TableReport,
) -> Result<()> {
    if table.primary_key.is_empty() {
        // Rows without a key cannot be told apart to rewrite them one by one.
        report.remaining_after_repair = report.differences.len();
        info!(table = %table.name, "not repaired: the table has no key (copy it afresh: ferry run --restart, or a run after marking it failed)");
        return Ok(());
    }
    let keys: Vec<Vec<Value>> = report
        .differences
        .iter()
        .map(|difference| difference.key_values.clone())
        .collect();
    for batch in keys.chunks(5_000) {
        let (format, rows) = sides.source_rows.read_rows(table, batch).await?;
        report.repaired += sides
            .target_rows
            .replace_rows(table, batch, format, rows)
            .await?;
    }
    let deleted = report
        .differences
        .iter()
        .filter(|difference| difference.kind == DifferenceKind::Extra)
        .count() as u64;
    report.repaired += deleted;
    let mut remaining = recheck_keys(
        sides,
        &VerifyOptions {
            while_streaming: false,
            ..options.clone()
        },
        table,
        &report.differences,
    )
    .await?;
    let mut rechecks = 0;
    while options.while_streaming && !remaining.is_empty() && rechecks < options.rechecks {
        rechecks += 1;
        remaining = recheck_keys(sides, options, table, &remaining).await?;
    }
    report.remaining_after_repair = remaining.len();
    info!(table = %table.name, repaired = report.repaired, remaining = remaining.len(), "repaired");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(key: &str, hash: &str) -> RowHash {
        RowHash {
            key: vec![Value::Text(key.into())],
            key_text: format!("({key})"),
            hash: hash.into(),
        }
    }

    #[test]
    fn every_kind_of_difference_is_found() {
        let source = vec![
            hash("1", "a"),
            hash("2", "b"),
            hash("3", "c"),
            hash("5", "e"),
        ];
        let target = vec![
            hash("1", "a"),
            hash("2", "B"),
            hash("4", "d"),
            hash("5", "e"),
            hash("5", "e"),
        ];
        let differences = compare_rows(&source, &target);
        let found: Vec<(DifferenceKind, &str)> = differences
            .iter()
            .map(|difference| (difference.kind, difference.key.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                (DifferenceKind::Missing, "(3)"),
                (DifferenceKind::Extra, "(4)"),
                (DifferenceKind::Different, "(2)"),
                (DifferenceKind::Duplicate, "(5)")
            ]
        );
        assert!(compare_rows(&source, &source).is_empty());
    }
}
