//! `ferry status`: per-table state, rows copied and replication lag.

use std::process::ExitCode;

use ferry_core::state::TableState;
use ferry_core::Result;
use serde_json::json;

use crate::connect::endpoints;
use crate::settings::{resolve, FlagSettings};

pub(super) async fn run(flags: &FlagSettings, json_output: bool) -> Result<ExitCode> {
    let settings = resolve(flags)?;
    let (source_endpoint, target_endpoint) = endpoints(&settings)?;
    let sink = target_endpoint.sink();
    let source = source_endpoint.source();
    let state = sink.load_state(&settings.name).await?;
    let source_position = source.current_position().await.ok();
    let slot = source.stream_retention(&settings.name).await.ok().flatten();
    let failures = sink
        .recorded_failures(&settings.name)
        .await
        .unwrap_or_default();

    let now_micros = ferry_core::calendar::unix_micros_now();
    let lag_bytes = match (&state.stream, &source_position) {
        (Some(checkpoint), Some(current)) => Some(current.distance_from(&checkpoint.position)),
        _ => None,
    };
    // Behind: how long since ferry last made progress; caught up: zero.
    let lag_seconds = match (&state.stream, lag_bytes) {
        (Some(checkpoint), Some(bytes)) if bytes > 0 => {
            Some(((now_micros - checkpoint.updated_unix_micros).max(0) as f64) / 1e6)
        }
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    let all_copied = !state.tables.is_empty()
        && state
            .tables
            .values()
            .all(|table| table.state == TableState::Copied);
    let active = source_endpoint
        .streaming(
            &settings.name,
            state
                .stream
                .as_ref()
                .map(|checkpoint| checkpoint.updated_unix_micros),
            slot.as_ref(),
        )
        .await;
    let phase = match (&state.stream, all_copied, active) {
        (None, false, _) if state.tables.is_empty() => "not started",
        (_, false, _) => "copying",
        (Some(_), true, Some(true)) => "streaming",
        (Some(_), true, _) => "stopped (run again to resume streaming)",
        (None, true, _) => "copied (one-time copy)",
    };
    let tables: Vec<serde_json::Value> = state
        .tables
        .iter()
        .map(|(name, progress)| {
            let total = progress.chunks.len();
            let done = progress.chunks.iter().filter(|chunk| chunk.done).count();
            let percent = if progress.state == TableState::Copied { 100.0 } else if total == 0 { 0.0 } else { (done as f64 * 100.0 / total as f64 * 10.0).round() / 10.0 };
            let shown_state = match (progress.state, phase) {
                (TableState::Copied, "streaming") => "streaming",
                (state, _) => state.as_str(),
            };
            json!({ "table": name.to_string(), "state": shown_state, "chunks_done": done, "chunks_total": total, "rows_copied": progress.rows_copied(), "percent": percent, "error": progress.note })
        })
        .collect();
    let control = target_endpoint.control();
    let cutover = control
        .load_cutover(&settings.name)
        .await
        .unwrap_or_default();
    let source_fenced = source_endpoint
        .control()
        .fenced_by()
        .await
        .ok()
        .flatten()
        .is_some();
    let target_fenced = control.fenced_by().await.ok().flatten().is_some();
    let switch = json!({
        "phase": cutover.phase,
        "read_primary": cutover.phase.read_primary(),
        "write_primary": cutover.phase.write_primary(),
        "last_downtime_ms": cutover.last_downtime_millis,
        "source_fenced": source_fenced,
        "target_fenced": target_fenced,
    });
    let report = json!({
        "migration": settings.name,
        "source": source_endpoint.describe(),
        "target": target_endpoint.describe(),
        "phase": phase,
        "switch": switch,
        "checkpoint": state.stream.as_ref().map(|checkpoint| checkpoint.position.to_string()),
        "source_position": source_position.as_ref().map(|position| position.to_string()),
        "lag_bytes": lag_bytes,
        "lag_seconds": lag_seconds,
        "slot": slot,
        "failures": failures,
        "tables": tables,
    });
    if json_output {
        crate::report::print_json(&report);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "migration {} ({} -> {}): {phase}",
        settings.name,
        source_endpoint.describe(),
        target_endpoint.describe()
    );
    println!(
        "switch-over: {} (reads: {}, writes: {}){}{}",
        cutover.phase,
        switch["read_primary"].as_str().unwrap_or("?"),
        switch["write_primary"].as_str().unwrap_or("fenced"),
        if source_fenced { ", source fenced" } else { "" },
        if target_fenced { ", target fenced" } else { "" }
    );
    if let Some(checkpoint) = &state.stream {
        println!(
            "checkpoint {}  source at {}  lag {} bytes, {} s",
            checkpoint.position,
            source_position
                .map(|position| position.to_string())
                .unwrap_or_else(|| "unknown".into()),
            lag_bytes
                .map(|bytes| bytes.to_string())
                .unwrap_or_else(|| "?".into()),
            lag_seconds
                .map(|seconds| format!("{seconds:.1}"))
                .unwrap_or_else(|| "?".into()),
        );
    }
    if let Some(slot) = &slot {
        println!(
            "slot {}: {}, retaining {} bytes of WAL ({})",
            slot.stream,
            if slot.active { "active" } else { "inactive" },
            slot.retained_bytes,
            slot.wal_status.as_deref().unwrap_or("?")
        );
    }
    if failures.count > 0 {
        println!("failures ridden out: {}", failures.count);
        for (at, code, message) in &failures.latest {
            println!("  {at} {code}: {message}");
        }
    }
    println!(
        "{:<40} {:<10} {:>8} {:>14}",
        "table", "state", "percent", "rows copied"
    );
    for table in &tables {
        println!(
            "{:<40} {:<10} {:>7}% {:>14}",
            table["table"].as_str().unwrap_or(""),
            table["state"].as_str().unwrap_or(""),
            table["percent"],
            table["rows_copied"]
        );
        if let Some(error) = table["error"].as_str() {
            println!("    failed: {error}\n    fix the cause, then run ferry again: the table is copied afresh");
        }
    }
    Ok(ExitCode::SUCCESS)
}
