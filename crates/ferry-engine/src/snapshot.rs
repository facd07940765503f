//! The snapshot scheduler: copies planned chunks with a fixed number of parallel workers.
//!
//! Each worker owns one reader (a source connection that sees the snapshot) and one writer (a
//! target connection). A chunk's rows and its completion mark commit in one target transaction,
//! so a chunk is either fully on the target and marked, or absent and copied again on resume.
//! Chunks are taken from a shared queue in plan order; a table is marked copied by the caller
//! once all its chunks are done.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ferry_core::connector::{ChunkFormat, Sink, Snapshot};
use ferry_core::state::{Chunk, TableState};
use ferry_core::{failpoint, Result, TableName, TableSchema};
use futures_util::future::try_join_all;
use tracing::debug;

use crate::progress::Progress;

/// One chunk to copy.
pub struct CopyTask {
    pub table: Arc<TableSchema>,
    pub chunk: Chunk,
}

/// Copies every task; returns when all are durable on the target, or at the first error (the
/// chunks in flight then roll back). A table whose last task ends is marked copied. Each chunk
/// is stored with the position its snapshot was exact at, when the reader knows it; with
/// `streamed`, a table without a key must have one (the stream leaves out what it holds).
#[allow(clippy::too_many_arguments)]
pub async fn copy_chunks(
    snapshot: &dyn Snapshot,
    sink: &dyn Sink,
    migration: &str,
    tasks: Vec<CopyTask>,
    parallel: usize,
    chunk_timeout: std::time::Duration,
    streamed: bool,
    progress: &dyn Progress,
) -> Result<()> {
    let mut remaining: HashMap<TableName, usize> = HashMap::new();
    for task in &tasks {
        *remaining.entry(task.table.name.clone()).or_default() += 1;
    }
    let workers = parallel.max(1).min(tasks.len().max(1));
    let queue = Mutex::new(VecDeque::from(tasks));
    let remaining = Mutex::new(remaining);
    let formats: Vec<ChunkFormat> = sink.accepted_formats().to_vec();

    let worker = |number: usize| {
        let queue = &queue;
        let remaining = &remaining;
        let formats = &formats;
        async move {
            let mut reader = None;
            let mut writer = None;
            loop {
                let Some(task) = queue.lock().expect("queue lock").pop_front() else {
                    break;
                };
                if reader.is_none() {
                    reader = Some(snapshot.open_reader().await?);
                    writer = Some(sink.open_chunk_writer(migration).await?);
                }
                let (reader, writer) = (
                    reader.as_mut().expect("opened"),
                    writer.as_mut().expect("opened"),
                );
                let (format, rows) = reader
                    .read(&task.table, &task.chunk.range, formats)
                    .await
                    .map_err(|error| {
                        error.context(format!(
                            "reading {} chunk {}",
                            task.table.name, task.chunk.index
                        ))
                    })?;
                let position = reader.snapshot_position();
                if position.is_none() && streamed && task.table.primary_key.is_empty() {
                    return Err(ferry_core::Error::operator(
                        "copy.no_snapshot_position",
                        format!(
                            "{} has no key, and the source did not tell where the snapshot it was read under stands in the change stream",
                            task.table.name
                        ),
                    )
                    .with_hint("without that position its changes cannot be streamed exactly once: give the table a primary key, or leave it out"));
                }
                let write = writer.write(&task.table, task.chunk.index, format, rows, position);
                let count = tokio::time::timeout(chunk_timeout, write)
                    .await
                    .unwrap_or_else(|_| Err(ferry_core::Error::transient("copy.timeout", format!("a chunk took longer than {} s to copy", chunk_timeout.as_secs())).with_hint("a server is unreachable or stuck; ferry retries from the last committed chunk")))
                    .map_err(|error| {
                        error.context(format!(
                            "writing {} chunk {}",
                            task.table.name, task.chunk.index
                        ))
                    })?;
                failpoint::hit("copy.after_chunk_commit");
                debug!(worker = number, table = %task.table.name, chunk = task.chunk.index, rows = count, "chunk copied");
                progress.chunk_copied(&task.table.name, count);
                let table_done = {
                    let mut remaining = remaining.lock().expect("remaining lock");
                    let left = remaining.get_mut(&task.table.name).expect("counted above");
                    *left -= 1;
                    *left == 0
                };
                if table_done {
                    sink.set_table_state(migration, &task.table.name, TableState::Copied)
                        .await?;
                    progress.table_copied(&task.table.name);
                }
            }
            Ok::<(), ferry_core::Error>(())
        }
    };
    try_join_all((0..workers).map(worker)).await?;
    Ok(())
}
