//! The Kafka feed: topics into the delivery log (librdkafka, behind the `kafka` feature).
//!
//! - Partitions are assigned explicitly (no group membership, so no rebalance can move a
//!   partition between reading and storing). Each starts at the next offset the log holds for
//!   it (its checkpoint `kafka:TOPIC:PARTITION`, stored in the same transaction as the messages
//!   read before it); a partition the log has never seen starts at the group's committed offset,
//!   else at the earliest (or, with `start = "latest"`, the latest) offset.
//! - Only committed records are read (`isolation.level = read_committed`): records of aborted
//!   transactions are skipped, and offset gaps (compaction, transaction markers) are fine since
//!   the checkpoint is the offset after the last record read.
//! - The group's committed offset follows delivery, not reading: per partition, the lowest
//!   offset still pending in any route (or the checkpoint when none is): a committed offset
//!   means every record before it has an outcome in the log. Kafka tools then show the relay's
//!   real lag. Commits are advisory (the log is the truth); a failed commit is tried again.
//! - Topics and partitions that appear later are picked up within [`DISCOVERY_INTERVAL`].
//! - A record's `webhook-id` derives from the group, route, topic, partition and offset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{Error, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Format, Route};
use crate::intake::Intake;
use crate::log::NewMessage;
use crate::signature::{base64, message_id};
use ferry_core::calendar::unix_millis_now;

/// How often new topics and partitions are looked for.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);

/// How often the consumer lag per partition is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// How often the group's offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

const FLUSH_MESSAGES: usize = 5_000;
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a partition the log has never seen starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

/// How to reach the cluster.
#[derive(Clone)]
pub struct KafkaInput {
    /// `host:port,host:port`.
    pub bootstrap: String,
    /// librdkafka properties (`security.protocol`, `sasl.*`, ...).
    pub options: Vec<(String, String)>,
    pub start: Start,
}

impl KafkaInput {
    /// From `kafka://host:port,host:port`.
    pub fn parse(url: &str, options: Vec<(String, String)>, start: Start) -> Result<KafkaInput> {
        let bootstrap = url
            .strip_prefix("kafka://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .ok_or_else(|| {
                Error::operator(
                    "config.url",
                    format!("'{url}' is not kafka://host:port[,host:port]"),
                )
                .with_hint("list the bootstrap brokers: kafka://broker1:9092,broker2:9092")
            })?;
        Ok(KafkaInput {
            bootstrap: bootstrap.to_string(),
            options,
            start,
        })
    }

    fn client_config(&self, group: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            // A stored offset the broker no longer has (retention, a recreated topic): go to
            // the earliest record it still has rather than skip to the end.
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false")
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (name, value) in &self.options {
            config.set(name, value);
        }
        config
    }
}

fn kafka_error(what: &str, error: KafkaError) -> Error {
    Error::transient("kafka.client", format!("{what}: {error}"))
        .with_hint("check that the brokers are reachable and the topics exist")
}

/// The consumer group of a relay.
pub fn group_of(relay: &str) -> String {
    format!("ferry-relay-{relay}")
}

/// Whether `route` reads `topic` (one of its patterns matches).
fn reads_topic(route: &Route, topic: &str) -> bool {
    route
        .patterns
        .iter()
        .any(|pattern| glob_matches(pattern, topic))
}

pub use ferry_kafka::selection::glob_matches;

fn checkpoint_name(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

/// A record as the log stores it for `route` (a payload the route's format cannot take is a
/// failure at once, logged, never a crash).
pub fn record_message(
    relay: &str,
    route: &Route,
    decoder: &Decoder,
    message: &BorrowedMessage<'_>,
) -> NewMessage {
    let topic = message.topic();
    let partition = message.partition();
    let offset = message.offset();
    let key = message.key().map(|key| match std::str::from_utf8(key) {
        Ok(text) => text.to_string(),
        Err(_) => format!("base64:{}", base64(key)),
    });
    let (payload, refused) = decoder.encode(message.payload());
    NewMessage {
        id: message_id(&[
            &group_of(relay),
            &route.name,
            topic,
            &partition.to_string(),
            &offset.to_string(),
        ]),
        route: route.name.clone(),
        topic: topic.to_string(),
        partition: Some(i64::from(partition)),
        offset: Some(offset),
        position: None,
        key,
        payload,
        created_at_ms: message
            .timestamp()
            .to_millis()
            .unwrap_or_else(unix_millis_now),
        old_key: None,
        barrier: false,
        refused,
    }
}

/// How a route turns a record's value into a request body.
pub enum Decoder {
    /// JSON, sent as is.
    Json,
    /// Any bytes, as a JSON string of their base64.
    Raw,
    /// Protobuf, as its canonical JSON mapping.
    Protobuf(prost_reflect::MessageDescriptor),
}

impl Decoder {
    /// The decoder of a route's `format` (reading its descriptor set for Protobuf).
    pub fn for_route(route: &Route) -> Result<Decoder> {
        match (route.format, &route.protobuf) {
            (Format::Json, _) => Ok(Decoder::Json),
            (Format::Raw, _) => Ok(Decoder::Raw),
            (Format::Protobuf, Some((path, name))) => {
                let at = format!("route '{}'", route.name);
                let bytes = std::fs::read(path).map_err(|error| {
                    Error::operator(
                        "config.protobuf",
                        format!("{at}: cannot read {}: {error}", path.display()),
                    )
                })?;
                let pool = prost_reflect::DescriptorPool::decode(bytes.as_slice()).map_err(|error| {
                    Error::operator("config.protobuf", format!("{at}: {} is not a FileDescriptorSet: {error}", path.display()))
                        .with_hint("make it with protoc --include_imports --descriptor_set_out=FILE your.proto")
                })?;
                pool.get_message_by_name(name)
                    .map(Decoder::Protobuf)
                    .ok_or_else(|| {
                        let known: Vec<String> = pool
                            .all_messages()
                            .map(|message| message.full_name().to_string())
                            .take(20)
                            .collect();
                        Error::operator(
                            "config.protobuf",
                            format!(
                                "{at}: no message {name} in {} (it has: {})",
                                path.display(),
                                known.join(", ")
                            ),
                        )
                        .with_hint("give the message's full name, package included: shop.Order")
                    })
            }
            (Format::Protobuf, None) => Err(Error::operator(
                "config.protobuf",
                format!(
                    "route '{}': format protobuf without a descriptor set",
                    route.name
                ),
            )),
        }
    }

    /// The request body for a record's value, or why it cannot be sent.
    pub fn encode(&self, value: Option<&[u8]>) -> (Vec<u8>, Option<String>) {
        let Some(bytes) = value else {
            return (b"null".to_vec(), None);
        };
        match self {
            Decoder::Json => match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => (bytes.to_vec(), None),
                Err(error) => (
                    bytes.to_vec(),
                    Some(format!(
                        "the record is not JSON ({error}); use format = \"raw\" for other payloads"
                    )),
                ),
            },
            Decoder::Raw => (format!("\"{}\"", base64(bytes)).into_bytes(), None),
            Decoder::Protobuf(descriptor) => {
                match prost_reflect::DynamicMessage::decode(descriptor.clone(), bytes) {
                    Ok(message) => match serde_json::to_vec(&message) {
                        Ok(json) => (json, None),
                        Err(error) => (
                            bytes.to_vec(),
                            Some(format!(
                                "the {} record has no JSON form: {error}",
                                descriptor.full_name()
                            )),
                        ),
                    },
                    Err(error) => (
                        bytes.to_vec(),
                        Some(format!(
                            "the record is not a {} ({error})",
                            descriptor.full_name()
                        )),
                    ),
                }
            }
        }
    }
}

/// The routes with their decoders.
fn decoders(routes: &[Arc<Route>]) -> Result<Vec<(Arc<Route>, Arc<Decoder>)>> {
    routes
        .iter()
        .map(|route| Ok((route.clone(), Arc::new(Decoder::for_route(route)?))))
        .collect()
}

/// Reads the routes' topics into the log until shutdown.
pub struct KafkaFeed {
    pub relay: String,
    pub routes: Vec<Arc<Route>>,
    pub input: KafkaInput,
    pub intake: Intake,
}

impl KafkaFeed {
    fn read_by_a_route(&self, topic: &str) -> bool {
        self.routes.iter().any(|route| reads_topic(route, topic))
    }

    /// The partitions of every topic some route reads.
    async fn discover(&self, consumer: &Arc<StreamConsumer>) -> Result<BTreeSet<(String, i32)>> {
        let consumer = consumer.clone();
        let metadata =
            tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, METADATA_TIMEOUT))
                .await
                .map_err(|error| Error::transient("kafka.client", error.to_string()))?
                .map_err(|error| kafka_error("reading the cluster's topics", error))?;
        let mut partitions = BTreeSet::new();
        for topic in metadata.topics() {
            if topic.name().starts_with("__") || !self.read_by_a_route(topic.name()) {
                continue;
            }
            for partition in topic.partitions() {
                partitions.insert((topic.name().to_string(), partition.id()));
            }
        }
        Ok(partitions)
    }

    /// Where each new partition starts.
    async fn start_offsets(
        &self,
        consumer: &Arc<StreamConsumer>,
        partitions: &BTreeSet<(String, i32)>,
    ) -> Result<TopicPartitionList> {
        let stored: BTreeMap<String, i64> = self
            .intake
            .log
            .checkpoints("kafka:")
            .await?
            .into_iter()
            .filter_map(|(name, offset)| offset.parse().ok().map(|offset| (name, offset)))
            .collect();
        let (mut list, unknown) = split_by_checkpoint(partitions, &stored)?;
        if unknown.count() > 0 {
            let reader = consumer.clone();
            let committed = tokio::task::spawn_blocking(move || {
                reader.committed_offsets(unknown, METADATA_TIMEOUT)
            })
            .await
            .map_err(|error| Error::transient("kafka.client", error.to_string()))?
            .map_err(|error| kafka_error("reading the group's committed offsets", error))?;
            // `start` applies to the partitions of the first run only: a partition that
            // appears later starts at its beginning, so nothing written to it is skipped.
            let first_run = stored.is_empty();
            let mut resolved = Vec::new();
            // Read out first: rdkafka's list elements are not `Send`, and no await may hold one.
            let committed: Vec<(String, i32, Option<i64>)> = committed
                .elements()
                .iter()
                .map(|element| {
                    let offset = match element.offset() {
                        Offset::Offset(offset) if offset >= 0 => Some(offset),
                        _ => None,
                    };
                    (element.topic().to_string(), element.partition(), offset)
                })
                .collect();
            for (topic, partition, committed) in committed {
                let reader = consumer.clone();
                let latest = first_run && self.input.start == Start::Latest;
                let watermark_topic = topic.clone();
                let offset = match committed {
                    Some(offset) => offset,
                    None => {
                        let (low, high) = tokio::task::spawn_blocking(move || {
                            reader.fetch_watermarks(&watermark_topic, partition, METADATA_TIMEOUT)
                        })
                        .await
                        .map_err(|error| Error::transient("kafka.client", error.to_string()))?
                        .map_err(|error| kafka_error("reading a partition's offsets", error))?;
                        if latest {
                            high
                        } else {
                            low
                        }
                    }
                };
                list.add_partition_offset(&topic, partition, Offset::Offset(offset))
                    .map_err(|error| kafka_error("assigning", error))?;
                resolved.push((checkpoint_name(&topic, partition), offset.to_string()));
            }
            // Stored at once: a restart before any record arrives starts at the same place.
            self.intake.store(Vec::new(), resolved).await?;
        }
        Ok(list)
    }

    /// Runs until shutdown (Ok) or a failure (the caller retries transient ones).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let decoders = decoders(&self.routes)?;
        let group = group_of(&self.relay);
        let consumer: Arc<StreamConsumer> =
            Arc::new(self.input.client_config(&group).create().map_err(|error| {
                Error::operator(
                    "kafka.config",
                    format!("cannot set up the Kafka client: {error}"),
                )
                .with_hint("check [source] options")
            })?);
        let mut assigned: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut last_discovery = Instant::now() - DISCOVERY_INTERVAL;
        let mut last_commit = Instant::now();
        let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut last_lag = Instant::now() - LAG_INTERVAL;
        // The next offset of every partition read since the last flush.
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut buffered: Vec<NewMessage> = Vec::new();
        let mut buffered_since = Instant::now();
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if last_discovery.elapsed() >= DISCOVERY_INTERVAL {
                last_discovery = Instant::now();
                let found = self.discover(&consumer).await?;
                let new: BTreeSet<(String, i32)> = found.difference(&assigned).cloned().collect();
                if !new.is_empty() {
                    let list = self.start_offsets(&consumer, &new).await?;
                    consumer
                        .incremental_assign(&list)
                        .map_err(|error| kafka_error("assigning partitions", error))?;
                    info!(partitions = new.len(), topics = ?new.iter().map(|(topic, _)| topic.as_str()).collect::<BTreeSet<_>>(), "reading Kafka partitions");
                    assigned.extend(new);
                }
                if assigned.is_empty() {
                    warn!(group = %group, "no topic of the routes exists yet; looking again in 10 s");
                }
            }
            tokio::select! {
                received = consumer.recv() => {
                    let message = received.map_err(|error| kafka_error("reading", error))?;
                    let key = (message.topic().to_string(), message.partition());
                    for (route, decoder) in decoders.iter().filter(|(route, _)| reads_topic(route, message.topic())) {
                        buffered.push(record_message(&self.relay, route, decoder, &message));
                    }
                    next_offsets.insert(key, message.offset() + 1);
                    if buffered.len() >= FLUSH_MESSAGES {
                        self.flush(&mut buffered, &mut next_offsets).await?;
                        buffered_since = Instant::now();
                    }
                }
                _ = tick.tick() => {
                    if (!buffered.is_empty() || !next_offsets.is_empty()) && buffered_since.elapsed() >= FLUSH_INTERVAL {
                        self.flush(&mut buffered, &mut next_offsets).await?;
                        buffered_since = Instant::now();
                    }
                    if last_commit.elapsed() >= COMMIT_INTERVAL {
                        last_commit = Instant::now();
                        self.commit_progress(&consumer, &assigned, &mut committed, &mut last_lag).await;
                    }
                }
                _ = shutdown.changed() => {
                    // Stored even past the pending limit: the workers have stopped.
                    self.store(&mut buffered, &mut next_offsets).await?;
                    self.commit_progress(&consumer, &assigned, &mut committed, &mut last_lag).await;
                    return Ok(());
                }
            }
        }
    }

    async fn flush(
        &self,
        buffered: &mut Vec<NewMessage>,
        next_offsets: &mut BTreeMap<(String, i32), i64>,
    ) -> Result<()> {
        self.intake.wait_for_room().await?;
        self.store(buffered, next_offsets).await
    }

    /// Stores the messages with the next offset of every partition read.
    async fn store(
        &self,
        buffered: &mut Vec<NewMessage>,
        next_offsets: &mut BTreeMap<(String, i32), i64>,
    ) -> Result<()> {
        let checkpoints = std::mem::take(next_offsets)
            .into_iter()
            .map(|((topic, partition), offset)| {
                (checkpoint_name(&topic, partition), offset.to_string())
            })
            .collect();
        self.intake
            .store(std::mem::take(buffered), checkpoints)
            .await
    }

    /// Commits, per partition, the offset before which every record has an outcome.
    async fn commit_progress(
        &self,
        consumer: &Arc<StreamConsumer>,
        assigned: &BTreeSet<(String, i32)>,
        committed: &mut BTreeMap<(String, i32), i64>,
        last_lag: &mut Instant,
    ) {
        let (Ok(pending), Ok(stored)) = (
            self.intake
                .log
                .lowest_pending_offsets(assigned.iter().cloned().collect())
                .await,
            self.intake.log.checkpoints("kafka:").await,
        ) else {
            return;
        };
        let pending: BTreeMap<(String, i32), i64> = pending
            .into_iter()
            .map(|(topic, partition, offset)| ((topic, partition), offset))
            .collect();
        let stored: BTreeMap<String, i64> = stored
            .into_iter()
            .filter_map(|(name, offset)| offset.parse().ok().map(|offset| (name, offset)))
            .collect();
        let mut list = TopicPartitionList::new();
        let mut changed = Vec::new();
        let mut outcomes_up_to = BTreeMap::new();
        for (topic, partition) in assigned {
            let key = (topic.clone(), *partition);
            let Some(read_up_to) = stored.get(&checkpoint_name(topic, *partition)) else {
                continue;
            };
            let done_up_to = pending
                .get(&key)
                .copied()
                .unwrap_or(*read_up_to)
                .min(*read_up_to);
            outcomes_up_to.insert(key.clone(), done_up_to);
            // Never backwards (a replay or a retry queues old offsets again).
            if committed
                .get(&key)
                .is_some_and(|previous| *previous >= done_up_to)
            {
                continue;
            }
            if list
                .add_partition_offset(topic, *partition, Offset::Offset(done_up_to))
                .is_ok()
            {
                changed.push((key, done_up_to));
            }
        }
        if last_lag.elapsed() >= LAG_INTERVAL {
            *last_lag = Instant::now();
            // In the background, one at a time: a slow broker must not hold up reading.
            let metrics = self.intake.metrics.clone();
            if !metrics
                .measuring_lag
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                tokio::spawn(measure_lag(consumer.clone(), metrics, outcomes_up_to));
            }
        }
        if list.count() == 0 {
            return;
        }
        let committer = consumer.clone();
        let result =
            tokio::task::spawn_blocking(move || committer.commit(&list, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => committed.extend(changed),
            Ok(Err(error)) => {
                warn!(error = %error, "committing the group's offsets failed; trying again in 1 s")
            }
            Err(error) => {
                warn!(error = %error, "committing the group's offsets failed; trying again in 1 s")
            }
        }
    }
}

/// Per partition, the records after the last one with an outcome: the partition's end (its
/// high watermark, read from the brokers) minus where outcomes reach.
async fn measure_lag(
    consumer: Arc<StreamConsumer>,
    metrics: Arc<crate::metrics::Metrics>,
    outcomes_up_to: BTreeMap<(String, i32), i64>,
) {
    let reader = consumer;
    let measured = tokio::task::spawn_blocking(move || {
        outcomes_up_to
            .into_iter()
            .filter_map(|((topic, partition), done)| {
                let (_, high) = reader
                    .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                    .ok()?;
                Some(((topic, partition), (high - done).max(0)))
            })
            .collect::<Vec<_>>()
    })
    .await;
    if let Ok(measured) = measured {
        metrics.set_partition_lag(measured);
    }
    metrics
        .measuring_lag
        .store(false, std::sync::atomic::Ordering::SeqCst);
}

/// Reads a range of one partition again, for a replay.
pub struct Replayer {
    pub relay: String,
    pub routes: Vec<Arc<Route>>,
    pub input: KafkaInput,
}

impl Replayer {
    /// The records of `topic`/`partition` from `from` to `to` (inclusive; None: up to the end
    /// as it is now), as messages of the routes that read the topic (or only `route`).
    pub async fn read(&self, request: crate::replay::ReplayRequest) -> Result<Vec<NewMessage>> {
        let crate::replay::ReplayRequest {
            route,
            topic,
            partition,
            from_offset,
            to_offset,
            since_ms,
            until_ms,
        } = request;
        let route = route.as_deref();
        let topic = topic.as_str();
        let routes: Vec<(Arc<Route>, Arc<Decoder>)> = decoders(&self.routes)?
            .into_iter()
            .filter(|(candidate, _)| route.is_none_or(|name| candidate.name == name))
            .filter(|(candidate, _)| reads_topic(candidate, topic))
            .collect();
        if routes.is_empty() {
            return Err(Error::operator(
                "relay.replay",
                format!("no route reads topic {topic}"),
            ));
        }
        let input = self.input.clone();
        let relay = self.relay.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            // Its own throwaway group: a replay never moves the relay's committed offsets.
            let consumer: BaseConsumer = input
                .client_config(&format!(
                    "{}-replay-{}",
                    group_of(&relay),
                    unix_millis_now()
                ))
                .create()
                .map_err(|error| kafka_error("setting up the replay", error))?;
            let (low, high) = consumer
                .fetch_watermarks(&topic, partition, METADATA_TIMEOUT)
                .map_err(|error| kafka_error("reading the partition's offsets", error))?;
            // A time becomes the first offset at or after it (the end when there is none).
            let offset_at = |ms: i64| -> Result<i64> {
                let mut list = TopicPartitionList::new();
                list.add_partition_offset(&topic, partition, Offset::Offset(ms))
                    .map_err(|error| kafka_error("replaying", error))?;
                let found = consumer
                    .offsets_for_times(list, METADATA_TIMEOUT)
                    .map_err(|error| kafka_error("finding offsets by time", error))?;
                Ok(found
                    .elements()
                    .first()
                    .and_then(|element| match element.offset() {
                        Offset::Offset(offset) if offset >= 0 => Some(offset),
                        _ => None,
                    })
                    .unwrap_or(high))
            };
            let from = match (from_offset, since_ms) {
                (Some(offset), _) => offset,
                (None, Some(since)) => offset_at(since)?,
                (None, None) => low,
            };
            let end = match (to_offset, until_ms) {
                (Some(offset), _) => (offset + 1).min(high),
                (None, Some(until)) => offset_at(until)?.min(high),
                (None, None) => high,
            };
            let start = from.max(low);
            let mut messages = Vec::new();
            if start >= end {
                return Ok(messages);
            }
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(&topic, partition, Offset::Offset(start))
                .map_err(|error| kafka_error("replaying", error))?;
            consumer
                .assign(&list)
                .map_err(|error| kafka_error("replaying", error))?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let Some(received) = consumer.poll(Duration::from_millis(500)) else {
                    continue;
                };
                let message = received.map_err(|error| kafka_error("replaying", error))?;
                if message.offset() >= end {
                    break;
                }
                for (route, decoder) in &routes {
                    messages.push(record_message(&relay, route, decoder, &message));
                }
                if message.offset() + 1 >= end {
                    break;
                }
            }
            Ok(messages)
        })
        .await
        .map_err(|error| Error::transient("kafka.client", error.to_string()))?
    }
}

/// The partitions with a stored checkpoint (each at its offset) and those without one. Not in
/// an `async` body: rdkafka's list elements are not `Send`, and no await may hold one.
fn split_by_checkpoint(
    partitions: &BTreeSet<(String, i32)>,
    stored: &BTreeMap<String, i64>,
) -> Result<(TopicPartitionList, TopicPartitionList)> {
    let mut known = TopicPartitionList::new();
    let mut unknown = TopicPartitionList::new();
    for (topic, partition) in partitions {
        match stored.get(&checkpoint_name(topic, *partition)) {
            Some(offset) => known
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|error| kafka_error("assigning", error))?,
            None => {
                unknown.add_partition(topic, *partition);
            }
        }
    }
    Ok((known, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("orders", "orders"));
        assert!(!glob_matches("orders", "orders2"));
        assert!(glob_matches("payments.*", "payments.eu"));
        assert!(!glob_matches("payments.*", "payment"));
        assert!(glob_matches("*.dlq", "orders.dlq"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXcYYb"));
        assert!(glob_matches("*", "anything"));
    }

    #[test]
    fn payloads() {
        assert_eq!(
            Decoder::Json.encode(Some(br#"{"a":1}"#)),
            (br#"{"a":1}"#.to_vec(), None)
        );
        assert!(Decoder::Json.encode(Some(b"not json")).1.is_some());
        assert_eq!(Decoder::Raw.encode(Some(&[0, 255])).0, b"\"AP8=\"".to_vec());
        assert_eq!(Decoder::Json.encode(None).0, b"null".to_vec());
    }

    #[test]
    fn urls() {
        let input = KafkaInput::parse("kafka://a:9092,b:9092", vec![], Start::Earliest).unwrap();
        assert_eq!(input.bootstrap, "a:9092,b:9092");
        assert!(KafkaInput::parse("kafka://", vec![], Start::Earliest).is_err());
        assert!(KafkaInput::parse("postgres://x/y", vec![], Start::Earliest).is_err());
    }
}
