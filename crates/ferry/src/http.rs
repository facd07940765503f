//! The control plane over HTTP (on `--listen`, through the relay's small HTTP server: one
//! request per connection, a token beyond loopback, checked in constant time and never logged).
//!
//! - `GET /healthz`: `ok` while the process runs (never needs the token, for load balancers).
//! - `GET /api/phase`: where applications should read and write.
//! - `GET /api/status`: phase, per-direction stage, tables, rows, lag, throughput, errors.
//! - `GET /metrics`: Prometheus text format.
//!
//! Listening beyond loopback requires a token (`Authorization: Bearer <token>`).

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_core::Result;
use ferry_relay::http::server::{Handler, Request, Response};
use tracing::info;

use crate::telemetry::Telemetry;

/// Binds `address` and serves `telemetry` until the process ends.
pub(crate) async fn serve(
    address: &str,
    token: Option<String>,
    telemetry: Arc<Telemetry>,
) -> Result<SocketAddr> {
    let handler: Handler = Arc::new(move |request| {
        let telemetry = telemetry.clone();
        Box::pin(async move { route(&request, &telemetry) })
    });
    let bound = ferry_relay::http::server::serve(address, token, false, handler).await?;
    info!(address = %bound, "control plane listening (/api/status, /api/phase, /metrics, /healthz)");
    Ok(bound)
}

/// Answers one request (the server answered `/healthz` and checked the token).
fn route(request: &Request, telemetry: &Telemetry) -> Response {
    if request.method != "GET" {
        return Response::text(405, "only GET is supported\n");
    }
    match request.path.as_str() {
        "/api/status" => Response::json(200, &telemetry.status_json()),
        // A phase ferry could not re-read lately must not route applications.
        "/api/phase" if telemetry.phase_is_stale() => Response::json(503, &telemetry.phase_json()),
        "/api/phase" => Response::json(200, &telemetry.phase_json()),
        "/metrics" => Response::new(200, "text/plain; version=0.0.4", telemetry.metrics()),
        _ => Response::text(
            404,
            "not found: try /api/status, /api/phase, /metrics, /healthz\n",
        ),
    }
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
    fn routes() {
        let telemetry = telemetry();
        let get = |path: &str| {
            let request = ferry_relay::http::server::parse_head(&format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            ));
            route(&request, &telemetry)
        };
        let response = get("/api/phase");
        // Never read from the target yet: not to be trusted.
        assert_eq!(response.status, 503);
        let phase: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(phase["phase"], "replicating");
        assert_eq!(phase["write_primary"], "source");
        assert_eq!(get("/nope").status, 404);
        telemetry.set_record(Default::default());
        assert_eq!(get("/api/phase").status, 200);
        let post = ferry_relay::http::server::parse_head("POST /api/phase HTTP/1.1\r\n\r\n");
        assert_eq!(route(&post, &telemetry).status, 405);
        let metrics = get("/metrics");
        assert!(metrics.content_type.starts_with("text/plain"));
        let metrics = String::from_utf8(metrics.body).unwrap();
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
