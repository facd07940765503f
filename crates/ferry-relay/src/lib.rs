//! ferry relay: delivers a stream of messages to HTTP endpoints, with retries, per-key order,
//! a delivery log, a control plane and a web page.
//!
//! ```text
//!  source (database change stream) --feed--> delivery log (SQLite) --route workers--> HTTP
//!                  ^ acknowledged after the log commit      ^ control plane: search, retry
//! ```
//!
//! The log is the hinge: a message is acknowledged to the source only once it is in the log,
//! and leaves the log only as delivered or failed (then by retention). See [`log`] for why
//! nothing is lost and [`deliver`] for retries, ordering and the circuit breaker.

pub mod api;
pub mod config;
pub mod deliver;
pub mod document;
pub mod feed;
pub mod http;
pub mod intake;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod log;
pub mod metrics;
pub mod replay;
pub mod signature;

use std::collections::HashMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::connector::Source;
use ferry_core::{Error, ErrorClass, Result};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::config::RelayConfig;
use crate::deliver::{Breakers, Worker};
use crate::feed::Feed;
use crate::http::client::HttpClient;
use crate::intake::Intake;
use crate::log::DeliveryLog;
use crate::metrics::Metrics;
use ferry_core::calendar::unix_millis_now;

/// Where the control plane listens, and its token.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    pub address: Option<String>,
    pub token: Option<String>,
}

/// What the relay reads.
pub enum Input {
    /// A database's change stream.
    Database(Box<dyn Source>),
    /// Kafka topics.
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaInput),
}

/// Runs the relay until `shutdown` turns true, or a failure that needs the operator.
/// `log_connect` opens connections to a PostgreSQL log (`[log] url = "postgres://..."`).
pub async fn run(
    config: RelayConfig,
    input: Input,
    log_connect: Option<log::postgres::Connect>,
    listen: Listen,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    if matches!(input, Input::Database(_)) {
        if let Some(route) = config
            .routes
            .iter()
            .find(|route| route.format != config::Format::Json)
        {
            return Err(Error::operator(
                "config.format",
                format!("route '{}': format applies to Kafka records; a database's changes are sent as JSON documents", route.name),
            )
            .with_hint("remove format (and descriptor_set, message) from the route"));
        }
    }
    let log = match (&config.log, log_connect) {
        (config::LogLocation::Sqlite(path), _) => DeliveryLog::open(path)?,
        (config::LogLocation::Postgres { .. }, Some(connect)) => {
            let routes: Vec<String> = config
                .routes
                .iter()
                .map(|route| route.name.clone())
                .collect();
            DeliveryLog::open_postgres(connect, &config.name, &routes).await?
        }
        (config::LogLocation::Postgres { .. }, None) => {
            return Err(Error::operator(
                "relay.log_open",
                "this build cannot open a PostgreSQL delivery log",
            )
            .with_hint("build ferry with the postgres feature, or use sqlite:PATH"))
        }
    };
    let metrics = Arc::new(Metrics::default());
    metrics
        .pending
        .store(log.pending().await?, AtomicOrdering::Relaxed);
    let wake = Arc::new(Notify::new());
    let routes: Vec<Arc<config::Route>> = config.routes.iter().cloned().map(Arc::new).collect();
    for route in &routes {
        metrics.route(&route.name);
    }
    if let Some(address) = &listen.address {
        let api = Arc::new(api::Api {
            relay: config.name.clone(),
            routes: routes
                .iter()
                // The origin only: a webhook URL's path or query often carries a token.
                .map(|route| (route.name.clone(), route.target.origin()))
                .collect(),
            log: log.clone(),
            metrics: metrics.clone(),
            wake: wake.clone(),
            replay: replay_of(&config, &input, &routes),
        });
        let bound = http::server::serve(address, listen.token.clone(), true, api.handler()).await?;
        info!(address = %bound, "relay control plane listening: web page at /, API at /api/relay/messages, /metrics");
    }
    let breakers = Arc::new(Breakers::default());
    let mut clients: HashMap<Option<std::path::PathBuf>, Arc<HttpClient>> = HashMap::new();
    let mut workers = tokio::task::JoinSet::new();
    for route in &routes {
        let client = match clients.get(&route.ca_file) {
            Some(client) => client.clone(),
            None => {
                let client = Arc::new(HttpClient::new(route.ca_file.as_deref()).map_err(
                    |problem| {
                        Error::operator(
                            "config.ca_file",
                            format!("route '{}': ca_file {problem}", route.name),
                        )
                        .with_hint(
                            "give a readable PEM file of the endpoint's certificate authority",
                        )
                    },
                )?);
                clients.insert(route.ca_file.clone(), client.clone());
                client
            }
        };
        let worker = Worker {
            route: route.clone(),
            log: log.clone(),
            client,
            breakers: breakers.clone(),
            counters: metrics.route(&route.name),
            metrics: metrics.clone(),
            wake: wake.clone(),
        };
        workers.spawn(keep_delivering(worker, shutdown.clone()));
    }
    workers.spawn(keep_pruning(
        log.clone(),
        routes.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    info!(relay = %config.name, routes = routes.len(), log = %config.log.describe(), "relay started");
    let outcome = match input {
        Input::Database(source) => {
            let feed = Feed {
                relay: config.name.clone(),
                routes,
                intake: Intake { log, metrics, wake },
            };
            supervise(|shutdown| feed.run(&*source, shutdown), shutdown.clone()).await
        }
        #[cfg(feature = "kafka")]
        Input::Kafka(input) => {
            let feed = kafka::KafkaFeed {
                relay: config.name.clone(),
                routes,
                input,
                intake: Intake { log, metrics, wake },
            };
            supervise(|shutdown| feed.run(shutdown), shutdown.clone()).await
        }
    };
    if outcome.is_ok() {
        // A graceful stop: the workers finish the requests in flight and store them.
        while workers.join_next().await.is_some() {}
    }
    outcome
}

/// How a replay reads the source again, when it can.
#[allow(unused_variables)]
fn replay_of(
    config: &RelayConfig,
    input: &Input,
    routes: &[Arc<config::Route>],
) -> Option<replay::Replay> {
    match input {
        Input::Database(_) => None,
        #[cfg(feature = "kafka")]
        Input::Kafka(input) => {
            let replayer = Arc::new(kafka::Replayer {
                relay: config.name.clone(),
                routes: routes.to_vec(),
                input: input.clone(),
            });
            Some(Arc::new(move |request| {
                let replayer = replayer.clone();
                Box::pin(async move { replayer.read(request).await })
            }))
        }
    }
}

/// Runs a feed, starting it again after transient failures (1 s, doubling to 30 s).
async fn supervise<F, Fut>(run: F, mut shutdown: watch::Receiver<bool>) -> Result<()>
where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = std::time::Instant::now();
        match run(shutdown.clone()).await {
            Ok(()) => return Ok(()),
            // Not a failure: new tables joined; start again at once.
            Err(error) if error.starts_over() => continue,
            Err(error) if error.class() == ErrorClass::Transient || error.waits_for_operator() => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                warn!(code = error.code(), error = %error, retry_in_ms = backoff.as_millis() as u64, "reading the source failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(error) => return Err(error),
        }
    }
}

async fn keep_delivering(worker: Worker, shutdown: watch::Receiver<bool>) {
    let route = worker.route.name.clone();
    loop {
        let outcome = worker.clone().run(shutdown.clone()).await;
        match outcome {
            Ok(()) => return,
            Err(error) => {
                warn!(route = %route, error = %error, "delivering failed; starting again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Deletes finished messages past their route's retention, often enough for the shortest one.
async fn keep_pruning(
    log: DeliveryLog,
    routes: Vec<Arc<config::Route>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let shortest = routes
        .iter()
        .flat_map(|route| [route.success_retention, route.failure_retention])
        .min()
        .unwrap_or(Duration::from_secs(3600));
    let interval = (shortest / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        for route in &routes {
            for (status, retention) in [
                ("delivered", route.success_retention),
                ("failed", route.failure_retention),
            ] {
                let before = unix_millis_now()
                    .saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
                match log.prune(&route.name, status, before).await {
                    Ok(0) => {}
                    Ok(deleted) => {
                        info!(route = %route.name, status, deleted, "retention: old messages removed from the log")
                    }
                    Err(error) => warn!(error = %error, "retention failed; trying again later"),
                }
            }
        }
        if let Ok(pending) = log.pending().await {
            metrics.pending.store(pending, AtomicOrdering::Relaxed);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
