//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`), for
//! testing ferry's web pages as a user sees them.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_relay::http::client::HttpClient;
use ferry_testkit::wait_until;

use crate::common::json_request;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: HttpClient,
    profile: std::path::PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub(crate) async fn start() -> Browser {
        let driver_binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .expect("chromedriver is missing: apt-get install -y chromium chromium-driver (scripts/install-prerequisites.sh does)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let client = HttpClient::new(None).unwrap().keeping(64 * 1024 * 1024);
        let base = format!("http://127.0.0.1:{port}");
        let profile = std::env::temp_dir().join(format!("ferry-chromium-{port}"));
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
            profile,
        };
        wait_until(
            "chromedriver to listen",
            Duration::from_secs(30),
            || async {
                browser
                    .request("GET", "/status", None)
                    .await
                    .ok()
                    .filter(|status| status["value"]["ready"] == true)
            },
        )
        .await
        .unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update",
                         "--no-first-run", "--window-size=1400,1000",
                         format!("--user-data-dir={}", browser.profile.display())]
            }
        }}});
        let session = browser
            .request("POST", "/session", Some(capabilities))
            .await
            .expect("open a browser session");
        browser.session = session["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let url = format!("{}{path}", self.base);
        let (status, text) =
            json_request(&self.client, method, &url, &body, Duration::from_secs(60)).await?;
        let value: Value = serde_json::from_str(&text).map_err(|error| error.to_string())?;
        if status >= 400 {
            return Err(format!("WebDriver {method} {path}: {value}"));
        }
        Ok(value)
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.request(method, &path, body)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    pub(crate) async fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url})))
            .await;
    }

    /// The elements matching a CSS selector now.
    pub(crate) async fn find_all(&self, selector: &str) -> Vec<String> {
        let found = self
            .command(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        found["value"]
            .as_array()
            .map(|elements| {
                elements
                    .iter()
                    .filter_map(|element| element[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for an element to appear.
    pub(crate) async fn wait_for(&self, selector: &str) -> String {
        wait_until(
            &format!("an element {selector}"),
            Duration::from_secs(20),
            || async { self.find_all(selector).await.into_iter().next() },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"))
    }

    pub(crate) async fn click(&self, element: &str) {
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub(crate) async fn text(&self, element: &str) -> String {
        self.command("GET", &format!("/element/{element}/text"), None)
            .await["value"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Replaces an input's text.
    pub(crate) async fn type_into(&self, element: &str, text: &str) {
        self.command(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Saves a PNG of the page.
    pub(crate) async fn screenshot(&self, path: &std::path::Path) {
        let shot = self.command("GET", "/screenshot", None).await;
        let png = base64_decode(shot["value"].as_str().unwrap_or(""));
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut bytes = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let mut accumulated = 0u32;
        for (index, digit) in group.iter().enumerate() {
            accumulated |= digit << (18 - 6 * index);
        }
        let produced = group.len().saturating_sub(1);
        for index in 0..produced {
            bytes.push((accumulated >> (16 - 8 * index)) as u8);
        }
    }
    bytes
}
