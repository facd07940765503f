//! `ferry kafka status`: per partition what is copied and the lag; per group its committed
//! source offsets and their exact translation (or why there is none yet); groups switched.

use serde::Serialize;

use ferry_core::Result;

use crate::cluster::{committed_offsets, Cluster};
use crate::map::Untranslatable;
use crate::selection::Patterns;
use crate::state::{State, SwitchRecord};
use crate::switch::selected_groups;

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub copied: i64,
    pub bytes: i64,
    /// Every source record before it is on the target.
    pub copied_up_to: i64,
    pub source_end: i64,
    pub lag: i64,
    pub target_end: i64,
    pub updated_ms: i64,
    /// The copy's rate when the move last saved (0 when it is idle or stopped).
    pub records_per_second: f64,
    pub bytes_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: i32,
    pub source_offset: i64,
    /// None until the move copied up to the group's offset.
    pub target_offset: Option<i64>,
    pub duplicates: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub partitions: Vec<GroupPartition>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub partitions: Vec<PartitionStatus>,
    pub groups: Vec<GroupStatus>,
    pub switched: Vec<SwitchRecord>,
    pub copied: i64,
    pub lag: i64,
}

/// Reads the state (and, for `groups`, the source's committed offsets).
pub fn status(
    state_path: &std::path::Path,
    source: &Cluster,
    groups: Option<&Patterns>,
) -> Result<Status> {
    let state = State::open_existing(state_path)?;
    let saved = state.partitions()?;
    let partitions: Vec<PartitionStatus> = saved
        .values()
        .map(|partition| PartitionStatus {
            topic: partition.topic.clone(),
            partition: partition.partition,
            copied: partition.copied,
            bytes: partition.bytes,
            copied_up_to: partition.settled_source,
            source_end: partition.source_end,
            lag: partition.lag(),
            target_end: partition.next_target,
            updated_ms: partition.updated_ms,
            records_per_second: partition.records_per_second,
            bytes_per_second: partition.bytes_per_second,
        })
        .collect();
    let mut group_status = Vec::new();
    if let Some(patterns) = groups {
        let keys: Vec<(String, i32)> = saved.keys().cloned().collect();
        for group in selected_groups(source, patterns)? {
            let committed = committed_offsets(source, &group, &keys)?;
            let mut rows = Vec::new();
            for ((topic, partition), offset) in committed {
                let Some(offset) = offset else { continue };
                let Some(map) = state.map(&topic, partition)? else {
                    continue;
                };
                let (target_offset, duplicates) = match map.translate(offset) {
                    Ok(translation) => (Some(translation.target_offset), translation.duplicates),
                    Err(Untranslatable::NotCopiedYet { .. }) => (None, 0),
                };
                rows.push(GroupPartition {
                    topic,
                    partition,
                    source_offset: offset,
                    target_offset,
                    duplicates,
                });
            }
            group_status.push(GroupStatus {
                group,
                partitions: rows,
            });
        }
    }
    Ok(Status {
        copied: partitions.iter().map(|partition| partition.copied).sum(),
        lag: partitions.iter().map(|partition| partition.lag).sum(),
        partitions,
        groups: group_status,
        switched: state.switches()?,
    })
}
