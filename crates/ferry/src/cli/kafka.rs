//! `ferry kafka check|move|status|switch|verify`: moving topics and consumer groups to a new
//! Kafka cluster (see `ferry_kafka` and docs/kafka.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Subcommand};
use ferry_core::{Error, Result};
use ferry_kafka::check::{check, CheckOptions, Level};
use ferry_kafka::mirror::{MoveOptions, Progress, StartAt};
use ferry_kafka::switch::SwitchOptions;
use ferry_kafka::{Cluster, Patterns, Side};
use ferry_relay::http::server::{Handler, Request, Response};

use super::ListenArgs;
use crate::signals::shutdown_on_signals;

/// The two clusters and the move's name.
#[derive(Debug, Args, Clone)]
pub(crate) struct Clusters {
    /// The cluster to move from: kafka://host:port[,host:port][?property=value&...].
    #[arg(long)]
    pub source: String,
    /// The cluster to move to.
    #[arg(long)]
    pub target: String,
    /// The move's name: one state per name and pair of clusters (default `ferry`; status,
    /// switch and verify find the only move between the two clusters without it).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the move keeps its offset maps (default: ~/.local/state/ferry/kafka-NAME-....db,
    /// or under $FERRY_STATE_DIR).
    #[arg(long)]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KafkaCommand {
    /// Report every problem with a move before it starts: clusters, topics, partitions,
    /// configs, what the target already holds, groups.
    Check {
        #[command(flatten)]
        clusters: Clusters,
        /// Topics to move: names and * patterns, comma-separated ('orders,payments.*').
        #[arg(long)]
        topics: String,
        /// Consumer groups to look at ('*' for all).
        #[arg(long)]
        groups: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create the topics on the target and copy every record, then keep copying until stopped
    /// (SIGINT/SIGTERM). Run it again to resume.
    Move {
        #[command(flatten)]
        clusters: Clusters,
        #[arg(long)]
        topics: String,
        /// Where new partitions start: `earliest` or a time (2026-12-05T10:00:00Z).
        #[arg(long, default_value = "earliest")]
        from: String,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Per partition: records copied, lag, bytes; per group: its source offsets and their
    /// translation.
    Status {
        #[command(flatten)]
        clusters: Clusters,
        /// Groups to translate (default: every group the source lists).
        #[arg(long)]
        groups: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Commit on the target, for each stopped group, the exact translation of its committed
    /// source offsets.
    Switch {
        #[command(flatten)]
        clusters: Clusters,
        #[arg(long)]
        groups: String,
        /// How long to wait for the move to copy up to the groups' positions.
        #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
        wait: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Compare what was copied on both clusters per partition (counts and digests); exit 0 when
    /// equal, 1 when different.
    Verify {
        #[command(flatten)]
        clusters: Clusters,
        #[arg(long)]
        json: bool,
    },
}

impl Clusters {
    fn name(&self) -> &str {
        self.name
            .as_deref()
            .unwrap_or(ferry_kafka::state::DEFAULT_NAME)
    }

    /// The clusters and the state's path. `move` uses its name's state; the other commands,
    /// without a name, the only move between the two clusters.
    fn parse(&self, moving: bool) -> Result<(Cluster, Cluster, PathBuf)> {
        let source = Cluster::parse(&self.source, Side::Source)?;
        let target = Cluster::parse(&self.target, Side::Target)?;
        if source.bootstrap == target.bootstrap {
            return Err(Error::operator(
                "config.same_cluster",
                "the source and the target are the same cluster",
            )
            .with_hint("point --target at the new cluster"));
        }
        let state = self.state.clone().unwrap_or_else(|| {
            let named =
                ferry_kafka::state::default_path(self.name(), &source.bootstrap, &target.bootstrap);
            match &self.name {
                Some(_) => named,
                None if moving => named,
                None => ferry_kafka::state::only_path(&source.bootstrap, &target.bootstrap)
                    .unwrap_or(named),
            }
        });
        Ok((source, target, state))
    }
}

pub(super) async fn run(command: KafkaCommand) -> Result<ExitCode> {
    match command {
        KafkaCommand::Check {
            clusters,
            topics,
            groups,
            json,
        } => {
            let (source, target, state) = clusters.parse(false)?;
            let topics = Patterns::parse(&topics, "--topics")?;
            let groups = groups
                .map(|groups| Patterns::parse(&groups, "--groups"))
                .transpose()?;
            let findings = check(CheckOptions {
                source: &source,
                target: &target,
                topics: &topics,
                groups: groups.as_ref(),
                state: Some(&state),
            })
            .await;
            let errors = findings
                .iter()
                .filter(|finding| finding.level == Level::Error)
                .count();
            if json {
                crate::report::print_json(
                    &serde_json::json!({ "ok": errors == 0, "findings": findings }),
                );
            } else {
                for finding in &findings {
                    let level = match finding.level {
                        Level::Error => "error",
                        Level::Warning => "warning",
                        Level::Info => "ok",
                    };
                    println!("{level:>7}  {}: {}", finding.subject, finding.message);
                    if let Some(hint) = &finding.hint {
                        println!("         fix: {hint}");
                    }
                }
                println!(
                    "{}",
                    if errors == 0 {
                        "ready to move".to_string()
                    } else {
                        format!("{errors} problem(s) to fix before moving")
                    }
                );
            }
            Ok(if errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        KafkaCommand::Move {
            clusters,
            topics,
            from,
            listen,
        } => {
            let (source, target, state) = clusters.parse(true)?;
            let start = match from.trim() {
                "earliest" | "beginning" => StartAt::Earliest,
                text => StartAt::Time(ferry_relay::api::parse_time(text).ok_or_else(|| {
                    Error::operator(
                        "config.from",
                        format!("--from '{text}' is neither earliest nor a time"),
                    )
                    .with_hint("write --from earliest or --from 2026-12-05T10:00:00Z")
                })?),
            };
            let options = MoveOptions {
                source,
                target,
                topics: Patterns::parse(&topics, "--topics")?,
                start,
                state,
            };
            eprintln!(
                "kafka move '{}': {} to {}; state {}",
                clusters.name(),
                options.source.bootstrap,
                options.target.bootstrap,
                options.state.display()
            );
            let progress = Arc::new(Mutex::new(Progress {
                phase: "starting".into(),
                ..Progress::default()
            }));
            if let Some(address) = &listen.listen {
                serve(address, listen.api_token.clone(), progress.clone()).await?;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let mut shutdown = shutdown_on_signals();
            let stopper = stop.clone();
            tokio::spawn(async move {
                while shutdown.changed().await.is_ok() {
                    if *shutdown.borrow() {
                        break;
                    }
                }
                stopper.store(true, Ordering::SeqCst);
            });
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                ferry_kafka::mirror::run(options, stop, progress, runtime)
            })
            .await
            .map_err(|error| Error::definite("kafka.move", error.to_string()))??;
            eprintln!("kafka move stopped; run the same command to resume");
            Ok(ExitCode::SUCCESS)
        }
        KafkaCommand::Status {
            clusters,
            groups,
            json,
        } => {
            let (source, _target, state) = clusters.parse(false)?;
            let groups = Patterns::parse(groups.as_deref().unwrap_or("*"), "--groups")?;
            let status = tokio::task::spawn_blocking(move || {
                ferry_kafka::status::status(&state, &source, Some(&groups)).or_else(|error| {
                    // A broker that cannot list groups still has partitions to show.
                    tracing::warn!(error = %error, "groups left out of the status");
                    ferry_kafka::status::status(&state, &source, None)
                })
            })
            .await
            .map_err(|error| Error::definite("kafka.status", error.to_string()))??;
            if json {
                crate::report::print_json(&status);
            } else {
                println!("copied {} record(s); lag {}", status.copied, status.lag);
                for partition in &status.partitions {
                    println!(
                        "  {}[{}]: copied {} ({} bytes), source end {}, lag {}, target end {}, {:.0} records/s, {:.0} bytes/s",
                        partition.topic,
                        partition.partition,
                        partition.copied,
                        partition.bytes,
                        partition.source_end,
                        partition.lag,
                        partition.target_end,
                        partition.records_per_second,
                        partition.bytes_per_second
                    );
                }
                for group in &status.groups {
                    println!("group {}:", group.group);
                    for row in &group.partitions {
                        let target = row
                            .target_offset
                            .map(|offset| offset.to_string())
                            .unwrap_or_else(|| "not copied yet".into());
                        println!(
                            "  {}[{}]: source {} -> target {}{}",
                            row.topic,
                            row.partition,
                            row.source_offset,
                            target,
                            if row.duplicates > 0 {
                                format!(" ({} record(s) read again)", row.duplicates)
                            } else {
                                String::new()
                            }
                        );
                    }
                }
                for record in &status.switched {
                    println!(
                        "switched {} {}[{}]: source {} -> target {}",
                        record.group,
                        record.topic,
                        record.partition,
                        record.source_offset,
                        record.target_offset
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KafkaCommand::Switch {
            clusters,
            groups,
            wait,
            json,
        } => {
            let (source, target, state) = clusters.parse(false)?;
            let options = SwitchOptions {
                source,
                target,
                groups: Patterns::parse(&groups, "--groups")?,
                state,
                wait,
            };
            let switched =
                tokio::task::spawn_blocking(move || ferry_kafka::switch::switch(&options))
                    .await
                    .map_err(|error| Error::definite("kafka.switch", error.to_string()))??;
            if json {
                crate::report::print_json(&serde_json::json!({ "groups": switched }));
            } else {
                for group in &switched {
                    println!("group {} switched:", group.group);
                    for row in &group.partitions {
                        let next = match (&row.next_offset, &row.next_key) {
                            (Some(offset), Some(key)) => {
                                format!("first reads offset {offset} (key {key})")
                            }
                            (Some(offset), None) => format!("first reads offset {offset}"),
                            (None, _) => "nothing to read yet".to_string(),
                        };
                        println!(
                            "  {}[{}]: source {} -> target {}; {next}{}",
                            row.topic,
                            row.partition,
                            row.source_offset,
                            row.target_offset,
                            if row.duplicates > 0 {
                                format!("; {} record(s) will be read again (producers wrote to the target while the move copied)", row.duplicates)
                            } else {
                                String::new()
                            }
                        );
                        if let Some(first) = row.before_copy {
                            println!(
                                "    warning: the group was at source offset {}, before the first copied record ({first}): source records {}..{first} are not on the target",
                                row.source_offset, row.source_offset
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KafkaCommand::Verify { clusters, json } => {
            let (source, target, state) = clusters.parse(false)?;
            let checks = tokio::task::spawn_blocking(move || {
                ferry_kafka::verify::verify(&state, &source, &target)
            })
            .await
            .map_err(|error| Error::definite("kafka.verify", error.to_string()))??;
            let equal = checks.iter().all(|check| check.equal);
            if json {
                crate::report::print_json(
                    &serde_json::json!({ "equal": equal, "partitions": checks }),
                );
            } else {
                for check in &checks {
                    println!(
                        "{} {}[{}]: source {} record(s), target {} record(s){}",
                        if check.equal {
                            "equal    "
                        } else {
                            "DIFFERENT"
                        },
                        check.topic,
                        check.partition,
                        check.source_records,
                        check.target_records,
                        match check.first_difference {
                            Some((source, target)) => format!(
                                "; first difference at source offset {} / target offset {}",
                                source.map_or("-".into(), |offset| offset.to_string()),
                                target.map_or("-".into(), |offset| offset.to_string())
                            ),
                            None => String::new(),
                        }
                    );
                }
                println!(
                    "{}",
                    if equal {
                        "the copy equals the source"
                    } else {
                        "the copy differs"
                    }
                );
            }
            Ok(if equal {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `--listen`: `/api/status` (the move's figures), `/api/phase` (for orchestration:
/// `ready_to_switch` once nothing is left to copy), `/metrics`, `/healthz`.
async fn serve(address: &str, token: Option<String>, progress: Arc<Mutex<Progress>>) -> Result<()> {
    let handler: Handler = Arc::new(move |request: Request| {
        let progress = progress.clone();
        Box::pin(async move {
            let snapshot = progress
                .lock()
                .map(|progress| progress.clone())
                .unwrap_or_default();
            let lag: i64 = snapshot
                .partitions
                .iter()
                .map(|partition| partition.lag())
                .sum();
            let copied: i64 = snapshot
                .partitions
                .iter()
                .map(|partition| partition.copied)
                .sum();
            match (request.method.as_str(), request.path.as_str()) {
                ("GET", "/api/phase") => Response::json(
                    200,
                    &serde_json::json!({
                        "phase": snapshot.phase,
                        "lag": lag,
                        "ready_to_switch": snapshot.phase == "copying" && lag == 0,
                    }),
                ),
                ("GET", "/api/status") => Response::json(
                    200,
                    &serde_json::json!({
                        "phase": snapshot.phase,
                        "copied": copied,
                        "lag": lag,
                        "records_per_second": snapshot.records_per_second,
                        "bytes_per_second": snapshot.bytes_per_second,
                        "error": snapshot.error,
                        "partitions": snapshot.partitions.iter().map(|partition| serde_json::json!({
                            "topic": partition.topic,
                            "partition": partition.partition,
                            "copied": partition.copied,
                            "bytes": partition.bytes,
                            "copied_up_to": partition.settled_source,
                            "source_end": partition.source_end,
                            "lag": partition.lag(),
                            "target_end": partition.next_target,
                        })).collect::<Vec<_>>(),
                    }),
                ),
                ("GET", "/metrics") => {
                    let mut text =
                        String::from("# TYPE ferry_kafka_records_copied_total counter\n");
                    for partition in &snapshot.partitions {
                        text.push_str(&format!(
                            "ferry_kafka_records_copied_total{{topic=\"{}\",partition=\"{}\"}} {}\n",
                            partition.topic, partition.partition, partition.copied
                        ));
                    }
                    text.push_str("# TYPE ferry_kafka_lag gauge\n");
                    for partition in &snapshot.partitions {
                        text.push_str(&format!(
                            "ferry_kafka_lag{{topic=\"{}\",partition=\"{}\"}} {}\n",
                            partition.topic,
                            partition.partition,
                            partition.lag()
                        ));
                    }
                    Response::new(200, "text/plain; version=0.0.4", text)
                }
                _ => Response::text(
                    404,
                    "not found: try /api/status, /api/phase, /metrics, /healthz\n",
                ),
            }
        })
    });
    let bound = ferry_relay::http::server::serve(address, token, false, handler).await?;
    tracing::info!(address = %bound, "control plane listening (/api/status, /api/phase, /metrics, /healthz)");
    Ok(())
}
