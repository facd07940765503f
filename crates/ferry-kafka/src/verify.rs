//! `ferry kafka verify`: per partition, the records ferry copied compared on both clusters: the
//! count and a digest of key, value, headers and creation time, in order, with the first
//! difference named by its offsets.
//!
//! The range compared is what the move's state says is copied when verify starts: source
//! records from the first copied one (or the first the source still has) up to the settled
//! position, against the target records at the offsets the map gives them. Target records ferry
//! did not write are not compared.

use serde::Serialize;
use sha2::{Digest, Sha256};

use ferry_core::Result;
use rdkafka::message::Message;

use crate::cluster::{read_partition, Cluster};
use crate::record::{fingerprint, Fingerprint};
use crate::state::State;

#[derive(Debug, Clone, Serialize)]
pub struct PartitionCheck {
    pub topic: String,
    pub partition: i32,
    pub source_records: u64,
    pub target_records: u64,
    pub source_digest: String,
    pub target_digest: String,
    pub equal: bool,
    /// The first difference: source offset and target offset (None when equal).
    pub first_difference: Option<(Option<i64>, Option<i64>)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn absorb(hasher: &mut Sha256, record: &Fingerprint) {
    hasher.update(record.digest);
    hasher.update(record.created_ms.unwrap_or(i64::MIN).to_be_bytes());
}

pub fn verify(
    state_path: &std::path::Path,
    source: &Cluster,
    target: &Cluster,
) -> Result<Vec<PartitionCheck>> {
    let state = State::open_existing(state_path)?;
    let source_consumer = source.consumer("ferry-kafka-inspect", true, true)?;
    let target_consumer = target.consumer("ferry-kafka-inspect", false, true)?;
    let mut checks = Vec::new();
    for (topic, partition) in state.partitions()?.into_keys() {
        let Some(map) = state.map(&topic, partition)? else {
            continue;
        };
        let Some(first) = map.runs.first() else {
            checks.push(PartitionCheck {
                topic,
                partition,
                source_records: 0,
                target_records: 0,
                source_digest: hex(&Sha256::digest([])),
                target_digest: hex(&Sha256::digest([])),
                equal: true,
                first_difference: None,
            });
            continue;
        };
        let mut source_records: Vec<(i64, Fingerprint)> = Vec::new();
        read_partition(
            &source_consumer,
            &source.bootstrap,
            &topic,
            partition,
            first.source_start,
            Some(map.settled_source),
            |message| {
                source_records.push((message.offset(), fingerprint(message)));
            },
        )?;
        // Records retention removed from the source are not compared.
        let source_start = source_records
            .first()
            .map_or(map.settled_source, |(offset, _)| *offset);
        let mut target_records: Vec<(i64, Fingerprint)> = Vec::new();
        read_partition(
            &target_consumer,
            &target.bootstrap,
            &topic,
            partition,
            first.target_start,
            Some(map.copied_target_end()),
            |message| {
                if map
                    .source_of(message.offset())
                    .is_some_and(|source| source >= source_start)
                {
                    target_records.push((message.offset(), fingerprint(message)));
                }
            },
        )?;
        let mut source_hasher = Sha256::new();
        let mut target_hasher = Sha256::new();
        let mut first_difference = None;
        for index in 0..source_records.len().max(target_records.len()) {
            let left = source_records.get(index);
            let right = target_records.get(index);
            if let Some((_, record)) = left {
                absorb(&mut source_hasher, record);
            }
            if let Some((_, record)) = right {
                absorb(&mut target_hasher, record);
            }
            let same = match (left, right) {
                (Some((source_offset, left)), Some((target_offset, right))) => {
                    right.is_copy_of(left) && map.source_of(*target_offset) == Some(*source_offset)
                }
                _ => false,
            };
            if !same && first_difference.is_none() {
                first_difference = Some((
                    left.map(|(offset, _)| *offset),
                    right.map(|(offset, _)| *offset),
                ));
            }
        }
        checks.push(PartitionCheck {
            topic,
            partition,
            source_records: source_records.len() as u64,
            target_records: target_records.len() as u64,
            source_digest: hex(&source_hasher.finalize()),
            target_digest: hex(&target_hasher.finalize()),
            equal: first_difference.is_none(),
            first_difference,
        });
    }
    Ok(checks)
}
