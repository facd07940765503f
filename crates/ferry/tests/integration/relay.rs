//! `ferry relay` against real servers: a database's changes delivered to an HTTP endpoint that
//! fails on demand, checked from what the endpoint received (never from ferry's own log alone).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_relay::http::client::HttpClient;
use ferry_relay::signature::{secret_key, sign};
use ferry_testkit::{wait_until, Received, Receiver};

use crate::common::{json_request, kill, log_path, stop, Pair};
use crate::mysql::{mariadb, sql};

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A relay's files and control plane.
pub(crate) struct Relay {
    pub name: String,
    config: PathBuf,
    pub port: u16,
    client: HttpClient,
}

impl Relay {
    /// Writes `relay.toml` for `source_url` with `routes` (TOML `[[route]]` blocks).
    pub(crate) fn new(name: &str, source_url: &str, routes: &str) -> Relay {
        Relay::with_log(name, source_url, routes, "sqlite:relay.db")
    }

    /// The same, with the delivery log at `log_url`.
    pub(crate) fn with_log(name: &str, source_url: &str, routes: &str, log_url: &str) -> Relay {
        let directory =
            std::env::temp_dir().join(format!("ferry-relay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let config = directory.join("relay.toml");
        std::fs::write(
            &config,
            format!("name = \"{name}\"\n[source]\nurl = \"{source_url}\"\n[log]\nurl = \"{log_url}\"\n{routes}"),
        )
        .unwrap();
        let _ = std::fs::remove_file(log_path(name));
        Relay {
            name: name.to_string(),
            config,
            port: ferry_testkit::free_port().unwrap(),
            client: HttpClient::new(None).unwrap(),
        }
    }

    /// Where its settings and log live.
    pub(crate) fn directory(&self) -> PathBuf {
        self.config.parent().unwrap().to_path_buf()
    }

    pub(crate) fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(&self.name))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["relay", "-c"])
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .env("RELAY_TEST_SECRET", SECRET)
            .env("FERRY_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ferry relay")
    }

    pub(crate) fn log(&self) -> String {
        let text = std::fs::read_to_string(log_path(&self.name)).unwrap_or_default();
        let start = text.len().saturating_sub(6000);
        format!(
            "--- relay log (tail) ---\n{}",
            &text[text.floor_char_boundary(start)..]
        )
    }

    /// Waits until the relay reads the source (changes after this are relayed).
    pub(crate) async fn wait_reading(&self) {
        let path = log_path(&self.name);
        let starts = |text: &str| text.matches("reading the source's changes").count();
        wait_until(
            "the relay to read the source",
            Duration::from_secs(60),
            || {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                async move { (starts(&text) > 0).then_some(()) }
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", self.log()));
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let (status, text) = json_request(
            &self.client,
            method,
            &self.url(path),
            body,
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", self.log()));
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    pub(crate) async fn messages(&self, query: &str) -> Vec<serde_json::Value> {
        let (status, page) = self
            .call("GET", &format!("/api/relay/messages?{query}"), "")
            .await;
        assert_eq!(status, 200, "{page}");
        page["messages"].as_array().cloned().unwrap_or_default()
    }
}

/// The deliveries (2xx) grouped by webhook-id, each id once, in first-delivery order.
fn distinct_deliveries(receiver: &Receiver) -> Vec<Received> {
    let mut seen = BTreeSet::new();
    receiver
        .delivered()
        .into_iter()
        .filter(|request| seen.insert(request.header("webhook-id").unwrap_or("").to_string()))
        .collect()
}

/// The requests whose body contains `marker`: a 503, a 503 and a 200, under one webhook-id.
pub(crate) fn three_attempts_one_id(receiver: &Receiver, marker: &str) -> Vec<Received> {
    let attempts: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|request| request.body.contains(marker))
        .collect();
    let statuses: Vec<u16> = attempts.iter().map(|request| request.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    assert!(attempts
        .iter()
        .all(|request| request.header("webhook-id") == attempts[0].header("webhook-id")));
    attempts
}

fn check_signatures(received: &[Received]) {
    let key = secret_key(SECRET).unwrap();
    for request in received {
        let id = request.header("webhook-id").expect("webhook-id");
        let timestamp: i64 = request
            .header("webhook-timestamp")
            .expect("timestamp")
            .parse()
            .unwrap();
        assert_eq!(
            request.header("webhook-signature"),
            Some(sign(&key, id, timestamp, request.body.as_bytes()).as_str()),
            "signature of {id}"
        );
    }
}

const ROUTE: &str = r#"
[[route]]
name = "orders"
tables = ["public.orders"]
url = "RECEIVER/hooks/orders"
max_retries = 3
backoff = "50ms"
max_backoff = "200ms"
timeout = "2s"
secret_env = "RELAY_TEST_SECRET"
"#;

/// A relay reading a fresh PostgreSQL database, started and reading.
struct OnPostgres {
    pair: Pair,
    receiver: Receiver,
    relay: Relay,
    run: Child,
}

/// Creates database `database` holding `ddl`, an endpoint, and a relay (named after the
/// database) with [`ROUTE`] to it, `edits` replaced in the route; waits until it reads.
async fn relay_on_postgres(database: &str, ddl: &str, edits: &[(&str, &str)]) -> OnPostgres {
    relay_on_postgres_with_log(database, ddl, edits, None).await
}

/// [`relay_on_postgres`] with the delivery log in PostgreSQL (`log_url`) instead of SQLite.
async fn relay_on_postgres_with_log(
    database: &str,
    ddl: &str,
    edits: &[(&str, &str)],
    log_url: Option<&str>,
) -> OnPostgres {
    let pair = Pair::new(database).await;
    pair.source.batch_execute(ddl).await.unwrap();
    let receiver = Receiver::start().await;
    let mut route = ROUTE.replace("RECEIVER", &receiver.url(""));
    for (from, to) in edits {
        route = route.replace(from, to);
    }
    let name = database.replace('_', "-");
    let relay = match log_url {
        Some(log_url) => Relay::with_log(&name, &pair.source_url, &route, log_url),
        None => Relay::new(&name, &pair.source_url, &route),
    };
    let run = relay.spawn();
    relay.wait_reading().await;
    OnPostgres {
        pair,
        receiver,
        relay,
        run,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_postgres_changes_in_key_order_with_retries_and_parking() {
    let OnPostgres {
        pair,
        receiver,
        relay,
        mut run,
    } = relay_on_postgres(
        "relay_pg",
        "CREATE TABLE orders (id int PRIMARY KEY, note text, total numeric(12,2));
         CREATE TABLE ignored (id int PRIMARY KEY);",
        &[],
    )
    .await;
    receiver.set_policy(|request, seen| {
        let note = request.json()["after"]["note"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let status = match note.as_str() {
            "flaky" if seen < 2 => 503,
            "poison" => 400,
            _ => 200,
        };
        (Some(status), Duration::ZERO)
    });
    pair.source
        .batch_execute(
            "INSERT INTO orders SELECT g, 'n' || g, g * 1.25 FROM generate_series(1, 100) g;
             INSERT INTO ignored VALUES (1);",
        )
        .await
        .unwrap();
    for id in 101..=150 {
        pair.source
            .execute(
                "INSERT INTO orders VALUES ($1, $2, 0.10)",
                &[&id, &format!("n{id}")],
            )
            .await
            .unwrap();
    }
    for note in ["v1", "v2", "v3"] {
        pair.source
            .execute("UPDATE orders SET note = $1 WHERE id = 5", &[&note])
            .await
            .unwrap();
    }
    pair.source
        .batch_execute(
            "INSERT INTO orders VALUES (300, 'flaky', 1);
             INSERT INTO orders VALUES (301, 'poison', 1);
             UPDATE orders SET note = 'after-poison' WHERE id = 301;
             DELETE FROM orders WHERE id = 7;
             UPDATE orders SET id = 1000 WHERE id = 8;",
        )
        .await
        .unwrap();
    // 150 inserts, 3 updates of 5, flaky, the delete and the key move; the poison insert is
    // parked and the update behind it waits.
    wait_until(
        "156 distinct deliveries and one parked failure",
        Duration::from_secs(60),
        || {
            let delivered = distinct_deliveries(&receiver).len();
            async move { (delivered >= 156).then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "{error}: {} delivered\n{}",
            distinct_deliveries(&receiver).len(),
            relay.log()
        )
    });
    let failed = wait_until(
        "the poison message to be parked",
        Duration::from_secs(30),
        || async {
            let failed = relay.messages("status=failed").await;
            (!failed.is_empty()).then_some(failed)
        },
    )
    .await
    .unwrap();
    let delivered = distinct_deliveries(&receiver);
    assert_eq!(delivered.len(), 156, "exactly these changes are delivered");
    check_signatures(&receiver.received());
    for request in &delivered {
        assert_eq!(request.path, "/hooks/orders");
        assert_eq!(request.json()["table"], "public.orders", "{}", request.body);
    }
    // Per-key order: key 5 saw its insert, then v1, v2, v3.
    let notes_of_5: Vec<String> = delivered
        .iter()
        .map(Received::json)
        .filter(|document| document["key"] == serde_json::json!({"id": 5}))
        .map(|document| document["after"]["note"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(notes_of_5, ["n5", "v1", "v2", "v3"]);
    let first = delivered
        .iter()
        .map(Received::json)
        .find(|document| document["key"] == serde_json::json!({"id": 1}))
        .unwrap();
    assert_eq!(first["operation"], "insert");
    assert_eq!(
        first["after"],
        serde_json::json!({"id": 1, "note": "n1", "total": "1.25"})
    );
    assert!(first["commit_time"].as_str().unwrap().ends_with('Z'));
    assert!(first["position"].as_str().unwrap().starts_with("postgres:"));
    let moved = delivered
        .iter()
        .map(Received::json)
        .find(|document| document["key"] == serde_json::json!({"id": 1000}))
        .unwrap();
    assert_eq!(
        (moved["operation"].as_str(), &moved["before"]),
        (Some("update"), &serde_json::json!({"id": 8}))
    );
    let deleted = delivered
        .iter()
        .map(Received::json)
        .find(|document| document["operation"] == "delete")
        .unwrap();
    assert_eq!(deleted["key"], serde_json::json!({"id": 7}));
    // The flaky message: two 503s and a 200, one webhook-id throughout.
    let flaky = three_attempts_one_id(&receiver, "\"flaky\"");
    assert_eq!(flaky[2].header("ferry-attempt"), Some("3"));
    // The poison message is parked after one attempt (400 is not retried); the update of the
    // same key waits behind it, the endpoint never saw it.
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        (
            failed[0]["attempts"].as_i64(),
            failed[0]["last_http_status"].as_i64()
        ),
        (Some(1), Some(400))
    );
    assert!(!receiver
        .received()
        .iter()
        .any(|request| request.body.contains("after-poison")));
    let waiting = relay
        .messages("status=pending&key=%7B%22id%22%3A301%7D")
        .await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    // The endpoint is fixed; the operator retries the parked message: it goes, then the one
    // behind it.
    receiver.set_policy(|_, _| (Some(200), Duration::ZERO));
    let id = failed[0]["id"].as_str().unwrap().to_string();
    let (status, answer) = relay
        .call("POST", &format!("/api/relay/messages/{id}/retry"), "")
        .await;
    assert_eq!((status, &answer), (200, &serde_json::json!({"retried": 1})));
    wait_until(
        "the update behind the poison message",
        Duration::from_secs(30),
        || {
            let done = receiver
                .delivered()
                .iter()
                .any(|request| request.body.contains("after-poison"));
            async move { done.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    let order: Vec<String> = receiver
        .delivered()
        .iter()
        .map(Received::json)
        .filter(|document| document["key"] == serde_json::json!({"id": 301}))
        .map(|document| document["after"]["note"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, ["poison", "after-poison"]);
    let (status, detail) = relay
        .call("GET", &format!("/api/relay/messages/{id}"), "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["status"], "delivered");
    let attempts: Vec<i64> = detail["attempts_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["http_status"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [400, 200]);
    assert!(detail["payload"].as_str().unwrap().contains("\"poison\""));
    let (status, metrics) = relay.call("GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("ferry_relay_delivered_total{route=\"orders\"}"),
        "{metrics}"
    );
    let (status, stats) = relay.call("GET", "/api/relay/stats", "").await;
    assert_eq!(
        (status, stats["routes"][0]["failed"].as_i64()),
        (200, Some(0)),
        "{stats}"
    );
    assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_parks_a_message_the_endpoint_never_answers_and_goes_on() {
    let OnPostgres {
        pair,
        receiver,
        relay,
        mut run,
    } = relay_on_postgres(
        "relay_hole",
        "CREATE TABLE orders (id int PRIMARY KEY, note text, total numeric(12,2))",
        &[
            ("max_retries = 3", "max_retries = 1"),
            ("timeout = \"2s\"", "timeout = \"300ms\""),
        ],
    )
    .await;
    // A black hole for one message: the connection stays open, no answer ever comes.
    receiver.set_policy(|request, _| {
        let hole = request.body.contains("\"hole\"");
        (if hole { None } else { Some(200) }, Duration::ZERO)
    });
    pair.source
        .batch_execute("INSERT INTO orders VALUES (1, 'hole', 1); INSERT INTO orders SELECT g, 'n', 1 FROM generate_series(2, 50) g;")
        .await
        .unwrap();
    let failed = wait_until(
        "the unanswered message to be parked",
        Duration::from_secs(30),
        || async {
            let failed = relay.messages("status=failed").await;
            (!failed.is_empty()).then_some(failed)
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempts"].as_i64(), Some(2), "{failed:?}");
    assert_eq!(failed[0]["last_error"].as_str(), Some("timed out"));
    wait_until("the other 49 changes", Duration::from_secs(30), || {
        let count = distinct_deliveries(&receiver).len();
        async move { (count == 49).then_some(()) }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_takes_in_a_table_created_while_it_runs() {
    let OnPostgres {
        pair,
        receiver,
        relay,
        mut run,
    } = relay_on_postgres(
        "relay_join",
        "CREATE TABLE orders (id int PRIMARY KEY, note text)",
        &[("public.orders", "public.*")],
    )
    .await;
    pair.source
        .batch_execute("CREATE TABLE invoices (id int PRIMARY KEY, total numeric(10,2))")
        .await
        .unwrap();
    let path = log_path(&relay.name);
    wait_until("the new table to join", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        async move { (text.matches("reading the source's changes").count() >= 2).then_some(()) }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    pair.source
        .batch_execute("INSERT INTO invoices VALUES (1, 9.99); INSERT INTO orders VALUES (1, 'x');")
        .await
        .unwrap();
    wait_until("both changes", Duration::from_secs(30), || {
        let count = distinct_deliveries(&receiver).len();
        async move { (count == 2).then_some(()) }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    let tables: BTreeSet<String> = receiver
        .delivered()
        .iter()
        .map(|request| request.json()["table"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tables,
        BTreeSet::from(["public.invoices".to_string(), "public.orders".to_string()])
    );
    assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_survives_kill_9_without_losing_or_changing_a_message() {
    survives_kill_9("relay_kill", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_with_a_postgres_log_survives_kill_9() {
    let log_url = crate::common::servers()
        .target
        .create_database("relay_kill_log")
        .await
        .unwrap();
    survives_kill_9("relay_kill_pg", Some(&log_url)).await;
    // The log holds every message, delivered, in its partitions.
    let (client, connection) = tokio_postgres::connect(&log_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT status, count(DISTINCT id) FROM \"ferry_relay_relay-kill-pg\".messages GROUP BY status",
            &[],
        )
        .await
        .unwrap();
    let counts: Vec<(String, i64)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(counts, [("delivered".to_string(), 3_000)]);
}

/// Rows written while the relay is killed three times: every one delivered, unchanged, under
/// one id.
async fn survives_kill_9(database: &str, log_url: Option<&str>) {
    const ROWS: i64 = 3_000;
    let OnPostgres {
        pair,
        receiver,
        relay,
        mut run,
    } = relay_on_postgres_with_log(
        database,
        "CREATE TABLE ledger (id bigint PRIMARY KEY, amount int NOT NULL)",
        &[("public.orders", "public.ledger")],
        log_url,
    )
    .await;
    let source_url = pair.source_url.clone();
    let writer = tokio::spawn(async move {
        let (client, connection) = tokio_postgres::connect(&source_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut next = 1;
        while next <= ROWS {
            let size = 1 + (next * 7919) % 23;
            let last = (next + size - 1).min(ROWS);
            client
                .execute("INSERT INTO ledger SELECT g, g % 97 FROM generate_series($1::bigint, $2::bigint) g", &[&next, &last])
                .await
                .unwrap();
            next = last + 1;
        }
    });
    for delay in [300u64, 900, 500] {
        // The moment of the kill is the point of the test, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(delay)).await;
        kill(&mut run);
        run = relay.spawn();
    }
    writer.await.unwrap();
    wait_until("every row delivered", Duration::from_secs(90), || {
        let ids: BTreeSet<i64> = receiver
            .delivered()
            .iter()
            .filter_map(|request| request.json()["after"]["id"].as_i64())
            .collect();
        async move { (ids.len() as i64 == ROWS).then_some(()) }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    // Nothing changed on the way, and a change sent twice carries the same id both times.
    let mut bodies: HashMap<String, String> = HashMap::new();
    let mut ids_of_row: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for request in receiver.delivered() {
        let id = request.header("webhook-id").unwrap().to_string();
        if let Some(body) = bodies.get(&id) {
            assert_eq!(body, &request.body, "a resend of {id} differs");
        }
        let document = request.json();
        let row = document["after"]["id"].as_i64().unwrap();
        assert_eq!(document["after"]["amount"].as_i64(), Some(row % 97));
        ids_of_row.entry(row).or_default().insert(id.clone());
        bodies.insert(id, request.body);
    }
    assert_eq!(ids_of_row.len() as i64, ROWS);
    assert!(
        ids_of_row.values().all(|ids| ids.len() == 1),
        "a row's insert got two ids"
    );
    eprintln!(
        "kill -9: {} requests for {ROWS} changes",
        receiver.delivered().len()
    );
    assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_mariadb_changes_and_applies_retention() {
    let server = &mariadb().source;
    let url = server.create_database("relay_maria").unwrap();
    sql(server, "relay_maria", "CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(40), price DECIMAL(10,2), at DATETIME(6))");
    let receiver = Receiver::start().await;
    let route = ROUTE
        .replace("RECEIVER", &receiver.url(""))
        .replace("public.orders", "relay_maria.orders")
        + "success_retention = \"1s\"\n";
    let relay = Relay::new("relay-maria", &url, &route);
    let mut run = relay.spawn();
    relay.wait_reading().await;
    sql(
        server,
        "relay_maria",
        "INSERT INTO orders VALUES (1, 'a', 1.10, '2026-12-05 10:00:00.123456'), (2, 'b', 2.20, NULL);
         UPDATE orders SET note = 'a2' WHERE id = 1;
         UPDATE orders SET note = 'a3' WHERE id = 1;
         DELETE FROM orders WHERE id = 2;",
    );
    wait_until("five deliveries", Duration::from_secs(60), || {
        let count = distinct_deliveries(&receiver).len();
        async move { (count >= 5).then_some(()) }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    let documents: Vec<serde_json::Value> = distinct_deliveries(&receiver)
        .iter()
        .map(Received::json)
        .collect();
    assert_eq!(documents.len(), 5);
    let of_1: Vec<(String, String)> = documents
        .iter()
        .filter(|document| document["key"] == serde_json::json!({"id": 1}))
        .map(|document| {
            (
                document["operation"].as_str().unwrap().to_string(),
                document["after"]["note"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        of_1,
        [
            ("insert".into(), "a".into()),
            ("update".into(), "a2".into()),
            ("update".into(), "a3".into())
        ]
    );
    let first = &documents
        .iter()
        .find(|document| document["key"] == serde_json::json!({"id": 1}))
        .unwrap();
    assert_eq!(first["table"], "relay_maria.orders");
    assert_eq!(first["after"]["price"], "1.10");
    assert!(
        first["after"]["at"]
            .as_str()
            .unwrap()
            .starts_with("2026-12-05"),
        "{first}"
    );
    assert!(first["position"].as_str().unwrap().starts_with("mysql:"));
    let deleted = documents
        .iter()
        .find(|document| document["operation"] == "delete")
        .unwrap();
    assert_eq!(deleted["key"], serde_json::json!({"id": 2}));
    check_signatures(&receiver.received());
    // Delivered messages leave the log after a second; the endpoint has them.
    wait_until(
        "retention to empty the log",
        Duration::from_secs(30),
        || async {
            relay
                .messages("status=delivered")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_page_finds_a_failure_and_retries_it_in_a_browser() {
    let OnPostgres {
        pair,
        receiver,
        relay,
        mut run,
    } = relay_on_postgres(
        "relay_page",
        "CREATE TABLE orders (id int PRIMARY KEY, note text, total numeric(12,2))",
        &[("max_retries = 3", "max_retries = 1")],
    )
    .await;
    receiver.set_policy(|request, _| {
        let broken = request.body.contains("\"broken\"");
        (Some(if broken { 500 } else { 200 }), Duration::ZERO)
    });
    pair.source
        .batch_execute("INSERT INTO orders VALUES (1, 'broken', 1), (2, 'fine', 2)")
        .await
        .unwrap();
    wait_until(
        "the broken message to be parked",
        Duration::from_secs(30),
        || async { (relay.messages("status=failed").await.len() == 1).then_some(()) },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));

    let browser = crate::browser::Browser::start().await;
    browser.open(&relay.url("/")).await;
    // The page opens on failures: the parked message is there, with its key.
    let row = browser
        .wait_for("#messages tbody tr[data-status='failed']")
        .await;
    assert!(browser.text(&row).await.contains("{\"id\":1}"));
    assert_eq!(
        browser.find_all("#messages tbody tr").await.len(),
        1,
        "only failures are listed"
    );
    // The counters show the route.
    let card = browser
        .wait_for(".card[data-route='orders'] .failed b")
        .await;
    assert_eq!(browser.text(&card).await, "1");
    // Its details: the attempts and the payload.
    browser.click(&row).await;
    let payload = browser.wait_for("#detail #payload").await;
    assert!(browser.text(&payload).await.contains("broken"));
    assert_eq!(
        browser.find_all("#attempts tbody tr").await.len(),
        2,
        "two attempts (max_retries = 1)"
    );
    let shot = std::env::temp_dir().join("ferry-relay-page-failed.png");
    browser.screenshot(&shot).await;
    eprintln!("screenshot: {}", shot.display());
    // The endpoint is fixed: retry from the page.
    receiver.set_policy(|_, _| (Some(200), Duration::ZERO));
    let retry = browser
        .wait_for("#messages tbody tr[data-status='failed'] button.retry")
        .await;
    browser.click(&retry).await;
    let notice = browser.wait_for("#notice").await;
    wait_until(
        "the page to confirm the retry",
        Duration::from_secs(10),
        || async {
            browser
                .text(&notice)
                .await
                .contains("Queued again")
                .then_some(())
        },
    )
    .await
    .unwrap();
    wait_until(
        "the endpoint to receive the message",
        Duration::from_secs(30),
        || {
            let done = receiver
                .delivered()
                .iter()
                .any(|request| request.body.contains("\"broken\""));
            async move { done.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    // Search the deliveries for that key: the message is delivered.
    let delivered = browser.wait_for("#status option[value='delivered']").await;
    browser.click(&delivered).await;
    let key = browser.wait_for("#key").await;
    browser.type_into(&key, "{\"id\":1}").await;
    let search = browser.wait_for("#search").await;
    wait_until(
        "the page to list the message as delivered",
        Duration::from_secs(20),
        || async {
            browser.click(&search).await;
            let rows = browser
                .find_all("#messages tbody tr[data-status='delivered']")
                .await;
            let all = browser.find_all("#messages tbody tr").await;
            (rows.len() == 1 && all.len() == 1).then_some(())
        },
    )
    .await
    .unwrap();
    let shot = std::env::temp_dir().join("ferry-relay-page-delivered.png");
    browser.screenshot(&shot).await;
    eprintln!("screenshot: {}", shot.display());
    drop(browser);
    assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
}

mod kafka {
    use super::*;
    use ferry_testkit::KafkaServer;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;

    async fn create_topic(broker: &KafkaServer, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .create()
            .unwrap();
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        for result in results {
            result.unwrap();
        }
    }

    fn producer(broker: &KafkaServer) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()
            .unwrap()
    }

    /// Sends one record to an explicit partition; returns its offset.
    async fn produce(
        producer: &FutureProducer,
        topic: &str,
        partition: i32,
        key: &str,
        value: &[u8],
    ) -> i64 {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value);
        let delivery = producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(error, _)| panic!("produce: {error}"));
        delivery.offset
    }

    fn committed(broker: &KafkaServer, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        crate::kafka_move::committed(&broker.bootstrap(), group, topic, partitions)
            .into_iter()
            .map(|offset| offset.unwrap_or(-1))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relay_turns_protobuf_records_into_canonical_json() {
        use prost_reflect::prost::Message as _;
        use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
        use prost_reflect::prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        };
        use prost_reflect::{DescriptorPool, DynamicMessage, Value};

        let broker = KafkaServer::start().expect("start tansu");
        create_topic(&broker, "orders.proto", 1).await;
        let field = |name: &str, number: i32, kind: Type, label: Label| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(kind as i32),
            label: Some(label as i32),
            json_name: Some(name.into()),
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("shop.proto".into()),
                package: Some("shop".into()),
                syntax: Some("proto3".into()),
                message_type: vec![DescriptorProto {
                    name: Some("Order".into()),
                    field: vec![
                        field("id", 1, Type::Int64, Label::Optional),
                        field("customer", 2, Type::String, Label::Optional),
                        field("items", 3, Type::String, Label::Repeated),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let receiver = Receiver::start().await;
        let route = format!(
            "[[route]]\nname = \"orders\"\ntopics = [\"orders.*\"]\nurl = \"{}\"\nformat = \"protobuf\"\ndescriptor_set = \"shop.desc\"\nmessage = \"shop.Order\"\n",
            receiver.url("/hooks")
        );
        let relay = Relay::new("relay-proto", &broker.url(), &route);
        let descriptor_file = relay.directory().join("shop.desc");
        std::fs::write(&descriptor_file, set.encode_to_vec()).unwrap();
        let pool = DescriptorPool::decode(set.encode_to_vec().as_slice()).unwrap();
        let mut order = DynamicMessage::new(pool.get_message_by_name("shop.Order").unwrap());
        order.set_field_by_name("id", Value::I64(9_007_199_254_740_993));
        order.set_field_by_name("customer", Value::String("ada \"l\"".into()));
        order.set_field_by_name(
            "items",
            Value::List(vec![Value::String("a".into()), Value::String("b".into())]),
        );
        let producer = producer(&broker);
        produce(&producer, "orders.proto", 0, "o1", &order.encode_to_vec()).await;
        produce(&producer, "orders.proto", 0, "o2", b"\xff\xff\xff\xff").await;
        let mut run = relay.spawn();
        wait_until("the decoded record", Duration::from_secs(60), || {
            let count = receiver.delivered_count();
            async move { (count >= 1).then_some(()) }
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        let document = receiver.delivered()[0].json();
        // The canonical JSON mapping: 64-bit integers as strings, so nothing is rounded.
        assert_eq!(
            document,
            serde_json::json!({"id": "9007199254740993", "customer": "ada \"l\"", "items": ["a", "b"]})
        );
        let failed = wait_until(
            "the undecodable record to be parked",
            Duration::from_secs(30),
            || async {
                let failed = relay.messages("status=failed").await;
                (!failed.is_empty()).then_some(failed)
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        assert!(
            failed[0]["last_error"]
                .as_str()
                .unwrap()
                .contains("not a shop.Order"),
            "{failed:?}"
        );
        assert_eq!(receiver.received().len(), 1, "the bad record is never sent");
        assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relay_with_start_latest_skips_history_but_nothing_after_and_reads_late_topics_whole() {
        let broker = KafkaServer::start().expect("start tansu");
        create_topic(&broker, "events", 1).await;
        let producer = producer(&broker);
        for n in 0..3 {
            produce(
                &producer,
                "events",
                0,
                "k",
                format!("{{\"old\": {n}}}").as_bytes(),
            )
            .await;
        }
        let receiver = Receiver::start().await;
        let route = format!(
            "[[route]]\nname = \"events\"\ntopics = [\"events\", \"late.*\"]\nurl = \"{}\"\n",
            receiver.url("/hooks")
        );
        let relay = Relay::new("relay-latest", &broker.url(), &route);
        let config = relay.directory().join("relay.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace("[source]\n", "[source]\nstart = \"latest\"\n"),
        )
        .unwrap();
        let path = log_path(&relay.name);
        let assigned = |count: usize| {
            let path = path.clone();
            async move {
                wait_until(
                    "the relay to take its partitions",
                    Duration::from_secs(60),
                    || {
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        async move {
                            (text.matches("reading Kafka partitions").count() >= count)
                                .then_some(())
                        }
                    },
                )
                .await
            }
        };
        let mut run = relay.spawn();
        assigned(1)
            .await
            .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        // Stopped before any record arrived: records written meanwhile are still read after
        // the restart (the start was stored when the partition was taken).
        assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
        for n in 0..2 {
            produce(
                &producer,
                "events",
                0,
                "k",
                format!("{{\"new\": {n}}}").as_bytes(),
            )
            .await;
        }
        let mut run = relay.spawn();
        assigned(2)
            .await
            .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        // A topic created while it runs is read from its beginning, whatever `start` says.
        create_topic(&broker, "late.one", 1).await;
        for n in 0..2 {
            produce(
                &producer,
                "late.one",
                0,
                "k",
                format!("{{\"late\": {n}}}").as_bytes(),
            )
            .await;
        }
        wait_until("four records", Duration::from_secs(60), || {
            let count = receiver.delivered_count();
            async move { (count >= 4).then_some(()) }
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        let bodies: BTreeSet<String> = receiver
            .delivered()
            .iter()
            .map(|request| request.body.clone())
            .collect();
        let expected: BTreeSet<String> = [
            "{\"new\": 0}",
            "{\"new\": 1}",
            "{\"late\": 0}",
            "{\"late\": 1}",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        assert_eq!(
            bodies, expected,
            "history before the first start is skipped, nothing after it"
        );
        assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
    }

    const KAFKA_ROUTE: &str = r#"
[[route]]
name = "orders"
topics = ["orders"]
url = "RECEIVER/hooks/orders"
max_retries = 3
backoff = "50ms"
max_backoff = "200ms"
timeout = "2s"
secret_env = "RELAY_TEST_SECRET"
"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relay_delivers_kafka_records_in_key_order_commits_by_outcome_and_replays() {
        let broker = KafkaServer::start().expect("start tansu");
        create_topic(&broker, "orders", 2).await;
        let receiver = Receiver::start().await;
        receiver.set_policy(|request, seen| {
            let body = request.body.clone();
            let status = if body.contains("\"poison\"") {
                400
            } else if body.contains("\"flaky\"") && seen < 2 {
                503
            } else {
                200
            };
            (Some(status), Duration::ZERO)
        });
        let producer = producer(&broker);
        // Ten keys over two partitions, 20 records each, produced before the relay starts
        // (read from the earliest offset).
        let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for round in 0..20 {
            for key in 0..10 {
                let name = format!("k{key}");
                let value = serde_json::json!({"key": name, "n": round}).to_string();
                produce(&producer, "orders", key % 2, &name, value.as_bytes()).await;
                expected.entry(name).or_default().push(round);
            }
        }
        let relay = Relay::new(
            "relay-kafka",
            &broker.url(),
            &KAFKA_ROUTE.replace("RECEIVER", &receiver.url("")),
        );
        let mut run = relay.spawn();
        // More records while it runs: a flaky one, a poison one with a record of the same key
        // behind it, and one that is not JSON.
        produce(
            &producer,
            "orders",
            0,
            "f",
            br#"{"key": "f", "note": "flaky"}"#,
        )
        .await;
        let poison_offset = produce(
            &producer,
            "orders",
            1,
            "p",
            br#"{"key": "p", "note": "poison"}"#,
        )
        .await;
        let behind_offset = produce(
            &producer,
            "orders",
            1,
            "p",
            br#"{"key": "p", "note": "after-poison"}"#,
        )
        .await;
        produce(&producer, "orders", 0, "x", b"not json at all").await;
        let total = 200 + 1;
        wait_until(
            "the records to be delivered",
            Duration::from_secs(60),
            || {
                let count = distinct_deliveries(&receiver).len();
                async move { (count >= total).then_some(()) }
            },
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{error}: {} delivered\n{}",
                distinct_deliveries(&receiver).len(),
                relay.log()
            )
        });
        let failed = wait_until("two parked failures", Duration::from_secs(30), || async {
            let failed = relay.messages("status=failed").await;
            (failed.len() == 2).then_some(failed)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        let delivered = distinct_deliveries(&receiver);
        assert_eq!(delivered.len(), total);
        check_signatures(&receiver.received());
        // Per-key order.
        let mut order: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for request in &delivered {
            let document = request.json();
            if let Some(n) = document["n"].as_i64() {
                order
                    .entry(document["key"].as_str().unwrap().to_string())
                    .or_default()
                    .push(n);
            }
        }
        assert_eq!(order, expected);
        // Coordinates travel as headers; the flaky record kept its id over three attempts.
        let flaky = three_attempts_one_id(&receiver, "flaky");
        assert_eq!(flaky[0].header("ferry-topic"), Some("orders"));
        assert_eq!(flaky[0].header("ferry-partition"), Some("0"));
        // Parked: the poison record (400) and the record that is not JSON (never sent).
        let errors: BTreeSet<String> = failed
            .iter()
            .map(|message| message["last_error"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(
            errors.iter().any(|error| error.contains("HTTP 400")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|error| error.contains("not JSON")),
            "{errors:?}"
        );
        assert!(!receiver
            .received()
            .iter()
            .any(|request| request.body.contains("not json")));
        let poison = failed.iter().find(|message| message["key"] == "p").unwrap();
        assert_eq!(
            (poison["partition"].as_i64(), poison["offset"].as_i64()),
            (Some(1), Some(poison_offset))
        );
        assert!(!receiver
            .received()
            .iter()
            .any(|request| request.body.contains("after-poison")));
        // The group's offsets follow outcomes: partition 0 is done; partition 1 stops at the
        // record waiting behind the parked one.
        let group = "ferry-relay-relay-kafka";
        wait_until(
            "the group's offsets to follow the outcomes",
            Duration::from_secs(30),
            || {
                let offsets = committed(&broker, group, "orders", 2);
                async move { (offsets[1] == behind_offset && offsets[0] >= 102).then_some(()) }
            },
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{error}: {:?}\n{}",
                committed(&broker, group, "orders", 2),
                relay.log()
            )
        });
        // The same as a metric: one record of partition 1 without an outcome.
        wait_until(
            "the consumer lag metric",
            Duration::from_secs(30),
            || async {
                let (_, metrics) = relay.call("GET", "/metrics", "").await;
                let text = metrics.as_str().unwrap_or("").to_string();
                (text.contains("ferry_relay_consumer_lag{topic=\"orders\",partition=\"1\"} 1")
                    && text
                        .contains("ferry_relay_consumer_lag{topic=\"orders\",partition=\"0\"} 0"))
                .then_some(())
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        // The endpoint is fixed; retry everything parked: the poison record goes, then the one
        // behind it, and the offset of partition 1 moves past them.
        receiver.set_policy(|_, _| (Some(200), Duration::ZERO));
        // (The record that is not JSON stays parked: it cannot be sent as JSON.)
        let (status, answer) = relay
            .call(
                "POST",
                "/api/relay/retry",
                r#"{"status": "failed", "route": "orders"}"#,
            )
            .await;
        assert_eq!(
            (status, answer["retried"].as_i64()),
            (200, Some(1)),
            "{answer}"
        );
        wait_until(
            "the record behind the poison one",
            Duration::from_secs(30),
            || {
                let done = receiver
                    .delivered()
                    .iter()
                    .any(|request| request.body.contains("after-poison"));
                async move { done.then_some(()) }
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        wait_until(
            "partition 1's offset to pass it",
            Duration::from_secs(30),
            || {
                let offsets = committed(&broker, group, "orders", 2);
                async move { (offsets[1] == behind_offset + 1).then_some(()) }
            },
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{error}: {:?}\n{}",
                committed(&broker, group, "orders", 2),
                relay.log()
            )
        });
        // Replay partition 0, offsets 0 to 2, from Kafka: the same ids are delivered again.
        let first_ids: Vec<String> = delivered
            .iter()
            .filter(|request| {
                request.header("ferry-partition") == Some("0")
                    && request
                        .header("ferry-offset")
                        .and_then(|o| o.parse::<i64>().ok())
                        .is_some_and(|o| o <= 2)
            })
            .map(|request| request.header("webhook-id").unwrap().to_string())
            .collect();
        assert_eq!(first_ids.len(), 3);
        let before = receiver.delivered().len();
        let (status, answer) = relay
            .call(
                "POST",
                "/api/relay/replay",
                r#"{"topic": "orders", "partition": 0, "from_offset": 0, "to_offset": 2}"#,
            )
            .await;
        assert_eq!(
            (status, answer["read"].as_i64(), answer["retried"].as_i64()),
            (200, Some(3), Some(3)),
            "{answer}"
        );
        wait_until("the replayed records", Duration::from_secs(30), || {
            let again: Vec<String> = receiver.delivered()[before..]
                .iter()
                .map(|request| request.header("webhook-id").unwrap().to_string())
                .collect();
            let ids = first_ids.clone();
            async move { ids.iter().all(|id| again.contains(id)).then_some(()) }
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        // kill -9 while records arrive, restart: every record delivered, none changed.
        let writer_broker = broker.bootstrap();
        let writer = tokio::spawn(async move {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", writer_broker)
                .set("acks", "all")
                .create()
                .unwrap();
            for n in 0..400 {
                let key = format!("late{}", n % 7);
                let value = serde_json::json!({"key": key, "late": n}).to_string();
                // A key stays in one partition, as Kafka's partitioners keep it.
                produce(&producer, "orders", (n % 7) % 2, &key, value.as_bytes()).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        kill(&mut run);
        let mut run = relay.spawn();
        writer.await.unwrap();
        wait_until("the late records", Duration::from_secs(60), || {
            let late: BTreeSet<i64> = receiver
                .delivered()
                .iter()
                .filter_map(|request| request.json()["late"].as_i64())
                .collect();
            async move { (late.len() == 400).then_some(()) }
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
        let mut late_order: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut seen_ids = BTreeSet::new();
        for request in receiver.delivered() {
            let document = request.json();
            if let Some(n) = document["late"].as_i64() {
                if seen_ids.insert(request.header("webhook-id").unwrap().to_string()) {
                    late_order
                        .entry(document["key"].as_str().unwrap().to_string())
                        .or_default()
                        .push(n);
                }
            }
        }
        assert_eq!(seen_ids.len(), 400, "one id per record");
        for (key, numbers) in late_order {
            assert!(
                numbers.windows(2).all(|pair| pair[0] < pair[1]),
                "{key}: {numbers:?}"
            );
        }
        assert_eq!(stop(&mut run), Some(0), "{}", relay.log());
    }
}
