//! A small HTTP/1.1 server for control planes: one request per connection, bodies up to
//! [`MAX_BODY_BYTES`], a bounded number of connections, a bearer token beyond loopback.
//!
//! Contract: every request gets exactly one answer and the connection is closed after it;
//! `GET /healthz` never needs the token; the token is compared in constant time and never
//! logged.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferry_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// Request heads larger than this are refused.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Request bodies larger than this are refused.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

/// One request, decoded.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path without its query, percent-decoded.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first query parameter of this name, when not empty.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }

    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", text.into())
    }
}

/// What answers requests.
pub type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// Parses `--listen`, refusing an address beyond loopback without a token.
pub fn listen_address(address: &str, token: Option<&str>) -> Result<SocketAddr> {
    let parsed: SocketAddr = address.parse().map_err(|_| {
        Error::operator(
            "config.listen",
            format!("--listen {address:?} is not an address like 127.0.0.1:9187"),
        )
        .with_hint("give an IP address and a port")
    })?;
    if !parsed.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(Error::operator(
            "config.listen_token",
            format!("listening on {parsed} (beyond loopback) needs a token"),
        )
        .with_hint(
            "set FERRY_API_TOKEN (or --api-token); clients send `Authorization: Bearer <token>`",
        ));
    }
    Ok(parsed)
}

/// Binds `address` and answers requests with `handler` until the process ends. With
/// `browser_guard` and no token, requests from other sites' web pages are refused (see
/// [`cross_site`]): for APIs that change things or show data.
pub async fn serve(
    address: &str,
    token: Option<String>,
    browser_guard: bool,
    handler: Handler,
) -> Result<SocketAddr> {
    let address = listen_address(address, token.as_deref())?;
    let listener = TcpListener::bind(address).await.map_err(|error| {
        Error::operator(
            "config.listen",
            format!("cannot listen on {address}: {error}"),
        )
        .with_hint("pick a free port, or stop whatever listens there")
    })?;
    let bound = listener.local_addr().unwrap_or(address);
    let token = token.filter(|token| !token.is_empty()).map(Arc::new);
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
            let token = token.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let answered = tokio::time::timeout(
                    Duration::from_secs(30),
                    answer(
                        stream,
                        token.as_deref().map(String::as_str),
                        browser_guard,
                        &handler,
                    ),
                )
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("timed out")));
                if let Err(error) = answered {
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
    browser_guard: bool,
    handler: &Handler,
) -> std::io::Result<()> {
    let mut received = Vec::with_capacity(2048);
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        if let Some(index) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break index + 4;
        }
        if received.len() > MAX_HEAD_BYTES {
            return respond(
                &mut stream,
                &Response::text(431, "request head too large\n"),
            )
            .await;
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        received.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut request = parse_head(&head);
    let length: usize = request
        .header("content-length")
        .and_then(|length| length.trim().parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY_BYTES {
        return respond(
            &mut stream,
            &Response::text(413, "request body too large\n"),
        )
        .await;
    }
    let mut body = received[head_end..].to_vec();
    while body.len() < length {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        body.extend_from_slice(&buffer[..read]);
    }
    body.truncate(length);
    request.body = body;
    let response = if request.path == "/healthz" {
        Response::text(200, "ok\n")
    } else if let Some(refusal) = cross_site(&request, token).filter(|_| browser_guard) {
        refusal
    } else if !authorized(&request, token) {
        Response::text(
            401,
            "missing or wrong token (Authorization: Bearer <token>)\n",
        )
    } else {
        handler(request).await
    };
    respond(&mut stream, &response).await
}

/// Without a token (loopback only), a web page the operator visits must not reach the API:
/// the Host must name a loopback address (no DNS rebinding), and changes must come as JSON
/// (which a cross-site form cannot send without the browser asking first).
fn cross_site(request: &Request, token: Option<&str>) -> Option<Response> {
    if token.is_some() {
        return None;
    }
    // Browsers always send a Host; a client without one is not a web page.
    let host = request.header("host")?;
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Some(Response::text(
            403,
            "the Host header must name a loopback address (or use a token)\n",
        ));
    }
    let json = request.header("content-type").is_some_and(|value| {
        value
            .trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    if request.method != "GET" && request.method != "HEAD" && !json {
        return Some(Response::text(
            415,
            "send changes with Content-Type: application/json\n",
        ));
    }
    None
}

fn authorized(request: &Request, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    request
        .header("authorization")
        .and_then(|value| value.trim().strip_prefix("Bearer "))
        .is_some_and(|presented| constant_time_equal(presented.trim(), token))
}

/// Compares without stopping at the first difference.
pub fn constant_time_equal(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// Decodes the request line and headers (the body is read separately).
pub fn parse_head(head: &str) -> Request {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    Request {
        method,
        path: percent_decode(path),
        query: parse_query(query),
        headers,
        body: Vec::new(),
    }
}

/// `a=1&b=x%20y` as pairs (`+` is a space, as forms send it).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&key.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(digits, 16) {
                decoded.push(byte);
                index += 3;
                continue;
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn respond(stream: &mut TcpStream, response: &Response) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_queries_decode() {
        let request = parse_head(
            "GET /api/relay/messages/msg%5F1?status=failed&q=a+b%21&empty= HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n",
        );
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/api/relay/messages/msg_1");
        assert_eq!(request.parameter("status"), Some("failed"));
        assert_eq!(request.parameter("q"), Some("a b!"));
        assert_eq!(request.parameter("empty"), None);
        assert_eq!(request.header("authorization"), Some("Bearer t"));
        assert!(authorized(&request, Some("t")));
        assert!(!authorized(&request, Some("u")));
        assert!(authorized(&request, None));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn pages_of_other_sites_cannot_reach_an_open_api() {
        let request = |head: &str| parse_head(head);
        let local_get = request("GET /api/relay/stats HTTP/1.1\r\nHost: 127.0.0.1:9188\r\n\r\n");
        assert!(cross_site(&local_get, None).is_none());
        let rebound = request("GET /api/relay/stats HTTP/1.1\r\nHost: evil.example:9188\r\n\r\n");
        assert_eq!(cross_site(&rebound, None).map(|r| r.status), Some(403));
        assert!(
            cross_site(&rebound, Some("t")).is_none(),
            "a token protects instead"
        );
        let form = request("POST /api/relay/retry HTTP/1.1\r\nHost: localhost:9188\r\nContent-Type: text/plain\r\n\r\n");
        assert_eq!(cross_site(&form, None).map(|r| r.status), Some(415));
        let json = request("POST /api/relay/retry HTTP/1.1\r\nHost: [::1]:9188\r\nContent-Type: application/json\r\n\r\n");
        assert!(cross_site(&json, None).is_none());
    }

    #[test]
    fn beyond_loopback_needs_a_token() {
        assert!(listen_address("127.0.0.1:0", None).is_ok());
        assert_eq!(
            listen_address("0.0.0.0:0", None).unwrap_err().code(),
            "config.listen_token"
        );
        assert!(listen_address("0.0.0.0:0", Some("t")).is_ok());
        assert_eq!(
            listen_address("nope", None).unwrap_err().code(),
            "config.listen"
        );
    }
}
