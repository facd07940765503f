//! `ferry kafka check`: every problem with a move, found at once, before it starts: both
//! clusters reachable, the selected topics with their partitions and configs, what the target
//! already holds, and the groups with their state.

use serde::Serialize;

use rdkafka::consumer::Consumer;

use crate::cluster::{committed_offsets, groups, topics, Cluster, REQUEST_TIMEOUT};
use crate::selection::Patterns;
use crate::state::State;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
    Info,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub level: Level,
    pub subject: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

fn finding(
    level: Level,
    subject: impl Into<String>,
    message: impl Into<String>,
    hint: Option<&str>,
) -> Finding {
    Finding {
        level,
        subject: subject.into(),
        message: message.into(),
        hint: hint.map(str::to_string),
    }
}

pub struct CheckOptions<'a> {
    pub source: &'a Cluster,
    pub target: &'a Cluster,
    pub topics: &'a Patterns,
    pub groups: Option<&'a Patterns>,
    /// The move's state, when one exists (a resumed move may find its own records).
    pub state: Option<&'a std::path::Path>,
}

pub async fn check(options: CheckOptions<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let reach = |cluster: &Cluster, side: &str, findings: &mut Vec<Finding>| {
        let consumer = match cluster.consumer("ferry-kafka-inspect", true, true) {
            Ok(consumer) => consumer,
            Err(error) => {
                findings.push(finding(Level::Error, side, error.to_string(), error.hint()));
                return None;
            }
        };
        match topics(&consumer, &cluster.bootstrap) {
            Ok(found) => Some((consumer, found)),
            Err(error) => {
                findings.push(finding(
                    Level::Error,
                    side,
                    format!("cannot reach {}: {}", cluster.bootstrap, error.message()),
                    Some("check the address, the network and the security settings (?security.protocol=...)"),
                ));
                None
            }
        }
    };
    let source = reach(options.source, "source", &mut findings);
    let target = reach(options.target, "target", &mut findings);
    let (Some((source_consumer, source_topics)), Some((target_consumer, target_topics))) =
        (source, target)
    else {
        return findings;
    };
    for missing in options
        .topics
        .exact_names()
        .filter(|name| !source_topics.contains_key(*name))
    {
        findings.push(finding(
            Level::Error,
            format!("topic {missing}"),
            "not on the source",
            Some("check the name in --topics"),
        ));
    }
    let selected: Vec<(&String, &i32)> = source_topics
        .iter()
        .filter(|(name, _)| options.topics.matches(name))
        .collect();
    if selected.is_empty() {
        findings.push(finding(
            Level::Error,
            "topics",
            "no source topic matches --topics",
            Some("list the topics with their names or * patterns"),
        ));
    }
    let saved = options
        .state
        .filter(|path| path.exists())
        .and_then(|path| State::open_existing(path).ok())
        .and_then(|state| state.partitions().ok())
        .unwrap_or_default();
    let source_admin = options.source.admin().ok();
    let names: Vec<String> = selected.iter().map(|(name, _)| (*name).clone()).collect();
    let configs = match &source_admin {
        Some(admin) => crate::topics::configs(admin, &names).await,
        None => Default::default(),
    };
    for (name, partitions) in &selected {
        let set = configs.get(*name).map(|set| {
            set.iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(", ")
        });
        findings.push(finding(
            Level::Info,
            format!("topic {name}"),
            format!(
                "{partitions} partition(s){}",
                set.filter(|set| !set.is_empty())
                    .map(|set| format!("; configs {set}"))
                    .unwrap_or_default()
            ),
            None,
        ));
        match target_topics.get(*name) {
            None => findings.push(finding(
                Level::Info,
                format!("topic {name}"),
                "not on the target yet: `move` creates it with the same partitions and configs",
                None,
            )),
            Some(count) if count < partitions => findings.push(finding(
                Level::Warning,
                format!("topic {name}"),
                format!("the target has {count} partition(s), the source {partitions}: `move` adds the missing ones"),
                None,
            )),
            Some(_) => {
                for partition in 0..**partitions {
                    if saved.contains_key(&((*name).clone(), partition)) {
                        continue;
                    }
                    if let Ok((low, high)) = target_consumer.fetch_watermarks(name, partition, REQUEST_TIMEOUT) {
                        if high > low {
                            findings.push(finding(
                                Level::Error,
                                format!("topic {name}[{partition}]"),
                                format!("the target partition already holds {} record(s) ferry did not copy", high - low),
                                Some("move into empty topics: delete the target topic or choose another target"),
                            ));
                        }
                    }
                }
            }
        }
        // The source partitions must be readable.
        if let Err(error) = source_consumer.fetch_watermarks(name, 0, REQUEST_TIMEOUT) {
            findings.push(finding(
                Level::Error,
                format!("topic {name}"),
                format!("cannot read its offsets on the source: {error}"),
                Some("grant ferry READ and DESCRIBE on the source topics"),
            ));
        }
    }
    if let Some(patterns) = options.groups {
        match crate::switch::selected_groups(options.source, patterns) {
            Ok(names) if names.is_empty() => findings.push(finding(
                Level::Warning,
                "groups",
                "no consumer group on the source matches --groups",
                None,
            )),
            Ok(names) => {
                let partitions: Vec<(String, i32)> = selected
                    .iter()
                    .flat_map(|(name, count)| {
                        (0..**count).map(move |partition| ((*name).clone(), partition))
                    })
                    .collect();
                for group in names {
                    let state = groups(options.source, Some(&group))
                        .ok()
                        .and_then(|found| found.into_iter().find(|info| info.name == group))
                        .map(|info| format!("{}, {} member(s)", info.state, info.members))
                        .unwrap_or_else(|| "state unknown".to_string());
                    let committed = committed_offsets(options.source, &group, &partitions)
                        .map(|found| found.values().filter(|offset| offset.is_some()).count())
                        .unwrap_or(0);
                    findings.push(finding(
                        Level::Info,
                        format!("group {group}"),
                        format!("{state}; committed offsets on {committed} selected partition(s)"),
                        None,
                    ));
                }
            }
            Err(error) => findings.push(finding(
                Level::Warning,
                "groups",
                error.message().to_string(),
                error.hint(),
            )),
        }
    }
    findings
}
