//! The control plane over HTTP: a small HTTP/1.1 server (one request per connection) on
//! `--listen`.
//!
//! - `GET /healthz`: `ok` while the process runs (never needs the token, for load balancers).
//! - `GET /api/phase`: where applications should read and write.
//! - `GET /api/status`: phase, per-direction stage, tables, rows, lag, throughput, errors.
//! - `GET /metrics`: Prometheus text format.
//!
//! Listening beyond loopback requires a token (`Authorization: Bearer <token>`); the token is
//! never logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::telemetry::Telemetry;

/// Requests larger than this are refused.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

/// Binds `address` and serves `telemetry` until the process ends.
pub async fn serve(
    address: &str,
    token: Option<String>,
    telemetry: Arc<Telemetry>,
) -> Result<SocketAddr> {
    let address: SocketAddr = address.parse().map_err(|_| {
        Error::operator(
            "config.listen",
            format!("--listen {address:?} is not an address like 127.0.0.1:9187"),
        )
        .with_hint("give an IP address and a port")
    })?;
    if !address.ip().is_loopback() && token.as_deref().is_none_or(str::is_empty) {
        return Err(Error::operator(
            "config.listen_token",
            format!("listening on {address} (beyond loopback) needs a token"),
        )
        .with_hint(
            "set FERRY_API_TOKEN (or --api-token); clients send `Authorization: Bearer <token>`",
        ));
    }
    let listener = TcpListener::bind(address).await.map_err(|error| {
        Error::operator(
            "config.listen",
            format!("cannot listen on {address}: {error}"),
        )
        .with_hint("pick a free port, or stop whatever listens there")
    })?;
    let bound = listener.local_addr().unwrap_or(address);
    info!(address = %bound, "control plane listening (/api/status, /api/phase, /metrics, /healthz)");
    let token = token.filter(|token| !token.is_empty()).map(Arc::new);
    // Bounded: a flood of clients must not take the file descriptors ferry's database
    // connections need.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    debug!(error = %error, "accepting a control plane connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let telemetry = telemetry.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(error) = tokio::time::timeout(
                    Duration::from_secs(10),
                    answer(stream, token.as_deref().map(String::as_str), &telemetry),
                )
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
                {
                    debug!(error = %error, "control plane request failed");
                }
            });
        }
    });
    Ok(bound)
}

async fn answer(
    mut stream: TcpStream,
    token: Option<&str>,
    telemetry: &Telemetry,
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buffer = [0u8; 2048];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
        if request.len() > MAX_REQUEST_BYTES {
            return respond(&mut stream, 431, "text/plain", "request too large\n").await;
        }
    }
    let text = String::from_utf8_lossy(&request);
    let (status, content_type, body) = route(&text, token, telemetry);
    respond(&mut stream, status, content_type, &body).await
}

/// Answers one request: (status, content type, body).
fn route(request: &str, token: Option<&str>, telemetry: &Telemetry) -> (u16, &'static str, String) {
    let mut lines = request.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("");
    let path = first.next().unwrap_or("").split('?').next().unwrap_or("");
    if method != "GET" {
        return (405, "text/plain", "only GET is supported\n".into());
    }
    if path == "/healthz" {
        return (200, "text/plain", "ok\n".into());
    }
    if let Some(token) = token {
        let presented = lines
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
            .and_then(|(_, value)| value.trim().strip_prefix("Bearer "))
            .map(str::trim);
        if !presented.is_some_and(|presented| constant_time_equal(presented, token)) {
            return (
                401,
                "text/plain",
                "missing or wrong token (Authorization: Bearer <token>)\n".into(),
            );
        }
    }
    match path {
        "/api/status" => (200, "application/json", telemetry.status_json().to_string()),
        // A phase ferry could not re-read lately must not route applications.
        "/api/phase" if telemetry.phase_is_stale() => {
            (503, "application/json", telemetry.phase_json().to_string())
        }
        "/api/phase" => (200, "application/json", telemetry.phase_json().to_string()),
        "/metrics" => (200, "text/plain; version=0.0.4", telemetry.metrics()),
        _ => (
            404,
            "text/plain",
            "not found: try /api/status, /api/phase, /metrics, /healthz\n".into(),
        ),
    }
}

fn constant_time_equal(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Request Header Fields Too Large",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Direction;

    fn telemetry() -> Telemetry {
        Telemetry::new(
            "shop",
            Direction::new("forward", None),
            Direction::new("reverse", None),
        )
    }

    #[test]
    fn routes_and_tokens() {
        let telemetry = telemetry();
        let get =
            |path: &str, header: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\n");
        assert_eq!(
            route(&get("/healthz", ""), Some("secret"), &telemetry).0,
            200
        );
        assert_eq!(
            route(&get("/api/phase", ""), Some("secret"), &telemetry).0,
            401
        );
        assert_eq!(
            route(
                &get("/api/phase", "Authorization: Bearer nope\r\n"),
                Some("secret"),
                &telemetry
            )
            .0,
            401
        );
        let (status, _, body) = route(
            &get("/api/phase", "authorization: Bearer secret\r\n"),
            Some("secret"),
            &telemetry,
        );
        // Never read from the target yet: not to be trusted.
        assert_eq!(status, 503);
        let phase: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(phase["phase"], "replicating");
        assert_eq!(phase["write_primary"], "source");
        assert_eq!(route(&get("/nope", ""), None, &telemetry).0, 404);
        telemetry.set_record(Default::default());
        assert_eq!(route(&get("/api/phase", ""), None, &telemetry).0, 200);
        assert_eq!(
            route("POST /api/phase HTTP/1.1\r\n\r\n", None, &telemetry).0,
            405
        );
        let (_, content_type, metrics) = route(&get("/metrics", ""), None, &telemetry);
        assert!(content_type.starts_with("text/plain"));
        assert!(metrics.contains("ferry_phase{phase=\"replicating\"} 1"));
        assert!(metrics.contains("ferry_changes_applied_total{direction=\"forward\"} 0"));
    }

    #[test]
    fn metric_families_are_contiguous() {
        let telemetry = telemetry();
        telemetry.set_reverse_running(true);
        let metrics = telemetry.metrics();
        let mut seen: Vec<&str> = Vec::new();
        for line in metrics.lines().filter(|line| !line.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            if seen.last() != Some(&name) {
                assert!(
                    !seen.contains(&name),
                    "{name} appears in two groups:\n{metrics}"
                );
                seen.push(name);
            }
        }
        assert!(metrics.contains("ferry_lag_seconds{direction=\"reverse\"}"));
    }
}
