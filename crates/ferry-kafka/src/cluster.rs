//! How to reach a cluster, and the few reads every command shares: topic metadata, committed
//! offsets of a group, a group's members, the end of a partition.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferry_core::{Error, Result};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// How long one metadata or offset request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A cluster: its bootstrap brokers and extra librdkafka properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `host:port,host:port`.
    pub bootstrap: String,
    /// librdkafka properties (`security.protocol`, `sasl.*`, ...), applied last.
    pub options: Vec<(String, String)>,
}

/// Which side of the move a cluster is, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

impl Cluster {
    /// From `kafka://host:port[,host:port]`. Properties come from `?name=value&...` after the
    /// brokers (e.g. `?security.protocol=SASL_SSL&sasl.mechanism=PLAIN`); a value `${ENV}` is
    /// read from the environment, so secrets stay out of the command line.
    pub fn parse(url: &str, side: Side) -> Result<Cluster> {
        let malformed = || {
            Error::operator(
                "config.url",
                format!(
                    "the {} '{}' is not kafka://host:port[,host:port]",
                    side.name(),
                    // Never echo credentials (user:password@) or properties.
                    url.split('?')
                        .next()
                        .map(|base| match base.rfind('@') {
                            Some(at) => format!("kafka://...{}", &base[at..]),
                            None => base.to_string(),
                        })
                        .unwrap_or_default()
                ),
            )
            .with_hint("list the bootstrap brokers: kafka://broker1:9092,broker2:9092")
        };
        let rest = url.strip_prefix("kafka://").ok_or_else(malformed)?;
        let (brokers, query) = match rest.split_once('?') {
            Some((brokers, query)) => (brokers, Some(query)),
            None => (rest, None),
        };
        let brokers = brokers.trim_end_matches('/');
        if brokers.is_empty() || brokers.contains('/') || brokers.contains('@') {
            return Err(malformed());
        }
        let mut options = Vec::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(malformed().with_hint(format!(
                    "write each property as name=value (got '{}')",
                    pair.split('=').next().unwrap_or_default()
                )));
            };
            let value = match value
                .strip_prefix("${")
                .and_then(|rest| rest.strip_suffix('}'))
            {
                Some(variable) => std::env::var(variable).map_err(|_| {
                    Error::operator(
                        "config.env",
                        format!(
                            "the {} property {name} names ${{{variable}}}, which is not set",
                            side.name()
                        ),
                    )
                    .with_hint(format!("export {variable}"))
                })?,
                None => value.to_string(),
            };
            options.push((name.to_string(), value));
        }
        Ok(Cluster {
            bootstrap: brokers.to_string(),
            options,
        })
    }

    /// The common client settings.
    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("allow.auto.create.topics", "false")
            .set("socket.timeout.ms", "10000");
        for (name, value) in &self.options {
            config.set(name, value);
        }
        config
    }

    /// A consumer that never commits by itself. `committed_only` reads past no open
    /// transaction and skips aborted records (`read_committed`).
    pub fn consumer(&self, group: &str, committed_only: bool, eof: bool) -> Result<BaseConsumer> {
        self.consumer_config(group, committed_only, eof)
            .create()
            .map_err(|error| client_error(&self.bootstrap, "connecting", error))
    }

    /// The settings of [`Cluster::consumer`], to adjust before creating it.
    pub fn consumer_config(&self, group: &str, committed_only: bool, eof: bool) -> ClientConfig {
        let mut config = self.config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "isolation.level",
                if committed_only {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .set("enable.partition.eof", if eof { "true" } else { "false" })
            .set("auto.offset.reset", "earliest");
        config
    }

    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>> {
        self.config()
            .create()
            .map_err(|error| client_error(&self.bootstrap, "connecting", error))
    }
}

/// A client error as a retryable ferry error naming the cluster (never its properties, which
/// may hold secrets).
pub fn client_error(bootstrap: &str, what: &str, error: KafkaError) -> Error {
    // A configuration error's text carries the property's value, which may be a secret.
    if let KafkaError::ClientConfig(_, _, name, _) = &error {
        return Error::operator(
            "kafka.property",
            format!("{what} ({bootstrap}): the client property {name} is unknown or its value is not valid"),
        )
        .with_hint("check the ?name=value properties in the kafka:// URL against librdkafka's CONFIGURATION.md");
    }
    Error::transient("kafka.client", format!("{what} ({bootstrap}): {error}"))
        .with_hint("check that the brokers are reachable and that ferry may read and write there")
}

/// The topics of a cluster with their partition counts (internal topics, `__*`, left out).
pub fn topics(consumer: &BaseConsumer, bootstrap: &str) -> Result<BTreeMap<String, i32>> {
    let metadata = consumer
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .map_err(|error| client_error(bootstrap, "reading the topics", error))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|topic| topic.error().is_none() && !topic.name().starts_with("__"))
        .map(|topic| (topic.name().to_string(), topic.partitions().len() as i32))
        .collect())
}

/// The offsets `group` committed for `partitions` (None where it committed none).
pub fn committed_offsets(
    cluster: &Cluster,
    group: &str,
    partitions: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), Option<i64>>> {
    let consumer = cluster.consumer(group, true, false)?;
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    let found = consumer
        .committed_offsets(list, REQUEST_TIMEOUT)
        .map_err(|error| client_error(&cluster.bootstrap, "reading committed offsets", error))?;
    Ok(found
        .elements()
        .iter()
        .map(|element| {
            let offset = match element.offset() {
                Offset::Offset(offset) if offset >= 0 => Some(offset),
                _ => None,
            };
            ((element.topic().to_string(), element.partition()), offset)
        })
        .collect())
}

/// A consumer group as the cluster describes it.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    pub name: String,
    pub state: String,
    pub members: usize,
}

/// The groups of a cluster (all, or only `name`). Some brokers lack the group listing APIs:
/// the error says so and callers carry on without it.
pub fn groups(cluster: &Cluster, name: Option<&str>) -> Result<Vec<GroupInfo>> {
    let consumer = cluster.consumer("ferry-kafka-inspect", true, false)?;
    let list = consumer
        .fetch_group_list(name, REQUEST_TIMEOUT)
        .map_err(|error| client_error(&cluster.bootstrap, "listing consumer groups", error))?;
    Ok(list
        .groups()
        .iter()
        .filter(|group| !group.name().is_empty())
        .map(|group| GroupInfo {
            name: group.name().to_string(),
            state: group.state().to_string(),
            members: group.members().len(),
        })
        .collect())
}

/// [`read_partitions`] of one partition; returns where reading stopped.
pub fn read_partition(
    consumer: &BaseConsumer,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    until: Option<i64>,
    each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<i64> {
    let ends = read_partitions(
        consumer,
        bootstrap,
        topic,
        &[(partition, from)],
        until,
        each,
    )?;
    Ok(ends.get(&partition).copied().unwrap_or(from))
}

/// The partition's low and high watermarks as the consumer's last fetch reported them (no
/// request; None before the first fetch). ListOffsets is avoided because some brokers answer
/// it wrongly after batched produces.
#[allow(unsafe_code)] // the only unsafe code in ferry: rdkafka has no safe call for this.
pub fn cached_watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let mut low = -1i64;
    let mut high = -1i64;
    // SAFETY: the client pointer is valid while `consumer` lives; the topic is a NUL-terminated
    // string that outlives the call; librdkafka only writes the two offsets.
    let code = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (code == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low, high))
}

/// Reads partitions of one topic, each from its start, all at once, until the broker says end
/// of partition, or (with `until`) up to a record at or after that offset; returns where
/// reading stopped in each (the partition's end when it ran to the end). Some brokers answer
/// ListOffsets wrongly after batched produces; the fetch path is right. `each` sees every
/// record before `until`. The consumer must have been made with `eof` set.
pub fn read_partitions(
    consumer: &BaseConsumer,
    bootstrap: &str,
    topic: &str,
    starts: &[(i32, i64)],
    until: Option<i64>,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<BTreeMap<i32, i64>> {
    use rdkafka::Message;
    let mut ends: BTreeMap<i32, i64> = starts.iter().copied().collect();
    let reached = |offset: i64| until.is_some_and(|until| offset >= until);
    let mut open: BTreeSet<i32> = starts
        .iter()
        .filter(|(_, from)| !reached(*from))
        .map(|(partition, _)| *partition)
        .collect();
    if open.is_empty() {
        return Ok(ends);
    }
    let mut list = TopicPartitionList::new();
    for (partition, from) in starts
        .iter()
        .filter(|(partition, _)| open.contains(partition))
    {
        list.add_partition_offset(topic, *partition, Offset::Offset(*from))
            .map_err(|error| client_error(bootstrap, "reading partitions", error))?;
    }
    consumer
        .assign(&list)
        .map_err(|error| client_error(bootstrap, "reading partitions", error))?;
    let mut deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        if open.is_empty() {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(Error::transient(
                "kafka.read_timeout",
                format!("reading {topic} on {bootstrap} made no progress for 60 s"),
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                let partition = message.partition();
                if !open.contains(&partition) {
                    continue;
                }
                if reached(message.offset()) {
                    open.remove(&partition);
                    continue;
                }
                let end = ends.entry(partition).or_default();
                *end = (*end).max(message.offset() + 1);
                let done = reached(*end);
                each(&message);
                deadline = Instant::now() + Duration::from_secs(60);
                if done {
                    open.remove(&partition);
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                // After the last record the end may lie further (transaction markers,
                // compaction): the broker's high watermark, as the fetch reported it.
                if let Some((_, high)) = cached_watermarks(consumer, topic, partition) {
                    let end = ends.entry(partition).or_default();
                    *end = (*end).max(high);
                }
                open.remove(&partition);
            }
            Some(Err(error)) => break Err(client_error(bootstrap, "reading partitions", error)),
        }
    };
    let _ = consumer.unassign();
    outcome.map(|()| ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_properties_and_environment_values() {
        std::env::set_var("FERRY_TEST_KAFKA_SECRET", "s3cret");
        let cluster = Cluster::parse(
            "kafka://b1:9093,b2:9093?security.protocol=SASL_SSL&sasl.password=${FERRY_TEST_KAFKA_SECRET}",
            Side::Source,
        )
        .unwrap();
        assert_eq!(cluster.bootstrap, "b1:9093,b2:9093");
        assert_eq!(
            cluster.options,
            vec![
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.password".to_string(), "s3cret".to_string())
            ]
        );
        assert!(Cluster::parse("postgres://x", Side::Target).is_err());
        assert!(Cluster::parse("kafka://", Side::Target).is_err());
        let unset = Cluster::parse(
            "kafka://b:1?sasl.password=${FERRY_TEST_UNSET_VARIABLE}",
            Side::Source,
        );
        assert!(unset
            .unwrap_err()
            .to_string()
            .contains("FERRY_TEST_UNSET_VARIABLE"));
    }

    #[test]
    fn errors_never_show_credentials_or_property_values() {
        let error = Cluster::parse("kafka://user:hunter2@b1:9092/x", Side::Source).unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        // A property with a value the client refuses: the error names the property only.
        let cluster = Cluster::parse(
            "kafka://127.0.0.1:1?socket.timeout.ms=hunter2",
            Side::Source,
        )
        .unwrap();
        let error = cluster
            .consumer("g", true, false)
            .err()
            .expect("an invalid value is refused");
        let text = format!("{error} {}", error.hint().unwrap_or_default());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("socket.timeout.ms"), "{text}");
    }
}
