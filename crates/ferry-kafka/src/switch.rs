//! `ferry kafka switch`: moves consumer groups to the target at the exact translation of their
//! committed source offsets.
//!
//! For each selected group: it must have no members on either cluster (its consumers are
//! stopped, so its source offsets no longer move); every partition it committed on the source
//! must be copied up to that offset (the switch waits for the running mirror, up to `wait`);
//! then the translations are committed on the target in one request and read back, and
//! recorded in the move's state. A partition the group never committed is left alone (its
//! consumers' `auto.offset.reset` applies on both clusters alike).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_core::{Error, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tracing::warn;

use crate::cluster::{client_error, committed_offsets, groups, read_partition, Cluster};
use crate::map::Untranslatable;
use crate::selection::Patterns;
use crate::state::{State, SwitchRecord};

pub struct SwitchOptions {
    pub source: Cluster,
    pub target: Cluster,
    pub groups: Patterns,
    pub state: std::path::PathBuf,
    /// How long to wait for the mirror to copy up to a group's offsets.
    pub wait: Duration,
}

/// One partition of a switched group.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionSwitch {
    pub topic: String,
    pub partition: i32,
    pub source_offset: i64,
    pub target_offset: i64,
    /// Records the group processed on the source that it will read again on the target.
    pub duplicates: i64,
    /// The first record the group's consumer will read on the target (None: none yet).
    pub next_offset: Option<i64>,
    pub next_key: Option<String>,
    /// The group committed before the first copied record (the move started later).
    pub before_copy: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSwitch {
    pub group: String,
    pub partitions: Vec<PartitionSwitch>,
}

/// The groups to switch: exact names as given, patterns against the source's group list.
pub fn selected_groups(cluster: &Cluster, patterns: &Patterns) -> Result<Vec<String>> {
    let mut names: Vec<String> = patterns.exact_names().map(str::to_string).collect();
    if names.len() < patterns.len() {
        let listed = groups(cluster, None).map_err(|error| {
            error.with_hint(
                "this cluster cannot list its groups: name them in --groups instead of a pattern",
            )
        })?;
        names.extend(
            listed
                .into_iter()
                .map(|group| group.name)
                .filter(|name| patterns.matches(name) && !name.starts_with("ferry-")),
        );
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Refuses a group that still has members on `cluster` (when the cluster can tell).
fn require_idle(cluster: &Cluster, group: &str, side: &str) -> Result<()> {
    match groups(cluster, Some(group)) {
        Ok(found) => {
            if let Some(busy) = found
                .iter()
                .find(|info| info.name == group && info.members > 0)
            {
                return Err(Error::operator(
                    "kafka.group_active",
                    format!(
                        "group {group} still has {} member(s) on the {side} ({})",
                        busy.members, cluster.bootstrap
                    ),
                )
                .with_hint("stop the group's consumers on both clusters first, then switch; start them against the target afterwards"));
            }
            Ok(())
        }
        Err(error) => {
            warn!(group, side, error = %error, "cannot describe the group; make sure its consumers are stopped");
            Ok(())
        }
    }
}

/// Whether the source holds a record in `[from, until)` of a partition (markers and gaps are
/// not records).
fn has_records_between(
    source: &Cluster,
    topic: &str,
    partition: i32,
    from: i64,
    until: i64,
) -> Result<bool> {
    // Uncommitted records count too: an open transaction's records may still be copied later,
    // behind the translated position, and a group that read them uncommitted would read them
    // again. Aborted ones clear once the move's position passes them.
    let consumer = source.consumer("ferry-kafka-inspect", false, true)?;
    let mut found = false;
    read_partition(
        &consumer,
        &source.bootstrap,
        topic,
        partition,
        from,
        Some(until),
        |_| found = true,
    )?;
    Ok(found)
}

/// The first record at or after `offset` on the target: its offset and key.
fn first_record(
    target: &Cluster,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<(i64, Option<String>)>> {
    let consumer = target.consumer("ferry-kafka-inspect", false, true)?;
    let mut first = None;
    read_partition(
        &consumer,
        &target.bootstrap,
        topic,
        partition,
        offset,
        Some(offset + 1),
        |message| {
            if first.is_none() {
                let key = message
                    .key()
                    .map(|key| String::from_utf8_lossy(&key[..key.len().min(200)]).into_owned());
                first = Some((message.offset(), key));
            }
        },
    )?;
    Ok(first)
}

pub fn switch(options: &SwitchOptions) -> Result<Vec<GroupSwitch>> {
    let mut state = State::open_existing(&options.state)?;
    let saved: Vec<(String, i32)> = state.partitions()?.into_keys().collect();
    // Every partition the moved topics have now on the source, including ones the move has not
    // taken up yet: a group's offsets there must wait for the move, never be left out.
    let mut moved = saved.clone();
    {
        let consumer = options
            .source
            .consumer("ferry-kafka-inspect", true, false)?;
        let counts = crate::cluster::topics(&consumer, &options.source.bootstrap)?;
        let topics: std::collections::BTreeSet<&String> =
            saved.iter().map(|(topic, _)| topic).collect();
        for topic in topics {
            for partition in 0..counts.get(topic).copied().unwrap_or(0) {
                let key = (topic.clone(), partition);
                if !moved.contains(&key) {
                    moved.push(key);
                }
            }
        }
    }
    if moved.is_empty() {
        return Err(
            Error::operator("kafka.nothing_moved", "the move has no partitions yet")
                .with_hint("start `ferry kafka move` and let it set up the topics first"),
        );
    }
    let names = selected_groups(&options.source, &options.groups)?;
    if names.is_empty() {
        return Err(Error::operator(
            "kafka.no_groups",
            "no consumer group on the source matches --groups",
        )
        .with_hint("name the groups, e.g. --groups 'billing,audit'"));
    }
    // Every selected group is checked before any is switched: all stopped, each named group
    // known. A group matched by a pattern that never committed on the moved topics is left out.
    let named: Vec<&str> = options.groups.exact_names().collect();
    let mut ready = Vec::new();
    for group in names {
        require_idle(&options.source, &group, "source")?;
        require_idle(&options.target, &group, "target")?;
        let committed = committed_offsets(&options.source, &group, &moved)?;
        let committed: BTreeMap<(String, i32), i64> = committed
            .into_iter()
            .filter_map(|(key, offset)| offset.map(|offset| (key, offset)))
            .collect();
        if committed.is_empty() {
            if !named.contains(&group.as_str()) {
                continue;
            }
            return Err(Error::operator(
                "kafka.group_unknown",
                format!(
                    "group {group} has no committed offsets on the source for the moved topics"
                ),
            )
            .with_hint("check the group's name; a group that never committed needs no switch"));
        }
        ready.push((group, committed));
    }
    if ready.is_empty() {
        return Err(Error::operator(
            "kafka.no_groups",
            "no group matching --groups has committed offsets on the moved topics",
        )
        .with_hint("name the groups, e.g. --groups 'billing,audit'"));
    }
    let mut switched = Vec::new();
    for (group, committed) in ready {
        let deadline = Instant::now() + options.wait;
        let mut translated = BTreeMap::new();
        loop {
            let mut waiting = Vec::new();
            for ((topic, partition), offset) in &committed {
                if translated.contains_key(&(topic.clone(), *partition)) {
                    continue;
                }
                let Some(mut map) = state.map(topic, *partition)? else {
                    waiting.push(format!("{topic}[{partition}] not taken up by the move yet"));
                    continue;
                };
                let translation = match map.translate(*offset) {
                    Ok(translation) => translation,
                    Err(Untranslatable::NotCopiedYet { settled }) => {
                        if has_records_between(
                            &options.source,
                            topic,
                            *partition,
                            settled,
                            *offset,
                        )? {
                            waiting.push(format!(
                                "{topic}[{partition}] copied to {settled}, group at {offset}"
                            ));
                            continue;
                        }
                        // Only markers or gaps lie between: everything before is copied.
                        map.settled_source = *offset;
                        map.translate(*offset).map_err(|_| {
                            Error::definite("kafka.translate", "translation failed after settling")
                        })?
                    }
                };
                translated.insert((topic.clone(), *partition), (*offset, translation));
            }
            if waiting.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::transient(
                    "kafka.not_copied_yet",
                    format!(
                        "the move has not copied up to group {group}'s position yet: {}",
                        waiting.join(", ")
                    ),
                )
                .with_hint(
                    "keep `ferry kafka move` running and switch again (or give --wait more time)",
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The group must not have moved meanwhile (a consumer started during the wait).
        require_idle(&options.source, &group, "source")?;
        let again = committed_offsets(&options.source, &group, &moved)?;
        for ((topic, partition), (offset, _)) in &translated {
            let now = again.get(&(topic.clone(), *partition)).copied().flatten();
            if now != Some(*offset) {
                return Err(Error::operator(
                    "kafka.group_moved",
                    format!("group {group} committed {now:?} on {topic}[{partition}] while being switched (it was at {offset})"),
                )
                .with_hint("stop every consumer of the group, then switch again"));
            }
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), (_, translation)) in &translated {
            list.add_partition_offset(topic, *partition, Offset::Offset(translation.target_offset))
                .map_err(|error| client_error(&options.target.bootstrap, "committing", error))?;
        }
        commit_with_retries(&options.target, &group, &list)?;
        let check = committed_offsets(
            &options.target,
            &group,
            &translated.keys().cloned().collect::<Vec<_>>(),
        )?;
        for ((topic, partition), (_, translation)) in &translated {
            let found = check.get(&(topic.clone(), *partition)).copied().flatten();
            if found != Some(translation.target_offset) {
                return Err(Error::transient(
                    "kafka.commit_check",
                    format!(
                        "group {group} on the target reads {found:?} for {topic}[{partition}] after committing {}",
                        translation.target_offset
                    ),
                )
                .with_hint("a consumer of the group may have started against the target: stop it and switch again"));
            }
        }
        let at_ms = ferry_core::calendar::unix_millis_now();
        let mut records = Vec::new();
        let mut partitions = Vec::new();
        for ((topic, partition), (source_offset, translation)) in translated {
            let next = first_record(
                &options.target,
                &topic,
                partition,
                translation.target_offset,
            )
            .unwrap_or(None);
            records.push(SwitchRecord {
                group: group.clone(),
                topic: topic.clone(),
                partition,
                source_offset,
                target_offset: translation.target_offset,
                duplicates: translation.duplicates,
                at_ms,
            });
            partitions.push(PartitionSwitch {
                topic,
                partition,
                source_offset,
                target_offset: translation.target_offset,
                duplicates: translation.duplicates,
                next_offset: next.as_ref().map(|(offset, _)| *offset),
                next_key: next.and_then(|(_, key)| key),
                before_copy: translation.first_copied_source,
            });
        }
        state.record_switch(&records)?;
        switched.push(GroupSwitch { group, partitions });
    }
    Ok(switched)
}

/// Commits `list` for `group` on `cluster`, retrying a few times (a broker may still hold a
/// stopped member's session for a moment).
fn commit_with_retries(cluster: &Cluster, group: &str, list: &TopicPartitionList) -> Result<()> {
    let consumer = cluster.consumer(group, true, false)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.commit(list, CommitMode::Sync) {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() < deadline => {
                warn!(group, error = %error, "committing on the target failed; trying again");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => {
                return Err(client_error(
                    &cluster.bootstrap,
                    &format!("committing group {group}'s offsets"),
                    error,
                ))
            }
        }
    }
}
