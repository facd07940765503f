//! Counters per route, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the attempt latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
pub struct RouteCounters {
    pub delivered: AtomicU64,
    /// Parked after the last retry or refused by the endpoint.
    pub failed: AtomicU64,
    /// Attempts that will be tried again.
    pub retried: AtomicU64,
    pub attempts: AtomicU64,
    pub ingested: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_micros: AtomicU64,
    /// 1 while the endpoint's circuit breaker is open.
    pub breaker_open: AtomicU64,
}

impl RouteCounters {
    pub fn observe_latency(&self, seconds: f64) {
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// A metric family: name, help, and how to read it from a route's counters.
type Family = (&'static str, &'static str, fn(&RouteCounters) -> u64);

/// Every route's counters.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, std::sync::Arc<RouteCounters>>>,
    /// Source changes waiting in the log (`pending`), as last counted.
    pub pending: AtomicU64,
    /// Kafka: per topic and partition, the records after the last one with an outcome.
    partition_lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// A lag measurement is running (at most one at a time).
    pub measuring_lag: std::sync::atomic::AtomicBool,
}

impl Metrics {
    pub fn route(&self, name: &str) -> std::sync::Arc<RouteCounters> {
        self.routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn set_partition_lag(&self, measured: Vec<((String, i32), i64)>) {
        let mut lag = self
            .partition_lag
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lag.extend(measured);
    }

    /// Per-route counters as JSON, for the web page.
    pub fn json(&self) -> serde_json::Value {
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut object = serde_json::Map::new();
        for (name, counters) in routes.iter() {
            object.insert(
                name.clone(),
                serde_json::json!({
                    "delivered": counters.delivered.load(Ordering::Relaxed),
                    "failed": counters.failed.load(Ordering::Relaxed),
                    "retried": counters.retried.load(Ordering::Relaxed),
                    "attempts": counters.attempts.load(Ordering::Relaxed),
                    "ingested": counters.ingested.load(Ordering::Relaxed),
                    "breaker_open": counters.breaker_open.load(Ordering::Relaxed) == 1,
                }),
            );
        }
        serde_json::Value::Object(object)
    }

    pub fn prometheus(&self) -> String {
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut text = String::new();
        let families: [Family; 6] = [
            (
                "ferry_relay_delivered_total",
                "Messages delivered (2xx).",
                |c| c.delivered.load(Ordering::Relaxed),
            ),
            (
                "ferry_relay_failed_total",
                "Messages parked as failed.",
                |c| c.failed.load(Ordering::Relaxed),
            ),
            (
                "ferry_relay_retried_total",
                "Attempts that failed and will be retried.",
                |c| c.retried.load(Ordering::Relaxed),
            ),
            ("ferry_relay_attempts_total", "Delivery attempts.", |c| {
                c.attempts.load(Ordering::Relaxed)
            }),
            (
                "ferry_relay_ingested_total",
                "Messages taken into the delivery log.",
                |c| c.ingested.load(Ordering::Relaxed),
            ),
            (
                "ferry_relay_breaker_open",
                "1 while the endpoint's circuit breaker is open.",
                |c| c.breaker_open.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in families {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (route, counters) in routes.iter() {
                let _ = writeln!(
                    text,
                    "{name}{{route=\"{}\"}} {}",
                    escape(route),
                    value(counters)
                );
            }
        }
        let name = "ferry_relay_attempt_seconds";
        let _ = writeln!(
            text,
            "# HELP {name} Delivery attempt latency.\n# TYPE {name} histogram"
        );
        for (route, counters) in routes.iter() {
            let route = escape(route);
            for (bound, bucket) in BUCKETS.iter().zip(&counters.buckets) {
                let _ = writeln!(
                    text,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = counters.attempts.load(Ordering::Relaxed);
            let _ = writeln!(
                text,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                text,
                "{name}_sum{{route=\"{route}\"}} {}",
                counters.latency_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(text, "{name}_count{{route=\"{route}\"}} {count}");
        }
        let lag = self
            .partition_lag
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !lag.is_empty() {
            let _ = writeln!(text, "# HELP ferry_relay_consumer_lag Kafka records after the last one with an outcome (delivered or parked), per partition.\n# TYPE ferry_relay_consumer_lag gauge");
            for ((topic, partition), records) in lag.iter() {
                let _ = writeln!(
                    text,
                    "ferry_relay_consumer_lag{{topic=\"{}\",partition=\"{partition}\"}} {records}",
                    escape(topic)
                );
            }
        }
        let _ = writeln!(
            text,
            "# HELP ferry_relay_pending Messages in the log waiting for delivery.\n# TYPE ferry_relay_pending gauge\nferry_relay_pending {}",
            self.pending.load(Ordering::Relaxed)
        );
        text
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
