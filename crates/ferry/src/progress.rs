//! Progress for people: bars per table (rows, rate, ETA) on a terminal, plain log lines
//! otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_core::calendar::unix_micros_now;
use ferry_core::{Position, TableName};
use ferry_engine::{Phase, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::info;

struct TableLine {
    bar: ProgressBar,
    copied: u64,
    estimated: u64,
}

#[derive(Default)]
struct State {
    tables: HashMap<TableName, TableLine>,
    streaming: Option<ProgressBar>,
    applied: u64,
    last_log: Option<Instant>,
    copy_started: Option<Instant>,
}

/// Renders engine progress.
pub(crate) struct Renderer {
    terminal: bool,
    multi: MultiProgress,
    state: Mutex<State>,
}

impl Renderer {
    pub(crate) fn new() -> Renderer {
        let terminal = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Renderer {
            terminal,
            multi,
            state: Mutex::new(State::default()),
        }
    }

    /// Leaves the bars as they are on screen.
    pub(crate) fn finish(&self) {
        let state = self.state.lock().expect("progress lock");
        if let Some(bar) = &state.streaming {
            bar.abandon();
        }
    }

    fn due(state: &mut State, every: Duration) -> bool {
        let due = state.last_log.is_none_or(|last| last.elapsed() >= every);
        if due {
            state.last_log = Some(Instant::now());
        }
        due
    }
}

impl Progress for Renderer {
    fn phase(&self, phase: Phase) {
        let mut state = self.state.lock().expect("progress lock");
        match phase {
            Phase::Preparing => {
                info!("preparing: reading the source catalog and creating target tables")
            }
            Phase::Copying => {
                state.copy_started = Some(Instant::now());
                info!("copying");
            }
            Phase::Indexing => {
                let rows: u64 = state.tables.values().map(|line| line.copied).sum();
                if let Some(started) = state.copy_started {
                    let seconds = started.elapsed().as_secs_f64().max(0.001);
                    info!(
                        rows,
                        seconds = format!("{seconds:.1}"),
                        rows_per_second = (rows as f64 / seconds) as u64,
                        "copy finished; creating indexes and constraints"
                    );
                } else {
                    info!("creating indexes and constraints");
                }
            }
            Phase::Streaming => {
                info!("streaming changes (stop with Ctrl-C or SIGTERM; run again to resume)");
                if self.terminal {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} streaming: {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(200));
                    bar.set_message("waiting for changes");
                    state.streaming = Some(bar);
                }
            }
            Phase::Stopped => {
                if let Some(bar) = state.streaming.take() {
                    bar.abandon();
                }
            }
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
        let mut state = self.state.lock().expect("progress lock");
        let estimated = estimated_rows.max(done_rows).max(1);
        let bar = self.multi.add(ProgressBar::new(estimated));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>28} [{bar:30}] {pos:>10}/{len:10} rows {per_sec:>12} ETA {eta:>4} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(table.to_string());
        bar.set_position(done_rows);
        if !self.terminal {
            info!(table = %table, chunks, done_chunks, estimated_rows, "copy planned");
        }
        state.tables.insert(
            table.clone(),
            TableLine {
                bar,
                copied: done_rows,
                estimated,
            },
        );
    }

    fn chunk_copied(&self, table: &TableName, rows: u64) {
        let mut state = self.state.lock().expect("progress lock");
        if let Some(line) = state.tables.get_mut(table) {
            line.copied += rows;
            if line.copied > line.estimated {
                line.estimated = line.copied;
                line.bar.set_length(line.copied);
            }
            line.bar.inc(rows);
        }
        if !self.terminal && Self::due(&mut state, Duration::from_secs(5)) {
            let copied: u64 = state.tables.values().map(|line| line.copied).sum();
            let estimated: u64 = state.tables.values().map(|line| line.estimated).sum();
            let seconds = state
                .copy_started
                .map(|started| started.elapsed().as_secs_f64())
                .unwrap_or(0.0)
                .max(0.001);
            info!(
                copied,
                estimated,
                rows_per_second = (copied as f64 / seconds) as u64,
                "copy progress"
            );
        }
    }

    fn table_copied(&self, table: &TableName) {
        let state = self.state.lock().expect("progress lock");
        if let Some(line) = state.tables.get(table) {
            line.bar.set_length(line.copied.max(1));
            line.bar.finish_with_message("done");
            if !self.terminal {
                info!(table = %table, rows = line.copied, "table copied");
            }
        }
    }

    fn changes_applied(
        &self,
        changes: u64,
        checkpoint: Position,
        commit_time_unix_micros: Option<i64>,
    ) {
        let mut state = self.state.lock().expect("progress lock");
        state.applied += changes;
        let lag =
            commit_time_unix_micros.map(|time| ((unix_micros_now() - time).max(0) as f64) / 1e6);
        let lag_text = lag
            .map(|seconds| format!("{seconds:.1}s"))
            .unwrap_or_else(|| "-".into());
        if let Some(bar) = &state.streaming {
            bar.set_message(format!(
                "{} changes applied, checkpoint {checkpoint}, lag {lag_text}",
                state.applied
            ));
        } else if !self.terminal && changes > 0 && Self::due(&mut state, Duration::from_secs(10)) {
            info!(applied = state.applied, %checkpoint, lag = %lag_text, "streaming");
        }
    }
}
