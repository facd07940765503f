//! Delivery: one worker per route takes due messages from the log, posts them (up to the
//! route's concurrency at once), and stores each attempt with what follows from it.
//!
//! - 2xx: delivered. Network errors, timeouts, 408, 429 and 5xx: retried after the route's
//!   backoff (doubled each attempt, ±20% jitter, at most `max_backoff`), or after the
//!   endpoint's `Retry-After` when that is longer; once `1 + max_retries` attempts failed the
//!   message is parked as failed. Any other answer (4xx, 3xx): failed at once.
//! - A circuit breaker per endpoint (scheme, host, port): after [`BREAKER_THRESHOLD`] failed
//!   attempts in a row it opens and nothing is sent there (messages keep their retry budget);
//!   after a cooldown (1 s, doubling to 1 min) one message probes; a success closes it.
//! - An attempt is stored before the worker takes the next messages, so a crash repeats at most
//!   the attempts in flight (receivers deduplicate on `webhook-id`).

use ferry_core::calendar::unix_millis_now;
use std::collections::HashMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::{Error, Result};
use std::collections::{HashSet, VecDeque};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::config::Route;
use crate::http::client::{HttpClient, HttpError, Response};
use crate::log::{Attempt, DeliveryLog, DueMessage, Next, Outcome};
use crate::metrics::RouteCounters;
use crate::signature::sign;

/// Failed attempts in a row that open an endpoint's breaker.
pub const BREAKER_THRESHOLD: u32 = 5;

/// Messages a worker takes at once.
const BATCH: usize = 256;

/// How much of a response is kept in the log.
const RESPONSE_SNIPPET: usize = 1024;

/// What an attempt's result means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt, no earlier than the endpoint's `Retry-After` when it gave one.
    Retry(Option<Duration>),
    /// The endpoint refused the message: retrying would not change that.
    Refused,
}

/// Classifies an attempt's result.
pub fn classify(result: &std::result::Result<Response, HttpError>) -> Verdict {
    match result {
        Err(_) => Verdict::Retry(None),
        Ok(response) => match response.status {
            200..=299 => Verdict::Delivered,
            408 | 429 | 500..=599 => Verdict::Retry(
                response
                    .header("retry-after")
                    .and_then(|value| value.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
            ),
            _ => Verdict::Refused,
        },
    }
}

/// The wait before attempt `made + 1`, after `made` attempts (`jitter` in [0, 1)).
pub fn retry_delay(
    route: &Route,
    made: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let doublings = made.saturating_sub(1).min(40);
    let base = route
        .backoff
        .saturating_mul(1u32 << doublings.min(31))
        .min(route.max_backoff);
    let jittered = base.mul_f64(0.8 + 0.4 * jitter).min(route.max_backoff);
    match retry_after {
        Some(after) => jittered.max(after.min(route.max_backoff)),
        None => jittered,
    }
}

/// What follows an attempt that was the `made`-th of the message's budget.
pub fn next_step(route: &Route, verdict: Verdict, made: u32, now_ms: i64, jitter: f64) -> Next {
    match verdict {
        Verdict::Delivered => Next::Delivered,
        Verdict::Refused => Next::Failed,
        Verdict::Retry(_) if made > route.max_retries => Next::Failed,
        Verdict::Retry(after) => {
            let delay = retry_delay(route, made, after, jitter);
            Next::RetryAt(now_ms + delay.as_millis() as i64)
        }
    }
}

/// Circuit breakers by endpoint.
#[derive(Default)]
pub struct Breakers {
    states: Mutex<HashMap<String, Breaker>>,
}

#[derive(Debug, Clone)]
struct Breaker {
    failures_in_a_row: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
}

/// May a worker send to an endpoint now?
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Permit {
    Send,
    /// One message, to see whether the endpoint is back.
    Probe,
    WaitUntil(Instant),
}

impl Breakers {
    pub fn permit(&self, origin: &str) -> Permit {
        let states = self
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match states.get(origin).and_then(|breaker| breaker.open_until) {
            Some(until) if Instant::now() < until => Permit::WaitUntil(until),
            Some(_) => Permit::Probe,
            None => Permit::Send,
        }
    }

    /// Notes an attempt's result: `true` when the endpoint answered (even with a refusal).
    pub fn observe(&self, origin: &str, answered: bool) {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let breaker = states.entry(origin.to_string()).or_insert(Breaker {
            failures_in_a_row: 0,
            open_until: None,
            cooldown: Duration::from_secs(1),
        });
        if answered {
            if breaker.open_until.is_some() {
                info!(
                    endpoint = origin,
                    "the endpoint answers again: circuit closed"
                );
            }
            breaker.failures_in_a_row = 0;
            breaker.open_until = None;
            breaker.cooldown = Duration::from_secs(1);
            return;
        }
        breaker.failures_in_a_row += 1;
        match breaker.open_until {
            // Requests sent before it opened: nothing new.
            Some(until) if Instant::now() < until => {}
            // A failed probe: wait longer.
            Some(_) => {
                breaker.cooldown = (breaker.cooldown * 2).min(Duration::from_secs(60));
                breaker.open_until = Some(Instant::now() + breaker.cooldown);
            }
            None if breaker.failures_in_a_row >= BREAKER_THRESHOLD => {
                warn!(
                    endpoint = origin,
                    failures = breaker.failures_in_a_row,
                    cooldown_ms = breaker.cooldown.as_millis() as u64,
                    "the endpoint keeps failing: circuit open"
                );
                breaker.open_until = Some(Instant::now() + breaker.cooldown);
            }
            None => {}
        }
    }
}

/// What a route worker needs.
#[derive(Clone)]
pub struct Worker {
    pub route: Arc<Route>,
    pub log: DeliveryLog,
    pub client: Arc<HttpClient>,
    pub breakers: Arc<Breakers>,
    pub counters: Arc<RouteCounters>,
    /// Notified when messages were ingested or queued again.
    pub wake: Arc<Notify>,
    /// Shared with the feed: its back-pressure reads the pending count.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// A cheap random number in [0, 1) for jitter.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos() ^ unix_millis_now() as u128);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Worker {
    /// Delivers until `shutdown` turns true; returns on a log failure.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let origin = self.route.target.origin();
        // Requests go continuously, up to the route's concurrency: a queue of due messages
        // fetched ahead, the attempts in flight, and outcomes stored in groups by a store
        // running beside them (one at a time). A message stays pending in the log while
        // queued or in flight (only this worker changes pending messages), and the next
        // message of its key becomes due only once its outcome is stored, so key order holds;
        // the queue is topped up while requests and stores run (messages queued, in flight or
        // being stored are skipped when the log lists them again).
        let mut queue: VecDeque<DueMessage> = VecDeque::new();
        let mut queued: HashSet<i64> = HashSet::new();
        let mut in_flight = FuturesUnordered::new();
        let mut finished: Vec<Outcome> = Vec::new();
        let mut storing: Option<(tokio::task::JoinHandle<Result<()>>, Vec<i64>)> = None;
        let mut stopping = false;
        // The log had nothing more to give at the last look; look again after a change.
        let mut exhausted = false;
        let mut generation = self.log.requeue_generation();
        loop {
            // Messages were queued again (an operator's retry, a replay): an earlier message of
            // a key may now go first, so what was fetched ahead is fetched again.
            if self.log.requeue_generation() != generation {
                generation = self.log.requeue_generation();
                for message in queue.drain(..) {
                    queued.remove(&message.seq);
                }
                exhausted = false;
            }
            stopping = stopping || *shutdown.borrow();
            if stopping && in_flight.is_empty() {
                if let Some((handle, _)) = storing.take() {
                    handle
                        .await
                        .map_err(|error| Error::transient("relay.worker", error.to_string()))??;
                }
                self.store(std::mem::take(&mut finished)).await?;
                return Ok(());
            }
            // Launch what the breaker allows.
            let permit = self.breakers.permit(&origin);
            let room = match permit {
                _ if stopping => 0,
                Permit::WaitUntil(_) => 0,
                Permit::Probe => usize::from(in_flight.is_empty()),
                Permit::Send => self.route.concurrency.saturating_sub(in_flight.len()),
            };
            let open = matches!(permit, Permit::WaitUntil(_));
            self.counters
                .breaker_open
                .store(u64::from(open), AtomicOrdering::Relaxed);
            for _ in 0..room {
                let Some(message) = queue.pop_front() else {
                    break;
                };
                in_flight.push(self.attempt(message));
            }
            if storing.is_none() && !finished.is_empty() {
                let outcomes = std::mem::take(&mut finished);
                let seqs = outcomes.iter().map(|outcome| outcome.seq).collect();
                let log = self.log.clone();
                storing = Some((
                    tokio::spawn(async move { log.record(outcomes).await }),
                    seqs,
                ));
            }
            // Registered before looking, so that messages stored meanwhile are not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if queue.len() < self.route.concurrency && !exhausted && !stopping && !open {
                let limit = if permit == Permit::Probe { 1 } else { BATCH };
                let due = self
                    .log
                    .due(
                        &self.route.name,
                        self.route.ordering,
                        unix_millis_now(),
                        limit + queued.len(),
                    )
                    .await?;
                let before = queue.len();
                for message in due {
                    if queued.insert(message.seq) {
                        queue.push_back(message);
                    }
                }
                exhausted = queue.len() == before;
                if !exhausted && room > 0 {
                    continue;
                }
            }
            if !queue.is_empty() && room > 0 {
                continue;
            }
            let idle = in_flight.is_empty() && storing.is_none();
            let wait = match permit {
                Permit::WaitUntil(until) => until.saturating_duration_since(Instant::now()),
                // Requests or a store in flight wake the loop; new messages and retries falling
                // due are looked for at least this often meanwhile.
                _ if !idle => Duration::from_millis(250),
                _ => match self
                    .log
                    .next_due_at(&self.route.name, unix_millis_now())
                    .await?
                {
                    Some(at) => {
                        Duration::from_millis((at - unix_millis_now()).clamp(1, 1000) as u64)
                    }
                    None => Duration::from_secs(1),
                },
            };
            let stored = async {
                match storing.as_mut() {
                    Some((handle, _)) => handle.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(outcome) = in_flight.next(), if !in_flight.is_empty() => {
                    self.observe(&origin, &outcome);
                    finished.push(outcome);
                }
                result = stored => {
                    result.map_err(|error| Error::transient("relay.worker", error.to_string()))??;
                    if let Some((_, seqs)) = storing.take() {
                        for seq in seqs {
                            queued.remove(&seq);
                        }
                    }
                    exhausted = false;
                }
                _ = tokio::time::sleep(wait) => exhausted = false,
                _ = &mut notified => exhausted = false,
                _ = shutdown.changed(), if !stopping => {}
            }
        }
    }

    /// Counts an attempt and tells the breaker.
    fn observe(&self, origin: &str, outcome: &Outcome) {
        let answered = outcome
            .attempt
            .http_status
            .is_some_and(|status| !(status == 408 || status == 429 || status >= 500));
        self.breakers.observe(origin, answered);
        self.counters.attempts.fetch_add(1, AtomicOrdering::Relaxed);
        self.counters
            .observe_latency(outcome.attempt.latency_ms / 1000.0);
        let counter = match outcome.next {
            Next::Delivered => &self.counters.delivered,
            Next::RetryAt(_) => &self.counters.retried,
            Next::Failed => &self.counters.failed,
        };
        counter.fetch_add(1, AtomicOrdering::Relaxed);
        if !matches!(outcome.next, Next::RetryAt(_)) {
            // Left the pending state (an estimate; retention recounts it).
            let _ = self.metrics.pending.fetch_update(
                AtomicOrdering::Relaxed,
                AtomicOrdering::Relaxed,
                |pending| Some(pending.saturating_sub(1)),
            );
        }
    }

    async fn store(&self, outcomes: Vec<Outcome>) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.log.record(outcomes).await
    }

    /// One attempt at one message.
    async fn attempt(&self, message: DueMessage) -> Outcome {
        let route = &self.route;
        let timestamp = unix_millis_now() / 1000;
        let mut headers: Vec<(String, String)> = vec![
            ("Content-Type".into(), "application/json".into()),
            (
                "User-Agent".into(),
                concat!("ferry-relay/", env!("CARGO_PKG_VERSION")).into(),
            ),
            ("webhook-id".into(), message.id.clone()),
            ("webhook-timestamp".into(), timestamp.to_string()),
            ("ferry-route".into(), route.name.clone()),
            ("ferry-topic".into(), message.topic.clone()),
            (
                "ferry-attempt".into(),
                (message.attempts_in_budget + 1).to_string(),
            ),
        ];
        if let Some(partition) = message.partition {
            headers.push(("ferry-partition".into(), partition.to_string()));
        }
        if let Some(offset) = message.offset {
            headers.push(("ferry-offset".into(), offset.to_string()));
        }
        if let Some(key) = &route.signing_key {
            headers.push((
                "webhook-signature".into(),
                sign(key, &message.id, timestamp, &message.payload),
            ));
        }
        headers.extend(route.headers.iter().cloned());
        let started = Instant::now();
        let at_ms = unix_millis_now();
        let result = self
            .client
            .send(
                "POST",
                &route.target,
                &headers,
                &message.payload,
                route.timeout,
            )
            .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let verdict = classify(&result);
        let made = message.attempts_in_budget + 1;
        let next = next_step(route, verdict, made, unix_millis_now(), jitter());
        let (http_status, error, response) = match &result {
            Ok(response) => {
                let snippet = String::from_utf8_lossy(
                    &response.body[..response.body.len().min(RESPONSE_SNIPPET)],
                )
                .into_owned();
                let error =
                    (verdict != Verdict::Delivered).then(|| format!("HTTP {}", response.status));
                (Some(response.status), error, Some(snippet))
            }
            Err(error) => (None, Some(error.to_string()), None),
        };
        if next == Next::Failed {
            warn!(route = %route.name, id = %message.id, attempts = made, error = error.as_deref().unwrap_or(""), "message parked as failed");
        }
        Outcome {
            seq: message.seq,
            attempt: Attempt {
                at_ms,
                http_status,
                latency_ms,
                error,
                response,
            },
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Format, Ordering};
    use crate::http::client::Target;

    fn route() -> Route {
        Route {
            name: "r".into(),
            patterns: vec![],
            target: Target::parse("http://x/").unwrap(),
            max_retries: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            format: Format::Json,
            protobuf: None,
            headers: vec![],
            signing_key: None,
            success_retention: Duration::from_secs(1),
            failure_retention: Duration::from_secs(1),
            ordering: Ordering::Key,
            concurrency: 1,
            ca_file: None,
        }
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> std::result::Result<Response, HttpError> {
        Ok(Response {
            status,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: vec![],
        })
    }

    #[test]
    fn verdicts() {
        assert_eq!(classify(&response(204, &[])), Verdict::Delivered);
        assert_eq!(classify(&response(503, &[])), Verdict::Retry(None));
        assert_eq!(
            classify(&response(429, &[("Retry-After", "7")])),
            Verdict::Retry(Some(Duration::from_secs(7)))
        );
        assert_eq!(classify(&response(408, &[])), Verdict::Retry(None));
        assert_eq!(classify(&response(400, &[])), Verdict::Refused);
        assert_eq!(classify(&response(301, &[])), Verdict::Refused);
        assert_eq!(classify(&Err(HttpError::Timeout)), Verdict::Retry(None));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_budget() {
        let route = route();
        assert_eq!(
            retry_delay(&route, 1, None, 0.5),
            Duration::from_millis(500)
        );
        assert_eq!(
            retry_delay(&route, 2, None, 0.5),
            Duration::from_millis(1000)
        );
        assert_eq!(
            retry_delay(&route, 3, None, 0.0),
            Duration::from_millis(1600)
        );
        assert_eq!(retry_delay(&route, 30, None, 0.99), Duration::from_secs(10));
        assert_eq!(
            retry_delay(&route, 1, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_delay(&route, 1, Some(Duration::from_secs(700)), 0.5),
            Duration::from_secs(10)
        );
        // max_retries = 3: attempts 1..=3 retry, the 4th failure parks.
        assert_eq!(
            next_step(&route, Verdict::Retry(None), 3, 0, 0.5),
            Next::RetryAt(2000)
        );
        assert_eq!(
            next_step(&route, Verdict::Retry(None), 4, 0, 0.5),
            Next::Failed
        );
        assert_eq!(next_step(&route, Verdict::Refused, 1, 0, 0.5), Next::Failed);
        assert_eq!(
            next_step(&route, Verdict::Delivered, 4, 0, 0.5),
            Next::Delivered
        );
    }

    #[test]
    fn breaker_opens_after_failures_and_probes() {
        let breakers = Breakers::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            breakers.observe("e", false);
        }
        assert_eq!(breakers.permit("e"), Permit::Send);
        breakers.observe("e", false);
        assert!(matches!(breakers.permit("e"), Permit::WaitUntil(_)));
        breakers.observe("e", true);
        assert_eq!(breakers.permit("e"), Permit::Send);
        assert_eq!(breakers.permit("other"), Permit::Send);
    }
}
