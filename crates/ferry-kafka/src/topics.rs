//! The topics of a move: which source topics are selected, and making the target hold them with
//! the same partition counts and the configs set on the source topic.

use std::collections::BTreeMap;

use ferry_core::{Error, Result};
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::{info, warn};

use crate::cluster::{client_error, topics, Cluster, REQUEST_TIMEOUT};
use crate::selection::Patterns;

/// A source topic to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTopic {
    pub name: String,
    pub partitions: i32,
    /// Configs set explicitly on the topic (not broker defaults).
    pub configs: Vec<(String, String)>,
}

/// The selected topics of the source; every exact name must exist.
pub fn selected(
    consumer: &BaseConsumer,
    cluster: &Cluster,
    patterns: &Patterns,
) -> Result<BTreeMap<String, i32>> {
    let all = topics(consumer, &cluster.bootstrap)?;
    let missing: Vec<&str> = patterns
        .exact_names()
        .filter(|name| !all.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        return Err(Error::operator(
            "kafka.topic_missing",
            format!(
                "the source ({}) has no topic {}",
                cluster.bootstrap,
                missing.join(", ")
            ),
        )
        .with_hint("check the names in --topics (patterns use *, e.g. 'payments.*')"));
    }
    Ok(all
        .into_iter()
        .filter(|(name, _)| patterns.matches(name))
        .collect())
}

/// The configs set on each topic (empty where the broker cannot describe them: a warning).
pub async fn configs(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
) -> BTreeMap<String, Vec<(String, String)>> {
    let mut found = BTreeMap::new();
    if names.is_empty() {
        return found;
    }
    let resources: Vec<ResourceSpecifier<'_>> = names
        .iter()
        .map(|name| ResourceSpecifier::Topic(name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    match admin.describe_configs(&resources, &options).await {
        Ok(results) => {
            for (name, result) in names.iter().zip(results) {
                match result {
                    Ok(resource) => {
                        let set: Vec<(String, String)> = resource
                            .entries
                            .iter()
                            .filter(|entry| {
                                matches!(entry.source, ConfigSource::DynamicTopic)
                                    && !entry.is_read_only
                                    && !entry.is_sensitive
                            })
                            .filter_map(|entry| {
                                entry.value.clone().map(|value| (entry.name.clone(), value))
                            })
                            .collect();
                        found.insert(name.clone(), set);
                    }
                    Err(code) => {
                        warn!(topic = %name, error = %code, "cannot read the topic's configs; it is created with the target's defaults");
                    }
                }
            }
        }
        Err(error) => {
            warn!(error = %error, "the source cannot describe topic configs; topics are created with the target's defaults")
        }
    }
    found
}

/// Makes the target hold every topic with at least the source's partitions. Returns the names
/// ferry created.
pub async fn prepare_target(
    target: &Cluster,
    target_consumer: &BaseConsumer,
    wanted: &[SourceTopic],
) -> Result<Vec<String>> {
    let admin = target.admin()?;
    let existing = topics(target_consumer, &target.bootstrap)?;
    let brokers = target_consumer
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .map(|metadata| metadata.brokers().len().max(1) as i32)
        .unwrap_or(1);
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let mut created = Vec::new();
    let to_create: Vec<&SourceTopic> = wanted
        .iter()
        .filter(|topic| !existing.contains_key(&topic.name))
        .collect();
    if !to_create.is_empty() {
        let replication = brokers.min(3);
        let new_topics: Vec<NewTopic<'_>> = to_create
            .iter()
            .map(|topic| {
                let mut new = NewTopic::new(
                    &topic.name,
                    topic.partitions,
                    TopicReplication::Fixed(replication),
                );
                for (name, value) in &topic.configs {
                    new = new.set(name, value);
                }
                new
            })
            .collect();
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|error| client_error(&target.bootstrap, "creating topics", error))?;
        for result in results {
            match result {
                Ok(name) => {
                    info!(topic = %name, "created on the target");
                    created.push(name);
                }
                Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                    info!(topic = %name, "already on the target");
                }
                Err((name, code)) => {
                    return Err(Error::operator(
                        "kafka.create_topic",
                        format!("the target ({}) refused to create topic {name}: {code}", target.bootstrap),
                    )
                    .with_hint("create it by hand with the source's partition count, or grant ferry CREATE on the target cluster"));
                }
            }
        }
    }
    let grow: Vec<NewPartitions<'_>> = wanted
        .iter()
        .filter_map(|topic| match existing.get(&topic.name) {
            Some(count) if *count < topic.partitions => {
                Some(NewPartitions::new(&topic.name, topic.partitions as usize))
            }
            _ => None,
        })
        .collect();
    if !grow.is_empty() {
        let results = admin
            .create_partitions(&grow, &options)
            .await
            .map_err(|error| client_error(&target.bootstrap, "adding partitions", error))?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(Error::operator(
                    "kafka.partitions",
                    format!("the target's topic {name} has fewer partitions than the source's and adding them failed: {code}"),
                )
                .with_hint("give the target topic at least the source's partition count: records keep their partition"));
            }
        }
    }
    Ok(created)
}
