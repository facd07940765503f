//! The relay's control plane: search the delivery log, look at a message and its attempts,
//! queue messages again, counters, Prometheus metrics, and the web page at `/`.
//!
//! - `GET /api/relay/messages?status=&route=&topic=&key=&since=&until=&q=&limit=&next=`
//! - `GET /api/relay/messages/{id}`, `POST /api/relay/messages/{id}/retry`
//! - `POST /api/relay/retry` with the filters as a JSON object: `{"retried": n}`
//! - `GET /api/relay/stats`, `GET /metrics`, `GET /` (the page)
//!
//! Times are RFC 3339 in answers; `since` and `until` take RFC 3339 or Unix milliseconds.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::document::rfc3339;
use crate::http::server::{Handler, Request, Response};
use crate::log::{DeliveryLog, Filter, MessageRow};
use crate::metrics::Metrics;
use crate::signature::base64;
use ferry_core::calendar::unix_millis_now;

const PAGE: &str = include_str!("page.html");

pub use crate::replay::{Replay, ReplayRequest};

/// What the handlers read and change.
pub struct Api {
    pub relay: String,
    pub routes: Vec<(String, String)>,
    pub log: DeliveryLog,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
    /// Set when the source can be read again (Kafka).
    pub replay: Option<Replay>,
}

impl Api {
    pub fn handler(self: Arc<Self>) -> Handler {
        Arc::new(move |request| {
            let api = self.clone();
            Box::pin(async move { api.answer(request).await })
        })
    }

    async fn answer(&self, request: Request) -> Response {
        let method = request.method.as_str();
        let path = request.path.trim_end_matches('/');
        let result = match (method, path) {
            ("GET", "") | ("GET", "/index.html") => {
                return Response::new(200, "text/html; charset=utf-8", PAGE)
            }
            ("GET", "/metrics") => {
                return Response::new(200, "text/plain; version=0.0.4", self.metrics.prometheus())
            }
            ("GET", "/api/relay/messages") => self.search(&request).await,
            ("GET", "/api/relay/stats") => self.stats().await,
            ("POST", "/api/relay/retry") => self.retry(&request).await,
            ("POST", "/api/relay/replay") => self.replay(&request).await,
            ("GET", _) if path.starts_with("/api/relay/messages/") => {
                self.message(&path["/api/relay/messages/".len()..]).await
            }
            ("POST", _) if path.starts_with("/api/relay/messages/") && path.ends_with("/retry") => {
                let id = &path["/api/relay/messages/".len()..path.len() - "/retry".len()];
                self.retry_one(id).await
            }
            (_, _) => Err((404, format!("no {method} {path}: see /api/relay/messages, /api/relay/retry, /api/relay/stats, /metrics"))),
        };
        match result {
            Ok(value) => Response::json(200, &value),
            Err((status, message)) => {
                Response::json(status, &serde_json::json!({ "error": message }))
            }
        }
    }

    async fn search(&self, request: &Request) -> Result<serde_json::Value, (u16, String)> {
        let filter = filter_from(&|name| request.parameter(name).map(str::to_string))?;
        let limit = match request.parameter("limit") {
            Some(limit) => limit
                .parse::<usize>()
                .map_err(|_| (400, format!("limit '{limit}' is not a number")))?
                .clamp(1, 500),
            None => 50,
        };
        let before = match request.parameter("next") {
            Some(next) => Some(
                next.parse::<i64>()
                    .map_err(|_| (400, format!("next '{next}' is not a cursor this API gave")))?,
            ),
            None => None,
        };
        let (rows, next) = self
            .log
            .search(filter, before, limit)
            .await
            .map_err(internal)?;
        Ok(serde_json::json!({
            "messages": rows.iter().map(row_json).collect::<Vec<_>>(),
            "next": next.map(|seq| seq.to_string()),
        }))
    }

    async fn message(&self, id: &str) -> Result<serde_json::Value, (u16, String)> {
        let Some((row, payload, attempts)) = self.log.message(id).await.map_err(internal)? else {
            return Err((404, format!("no message {id}")));
        };
        let mut value = row_json(&row);
        let object = value.as_object_mut().expect("row_json gives an object");
        match String::from_utf8(payload) {
            Ok(text) => {
                object.insert("payload".into(), serde_json::Value::String(text));
            }
            Err(bytes) => {
                object.insert(
                    "payload_base64".into(),
                    serde_json::Value::String(base64(bytes.as_bytes())),
                );
            }
        }
        object.insert(
            "attempts_log".into(),
            serde_json::Value::Array(
                attempts
                    .iter()
                    .map(|attempt| {
                        serde_json::json!({
                            "number": attempt.number,
                            "at": rfc3339(attempt.at * 1000),
                            "http_status": attempt.http_status,
                            "latency_ms": (attempt.latency_ms * 10.0).round() / 10.0,
                            "error": attempt.error,
                            "response": attempt.response,
                        })
                    })
                    .collect(),
            ),
        );
        Ok(value)
    }

    async fn retry_one(&self, id: &str) -> Result<serde_json::Value, (u16, String)> {
        if self.log.message(id).await.map_err(internal)?.is_none() {
            return Err((404, format!("no message {id}")));
        }
        let retried = self
            .log
            .retry_message(id, unix_millis_now())
            .await
            .map_err(internal)?;
        self.wake.notify_waiters();
        Ok(serde_json::json!({ "retried": u64::from(retried) }))
    }

    async fn retry(&self, request: &Request) -> Result<serde_json::Value, (u16, String)> {
        let body: serde_json::Value = if request.body.iter().all(u8::is_ascii_whitespace) {
            serde_json::json!({})
        } else {
            serde_json::from_slice(&request.body)
                .map_err(|error| (400, format!("the body is not JSON: {error}")))?
        };
        let Some(object) = body.as_object() else {
            return Err((400, "the body must be a JSON object of filters, like {\"status\": \"failed\", \"route\": \"orders\"}".into()));
        };
        let filter = filter_from(&|name| match object.get(name) {
            Some(serde_json::Value::String(text)) if !text.is_empty() => Some(text.clone()),
            Some(serde_json::Value::Number(number)) => Some(number.to_string()),
            _ => None,
        })?;
        if filter.status.as_deref() == Some("pending") {
            return Err((400, "pending messages are queued already".into()));
        }
        let retried = self
            .log
            .retry(filter, unix_millis_now())
            .await
            .map_err(internal)?;
        self.wake.notify_waiters();
        Ok(serde_json::json!({ "retried": retried }))
    }

    async fn replay(&self, request: &Request) -> Result<serde_json::Value, (u16, String)> {
        let Some(replay) = &self.replay else {
            return Err((400, "replay re-reads Kafka; this relay reads a database: queue logged messages again with POST /api/relay/retry and since/until".into()));
        };
        let body: serde_json::Value = serde_json::from_slice(&request.body)
            .map_err(|error| (400, format!("the body is not JSON: {error}")))?;
        let mut fields = body.clone();
        let since = fields
            .as_object_mut()
            .and_then(|object| object.remove("since"));
        let until = fields
            .as_object_mut()
            .and_then(|object| object.remove("until"));
        let mut replay_request: ReplayRequest = serde_json::from_value(fields).map_err(|error| {
            (400, format!("{error}: give topic, partition and from_offset (and to_offset), or since (and until), and optionally route"))
        })?;
        let time = |value: Option<serde_json::Value>,
                    name: &str|
         -> Result<Option<i64>, (u16, String)> {
            match value {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Number(number)) => Ok(number.as_i64()),
                Some(serde_json::Value::String(text)) => {
                    parse_time(&text).map(Some).ok_or_else(|| {
                        (
                            400,
                            format!("{name} '{text}' is not an RFC 3339 time or Unix milliseconds"),
                        )
                    })
                }
                Some(other) => Err((400, format!("{name} {other} is not a time"))),
            }
        };
        replay_request.since_ms = time(since, "since")?;
        replay_request.until_ms = time(until, "until")?;
        if replay_request.from_offset.is_none() && replay_request.since_ms.is_none() {
            return Err((
                400,
                "give from_offset or since: where the replay starts".into(),
            ));
        }
        let messages = replay(replay_request)
            .await
            .map_err(|error| (400, error.to_string()))?;
        let read = messages.len();
        let queued = self
            .log
            .replay(messages, unix_millis_now())
            .await
            .map_err(internal)?;
        self.wake.notify_waiters();
        Ok(serde_json::json!({ "read": read, "retried": queued }))
    }

    async fn stats(&self) -> Result<serde_json::Value, (u16, String)> {
        let counts = self.log.counts().await.map_err(internal)?;
        let counters = self.metrics.json();
        let routes: Vec<serde_json::Value> = self
            .routes
            .iter()
            .map(|(name, origin)| {
                let count = |status: &str| {
                    counts
                        .iter()
                        .find(|count| count.route == *name && count.status == status)
                        .map_or(0, |count| count.messages)
                };
                serde_json::json!({
                    "name": name,
                    "endpoint": origin,
                    "pending": count("pending"),
                    "delivered": count("delivered"),
                    "failed": count("failed"),
                    "since_start": counters.get(name).cloned().unwrap_or(serde_json::Value::Null),
                })
            })
            .collect();
        Ok(serde_json::json!({ "relay": self.relay, "routes": routes }))
    }
}

fn internal(error: ferry_core::Error) -> (u16, String) {
    (500, error.to_string())
}

fn row_json(row: &MessageRow) -> serde_json::Value {
    let time = |ms: Option<i64>| ms.map(|ms| rfc3339(ms * 1000));
    serde_json::json!({
        "id": row.id,
        "route": row.route,
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.offset,
        "position": row.position,
        "key": row.key,
        "status": row.status,
        "attempts": row.attempts,
        "last_http_status": row.last_http_status,
        "last_error": row.last_error,
        "created_at": rfc3339(row.created_at * 1000),
        "first_attempt_at": time(row.first_attempt_at),
        "last_attempt_at": time(row.last_attempt_at),
        "next_attempt_at": time(row.next_attempt_at),
    })
}

/// Filters from query parameters or a JSON body.
fn filter_from(get: &dyn Fn(&str) -> Option<String>) -> Result<Filter, (u16, String)> {
    let status = get("status");
    if let Some(status) = &status {
        if !["pending", "delivered", "failed"].contains(&status.as_str()) {
            return Err((
                400,
                format!("status '{status}' is not pending, delivered or failed"),
            ));
        }
    }
    let time = |name: &str| -> Result<Option<i64>, (u16, String)> {
        match get(name) {
            None => Ok(None),
            Some(text) => parse_time(&text).map(Some).ok_or_else(|| {
                (
                    400,
                    format!("{name} '{text}' is not an RFC 3339 time or Unix milliseconds"),
                )
            }),
        }
    };
    Ok(Filter {
        status,
        route: get("route"),
        topic: get("topic"),
        key: get("key"),
        since_ms: time("since")?,
        until_ms: time("until")?,
        text: get("q"),
        id: get("id"),
    })
}

/// Unix milliseconds from `1733400000000` or `2026-12-05T10:00:00Z` (`.fff`, `+01:00` too;
/// a bare date is midnight UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let number = |part: &str| part.parse::<i64>().ok();
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, "00:00:00Z"),
    };
    let mut date_parts = date.split('-');
    let (year, month, day) = (
        number(date_parts.next()?)?,
        number(date_parts.next()?)?,
        number(date_parts.next()?)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_seconds) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (clock, offset) = rest.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset[1..].split_once(':')?;
        (
            clock,
            sign * (number(hours)? * 3600 + number(minutes)? * 60),
        )
    } else {
        (rest, 0)
    };
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut clock_parts = clock.split(':');
    let hour = number(clock_parts.next()?)?;
    let minute = number(clock_parts.next().unwrap_or("0"))?;
    let second = number(clock_parts.next().unwrap_or("0"))?;
    let millis = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
        number(&digits)?
    };
    let days = ferry_core::calendar::days_from_civil(year, month as u32, day as u32);
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds) * 1000) + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_time("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
        assert_eq!(
            parse_time("2000-02-29T01:00:00+01:00"),
            Some(951_782_400_000)
        );
        assert_eq!(parse_time("2000-02-29"), Some(951_782_400_000));
        assert_eq!(parse_time("2000-13-01"), None);
        assert_eq!(parse_time("soon"), None);
        // Round trip with the formatter.
        let ms = 1_764_930_000_123;
        assert_eq!(parse_time(&rfc3339(ms * 1000)), Some(ms));
    }

    #[test]
    fn filters_are_checked() {
        let get = |name: &str| match name {
            "status" => Some("lost".to_string()),
            _ => None,
        };
        assert_eq!(filter_from(&get).unwrap_err().0, 400);
        let get = |name: &str| match name {
            "status" => Some("failed".to_string()),
            "since" => Some("2026-12-05T00:00:00Z".to_string()),
            _ => None,
        };
        let filter = filter_from(&get).unwrap();
        assert_eq!(filter.status.as_deref(), Some("failed"));
        assert!(filter.since_ms.is_some());
    }
}
