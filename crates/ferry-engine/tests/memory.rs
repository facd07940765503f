//! The engine against the test kit's memory database (no servers): a migration copies, streams
//! and acknowledges only what the target holds; the supervisor retries transient failures from
//! the checkpoint and records them, pauses while the target waits for the operator, stops only
//! the table a definite failure names; a run cut off anywhere resumes and converges. Equality is
//! checked on the memory database's own rows, not through the engine.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::select::Selection;
use ferry_core::state::TableState;
use ferry_core::{Error, Position, TableName, Value};
use ferry_engine::{supervise, MigrationOptions, Mode, Phase, Progress, StreamOptions};
use ferry_testkit::memory::{MemoryDatabase, Operation, Write};
use ferry_testkit::wait_until;
use tokio::sync::watch;

struct Quiet;

impl Progress for Quiet {
    fn phase(&self, _phase: Phase) {}
    fn table_planned(&self, _: &TableName, _: usize, _: usize, _: u64, _: u64) {}
    fn chunk_copied(&self, _: &TableName, _: u64) {}
    fn table_copied(&self, _: &TableName) {}
    fn changes_applied(&self, _: u64, _: Position, _: Option<i64>) {}
}

fn options(name: &str) -> MigrationOptions {
    MigrationOptions {
        name: name.into(),
        selection: Selection::default(),
        mode: Mode::Run,
        parallel: 3,
        rows_per_chunk: 100,
        stream: StreamOptions {
            max_batch_delay: Duration::from_millis(20),
            ..StreamOptions::default()
        },
        chunk_timeout: Duration::from_secs(30),
        recopy_failed: true,
        restart: false,
        ignore_writes_of: Vec::new(),
        stream_only: false,
    }
}

fn row(id: i64, text: &str) -> Vec<Value> {
    vec![Value::Int64(id), Value::Text(text.into())]
}

/// A source with `table` holding `rows` rows (ids 1..=rows).
fn source_with(table: &str, rows: i64) -> (MemoryDatabase, TableName) {
    let source = MemoryDatabase::new();
    let name = source.create_table(table, &["id", "note"], 1);
    let writes: Vec<Write> = (1..=rows)
        .map(|id| Write::Upsert(row(id, &format!("row {id}"))))
        .collect();
    source.commit(&name, &writes);
    (source, name)
}

/// A running `supervise` and the switch that stops it.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<ferry_core::Result<()>>,
}

fn start(source: &MemoryDatabase, target: &MemoryDatabase, options: MigrationOptions) -> Running {
    start_with_retries(source, target, options, 10)
}

fn start_with_retries(
    source: &MemoryDatabase,
    target: &MemoryDatabase,
    options: MigrationOptions,
    max_retries: u32,
) -> Running {
    let (stop, shutdown) = watch::channel(false);
    let (source, target) = (source.source(), target.sink());
    let task = tokio::spawn(async move {
        supervise(
            &source,
            &target,
            None,
            options,
            &Quiet,
            shutdown,
            max_retries,
        )
        .await
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) -> ferry_core::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.expect("the run does not panic")
    }
}

/// Waits until the target holds exactly the source's rows of `tables` and the checkpoint
/// reached the source's end.
async fn converged(
    source: &MemoryDatabase,
    target: &MemoryDatabase,
    migration: &str,
    tables: &[&TableName],
) {
    let result = wait_until(
        "the target to equal the source",
        Duration::from_secs(30),
        || async {
            let equal = tables
                .iter()
                .all(|table| source.rows(table) == target.rows(table));
            let checkpoint = target
                .migration_state(migration)
                .stream
                .map(|stream| stream.position);
            (equal && checkpoint == Some(source.end())).then_some(())
        },
    )
    .await;
    if let Err(error) = result {
        for table in tables {
            eprintln!(
                "{table}: source {} rows, target {} rows",
                source.rows(table).len(),
                target.rows(table).len()
            );
        }
        panic!(
            "{error}; checkpoint {:?}, source end {}",
            target.migration_state(migration).stream,
            source.end()
        );
    }
}

/// The source was never told more is durable than the target's checkpoint says.
fn acknowledged_within_checkpoint(
    source: &MemoryDatabase,
    target: &MemoryDatabase,
    migration: &str,
) {
    let checkpoint = target
        .migration_state(migration)
        .stream
        .expect("a checkpoint")
        .position;
    if let Some(acknowledged) = source.acknowledged() {
        assert!(
            acknowledged <= checkpoint,
            "acknowledged {acknowledged} beyond the checkpoint {checkpoint}"
        );
    }
}

/// Once the target holds everything, the source hears so: the acknowledgement reaches the end.
async fn acknowledged_to_the_end(source: &MemoryDatabase) {
    wait_until(
        "the acknowledgement to reach the end",
        Duration::from_secs(30),
        || async { (source.acknowledged() == Some(source.end())).then_some(()) },
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "{error}: acknowledged {:?}, end {}",
            source.acknowledged(),
            source.end()
        )
    });
}

fn churn(source: &MemoryDatabase, table: &TableName, round: i64) {
    source.commit(
        table,
        &[
            Write::Upsert(row(round % 500 + 1, &format!("updated in round {round}"))),
            Write::Delete(vec![Value::Int64(round % 700 + 2)]),
            Write::Upsert(row(10_000 + round, "inserted")),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_copies_then_streams_and_acknowledges_only_what_the_target_holds() {
    let (source, table) = source_with("items", 1_000);
    let target = MemoryDatabase::new();
    let running = start(&source, &target, options("plain"));
    wait_until("the copy", Duration::from_secs(30), || async {
        let state = target.migration_state("plain");
        state
            .tables
            .get(&table)
            .is_some_and(|progress| progress.state == TableState::Copied)
            .then_some(())
    })
    .await
    .unwrap();
    let state = target.migration_state("plain");
    assert_eq!(
        state.tables[&table].chunks.len(),
        10,
        "1,000 rows in chunks of 100"
    );
    for round in 0..200 {
        churn(&source, &table, round);
    }
    converged(&source, &target, "plain", &[&table]).await;
    acknowledged_within_checkpoint(&source, &target, "plain");
    acknowledged_to_the_end(&source).await;
    running.stop().await.unwrap();
    assert!(target.failures().is_empty(), "{:?}", target.failures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_from_the_checkpoint_and_recorded() {
    let (source, table) = source_with("items", 300);
    let target = MemoryDatabase::new();
    target.fail(
        Operation::WriteChunk,
        1,
        Arc::new(|| Error::transient("target.connection", "the connection was cut")),
    );
    let running = start(&source, &target, options("retried"));
    converged(&source, &target, "retried", &[&table]).await;
    target.fail(
        Operation::Apply,
        1,
        Arc::new(|| Error::transient("target.connection", "the connection was cut")),
    );
    for round in 0..50 {
        churn(&source, &table, round);
    }
    converged(&source, &target, "retried", &[&table]).await;
    // A commit whose answer is lost: the batch is on the target, the engine hears of a
    // failure, resumes from the stored checkpoint and applies again what is already there.
    let batches = target.applied_batches();
    target.fail(
        Operation::ApplyThenFail,
        1,
        Arc::new(|| Error::transient("target.connection", "the answer to the commit was lost")),
    );
    for round in 50..100 {
        churn(&source, &table, round);
    }
    wait_until(
        "the lost answer to be recorded",
        Duration::from_secs(30),
        || async { (target.failures().len() == 3).then_some(()) },
    )
    .await
    .unwrap();
    // The run resumed: it applies what comes next.
    for round in 100..150 {
        churn(&source, &table, round);
    }
    converged(&source, &target, "retried", &[&table]).await;
    assert!(
        target.applied_batches() > batches + 1,
        "the batch whose answer was lost, and more after it"
    );
    acknowledged_within_checkpoint(&source, &target, "retried");
    acknowledged_to_the_end(&source).await;
    running.stop().await.unwrap();
    let failures = target.failures();
    assert_eq!(
        failures,
        vec![("retried".to_string(), "target.connection".to_string()); 3],
        "each failure recorded once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_waiting_for_the_operator_pauses_the_run_instead_of_ending_it() {
    let (source, table) = source_with("items", 200);
    let target = MemoryDatabase::new();
    // A run that may not retry at all: a pause is not a retry.
    target.fail(
        Operation::WriteChunk,
        2,
        Arc::new(|| Error::operator("target.read_only", "the target is read-only").until_fixed()),
    );
    let running = start_with_retries(&source, &target, options("paused"), 0);
    converged(&source, &target, "paused", &[&table]).await;
    assert!(!running.task.is_finished(), "the run goes on");
    running.stop().await.unwrap();
    assert!(target
        .failures()
        .iter()
        .all(|(_, code)| code == "target.read_only"));
    assert!(!target.failures().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definite_failure_naming_a_table_stops_only_that_table() {
    let (source, first) = source_with("first", 100);
    let second = source.create_table("second", &["id", "note"], 1);
    source.commit(&second, &[Write::Upsert(row(1, "one"))]);
    let target = MemoryDatabase::new();
    let running = start(&source, &target, options("definite"));
    converged(&source, &target, "definite", &[&first, &second]).await;
    let refused = second.clone();
    target.fail(
        Operation::Apply,
        1,
        Arc::new(move || {
            Error::definite("target.check_violation", "a row the target refuses")
                .with_table(refused.clone())
        }),
    );
    source.commit(&second, &[Write::Upsert(row(2, "refused"))]);
    source.commit(&first, &[Write::Upsert(row(1, "still streamed"))]);
    wait_until(
        "the first table to follow",
        Duration::from_secs(30),
        || async { (source.rows(&first) == target.rows(&first)).then_some(()) },
    )
    .await
    .unwrap();
    wait_until(
        "the second table to be marked failed",
        Duration::from_secs(30),
        || async {
            let state = target.migration_state("definite");
            (state.tables[&second].state == TableState::Failed).then_some(state)
        },
    )
    .await
    .map(|state| {
        assert!(state.tables[&second]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("target.check_violation"))
    })
    .unwrap();
    assert_eq!(
        target.rows(&second),
        vec![row(1, "one")],
        "nothing of the refused batch"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_off_anywhere_resumes_and_converges_without_loss() {
    let (source, table) = source_with("items", 6_000);
    let target = MemoryDatabase::new();
    // A slow target: 60 chunks of 100 rows take a while, so the first cuts land in the copy.
    target.set_latency(Duration::from_millis(15));
    let chunks_done = || {
        target
            .migration_state("cut")
            .tables
            .get(&table)
            .map(|progress| progress.chunks.iter().filter(|chunk| chunk.done).count())
            .unwrap_or(0)
    };
    let mut round = 0;
    let mut cut_while_copying = 0;
    for _ in 0..6 {
        let running = start(&source, &target, options("cut"));
        // Cut after this run did some work of its own: a chunk or a batch.
        let (chunks_before, batches_before) = (chunks_done(), target.applied_batches());
        wait_until(
            "some progress of this run",
            Duration::from_secs(30),
            || async {
                (chunks_done() > chunks_before || target.applied_batches() > batches_before)
                    .then_some(())
            },
        )
        .await
        .unwrap();
        if chunks_done() < 60 {
            cut_while_copying += 1;
        }
        for _ in 0..20 {
            churn(&source, &table, round);
            round += 1;
        }
        // Dropping the run at an arbitrary await point: what the target holds is all it has.
        running.task.abort();
        let _ = running.task.await;
        if target.migration_state("cut").stream.is_some() {
            acknowledged_within_checkpoint(&source, &target, "cut");
        }
    }
    assert!(
        cut_while_copying >= 2,
        "{cut_while_copying} cuts landed in the copy"
    );
    let running = start(&source, &target, options("cut"));
    converged(&source, &target, "cut", &[&table]).await;
    acknowledged_to_the_end(&source).await;
    running.stop().await.unwrap();
}
