//! A small HTTP/1.1 client for delivering messages: keep-alive connections per origin, plain TCP
//! or TLS (rustls, the Mozilla roots or a CA file), `Content-Length` and chunked responses, one
//! deadline for the whole exchange.
//!
//! Contract: [`HttpClient::send`] returns the response's status, headers and at most
//! [`KEPT_BODY_BYTES`] of its body (or what [`HttpClient::keeping`] sets); any failure to connect, write, read or parse is an
//! [`HttpError`] (the message may or may not have reached the server). A connection is reused
//! only after a response was read to its end and the server did not ask to close it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How much of a response body is kept (the rest is read and dropped).
pub const KEPT_BODY_BYTES: usize = 64 * 1024;

/// Response heads larger than this are refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Idle connections kept per origin.
const IDLE_PER_ORIGIN: usize = 64;

/// Where a request goes, parsed once from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port]/path?query` or `https://...`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("'{url}' is not an http:// or https:// URL"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => return Err(format!("'{other}://' is not http:// or https://")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(index) if rest[index..].starts_with('?') => {
                (&rest[..index], format!("/{}", &rest[index..]))
            }
            Some(index) => (&rest[..index], rest[index..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported: send them as a header".into());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("'{authority}' has an unclosed IPv6 bracket"))?;
            let port = after.strip_prefix(':');
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("'{url}' names no host"));
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("'{port}' is not a port number"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Target {
            tls,
            host,
            port,
            path,
        })
    }

    /// `host:port`, for logs and the circuit breaker.
    pub fn origin(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.tls { "https" } else { "http" },
            self.host,
            self.port
        )
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// A response, with its body cut at [`KEPT_BODY_BYTES`].
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    Connect(String),
    Timeout,
    /// Writing the request or reading the response failed, or the response was malformed.
    Exchange(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(message) => write!(formatter, "cannot connect: {message}"),
            HttpError::Timeout => write!(formatter, "timed out"),
            HttpError::Exchange(message) => write!(formatter, "{message}"),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Connection = BufReader<Box<dyn Io>>;

/// Shared by every route; cheap to clone through an `Arc`.
pub struct HttpClient {
    idle: Mutex<HashMap<String, Vec<Connection>>>,
    tls: Arc<rustls::ClientConfig>,
    kept_body: usize,
}

impl HttpClient {
    /// A client trusting the Mozilla roots, plus the certificates of `ca_file` when given.
    pub fn new(ca_file: Option<&std::path::Path>) -> Result<HttpClient, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect())
                .map_err(|error| format!("{}: {error}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(format!("{}: no certificate in the file", path.display()));
            }
        }
        // The ring provider's defaults (as for database links).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| error.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpClient {
            idle: Mutex::new(HashMap::new()),
            tls: Arc::new(config),
            kept_body: KEPT_BODY_BYTES,
        })
    }

    /// Keeps up to `bytes` of each response body instead of [`KEPT_BODY_BYTES`].
    pub fn keeping(mut self, bytes: usize) -> HttpClient {
        self.kept_body = bytes;
        self
    }

    /// Sends one request and reads its response, all within `timeout`.
    pub async fn send(
        &self,
        method: &str,
        target: &Target,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        tokio::time::timeout(timeout, self.exchange(method, target, headers, body))
            .await
            .unwrap_or(Err(HttpError::Timeout))
    }

    async fn exchange(
        &self,
        method: &str,
        target: &Target,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let request = encode_request(method, target, headers, body);
        // A kept connection may have been closed by the server meanwhile: when it fails before
        // any byte of a response arrived, the request goes once more on a new connection.
        if let Some(mut connection) = self.take_idle(target) {
            match round_trip(&mut connection, &request, body, method, self.kept_body).await {
                Ok((response, reusable)) => {
                    if reusable {
                        self.keep(target, connection);
                    }
                    return Ok(response);
                }
                Err(RoundTripError::BeforeResponse(_)) => {}
                Err(RoundTripError::During(message)) => return Err(HttpError::Exchange(message)),
            }
        }
        let mut connection = self.connect(target).await?;
        match round_trip(&mut connection, &request, body, method, self.kept_body).await {
            Ok((response, reusable)) => {
                if reusable {
                    self.keep(target, connection);
                }
                Ok(response)
            }
            Err(RoundTripError::BeforeResponse(message) | RoundTripError::During(message)) => {
                Err(HttpError::Exchange(message))
            }
        }
    }

    fn take_idle(&self, target: &Target) -> Option<Connection> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.get_mut(&target.origin()).and_then(Vec::pop)
    }

    fn keep(&self, target: &Target, connection: Connection) {
        // Bytes beyond the response would be read as the next request's answer.
        if !connection.buffer().is_empty() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let kept = idle.entry(target.origin()).or_default();
        if kept.len() < IDLE_PER_ORIGIN {
            kept.push(connection);
        }
    }

    async fn connect(&self, target: &Target) -> Result<Connection, HttpError> {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|error| HttpError::Connect(format!("{}: {error}", target.origin())))?;
        let _ = stream.set_nodelay(true);
        if !target.tls {
            return Ok(BufReader::new(Box::new(stream) as Box<dyn Io>));
        }
        let name = ServerName::try_from(target.host.clone())
            .map_err(|error| HttpError::Connect(format!("{}: {error}", target.host)))?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, stream)
            .await
            .map_err(|error| HttpError::Connect(format!("{}: TLS: {error}", target.origin())))?;
        Ok(BufReader::new(Box::new(stream) as Box<dyn Io>))
    }
}

fn encode_request(
    method: &str,
    target: &Target,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
        target.path,
        target.host_header(),
        body.len()
    );
    for (name, value) in headers {
        // Header values come from the configuration and the messages' coordinates; a line
        // break would let one header smuggle another.
        let value: String = value.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        head.push_str(name);
        head.push_str(": ");
        head.push_str(&value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

enum RoundTripError {
    /// Nothing of a response arrived: the request may be sent again on a fresh connection.
    BeforeResponse(String),
    During(String),
}

/// Writes the request, reads the response; returns whether the connection can be reused.
async fn round_trip(
    connection: &mut Connection,
    head: &[u8],
    body: &[u8],
    method: &str,
    kept_body: usize,
) -> Result<(Response, bool), RoundTripError> {
    let written = async {
        let stream = connection.get_mut();
        stream.write_all(head).await?;
        stream.write_all(body).await?;
        stream.flush().await
    }
    .await;
    if let Err(error) = written {
        return Err(RoundTripError::BeforeResponse(format!("sending: {error}")));
    }
    let mut line = String::new();
    match read_line_bounded(connection, &mut line).await {
        Ok(0) => {
            return Err(RoundTripError::BeforeResponse(
                "the server closed the connection without answering".into(),
            ))
        }
        Ok(_) => {}
        Err(error) => return Err(RoundTripError::BeforeResponse(format!("reading: {error}"))),
    }
    read_response(connection, line, method, kept_body)
        .await
        .map_err(RoundTripError::During)
}

async fn read_response(
    connection: &mut Connection,
    status_line: String,
    method: &str,
    kept_body: usize,
) -> Result<(Response, bool), String> {
    let status = parse_status_line(&status_line)?;
    let mut headers = Vec::new();
    let mut head_bytes = status_line.len();
    loop {
        let mut line = String::new();
        let read = read_line_bounded(connection, &mut line)
            .await
            .map_err(|error| format!("reading the response head: {error}"))?;
        if read == 0 {
            return Err("the connection closed inside the response head".into());
        }
        head_bytes += read;
        if head_bytes > MAX_HEAD_BYTES {
            return Err("the response head is larger than 64 KiB".into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if (100..200).contains(&status) {
        // An interim answer (100 Continue): the real one follows.
        let mut line = String::new();
        read_line_bounded(connection, &mut line)
            .await
            .map_err(|error| format!("reading: {error}"))?;
        return Box::pin(read_response(connection, line, method, kept_body)).await;
    }
    let wants_close = response
        .header("connection")
        .is_some_and(|value| value.eq_ignore_ascii_case("close"))
        || status_line.starts_with("HTTP/1.0");
    let no_body = method == "HEAD" || status == 204 || status == 304;
    if no_body {
        return Ok((response, !wants_close));
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
    if chunked {
        read_chunked(connection, &mut response.body, kept_body).await?;
        return Ok((response, !wants_close));
    }
    if let Some(length) = response.header("content-length") {
        let length: u64 = length
            .parse()
            .map_err(|_| format!("Content-Length '{length}' is not a number"))?;
        read_exactly(connection, length, &mut response.body, kept_body).await?;
        return Ok((response, !wants_close));
    }
    // Delimited by the end of the connection.
    read_to_end(connection, &mut response.body, kept_body).await?;
    Ok((response, false))
}

fn parse_status_line(line: &str) -> Result<u16, String> {
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {:?}", line.trim_end()));
    }
    parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status code in {:?}", line.trim_end()))
}

async fn read_exactly(
    connection: &mut Connection,
    mut left: u64,
    kept: &mut Vec<u8>,
    limit: usize,
) -> Result<(), String> {
    let mut buffer = [0u8; 16 * 1024];
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let read = connection
            .read(&mut buffer[..want])
            .await
            .map_err(|error| format!("reading the response body: {error}"))?;
        if read == 0 {
            return Err("the connection closed inside the response body".into());
        }
        keep_some(kept, &buffer[..read], limit);
        left -= read as u64;
    }
    Ok(())
}

async fn read_to_end(
    connection: &mut Connection,
    kept: &mut Vec<u8>,
    limit: usize,
) -> Result<(), String> {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = connection
            .read(&mut buffer)
            .await
            .map_err(|error| format!("reading the response body: {error}"))?;
        if read == 0 {
            return Ok(());
        }
        keep_some(kept, &buffer[..read], limit);
    }
}

async fn read_chunked(
    connection: &mut Connection,
    kept: &mut Vec<u8>,
    limit: usize,
) -> Result<(), String> {
    loop {
        let mut line = String::new();
        read_line_bounded(connection, &mut line)
            .await
            .map_err(|error| format!("reading a chunk size: {error}"))?;
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {:?}", line.trim()))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                let read = read_line_bounded(connection, &mut trailer)
                    .await
                    .map_err(|error| format!("reading trailers: {error}"))?;
                if read == 0 || trailer.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        read_exactly(connection, size, kept, limit).await?;
        let mut end = String::new();
        read_line_bounded(connection, &mut end)
            .await
            .map_err(|error| format!("reading a chunk end: {error}"))?;
    }
}

/// Reads one line (up to and with its `\n`), refusing lines longer than [`MAX_HEAD_BYTES`]:
/// an endpoint cannot make the relay buffer without end.
async fn read_line_bounded(
    connection: &mut Connection,
    line: &mut String,
) -> std::io::Result<usize> {
    let mut bytes = Vec::new();
    loop {
        let available = connection.fill_buf().await?;
        if available.is_empty() {
            break;
        }
        match available.iter().position(|byte| *byte == b'\n') {
            Some(at) => {
                bytes.extend_from_slice(&available[..=at]);
                connection.consume(at + 1);
                break;
            }
            None => {
                let length = available.len();
                bytes.extend_from_slice(available);
                connection.consume(length);
            }
        }
        if bytes.len() > MAX_HEAD_BYTES {
            return Err(std::io::Error::other(
                "a response line is longer than 64 KiB",
            ));
        }
    }
    line.push_str(&String::from_utf8_lossy(&bytes));
    Ok(bytes.len())
}

fn keep_some(kept: &mut Vec<u8>, bytes: &[u8], limit: usize) {
    let room = limit.saturating_sub(kept.len());
    kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let target = Target::parse("http://127.0.0.1:8080/hooks/orders?x=1").unwrap();
        assert_eq!(
            target,
            Target {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/hooks/orders?x=1".into()
            }
        );
        assert_eq!(target.host_header(), "127.0.0.1:8080");
        let target = Target::parse("https://billing.internal").unwrap();
        assert_eq!((target.port, target.path.as_str()), (443, "/"));
        assert_eq!(target.host_header(), "billing.internal");
        let target = Target::parse("http://[::1]:9000?q").unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.path.as_str()),
            ("::1", 9000, "/?q")
        );
        assert_eq!(target.host_header(), "[::1]:9000");
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("http://user:pw@x/").is_err());
        assert!(Target::parse("http://x:99999/").is_err());
        assert!(Target::parse("billing.internal/x").is_err());
    }

    #[test]
    fn header_values_cannot_smuggle_lines() {
        let target = Target::parse("http://h/p").unwrap();
        let request = encode_request(
            "POST",
            &target,
            &[("X-A".into(), "one\r\nX-B: two".into())],
            b"{}",
        );
        let text = String::from_utf8(request).unwrap();
        assert!(text.contains("X-A: oneX-B: two\r\n"));
        assert!(text.starts_with("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"));
    }

    #[tokio::test]
    async fn an_endless_response_line_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Long: ").await;
            let _ = stream.write_all(&vec![b'a'; 200 * 1024]).await;
        });
        let client = HttpClient::new(None).unwrap();
        let target = Target::parse(&format!("http://{address}/")).unwrap();
        let error = client
            .send("POST", &target, &[], b"{}", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("64 KiB"), "{error}");
    }

    #[tokio::test]
    async fn reads_chunked_and_sized_responses_on_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            for answer in [
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nRetry-After: 7\r\n\r\nbusy",
            ] {
                // Read one request (head and a 2-byte body).
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    stream.read_line(&mut line).await.unwrap();
                    if let Some(value) = line.strip_prefix("Content-Length: ") {
                        length = value.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let client = HttpClient::new(None).unwrap();
        let target = Target::parse(&format!("http://{address}/x")).unwrap();
        let first = client
            .send("POST", &target, &[], b"{}", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"abcde"[..]));
        let second = client
            .send("POST", &target, &[], b"{}", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(second.status, 503);
        assert_eq!(second.header("retry-after"), Some("7"));
        assert_eq!(second.body, b"busy");
    }
}
