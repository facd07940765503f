//! `ferry verify`: prove the target equals the source, and repair what differs.
//! Exit codes: 0 equal (or fully repaired), 1 different, 2 error.

use std::process::ExitCode;

use ferry_core::cutover::Side;
use ferry_core::state::TableState;
use ferry_core::verify::{DifferenceKind, TableReport};
use ferry_core::{Error, Result};
use ferry_engine::verify::{verify, Sides, VerifyOptions};

use crate::connect::{endpoints, verify_sides, Endpoint, VerifySides};
use crate::report::print_error;
use crate::settings::{resolve, FlagSettings};

/// How many example keys the human report shows per kind.
const EXAMPLES: usize = 5;

pub(super) struct VerifyFlags {
    pub json: bool,
    pub repair: bool,
    pub while_streaming: bool,
    pub resume: bool,
}

pub(super) async fn run(flags: &FlagSettings, verify_flags: VerifyFlags) -> Result<ExitCode> {
    match run_inner(flags, &verify_flags).await {
        Ok(code) => Ok(code),
        Err(error) => {
            print_error(&error);
            Ok(ExitCode::from(2))
        }
    }
}

async fn run_inner(flags: &FlagSettings, verify_flags: &VerifyFlags) -> Result<ExitCode> {
    let settings = resolve(flags)?;
    let (source_endpoint, target_endpoint) = endpoints(&settings)?;
    let across_engines = !source_endpoint.same_engine(&target_endpoint);
    if across_engines && verify_flags.repair {
        return Err(Error::operator(
            "verify.across_engines",
            "--repair is not available between MySQL and PostgreSQL yet",
        )
        .with_hint("re-copy a differing table with `ferry run --restart --tables ...`"));
    }
    let VerifySides {
        source,
        source_rows,
        target_rows,
        options: pair_options,
    } = verify_sides(&source_endpoint, &target_endpoint).await?;
    let control = target_endpoint.control();
    // Repair copies rows from the old database over the new one: never once applications write
    // to the new one, and no cutover may start meanwhile (the controller lock is held throughout).
    let _lock = match verify_flags.repair {
        true => Some(control.lock_controller(&settings.name).await?),
        false => None,
    };
    if verify_flags.repair {
        let phase = control.load_cutover(&settings.name).await?.phase;
        if phase.write_primary() != Some(Side::Source) {
            return Err(Error::operator(
                "verify.repair_after_switch",
                format!("cannot repair in phase {phase}: the new database may hold newer writes than the old one"),
            )
            .with_hint("verify without --repair; to repair from the old database, roll back first (`ferry rollback`)"));
        }
    }
    let options = VerifyOptions {
        migration: settings.name.clone(),
        selection: settings.selection.clone(),
        parallel: settings.parallel,
        rows_per_range: if !across_engines && flags.chunk_rows.is_some() {
            settings.chunk_rows
        } else {
            pair_options.rows_per_range
        },
        while_streaming: verify_flags.while_streaming,
        repair: verify_flags.repair,
        resume: verify_flags.resume,
        ..pair_options
    };
    let started = std::time::Instant::now();
    let mut reports = verify(
        &Sides {
            source: source.as_ref(),
            source_rows: source_rows.as_ref(),
            target_rows: target_rows.as_ref(),
        },
        &options,
    )
    .await?;
    mark_tables_not_copied(&target_endpoint, &settings.name, &mut reports).await;
    let seconds = started.elapsed().as_secs_f64();
    let equal = reports.iter().all(TableReport::is_equal);
    if verify_flags.json {
        let rows: u64 = reports.iter().map(|report| report.source_rows).sum();
        let report = serde_json::json!({
            "source": source_endpoint.describe(),
            "target": target_endpoint.describe(),
            "equal": equal,
            "seconds": seconds,
            "rows_per_second": (rows as f64 / seconds.max(0.001)) as u64,
            "tables": reports,
        });
        crate::report::print_json(&report);
    } else {
        println!(
            "verifying {} -> {}",
            source_endpoint.describe(),
            target_endpoint.describe()
        );
        for report in &reports {
            print_table(report);
        }
        let different = reports.iter().filter(|report| !report.is_equal()).count();
        let rows: u64 = reports.iter().map(|report| report.source_rows).sum();
        println!(
            "{}: {} table(s) equal, {different} different; {rows} source rows in {seconds:.1} s ({} rows/s)",
            if equal { "EQUAL" } else { "DIFFERENT" },
            reports.len() - different,
            (rows as f64 / seconds.max(0.001)) as u64
        );
    }
    Ok(if equal {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Marks the tables the migration has not finished copying (their keys and indexes come at
/// the end of their copy): their differences are expected, not a finding. A target without
/// the migration's state (verifying databases ferry did not copy) marks nothing.
async fn mark_tables_not_copied(target: &Endpoint, migration: &str, reports: &mut [TableReport]) {
    let Ok(state) = target.sink().load_state(migration).await else {
        return;
    };
    for report in reports.iter_mut() {
        let progress = state
            .tables
            .iter()
            .find(|(name, _)| name.to_string() == report.table)
            .or_else(|| {
                let mut same = state.tables.iter().filter(|(name, _)| {
                    report.table.rsplit_once('.').map(|(_, table)| table)
                        == Some(name.name.as_str())
                });
                match (same.next(), same.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            });
        if let Some((_, progress)) = progress {
            if progress.state != TableState::Copied {
                report.not_copied = Some(progress.state.as_str().to_string());
            }
        }
    }
}

fn print_table(report: &TableReport) {
    let rows = if report.source_rows == report.target_rows {
        format!("{} rows", report.source_rows)
    } else {
        format!("{} / {} rows", report.source_rows, report.target_rows)
    };
    if let Some(state) = &report.not_copied {
        println!(
            "  {:<40} {rows:>22}  NOT COPIED YET ({state}): verify once `ferry status` shows it copied",
            report.table
        );
        return;
    }
    if report.differences.is_empty() && report.schema_differences.is_empty() {
        println!("  {:<40} {rows:>22}  equal", report.table);
        return;
    }
    let counts: Vec<String> = [
        DifferenceKind::Missing,
        DifferenceKind::Extra,
        DifferenceKind::Different,
        DifferenceKind::Duplicate,
    ]
    .iter()
    .map(|kind| (kind, report.count(*kind)))
    .filter(|(_, count)| *count > 0)
    .map(|(kind, count)| format!("{count} {}", kind_name(*kind)))
    .collect();
    let status = if report.is_equal() {
        "repaired"
    } else {
        "DIFFERENT"
    };
    println!(
        "  {:<40} {rows:>22}  {status}: {}",
        report.table,
        if counts.is_empty() {
            "definitions differ".to_string()
        } else {
            counts.join(", ")
        }
    );
    for difference in &report.schema_differences {
        println!("      definition: {difference}");
    }
    for kind in [
        DifferenceKind::Missing,
        DifferenceKind::Extra,
        DifferenceKind::Different,
        DifferenceKind::Duplicate,
    ] {
        let examples: Vec<&str> = report
            .differences
            .iter()
            .filter(|difference| difference.kind == kind)
            .take(EXAMPLES)
            .map(|difference| difference.key.as_str())
            .collect();
        if !examples.is_empty() {
            println!(
                "      {} keys, e.g.: {}",
                kind_name(kind),
                examples.join(" ")
            );
        }
    }
    if report.repaired > 0 || report.remaining_after_repair > 0 {
        println!(
            "      repair: {} rows rewritten, {} still different",
            report.repaired, report.remaining_after_repair
        );
    }
}

fn kind_name(kind: DifferenceKind) -> &'static str {
    match kind {
        DifferenceKind::Missing => "missing on the target",
        DifferenceKind::Extra => "extra on the target",
        DifferenceKind::Different => "different",
        DifferenceKind::Duplicate => "duplicated on the target",
    }
}
