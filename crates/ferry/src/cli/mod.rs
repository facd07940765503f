//! The command line: one file per subcommand.

mod check;
mod cutover;
#[cfg(feature = "demo")]
mod demo;
#[cfg(feature = "demo")]
mod demo_mysql;
#[cfg(feature = "kafka")]
mod kafka;
mod migrate;
mod objects;
mod relay;
mod status;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferry_core::Result;

use crate::settings::FlagSettings;

/// Move a live database to a new home without stopping the applications that use it.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// Log level for ferry's own messages (error, warn, info, debug, trace); FERRY_LOG overrides.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Copy the selected tables once and exit (no streaming). Resumable.
    Copy {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[command(flatten)]
        copy: CopyArgs,
    },
    /// Print the source's triggers, views, functions, procedures, row-level security
    /// policies and grants for the selected tables as a SQL script to run at cutover (ferry
    /// does not create them on the target). Only the source is read.
    Objects {
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Write the script to this file instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
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
    /// Switch applications to the new database while `ferry run` streams: with --reads, readers
    /// only; otherwise fence writes on the old database, drain to lag zero, sync sequences, start
    /// the reverse stream and hand writes to the new database. Reports the write downtime.
    Cutover {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[command(flatten)]
        switch: SwitchArgs,
        /// Only record that readers moved to the new database (phase reads-switched).
        #[arg(long)]
        reads: bool,
        /// Rehearse everything except the fence and predict the write downtime.
        #[arg(long)]
        dry_run: bool,
        /// Switch even though the last verification was not clean or never ran.
        #[arg(long)]
        force: bool,
        /// Fence only after the lag stayed at most this long (e.g. 1s, 500ms) ...
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        max_lag: Duration,
        /// ... for this long.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        stable_for: Duration,
        /// Give up when the lag has not settled within this time.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        lag_wait: Duration,
        /// While fenced, verify the tables written within this window (e.g. 10m); a difference
        /// aborts the cutover. Adds the verification time to the write downtime.
        #[arg(long, value_parser = parse_duration)]
        verify_recent: Option<Duration>,
    },
    /// Go back to the old database from any phase, losing no write: after a cutover, fence the
    /// new database, drain the reverse stream, then let the old one take writes again.
    Rollback {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[command(flatten)]
        switch: SwitchArgs,
    },
    /// After a cutover: remove both change streams (slots, publications, origins). Stop
    /// `ferry run` first. The old database stays read-only for applications unless
    /// --unfence-source.
    Finish {
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Let applications write to the old database again.
        #[arg(long)]
        unfence_source: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deliver a database's changes to HTTP endpoints: retries, per-key order, a delivery log,
    /// and with --listen a web page and API to search and retry failures. Runs until stopped.
    Relay {
        /// The relay's settings (relay.toml): name, [source], [log], [[route]].
        #[arg(short = 'c', long)]
        config: PathBuf,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Move Kafka topics and consumer groups to a new cluster: check, move, status, switch,
    /// verify.
    #[cfg(feature = "kafka")]
    Kafka {
        #[command(subcommand)]
        command: kafka::KafkaCommand,
    },
    /// Start two throwaway PostgreSQL servers (or, with --mysql, MariaDB and PostgreSQL), fill
    /// one, migrate it live under writes, and prove both equal.
    #[cfg(feature = "demo")]
    Demo {
        /// Rows in the largest demo table.
        #[arg(long, default_value_t = 200_000)]
        rows: u64,
        /// Seconds to keep writing after the copy finished.
        #[arg(long, default_value_t = 5)]
        stream_seconds: u64,
        /// Migrate from a throwaway MariaDB server to PostgreSQL instead (across engines).
        #[arg(long)]
        mysql: bool,
    },
}

/// Where to move from and to, and what.
#[derive(Debug, Args, Clone)]
pub(crate) struct ConnectionArgs {
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
    /// Tables to leave out, whatever --tables selects: comma-separated globs, e.g. 'public.tmp_*'.
    #[arg(long)]
    pub exclude: Option<String>,
    /// The migration's name (names its replication slot, publication and state).
    #[arg(long)]
    pub name: Option<String>,
}

/// The control plane.
#[derive(Debug, Args, Clone)]
pub(crate) struct ListenArgs {
    /// Serve /api/status, /api/phase, /metrics and /healthz on this address (e.g.
    /// 127.0.0.1:9187).
    #[arg(long)]
    pub listen: Option<String>,
    /// The token clients must send (Authorization: Bearer ...); required beyond loopback.
    /// Prefer the environment variable: command lines show in `ps`.
    #[arg(long, env = "FERRY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

impl From<ListenArgs> for migrate::Listen {
    fn from(args: ListenArgs) -> Self {
        migrate::Listen {
            address: args.listen,
            token: args.api_token,
        }
    }
}

/// Shared by `cutover` and `rollback`.
#[derive(Debug, Args, Clone)]
pub(crate) struct SwitchArgs {
    /// Abort (and lift the fence) when draining to lag zero takes longer than this.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub fence_timeout: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// Parses durations like `1s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|character: char| !character.is_ascii_digit() && character != '.')
        .map(|index| text.split_at(index))
        .unwrap_or((text, "s"));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 500ms, 1s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use ms, s, m or h)"
            ))
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// How to copy.
#[derive(Debug, Args, Clone)]
pub(crate) struct CopyArgs {
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
            exclude: self.exclude.clone(),
            name: self.name.clone(),
            parallel: copy.and_then(|copy| copy.parallel),
            chunk_rows: copy.and_then(|copy| copy.chunk_rows),
            network_timeout_seconds: copy.and_then(|copy| copy.network_timeout),
        }
    }
}

/// Runs the chosen command.
pub(crate) async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { connection, json } => check::run(&connection.flags(None), json).await,
        Command::Run {
            connection,
            copy,
            listen,
        } => {
            migrate::run(
                &connection.flags(Some(&copy)),
                ferry_engine::Mode::Run,
                copy.max_retries,
                copy.restart,
                &listen.into(),
            )
            .await
        }
        Command::Cutover {
            connection,
            switch,
            reads,
            dry_run,
            force,
            max_lag,
            stable_for,
            lag_wait,
            verify_recent,
        } => {
            let action = if reads {
                cutover::Action::Reads
            } else {
                cutover::Action::Writes
            };
            cutover::run(
                &connection.flags(None),
                action,
                &cutover::SwitchFlags {
                    max_lag,
                    stable_for,
                    lag_wait,
                    fence_timeout: switch.fence_timeout,
                    dry_run,
                    force,
                    json: switch.json,
                    verify_recent,
                    listen: switch.listen.into(),
                },
            )
            .await
        }
        Command::Rollback { connection, switch } => {
            cutover::run(
                &connection.flags(None),
                cutover::Action::Rollback,
                &cutover::SwitchFlags {
                    fence_timeout: switch.fence_timeout,
                    json: switch.json,
                    listen: switch.listen.into(),
                    ..cutover::SwitchFlags::default()
                },
            )
            .await
        }
        Command::Finish {
            connection,
            unfence_source,
            json,
        } => {
            cutover::run(
                &connection.flags(None),
                cutover::Action::Finish { unfence_source },
                &cutover::SwitchFlags {
                    json,
                    ..cutover::SwitchFlags::default()
                },
            )
            .await
        }
        Command::Copy { connection, copy } => {
            migrate::run(
                &connection.flags(Some(&copy)),
                ferry_engine::Mode::Copy,
                copy.max_retries,
                copy.restart,
                &migrate::Listen::default(),
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
        Command::Objects { connection, output } => {
            objects::run(&connection.flags(None), output.as_deref()).await
        }
        Command::Relay { config, listen } => relay::run(&config, listen.into()).await,
        #[cfg(feature = "kafka")]
        Command::Kafka { command } => kafka::run(command).await,
        #[cfg(feature = "demo")]
        Command::Demo {
            rows,
            stream_seconds,
            mysql: false,
        } => demo::run(rows, stream_seconds).await,
        #[cfg(feature = "demo")]
        Command::Demo {
            rows,
            stream_seconds,
            mysql: true,
        } => demo_mysql::run(rows, stream_seconds).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
