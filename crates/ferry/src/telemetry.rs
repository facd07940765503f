//! What a running ferry knows about itself, for the HTTP control plane: the switch-over phase,
//! and per direction (forward: old to new; reverse: new to old after cutover) the stage, tables,
//! rows, changes, lag and recent errors.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ferry_core::cutover::CutoverRecord;
use ferry_core::{Position, TableName};
use ferry_engine::lag::LagMeter;
use ferry_engine::{Phase, Progress};
use serde_json::{json, Value as Json};
use tracing::info;

use crate::progress::Renderer;

/// Keeps this many recent errors per direction.
const RECENT_ERRORS: usize = 20;

#[derive(Default)]
struct TableStats {
    state: &'static str,
    rows_copied: u64,
    estimated_rows: u64,
}

struct DirectionState {
    stage: Phase,
    tables: BTreeMap<TableName, TableStats>,
    rows_copied: u64,
    changes_applied: u64,
    checkpoint: Option<Position>,
    lag: LagMeter,
    /// (when, changes applied so far), for the change rate over the last minute.
    rate_window: VecDeque<(Instant, u64)>,
    errors_total: u64,
    /// (unix seconds, code, message), newest last.
    errors: VecDeque<(u64, String, String)>,
}

/// Progress and health of one direction of a migration.
pub(crate) struct Direction {
    name: &'static str,
    renderer: Option<Renderer>,
    state: Mutex<DirectionState>,
}

fn unix_seconds() -> u64 {
    (ferry_core::calendar::unix_micros_now() / 1_000_000) as u64
}

impl Direction {
    /// `renderer` draws progress for people (the forward direction); without one, stage changes
    /// are logged.
    pub(crate) fn new(name: &'static str, renderer: Option<Renderer>) -> Direction {
        Direction {
            name,
            renderer,
            state: Mutex::new(DirectionState {
                stage: Phase::Preparing,
                tables: BTreeMap::new(),
                rows_copied: 0,
                changes_applied: 0,
                checkpoint: None,
                lag: LagMeter::new(),
                rate_window: VecDeque::new(),
                errors_total: 0,
                errors: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DirectionState> {
        locked(&self.state)
    }

    pub(crate) fn finish(&self) {
        if let Some(renderer) = &self.renderer {
            renderer.finish();
        }
    }

    /// Records a failure that was retried or ended the run (messages never hold passwords).
    pub(crate) fn error(&self, code: &str, message: &str) {
        let mut state = self.lock();
        state.errors_total += 1;
        state
            .errors
            .push_back((unix_seconds(), code.to_string(), message.to_string()));
        while state.errors.len() > RECENT_ERRORS {
            state.errors.pop_front();
        }
    }

    /// The source's end of log, sampled now (for lag).
    pub(crate) fn source_position(&self, position: Position) {
        self.lock().lag.source_at(Instant::now(), position);
    }

    /// The direction as JSON for `/api/status`.
    pub(crate) fn to_json(&self) -> Json {
        let mut state = self.lock();
        let now = Instant::now();
        while state
            .rate_window
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at).as_secs() > 60)
        {
            state.rate_window.pop_front();
        }
        let rate = match (state.rate_window.front(), state.rate_window.back()) {
            (Some((first_at, first)), Some((last_at, last))) if last_at > first_at => {
                (last - first) as f64 / last_at.duration_since(*first_at).as_secs_f64()
            }
            _ => 0.0,
        };
        let tables: Vec<Json> = state
            .tables
            .iter()
            .map(|(name, stats)| {
                json!({"table": name.to_string(), "state": stats.state, "rows_copied": stats.rows_copied, "estimated_rows": stats.estimated_rows})
            })
            .collect();
        let errors: Vec<Json> = state
            .errors
            .iter()
            .rev()
            .map(|(at, code, message)| json!({"at_unix": at, "code": code, "message": message}))
            .collect();
        json!({
            "direction": self.name,
            "stage": stage_name(state.stage),
            "tables": tables,
            "rows_copied": state.rows_copied,
            "changes_applied": state.changes_applied,
            "changes_per_second": (rate * 10.0).round() / 10.0,
            "checkpoint": state.checkpoint.as_ref().map(|position| position.to_string()),
            "lag_seconds": state.lag.lag(now).as_secs_f64(),
            "lag_bytes": state.lag.lag_units(),
            "errors_total": state.errors_total,
            "recent_errors": errors,
        })
    }

    /// Prometheus samples of this direction: (metric family, sample line).
    pub(crate) fn metrics(&self, out: &mut Vec<(&'static str, String)>) {
        let state = self.lock();
        let direction = self.name;
        let now = Instant::now();
        let mut sample = |family: &Family, labels: String, value: String| {
            let name = family.name;
            out.push((
                name,
                format!("{name}{{direction=\"{direction}\"{labels}}} {value}"),
            ));
        };
        sample(&ROWS_COPIED, String::new(), state.rows_copied.to_string());
        sample(
            &CHANGES_APPLIED,
            String::new(),
            state.changes_applied.to_string(),
        );
        sample(
            &LAG_SECONDS,
            String::new(),
            format!("{:.3}", state.lag.lag(now).as_secs_f64()),
        );
        if let Some(bytes) = state.lag.lag_units() {
            sample(&LAG_BYTES, String::new(), bytes.to_string());
        }
        sample(&ERRORS, String::new(), state.errors_total.to_string());
        for table_state in ["pending", "copying", "copied", "failed"] {
            let count = state
                .tables
                .values()
                .filter(|stats| stats.state == table_state)
                .count();
            sample(
                &TABLES,
                format!(",state=\"{table_state}\""),
                count.to_string(),
            );
        }
        sample(
            &STREAMING,
            String::new(),
            u8::from(state.stage == Phase::Streaming).to_string(),
        );
    }
}

/// A metric family. Every metric `/metrics` shows is declared once, below.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "counter",
        help,
    }
}

const fn gauge_family(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
    }
}

const ROWS_COPIED: Family = counter("ferry_rows_copied_total", "Rows copied by the snapshot.");
const CHANGES_APPLIED: Family = counter(
    "ferry_changes_applied_total",
    "Changes applied from the stream.",
);
const LAG_SECONDS: Family = gauge_family(
    "ferry_lag_seconds",
    "Age of the oldest source change not yet durable on the target.",
);
const LAG_BYTES: Family = gauge_family(
    "ferry_lag_bytes",
    "Source log bytes not yet durable on the target.",
);
const ERRORS: Family = counter("ferry_errors_total", "Failures, retried or fatal.");
const TABLES: Family = gauge_family("ferry_tables", "Tables by copy state.");
const STREAMING: Family = gauge_family("ferry_streaming", "1 while the direction streams changes.");
const PHASE: Family = gauge_family(
    "ferry_phase",
    "The switch-over phase (1 for the current one).",
);
const SLOT_RETAINED: Family = gauge_family(
    "ferry_slot_retained_bytes",
    "WAL the source keeps for ferry's slot.",
);
const SLOT_SAFE: Family = gauge_family(
    "ferry_slot_safe_wal_bytes",
    "WAL that may still be written before the slot is lost.",
);
const LAST_DOWNTIME: Family = gauge_family(
    "ferry_last_write_downtime_seconds",
    "Writes were blocked this long during the last switch.",
);
const UPTIME: Family = gauge_family("ferry_uptime_seconds", "Seconds since this ferry started.");

/// Metric families per direction, in output order.
const DIRECTION_FAMILIES: &[&Family] = &[
    &ROWS_COPIED,
    &CHANGES_APPLIED,
    &LAG_SECONDS,
    &LAG_BYTES,
    &ERRORS,
    &TABLES,
    &STREAMING,
];

fn family(out: &mut String, family: &Family) {
    let Family { name, kind, help } = family;
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// A gauge family with a single, unlabelled sample.
fn gauge(out: &mut String, gauge: &Family, value: impl std::fmt::Display) {
    family(out, gauge);
    out.push_str(&format!("{} {value}\n", gauge.name));
}
fn stage_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Preparing => "preparing",
        Phase::Copying => "copying",
        Phase::Indexing => "indexing",
        Phase::Streaming => "streaming",
        Phase::Stopped => "stopped",
    }
}

impl Progress for Direction {
    fn error(&self, code: &str, message: &str) {
        Direction::error(self, code, message)
    }

    fn phase(&self, phase: Phase) {
        self.lock().stage = phase;
        match &self.renderer {
            Some(renderer) => renderer.phase(phase),
            None => info!(direction = self.name, stage = stage_name(phase), "stage"),
        }
    }

    fn table_planned(
        &self,
        table: &TableName,
        chunks: usize,
        done_chunks: usize,
        estimated_rows: u64,
        done_rows: u64,
    ) {
        {
            let mut state = self.lock();
            state.rows_copied += done_rows;
            state.tables.insert(
                table.clone(),
                TableStats {
                    state: "copying",
                    rows_copied: done_rows,
                    estimated_rows,
                },
            );
        }
        if let Some(renderer) = &self.renderer {
            renderer.table_planned(table, chunks, done_chunks, estimated_rows, done_rows);
        }
    }

    fn chunk_copied(&self, table: &TableName, rows: u64) {
        {
            let mut state = self.lock();
            state.rows_copied += rows;
            state.tables.entry(table.clone()).or_default().rows_copied += rows;
        }
        if let Some(renderer) = &self.renderer {
            renderer.chunk_copied(table, rows);
        }
    }

    fn table_copied(&self, table: &TableName) {
        self.lock().tables.entry(table.clone()).or_default().state = "copied";
        if let Some(renderer) = &self.renderer {
            renderer.table_copied(table);
        }
    }

    fn changes_applied(
        &self,
        changes: u64,
        checkpoint: Position,
        commit_time_unix_micros: Option<i64>,
    ) {
        {
            let mut state = self.lock();
            state.changes_applied += changes;
            state.checkpoint = Some(checkpoint.clone());
            state.lag.applied(checkpoint.clone());
            let total = state.changes_applied;
            let now = Instant::now();
            if state
                .rate_window
                .back()
                .is_none_or(|(at, _)| now.duration_since(*at).as_millis() >= 500)
            {
                state.rate_window.push_back((now, total));
                if state.rate_window.len() > 240 {
                    state.rate_window.pop_front();
                }
            }
        }
        if let Some(renderer) = &self.renderer {
            renderer.changes_applied(changes, checkpoint, commit_time_unix_micros);
        }
    }
}

/// The replication slot's retention on the source, for the retention guard.
#[derive(Debug, Clone, Default)]
pub(crate) struct Retention {
    pub retained_bytes: Option<i64>,
    pub safe_wal_bytes: Option<i64>,
    pub wal_status: Option<String>,
}

/// Everything `/api/*` and `/metrics` show.
pub(crate) struct Telemetry {
    pub migration: String,
    pub started: Instant,
    /// The phase and when it was last read from the target (`None`: never).
    phase: Mutex<(CutoverRecord, Option<Instant>)>,
    pub forward: Arc<Direction>,
    pub reverse: Arc<Direction>,
    reverse_running: AtomicBool,
    retention: Mutex<Retention>,
}

/// Locks `mutex`, also when a panicking holder poisoned it (the data is plain figures).
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Telemetry {
    pub(crate) fn new(migration: &str, forward: Direction, reverse: Direction) -> Telemetry {
        Telemetry {
            migration: migration.to_string(),
            started: Instant::now(),
            phase: Mutex::new((CutoverRecord::default(), None)),
            forward: Arc::new(forward),
            reverse: Arc::new(reverse),
            reverse_running: AtomicBool::new(false),
            retention: Mutex::new(Retention::default()),
        }
    }

    pub(crate) fn record(&self) -> CutoverRecord {
        locked(&self.phase).0.clone()
    }

    /// The phase as just read from the target.
    pub(crate) fn set_record(&self, record: CutoverRecord) {
        *locked(&self.phase) = (record, Some(Instant::now()));
    }

    /// Seconds since the phase was last read from the target (`None`: never).
    fn phase_age(&self) -> Option<f64> {
        locked(&self.phase).1.map(|at| at.elapsed().as_secs_f64())
    }

    /// True when the phase was not read within the last 10 s (the target is unreachable).
    pub(crate) fn phase_is_stale(&self) -> bool {
        self.phase_age().is_none_or(|age| age > 10.0)
    }

    fn reverse_running(&self) -> bool {
        self.reverse_running.load(Ordering::Relaxed)
    }

    pub(crate) fn set_reverse_running(&self, running: bool) {
        self.reverse_running.store(running, Ordering::Relaxed);
    }

    pub(crate) fn set_retention(&self, retention: Retention) {
        *locked(&self.retention) = retention;
    }

    /// `/api/phase`: where applications should read and write.
    pub(crate) fn phase_json(&self) -> Json {
        let record = self.record();
        json!({
            "migration": self.migration,
            "phase": record.phase,
            "read_primary": record.phase.read_primary(),
            "write_primary": record.phase.write_primary(),
            "last_downtime_ms": record.last_downtime_millis,
            "updated_unix_micros": record.updated_unix_micros,
            "phase_age_seconds": self.phase_age(),
        })
    }

    /// `/api/status`.
    pub(crate) fn status_json(&self) -> Json {
        let mut status = self.phase_json();
        let retention = locked(&self.retention).clone();
        status["uptime_seconds"] = json!(self.started.elapsed().as_secs());
        status["forward"] = self.forward.to_json();
        status["reverse"] = if self.reverse_running() {
            self.reverse.to_json()
        } else {
            Json::Null
        };
        status["slot"] = json!({
            "retained_bytes": retention.retained_bytes,
            "safe_wal_bytes": retention.safe_wal_bytes,
            "wal_status": retention.wal_status,
        });
        status
    }

    /// `/metrics`, Prometheus text format (each family's samples together).
    pub(crate) fn metrics(&self) -> String {
        let record = self.record();
        let mut out = String::new();
        family(&mut out, &PHASE);
        for phase in ferry_core::cutover::CutoverPhase::ALL {
            out.push_str(&format!(
                "{}{{phase=\"{phase}\"}} {}\n",
                PHASE.name,
                u8::from(phase == record.phase)
            ));
        }
        let mut samples = Vec::new();
        self.forward.metrics(&mut samples);
        if self.reverse_running() {
            self.reverse.metrics(&mut samples);
        }
        for direction_family in DIRECTION_FAMILIES {
            let lines: Vec<&String> = samples
                .iter()
                .filter(|(name, _)| *name == direction_family.name)
                .map(|(_, line)| line)
                .collect();
            if lines.is_empty() {
                continue;
            }
            family(&mut out, direction_family);
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        let retention = locked(&self.retention).clone();
        if let Some(bytes) = retention.retained_bytes {
            gauge(&mut out, &SLOT_RETAINED, bytes);
        }
        if let Some(bytes) = retention.safe_wal_bytes {
            gauge(&mut out, &SLOT_SAFE, bytes);
        }
        if let Some(millis) = record.last_downtime_millis {
            gauge(
                &mut out,
                &LAST_DOWNTIME,
                format!("{:.3}", millis as f64 / 1000.0),
            );
        }
        gauge(&mut out, &UPTIME, self.started.elapsed().as_secs());
        out
    }
}
