//! Shared servers, per-test databases, the ferry binary, and an independent equality check.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_testkit::{table_digest, table_rows, wait_until, PostgresServer};
use tokio_postgres::Client;

pub(crate) struct Servers {
    pub source: PostgresServer,
    pub target: PostgresServer,
}

pub(crate) fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| Servers {
        source: PostgresServer::start().expect("start the source server"),
        target: PostgresServer::start().expect("start the target server"),
    })
}

/// A source and a target database for one test.
pub(crate) struct Pair {
    pub name: String,
    pub source_url: String,
    pub target_url: String,
    pub source: Client,
    pub target: Client,
}

impl Pair {
    pub(crate) async fn new(name: &str) -> Pair {
        let servers = servers();
        let source_url = servers
            .source
            .create_database(name)
            .await
            .expect("create source database");
        let target_url = servers
            .target
            .create_database(name)
            .await
            .expect("create target database");
        Pair {
            name: name.to_string(),
            source_url,
            target_url,
            source: servers.source.connect(name).await.unwrap(),
            target: servers.target.connect(name).await.unwrap(),
        }
    }

    /// `ferry <command> --source .. --target ..` with extra arguments.
    pub(crate) fn ferry(&self, command: &str, extra: &[&str]) -> Command {
        let mut ferry = Command::new(env!("CARGO_BIN_EXE_ferry"));
        ferry
            .arg(command)
            .args(["--source", &self.source_url, "--target", &self.target_url])
            .args(extra);
        ferry.env_remove("FERRY_FAILPOINT").env("FERRY_LOG", "info");
        ferry
    }

    /// Starts `ferry run` in the background, logging to a file named after the test.
    pub(crate) fn spawn_run(&self, extra: &[&str], failpoint: Option<&str>) -> Child {
        let mut command = self.ferry("run", extra);
        if let Some(failpoint) = failpoint {
            command.env("FERRY_FAILPOINT", failpoint);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(&self.name))
            .unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ferry")
    }

    /// Waits until every selected table is copied and the stream is set up.
    pub(crate) async fn wait_streaming(&self, tables: i64) {
        let target = &self.target;
        wait_until("ferry to finish copying", Duration::from_secs(180), || async {
            let row = target
                .query_opt(
                    "SELECT 1 FROM _ferry.stream WHERE (SELECT count(*) FROM _ferry.table_state WHERE state = 'copied') = $1
                       AND NOT EXISTS (SELECT 1 FROM _ferry.table_state WHERE state <> 'copied')",
                    &[&tables],
                )
                .await
                .ok()??;
            Some(row)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", self.log()));
    }

    /// Waits until each table has the same rows on both sides, compared by ordered digests.
    pub(crate) async fn wait_equal(&self, tables: &[(&str, &str)]) {
        let result = wait_until(
            "source and target to be equal",
            Duration::from_secs(120),
            || async {
                for (table, key) in tables {
                    let left = table_digest(&self.source, table, key).await.ok()?;
                    let right = table_digest(&self.target, table, key).await.ok()?;
                    if left != right {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        if let Err(error) = result {
            let mut report = String::new();
            for (table, key) in tables {
                let left = table_rows(&self.source, table, key).await.unwrap();
                let right = table_rows(&self.target, table, key).await.unwrap();
                if left != right {
                    report.push_str(&format!(
                        "{table}: source {} rows, target {} rows\n",
                        left.len(),
                        right.len()
                    ));
                    for (index, (l, r)) in left
                        .iter()
                        .zip(&right)
                        .enumerate()
                        .filter(|(_, (l, r))| l != r)
                        .take(5)
                    {
                        report.push_str(&format!(
                            "  row {index}\n    source {}\n    target {}\n",
                            clip(l),
                            clip(r)
                        ));
                    }
                }
            }
            panic!("{error}\n{report}\n{}", self.log());
        }
    }

    pub(crate) fn log(&self) -> String {
        let text = std::fs::read_to_string(log_path(&self.name)).unwrap_or_default();
        let start = text.len().saturating_sub(6000);
        format!(
            "--- ferry log (tail) ---\n{}",
            &text[text.floor_char_boundary(start)..]
        )
    }
}

pub(crate) fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ferry-test-{name}-{}.log", std::process::id()))
}

/// Sends SIGTERM and waits for a graceful exit; returns the exit code.
pub(crate) fn stop(child: &mut Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..600 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("ferry did not stop within 30 s of SIGTERM");
}

/// SIGKILL, like `kill -9`.
pub(crate) fn kill(child: &mut Child) {
    child.kill().expect("kill ferry");
    child.wait().expect("reap ferry");
}

/// A client that keeps inserting, updating and deleting rows of `table` (id bigint key, payload
/// text, counter int) until stopped.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    pub writes: Arc<AtomicU64>,
    handle: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub(crate) async fn start(database: &str, table: &'static str, max_id: i64) -> Writer {
        let client = servers().source.connect(database).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, writes) = (stop.clone(), writes.clone());
            tokio::spawn(async move {
                let mut round: i64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let id = 1 + (round * 7919) % max_id;
                    let sql = format!(
                        "BEGIN;
                         UPDATE {table} SET counter = counter + 1, payload = payload || 'u' WHERE id = {id};
                         DELETE FROM {table} WHERE id = {};
                         INSERT INTO {table} (id, payload, counter) VALUES ({}, 'new row {round}', 0) ON CONFLICT (id) DO UPDATE SET counter = {table}.counter + 100;
                         COMMIT;",
                        1 + (round * 104729) % max_id,
                        max_id + round
                    );
                    client.batch_execute(&sql).await.expect("writer statement");
                    writes.fetch_add(3, Ordering::Relaxed);
                    if round % 20 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        };
        Writer {
            stop,
            writes,
            handle,
        }
    }

    pub(crate) async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("writer task");
        self.writes.load(Ordering::Relaxed)
    }
}

/// At most 300 characters of a row, for failure reports.
fn clip(row: &str) -> &str {
    &row[..row.floor_char_boundary(300)]
}

/// Runs a `ferry verify --json` command: its exit code, the parsed report and stderr.
pub(crate) fn run_verify(command: &mut Command) -> (Option<i32>, serde_json::Value, String) {
    let output = command.output().expect("run ferry verify");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("verify --json printed no JSON ({error}):\n{stdout}\n{stderr}")
    });
    (output.status.code(), report, stderr)
}

/// The sorted keys of `kind` ("missing", "extra", "different", "duplicate") a verify report
/// lists for `table` (its full name, or the end of it).
pub(crate) fn keys_of(report: &serde_json::Value, table: &str, kind: &str) -> Vec<String> {
    let entry = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| {
            entry["table"]
                .as_str()
                .is_some_and(|name| name == table || name.ends_with(&format!(".{table}")))
        })
        .unwrap_or_else(|| panic!("{table} not in {report}"));
    let mut keys: Vec<String> = entry["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|difference| difference["kind"] == kind)
        .map(|difference| difference["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

/// Sends `body` to `url` as JSON; answers the status and the body's text.
pub(crate) async fn json_request(
    client: &ferry_relay::http::client::HttpClient,
    method: &str,
    url: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let target = ferry_relay::http::client::Target::parse(url)?;
    let response = client
        .send(
            method,
            &target,
            &[("Content-Type".into(), "application/json".into())],
            body.as_bytes(),
            timeout,
        )
        .await
        .map_err(|error| format!("{method} {url}: {error}"))?;
    Ok((
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    ))
}

/// Ends every session holding an advisory lock in the client's database (a lock's session
/// killed, as an operator or a crash would); returns how many.
/// Waits (up to 60 s) until `query`, a single boolean, answers true on `client`: an index or
/// constraint that ferry builds once the stream has caught up, for instance.
pub(crate) async fn wait_true(
    client: &Client,
    what: &str,
    query: &str,
    parameters: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<(), String> {
    wait_until(what, Duration::from_secs(60), || async {
        let found: bool = client.query_one(query, parameters).await.ok()?.get(0);
        found.then_some(())
    })
    .await
}

pub(crate) async fn end_advisory_lock_holders(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}
