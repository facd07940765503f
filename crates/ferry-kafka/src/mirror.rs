//! The mirror: copies every selected partition of the source to the same partition on the
//! target, in order, and records an exact offset map.
//!
//! Design:
//! - One consumer reads the source with `read_committed` (records of aborted transactions are
//!   never copied; offset gaps from compaction and transaction markers are simply absent), with
//!   partitions assigned explicitly. One idempotent producer (`enable.idempotence`, `acks=all`)
//!   writes each record with its key, value, headers and creation time to the same partition:
//!   per partition the target receives a prefix of what was sent, in order, without duplicates.
//! - The producer reports each record's target offset. Reports extend the partition's map
//!   (runs of consecutive offsets, see `map`), and every [`SAVE_INTERVAL`] the maps and settled
//!   positions are saved in one SQLite transaction. The state never claims a record the target
//!   does not hold.
//! - After a crash the target may hold records the state does not know of (acknowledged after
//!   the last save, or in flight). Before copying a partition again the mirror reads the target
//!   partition from the end the state knows to its real end, and matches those records, in
//!   order, against the source records read from the settled position: a target record that is
//!   the copy of the next source record (same key, value, headers and creation time) is mapped
//!   and not sent again; any other target record was written by someone else (producers that
//!   moved first) and is left as it is. So a restart neither loses nor duplicates records, and
//!   the map stays exact. (An in-flight produce request of the killed process that a broker
//!   applies after this read could still land twice: the window is the time between the kill
//!   and the restart's tail read, in practice none.)
//! - A target partition that already held records when the move began on it is refused: those
//!   records would sit before the copy and a switched consumer would read them.
//! - New topics matching the selection and new partitions are picked up every
//!   [`DISCOVERY_INTERVAL`].

use ferry_core::calendar::unix_millis_now;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::{Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::cluster::{cached_watermarks, client_error, read_partitions, Cluster, REQUEST_TIMEOUT};
use crate::map::{append, Run};
use crate::record::{fingerprint, size, Fingerprint};
use crate::selection::Patterns;
use crate::state::{PartitionState, PartitionUpdate, State};
use crate::topics::{configs, prepare_target, selected, SourceTopic};

/// How often the maps are saved.
pub const SAVE_INTERVAL: Duration = Duration::from_millis(250);
/// How often new topics and partitions are looked for.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Where partitions the move has never seen start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    /// The first record at or after this time (milliseconds since the epoch).
    Time(i64),
}

/// What `ferry kafka move` was asked.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    pub source: Cluster,
    pub target: Cluster,
    pub topics: Patterns,
    pub start: StartAt,
    pub state: PathBuf,
}

/// The move's figures as the process sees them now (for `--listen` and its log).
#[derive(Debug, Default, Clone)]
pub struct Progress {
    /// `starting`, `copying`, `stopped`, or `failed`.
    pub phase: String,
    pub partitions: Vec<PartitionState>,
    pub records_per_second: f64,
    pub bytes_per_second: f64,
    pub error: Option<String>,
}

/// A record sent and not yet reported.
struct Pending {
    lane: usize,
    source_offset: i64,
    bytes: usize,
}

struct Report {
    lane: usize,
    source_offset: i64,
    bytes: usize,
    outcome: std::result::Result<i64, String>,
}

/// Hands the producer's delivery reports to the copy loop.
struct Reports {
    sender: Mutex<mpsc::Sender<Report>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Box<Pending>) {
        let outcome = match result {
            Ok(message) => Ok(message.offset()),
            Err((error, _)) => Err(error.to_string()),
        };
        if let Ok(sender) = self.sender.lock() {
            let _ = sender.send(Report {
                lane: pending.lane,
                source_offset: pending.source_offset,
                bytes: pending.bytes,
                outcome,
            });
        }
    }
}

/// A target partition's records after what the state knows, and its end.
struct Tail {
    end: i64,
    records: VecDeque<(i64, Fingerprint)>,
}

/// One partition being copied.
struct Lane {
    state: PartitionState,
    /// Runs not saved yet since they began or grew: finished ones, then the last one (still
    /// growing, kept after a save).
    runs: Vec<Run>,
    in_flight: usize,
    /// Target records after the saved end, not matched yet (after a restart).
    unmatched: VecDeque<(i64, Fingerprint)>,
    /// The next source offset to take: lower ones (read again after a reset) are skipped.
    read_up_to: i64,
    /// The source offset of a record the target refused: nothing at or after it is settled.
    failed: Option<i64>,
    /// Since when, and from which totals, the rate is measured.
    rate_base: (Instant, i64, i64),
    dirty: bool,
}

impl Lane {
    fn copied(&mut self, source: i64, target: i64, bytes: usize) {
        if self.failed.is_some_and(|failed| source >= failed) {
            // After a refused record nothing is settled: a restart copies from it again.
            return;
        }
        append(&mut self.runs, source, target);
        self.state.settled_source = self.state.settled_source.max(source + 1);
        self.state.next_target = self.state.next_target.max(target + 1);
        self.state.copied += 1;
        self.state.bytes += bytes as i64;
        self.dirty = true;
    }

    fn update(&mut self) -> PartitionUpdate {
        let runs = self.runs.clone();
        // The last run may still grow: it is saved again, whole, with what it gains.
        self.runs.drain(..self.runs.len().saturating_sub(1));
        self.dirty = false;
        PartitionUpdate {
            state: self.state.clone(),
            runs,
        }
    }
}

/// The copy loop's resources.
struct Mirror {
    options: MoveOptions,
    state: State,
    consumer: BaseConsumer,
    producer: ThreadedProducer<Reports>,
    reports: mpsc::Receiver<Report>,
    lanes: Vec<Lane>,
    lane_of: BTreeMap<(String, i32), usize>,
    /// Topic -> partition count, as set up.
    topics: BTreeMap<String, i32>,
    progress: Arc<Mutex<Progress>>,
    runtime: tokio::runtime::Handle,
}

/// Copies until `stop` is set (then drains what is in flight and saves), or fails.
pub fn run(
    options: MoveOptions,
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
    runtime: tokio::runtime::Handle,
) -> Result<()> {
    let mut mirror = Mirror::open(options, progress.clone(), runtime)?;
    let outcome = mirror.copy(&stop);
    if let Ok(mut progress) = progress.lock() {
        match &outcome {
            Ok(()) => progress.phase = "stopped".into(),
            Err(error) => {
                progress.phase = "failed".into();
                progress.error = Some(error.to_string());
            }
        }
    }
    outcome
}

impl Mirror {
    fn open(
        options: MoveOptions,
        progress: Arc<Mutex<Progress>>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Mirror> {
        let state = State::open_for_move(
            &options.state,
            &options.source.bootstrap,
            &options.target.bootstrap,
        )?;
        // A position the source no longer has is an error, never a silent jump.
        let consumer: BaseConsumer = options
            .source
            .consumer_config("ferry-kafka-mirror", true, false)
            .set("auto.offset.reset", "error")
            .create()
            .map_err(|error| client_error(&options.source.bootstrap, "connecting", error))?;
        let (sender, reports) = mpsc::channel();
        let mut config = options.target.config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("queue.buffering.max.kbytes", "131072")
            .set("message.max.bytes", "104857600")
            // Never give up on a record: a target outage pauses the copy, it does not fail it.
            .set("message.timeout.ms", "0")
            // After a refused record, refuse the ones behind it too: no gap on the target.
            .set("enable.gapless.guarantee", "true");
        let producer: ThreadedProducer<Reports> = config
            .create_with_context(Reports {
                sender: Mutex::new(sender),
            })
            .map_err(|error| client_error(&options.target.bootstrap, "connecting", error))?;
        Ok(Mirror {
            options,
            state,
            consumer,
            producer,
            reports,
            lanes: Vec::new(),
            lane_of: BTreeMap::new(),
            topics: BTreeMap::new(),
            progress,
            runtime,
        })
    }

    /// Finds selected topics and partitions not set up yet, makes the target hold them, and
    /// starts reading them.
    fn discover(&mut self) -> Result<()> {
        let found = selected(&self.consumer, &self.options.source, &self.options.topics)?;
        let changed: Vec<(String, i32)> = found
            .iter()
            .filter(|(name, count)| self.topics.get(*name) != Some(count))
            .map(|(name, count)| (name.clone(), *count))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = changed.iter().map(|(name, _)| name.clone()).collect();
        let source_admin = self.options.source.admin()?;
        let target_consumer = self
            .options
            .target
            .consumer("ferry-kafka-mirror", false, true)?;
        let target = self.options.target.clone();
        let wanted: Vec<SourceTopic> = {
            let configs = self.runtime.block_on(configs(&source_admin, &names));
            changed
                .iter()
                .map(|(name, partitions)| SourceTopic {
                    name: name.clone(),
                    partitions: *partitions,
                    configs: configs.get(name).cloned().unwrap_or_default(),
                })
                .collect()
        };
        let created = self
            .runtime
            .block_on(prepare_target(&target, &target_consumer, &wanted))?;
        let saved = self.state.partitions()?;
        let mut assignment = TopicPartitionList::new();
        // Nothing is kept unless every new partition is set up, saved and assigned.
        let mut new_lanes: Vec<((String, i32), Lane)> = Vec::new();
        for (topic, count) in &changed {
            let new_partitions: Vec<i32> = (0..*count)
                .filter(|partition| !self.lane_of.contains_key(&(topic.clone(), *partition)))
                .collect();
            // The target's records after what the state knows (all of them for a partition the
            // move never began on), every partition of the topic in one pass.
            let starts: Vec<(i32, i64)> = new_partitions
                .iter()
                .map(|partition| {
                    let saved = saved.get(&(topic.clone(), *partition));
                    (*partition, saved.map_or(0, |saved| saved.next_target))
                })
                .collect();
            let mut tails: BTreeMap<i32, VecDeque<(i64, Fingerprint)>> = BTreeMap::new();
            // A topic ferry has just created is empty: no need to wait for its first fetch.
            let fresh = created.contains(topic);
            let ends = if fresh {
                starts
                    .iter()
                    .map(|(partition, _)| (*partition, 0))
                    .collect()
            } else {
                read_partitions(
                    &target_consumer,
                    &self.options.target.bootstrap,
                    topic,
                    &starts,
                    None,
                    |message| {
                        tails
                            .entry(message.partition())
                            .or_default()
                            .push_back((message.offset(), fingerprint(message)));
                    },
                )?
            };
            for partition in new_partitions {
                let key = (topic.clone(), partition);
                let tail = Tail {
                    end: ends.get(&partition).copied().unwrap_or(0),
                    records: tails.remove(&partition).unwrap_or_default(),
                };
                let (lane, start) = self.set_up_lane(topic, partition, saved.get(&key), tail)?;
                assignment
                    .add_partition_offset(topic, partition, start)
                    .map_err(|error| {
                        client_error(&self.options.source.bootstrap, "assigning", error)
                    })?;
                new_lanes.push((key, lane));
            }
        }
        let before = self.lanes.len();
        for (key, lane) in new_lanes {
            self.lane_of.insert(key, self.lanes.len());
            self.lanes.push(lane);
        }
        // The new partitions' rows are durable before any of their records is sent: a crash
        // right after finds them as its own, not as records someone else wrote.
        let assigned = self.save().and_then(|()| {
            if assignment.count() == 0 {
                return Ok(());
            }
            self.consumer
                .incremental_assign(&assignment)
                .map_err(|error| {
                    client_error(
                        &self.options.source.bootstrap,
                        "assigning partitions",
                        error,
                    )
                })
        });
        if let Err(error) = assigned {
            for lane in self.lanes.drain(before..) {
                self.lane_of
                    .remove(&(lane.state.topic.clone(), lane.state.partition));
            }
            return Err(error);
        }
        for (topic, count) in changed {
            self.topics.insert(topic, count);
        }
        if assignment.count() > 0 {
            info!(partitions = assignment.count(), "copying");
        }
        Ok(())
    }

    /// A partition's lane and where its source reading starts, from its saved state and the
    /// target partition's records after it.
    fn set_up_lane(
        &self,
        topic: &str,
        partition: i32,
        saved: Option<&PartitionState>,
        tail: Tail,
    ) -> Result<(Lane, Offset)> {
        match saved {
            Some(saved) => {
                // Records on the target after the saved end: ours (to match) or someone else's.
                let end = tail.end;
                let unmatched = tail.records;
                if end < saved.next_target {
                    return Err(Error::operator(
                        "kafka.target_lost_records",
                        format!(
                            "the target's {topic}[{partition}] ends at offset {end}, but ferry copied records up to offset {} there",
                            saved.next_target - 1
                        ),
                    )
                    .with_hint("the target topic was deleted or truncated: delete the move's state (--state) and the target topic, and move again"));
                }
                if !unmatched.is_empty() {
                    info!(
                        topic,
                        partition,
                        records = unmatched.len(),
                        "matching the target's tail against the source after a restart"
                    );
                }
                let last_run = self.state.runs(topic, partition)?.pop();
                let lane = Lane {
                    state: saved.clone(),
                    runs: last_run.into_iter().collect(),
                    in_flight: 0,
                    unmatched,
                    read_up_to: saved.settled_source,
                    failed: None,
                    rate_base: (Instant::now(), saved.copied, saved.bytes),
                    dirty: false,
                };
                Ok((lane, Offset::Offset(saved.settled_source)))
            }
            None => {
                let end = tail.end;
                let foreign = tail.records.len();
                if foreign > 0 {
                    return Err(Error::operator(
                        "kafka.target_not_empty",
                        format!("the target's {topic}[{partition}] already holds {foreign} record(s) ferry did not copy"),
                    )
                    .with_hint("move into empty topics: delete the target topic (or choose another target); a switched consumer would read those records"));
                }
                let source = &self.options.source.bootstrap;
                let (start, offset) =
                    match self.options.start {
                        // Everything before the first record the source still has is settled.
                        StartAt::Earliest => (0, Offset::Beginning),
                        StartAt::Time(ms) => {
                            let mut list = TopicPartitionList::new();
                            list.add_partition_offset(topic, partition, Offset::Offset(ms))
                                .map_err(|error| {
                                    client_error(source, "finding offsets by time", error)
                                })?;
                            let found = self
                                .consumer
                                .offsets_for_times(list, REQUEST_TIMEOUT)
                                .map_err(|error| {
                                    client_error(source, "finding offsets by time", error)
                                })?;
                            let at = found.elements().first().and_then(|element| {
                                match element.offset() {
                                    Offset::Offset(offset) if offset >= 0 => Some(offset),
                                    _ => None,
                                }
                            });
                            match at {
                                Some(at) => (at, Offset::Offset(at)),
                                // Nothing at or after the time: from the end.
                                None => {
                                    let (_, high) = self
                                        .consumer
                                        .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                                        .map_err(|error| {
                                            client_error(source, "reading offsets", error)
                                        })?;
                                    (high, Offset::Offset(high))
                                }
                            }
                        }
                    };
                let state = PartitionState {
                    topic: topic.to_string(),
                    partition,
                    first_target: end,
                    first_source: start,
                    settled_source: start,
                    next_target: end,
                    source_end: start,
                    copied: 0,
                    bytes: 0,
                    updated_ms: unix_millis_now(),
                    records_per_second: 0.0,
                    bytes_per_second: 0.0,
                };
                let lane = Lane {
                    state,
                    runs: Vec::new(),
                    in_flight: 0,
                    unmatched: VecDeque::new(),
                    read_up_to: start,
                    failed: None,
                    rate_base: (Instant::now(), 0, 0),
                    dirty: true,
                };
                Ok((lane, offset))
            }
        }
    }

    fn copy(&mut self, stop: &AtomicBool) -> Result<()> {
        self.discover()?;
        self.save()?;
        self.set_phase("copying");
        let mut last_save = Instant::now();
        let mut last_discovery = Instant::now();
        let mut last_report = (Instant::now(), self.total());
        let mut failure: Option<Error> = None;
        let mut last_lane: Option<(String, i32, usize)> = None;
        while !stop.load(Ordering::SeqCst) {
            if let Err(error) = self.take_reports() {
                failure = Some(error);
                break;
            }
            if last_save.elapsed() >= SAVE_INTERVAL {
                self.save()?;
                last_save = Instant::now();
            }
            if last_report.0.elapsed() >= REPORT_INTERVAL {
                last_report = self.report(last_report);
            }
            if last_discovery.elapsed() >= DISCOVERY_INTERVAL {
                if let Err(error) = self.discover() {
                    warn!(error = %error, "looking for new topics and partitions failed; trying again later");
                }
                last_discovery = Instant::now();
            }
            let polled = self.consumer.poll(Duration::from_millis(50));
            match polled {
                None => {}
                Some(Ok(message)) => {
                    // Records come in runs of one partition: the last lane found is reused.
                    let index = match &last_lane {
                        Some((topic, partition, index))
                            if *partition == message.partition() && topic == message.topic() =>
                        {
                            Some(*index)
                        }
                        _ => {
                            let found = self
                                .lane_of
                                .get(&(message.topic().to_string(), message.partition()))
                                .copied();
                            last_lane = found.map(|index| {
                                (message.topic().to_string(), message.partition(), index)
                            });
                            found
                        }
                    };
                    let Some(index) = index else {
                        continue;
                    };
                    let outcome = take(
                        &message,
                        index,
                        &self.producer,
                        &self.reports,
                        &mut self.lanes,
                        &self.options.target.bootstrap,
                    );
                    if let Err(error) = outcome {
                        failure = Some(error);
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    failure = Some(Error::operator(
                        "kafka.records_gone",
                        "the source no longer has records the move has not copied yet (deleted by retention, or the topic was recreated)",
                    )
                    .with_hint("those records cannot be copied any more: give the source topics a longer retention, or start a new move (new --name) into empty topics"));
                    break;
                }
                Some(Err(error)) => {
                    warn!(error = %error, "reading the source: librdkafka retries");
                }
            }
        }
        // Drain: what was sent is reported before the last save. Reports come only from the
        // producer's own thread (polling here too could reorder a partition's reports).
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .lanes
            .iter()
            .any(|lane| lane.in_flight > 0 && lane.failed.is_none())
            && Instant::now() < deadline
        {
            match self.reports.recv_timeout(Duration::from_millis(100)) {
                Ok(report) => {
                    if let Err(error) =
                        apply(&mut self.lanes, report, &self.options.target.bootstrap)
                    {
                        failure.get_or_insert(error);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.save()?;
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn total(&self) -> (i64, i64) {
        self.lanes.iter().fold((0, 0), |(records, bytes), lane| {
            (records + lane.state.copied, bytes + lane.state.bytes)
        })
    }

    fn report(
        &self,
        (since, (records_then, bytes_then)): (Instant, (i64, i64)),
    ) -> (Instant, (i64, i64)) {
        let (records, bytes) = self.total();
        let seconds = since.elapsed().as_secs_f64().max(0.001);
        let lag: i64 = self.lanes.iter().map(|lane| lane.state.lag()).sum();
        let records_per_second = (records - records_then) as f64 / seconds;
        let bytes_per_second = (bytes - bytes_then) as f64 / seconds;
        info!(
            records,
            lag,
            records_per_second = records_per_second.round(),
            "copy progress"
        );
        if let Ok(mut progress) = self.progress.lock() {
            progress.records_per_second = records_per_second;
            progress.bytes_per_second = bytes_per_second;
        }
        (Instant::now(), (records, bytes))
    }

    fn set_phase(&self, phase: &str) {
        if let Ok(mut progress) = self.progress.lock() {
            progress.phase = phase.to_string();
        }
    }

    fn take_reports(&mut self) -> Result<()> {
        while let Ok(report) = self.reports.try_recv() {
            apply(&mut self.lanes, report, &self.options.target.bootstrap)?;
        }
        Ok(())
    }

    /// Saves every changed lane in one transaction and publishes the figures.
    fn save(&mut self) -> Result<()> {
        let now = unix_millis_now();
        // A lane with nothing in flight has copied everything before the consumer's position:
        // this carries the settled offset over transaction markers and other gaps at the end.
        let positions: BTreeMap<(String, i32), i64> = self
            .consumer
            .position()
            .map(|list| {
                list.elements()
                    .iter()
                    .filter_map(|element| match element.offset() {
                        Offset::Offset(offset) => {
                            Some(((element.topic().to_string(), element.partition()), offset))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for lane in &mut self.lanes {
            let (since, copied, bytes) = lane.rate_base;
            let seconds = since.elapsed().as_secs_f64();
            if seconds >= 1.0 {
                let records_per_second = (lane.state.copied - copied) as f64 / seconds;
                let bytes_per_second = (lane.state.bytes - bytes) as f64 / seconds;
                if records_per_second != lane.state.records_per_second
                    || bytes_per_second != lane.state.bytes_per_second
                {
                    lane.state.records_per_second = records_per_second;
                    lane.state.bytes_per_second = bytes_per_second;
                    lane.dirty = true;
                }
                lane.rate_base = (Instant::now(), lane.state.copied, lane.state.bytes);
            }
            if lane.in_flight == 0 && lane.unmatched.is_empty() && lane.failed.is_none() {
                let key = (lane.state.topic.clone(), lane.state.partition);
                if let Some(&position) = positions.get(&key) {
                    if position > lane.state.settled_source {
                        lane.state.settled_source = position;
                        lane.dirty = true;
                    }
                }
            }
            if let Some((_, high)) =
                cached_watermarks(&self.consumer, &lane.state.topic, lane.state.partition)
            {
                if high != lane.state.source_end {
                    lane.state.source_end = high;
                    lane.dirty = true;
                }
            }
        }
        let updates: Vec<PartitionUpdate> = self
            .lanes
            .iter_mut()
            .filter(|lane| lane.dirty)
            .map(|lane| {
                lane.state.updated_ms = now;
                lane.update()
            })
            .collect();
        if !updates.is_empty() {
            if updates.iter().any(|update| !update.runs.is_empty()) {
                // A crash here leaves records on the target that the state does not know of.
                ferry_core::failpoint::hit("kafka.before_save");
            }
            self.state.save(&updates)?;
        }
        if let Ok(mut progress) = self.progress.lock() {
            progress.partitions = self.lanes.iter().map(|lane| lane.state.clone()).collect();
        }
        Ok(())
    }
}

/// One source record: matched against the target's unmatched tail, or sent.
fn take(
    message: &BorrowedMessage<'_>,
    index: usize,
    producer: &ThreadedProducer<Reports>,
    reports: &mpsc::Receiver<Report>,
    lanes: &mut [Lane],
    target: &str,
) -> Result<()> {
    let bytes = size(message);
    let lane = &mut lanes[index];
    if message.offset() < lane.read_up_to || lane.failed.is_some() {
        // Read again (a reassignment), or behind a refused record: not taken twice.
        return Ok(());
    }
    lane.read_up_to = message.offset() + 1;
    if !lane.unmatched.is_empty() {
        let source = fingerprint(message);
        while let Some((target_offset, target)) = lane.unmatched.pop_front() {
            if target.is_copy_of(&source) {
                lane.copied(message.offset(), target_offset, bytes);
                return Ok(());
            }
            // Not ours: a record someone else wrote to the target partition.
        }
    }
    lane.in_flight += 1;
    let pending = Box::new(Pending {
        lane: index,
        source_offset: message.offset(),
        bytes,
    });
    let topic = message.topic();
    let mut record = BaseRecord::with_opaque_to(topic, pending).partition(message.partition());
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(value) = message.payload() {
        record = record.payload(value);
    }
    // (A creation time of 0 cannot be kept: the producer library replaces it by the present.)
    if let Some(ms) = message.timestamp().to_millis().filter(|ms| *ms > 0) {
        record = record.timestamp(ms);
    }
    if let Some(headers) = message.headers() {
        let mut owned = OwnedHeaders::new_with_capacity(headers.count());
        for header in headers.iter() {
            owned = owned.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
        record = record.headers(owned);
    }
    let unknown_partition_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition), back))
                if Instant::now() < unknown_partition_deadline =>
            {
                // Partitions added a moment ago: refresh the producer's metadata.
                record = back;
                let _ = producer
                    .client()
                    .fetch_metadata(Some(message.topic()), REQUEST_TIMEOUT);
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                // The producer's queue is full: settle reports while it drains.
                while let Ok(report) = reports.try_recv() {
                    apply(lanes, report, target)?;
                }
                if let Ok(report) = reports.recv_timeout(Duration::from_millis(10)) {
                    apply(lanes, report, target)?;
                }
            }
            Err((error, _)) => {
                return Err(Error::operator(
                    "kafka.produce",
                    format!(
                        "the target ({}) refused a record of {}[{}] (source offset {}): {error}",
                        target,
                        message.topic(),
                        message.partition(),
                        message.offset()
                    ),
                )
                .with_hint("check the target's limits (message.max.bytes, max.message.bytes) and ferry's permissions there"));
            }
        }
    }
}

fn apply(lanes: &mut [Lane], report: Report, target: &str) -> Result<()> {
    let lane = &mut lanes[report.lane];
    let outcome = match report.outcome {
        // A success without an offset (the broker saw a duplicate sequence) says nothing
        // about where the record is: treated as a failure, the restart's tail read finds it.
        Ok(offset) if offset < 0 => Err("the target acknowledged it without an offset".to_string()),
        other => other,
    };
    match outcome {
        Ok(target_offset) => {
            lane.in_flight = lane.in_flight.saturating_sub(1);
            lane.copied(report.source_offset, target_offset, report.bytes);
            Ok(())
        }
        Err(error) => {
            // The lane stops settling here (its in-flight count stays up, too).
            lane.failed = Some(lane.failed.map_or(report.source_offset, |failed| {
                failed.min(report.source_offset)
            }));
            Err(Error::operator(
                "kafka.produce",
                format!(
                    "the target ({}) did not take the record of {}[{}] at source offset {}: {error}",
                    target, lane.state.topic, lane.state.partition, report.source_offset
                ),
            )
            .with_hint("fix the cause (the target's message.max.bytes / max.message.bytes, ferry's permissions there) and run the move again: it resumes from that record"))
        }
    }
}
