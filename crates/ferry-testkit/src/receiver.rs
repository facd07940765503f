//! An HTTP endpoint for tests of deliveries: it records every request and answers as a policy
//! the test can change at any time says (a status, after a delay; a black hole that never
//! answers). HTTP/1.1 with keep-alive, `Content-Length` bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    /// How this endpoint answered (0: not at all).
    pub status: u16,
    /// When it arrived (Unix milliseconds).
    pub received_at_ms: i64,
}

impl Received {
    /// A header by its lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body as JSON (panics when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// How to answer: given the request and how many requests with the same `webhook-id` came
/// before it, a status (or `None`: never answer) and a delay.
pub type Policy = Arc<dyn Fn(&Received, usize) -> (Option<u16>, Duration) + Send + Sync>;

pub struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    policy: Arc<Mutex<Policy>>,
}

/// Requests so far per `webhook-id` (kept beside the log so that counting stays cheap).
type Seen = Arc<Mutex<HashMap<String, usize>>>;

impl Receiver {
    /// Starts on a free loopback port, answering 200 to everything.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let address = listener.local_addr().expect("receiver address");
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let policy: Arc<Mutex<Policy>> = Arc::new(Mutex::new(Arc::new(|_: &Received, _| {
            (Some(200), Duration::ZERO)
        })));
        let (log, rules) = (received.clone(), policy.clone());
        let seen: Seen = Arc::default();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, rules, seen) = (log.clone(), rules.clone(), seen.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, log, rules, seen).await;
                });
            }
        });
        Receiver {
            address,
            received,
            policy,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Answers from now on as `policy` says.
    pub fn set_policy(
        &self,
        policy: impl Fn(&Received, usize) -> (Option<u16>, Duration) + Send + Sync + 'static,
    ) {
        *self.policy.lock().unwrap() = Arc::new(policy);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many requests were answered with a 2xx (cheap: nothing is copied).
    pub fn delivered_count(&self) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|request| (200..300).contains(&request.status))
            .count()
    }

    /// The requests answered with a 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| (200..300).contains(&request.status))
            .collect()
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
    rules: Arc<Mutex<Policy>>,
    seen_ids: Seen,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if stream.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|length| length.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        let mut request = Received {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            status: 0,
            received_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_millis() as i64)
                .unwrap_or(0),
        };
        let policy = rules.lock().unwrap().clone();
        let seen = {
            let id = request.header("webhook-id").unwrap_or("").to_string();
            let mut seen_ids = seen_ids.lock().unwrap();
            let count = seen_ids.entry(id).or_default();
            *count += 1;
            *count - 1
        };
        let (status, delay) = policy(&request, seen);
        let Some(status) = status else {
            // A black hole: keep the connection, never answer.
            log.lock().unwrap().push(request);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        request.status = status;
        log.lock().unwrap().push(request);
        let answer = format!(
            "HTTP/1.1 {status} Answer\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nanswer\n"
        );
        stream.get_mut().write_all(answer.as_bytes()).await?;
    }
}
