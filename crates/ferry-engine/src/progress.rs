//! What the engine reports while it works. The binary renders it as progress bars or log lines.

use ferry_core::{Position, TableName};

/// The stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the source catalog, creating target tables, creating or checking the stream.
    Preparing,
    /// Copying table chunks.
    Copying,
    /// Creating secondary indexes and constraints.
    Indexing,
    /// Applying the change stream.
    Streaming,
    /// Finished (copy mode) or stopped on request.
    Stopped,
}

/// Receives progress. Calls come from the engine's tasks and must return quickly.
pub trait Progress: Send + Sync {
    fn phase(&self, phase: Phase);
    /// A table's copy is planned: `done_rows` of about `estimated_rows` are already on the target.
    fn table_planned(
        &self,
        table: &TableName,
        chunks: usize,
        done_chunks: usize,
        estimated_rows: u64,
        done_rows: u64,
    );
    fn chunk_copied(&self, table: &TableName, rows: u64);
    fn table_copied(&self, table: &TableName);
    /// A batch of `changes` is durable on the target up to `checkpoint`.
    fn changes_applied(
        &self,
        changes: u64,
        checkpoint: Position,
        commit_time_unix_micros: Option<i64>,
    );
    /// A run failed with this error (it may be retried). Messages never hold passwords.
    fn error(&self, _code: &str, _message: &str) {}
}
