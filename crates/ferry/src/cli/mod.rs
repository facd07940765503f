//! The command line: one file per subcommand.

mod check;
mod demo;
mod migrate;
mod status;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ferry_core::Result;

use crate::settings::FlagSettings;

/// Move a live database to a new home without stopping the applications that use it.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log level for ferry's own messages (error, warn, info, debug, trace); FERRY_LOG overrides.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check source and target before a migration and report every problem with its fix.
    Check {
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy the selected tables, then stream changes until stopped (SIGINT/SIGTERM). Run it
    /// again to resume.
    Run {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[command(flatten)]
        copy: CopyArgs,
    },
    /// Copy the selected tables once and exit (no streaming). Resumable.
    Copy {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[command(flatten)]
        copy: CopyArgs,
    },
    /// Show each table's state, rows copied and the replication lag.
    Status {
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prove the target equals the source (digests per key range, down to the differing rows);
    /// exit 0 when equal, 1 when different, 2 on error.
    Verify {
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Print the whole report as JSON.
        #[arg(long)]
        json: bool,
        /// Rewrite the differing rows on the target from the source, then re-check them.
        #[arg(long)]
        repair: bool,
        /// The migration is streaming: re-check differences once the stream has passed them.
        #[arg(long)]
        while_streaming: bool,
        /// Continue the last, interrupted verification (ranges it checked are not checked again).
        #[arg(long)]
        resume: bool,
        /// Parallel range checks.
        #[arg(long)]
        parallel: Option<usize>,
        /// Rows per key range.
        #[arg(long)]
        chunk_rows: Option<u64>,
    },
    /// Start two throwaway PostgreSQL servers, fill one, migrate it live under writes, and prove
    /// both equal.
    Demo {
        /// Rows in the largest demo table.
        #[arg(long, default_value_t = 200_000)]
        rows: u64,
        /// Seconds to keep writing after the copy finished.
        #[arg(long, default_value_t = 5)]
        stream_seconds: u64,
    },
}

/// Where to move from and to, and what.
#[derive(Debug, Args, Clone)]
pub struct ConnectionArgs {
    /// Source database URL, e.g. postgres://app@old-db:5432/shop.
    #[arg(long, env = "FERRY_SOURCE", hide_env_values = true)]
    pub source: Option<String>,
    /// Target database URL, e.g. postgres://app@new-db:5432/shop.
    #[arg(long, env = "FERRY_TARGET", hide_env_values = true)]
    pub target: Option<String>,
    /// A TOML config file; flags override its settings.
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// Tables to move: comma-separated globs over schema.table, e.g. 'public.*,audit.events'.
    #[arg(long)]
    pub tables: Option<String>,
    /// The migration's name (names its replication slot, publication and state).
    #[arg(long)]
    pub name: Option<String>,
}

/// How to copy.
#[derive(Debug, Args, Clone)]
pub struct CopyArgs {
    /// Parallel copy workers.
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Rows per copy chunk.
    #[arg(long)]
    pub chunk_rows: Option<u64>,
    /// Retries of a transient failure (connection lost, server restarting) before giving up.
    #[arg(long, default_value_t = 10)]
    pub max_retries: u32,
    /// Seconds of silence on the change stream that count as a lost connection (a chunk copy or
    /// a batch apply may take four times as long before it is retried).
    #[arg(long)]
    pub network_timeout: Option<u64>,
    /// Start over: forget the checkpoint, recreate the stream and copy every table again
    /// (after the replication slot was lost, say). Rows on the target are replaced.
    #[arg(long)]
    pub restart: bool,
}

impl ConnectionArgs {
    fn flags(&self, copy: Option<&CopyArgs>) -> FlagSettings {
        FlagSettings {
            config: self.config.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            tables: self.tables.clone(),
            name: self.name.clone(),
            parallel: copy.and_then(|copy| copy.parallel),
            chunk_rows: copy.and_then(|copy| copy.chunk_rows),
            network_timeout_seconds: copy.and_then(|copy| copy.network_timeout),
        }
    }
}

/// Runs the chosen command.
pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { connection, json } => check::run(&connection.flags(None), json).await,
        Command::Run { connection, copy } => {
            migrate::run(
                &connection.flags(Some(&copy)),
                ferry_engine::Mode::Run,
                copy.max_retries,
                copy.restart,
            )
            .await
        }
        Command::Copy { connection, copy } => {
            migrate::run(
                &connection.flags(Some(&copy)),
                ferry_engine::Mode::Copy,
                copy.max_retries,
                copy.restart,
            )
            .await
        }
        Command::Verify {
            connection,
            json,
            repair,
            while_streaming,
            resume,
            parallel,
            chunk_rows,
        } => {
            let mut flags = connection.flags(None);
            flags.parallel = parallel;
            flags.chunk_rows = chunk_rows;
            verify::run(
                &flags,
                verify::VerifyFlags {
                    json,
                    repair,
                    while_streaming,
                    resume,
                },
            )
            .await
        }
        Command::Status { connection, json } => status::run(&connection.flags(None), json).await,
        Command::Demo {
            rows,
            stream_seconds,
        } => demo::run(rows, stream_seconds).await,
    }
}
