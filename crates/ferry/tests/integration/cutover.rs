//! Switching over under continuous writes: every acknowledged write is on the new database after
//! cutover and on the old one after rollback; crashes at each step of a cutover resume; the
//! control plane tells applications where to write.

use std::collections::BTreeSet;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_testkit::{table_digest, wait_until};
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

use crate::common::{kill, servers, stop, wait_true, Pair};

/// GET on the control plane: (status, body).
pub(crate) async fn http_get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: ferry\r\n{authorization}\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

async fn phase(port: u16) -> Option<Json> {
    let (status, body) = http_get(port, "/api/phase", None).await?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Which database a write was acknowledged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Old,
    New,
}

/// An application: inserts rows wherever `/api/phase` says writes go, and remembers every
/// insert the database acknowledged. Inserts into `events` take their id from a sequence, so a
/// sequence not moved past the old database's values shows up as a duplicate key.
struct Application {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(i64, Side)>>>,
    duplicate_keys: Arc<Mutex<Vec<String>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Application {
    fn start(database: &str, port: u16) -> Application {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let duplicate_keys = Arc::new(Mutex::new(Vec::new()));
        let handle = {
            let (stop, acknowledged, duplicate_keys) =
                (stop.clone(), acknowledged.clone(), duplicate_keys.clone());
            let database = database.to_string();
            tokio::spawn(async move {
                let mut next_id: i64 = 1_000_000;
                let mut connection: Option<(Side, Client)> = None;
                while !stop.load(Ordering::Relaxed) {
                    let side = match phase(port)
                        .await
                        .as_ref()
                        .map(|phase| phase["write_primary"].clone())
                    {
                        Some(Json::String(side)) if side == "source" => Side::Old,
                        Some(Json::String(side)) if side == "target" => Side::New,
                        // Fenced (or ferry restarting): wait.
                        _ => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    if connection
                        .as_ref()
                        .is_none_or(|(current, client)| *current != side || client.is_closed())
                    {
                        let server = match side {
                            Side::Old => &servers().source,
                            Side::New => &servers().target,
                        };
                        connection = match server.connect(&database).await {
                            Ok(client) => Some((side, client)),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        };
                    }
                    let (_, client) = connection.as_ref().expect("connected above");
                    // A few writes per phase check.
                    for _ in 0..5 {
                        next_id += 1;
                        let result = client
                            .query_one(
                                "WITH ledger AS (INSERT INTO public.ledger (id, note) VALUES ($1, 'written') RETURNING id)
                                 INSERT INTO public.events (note) SELECT 'event ' || id FROM ledger RETURNING id",
                                &[&next_id],
                            )
                            .await;
                        match result {
                            Ok(_) => acknowledged.lock().unwrap().push((next_id, side)),
                            Err(error) => {
                                if error.code()
                                    == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
                                {
                                    duplicate_keys.lock().unwrap().push(error.to_string());
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                break;
                            }
                        }
                    }
                }
            })
        };
        Application {
            stop,
            acknowledged,
            duplicate_keys,
            handle,
        }
    }

    fn count(&self, side: Side) -> usize {
        self.acknowledged
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, written)| *written == side)
            .count()
    }

    fn acknowledged_ids(&self) -> BTreeSet<i64> {
        self.acknowledged
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }

    async fn wait_for_writes(&self, side: Side, at_least: usize, log: impl Fn() -> String) {
        wait_until(
            "the application to write",
            Duration::from_secs(60),
            || async { (self.count(side) >= at_least).then_some(()) },
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{error}: {side:?} has {} acknowledged writes\n{}",
                self.count(side),
                log()
            )
        });
    }

    async fn stop(self) -> (BTreeSet<i64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("application task");
        let ids = self
            .acknowledged
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| *id)
            .collect();
        let duplicates = self.duplicate_keys.lock().unwrap().clone();
        (ids, duplicates)
    }
}

/// The ids of `ids` missing from `public.ledger` on this database.
async fn missing(client: &Client, ids: &BTreeSet<i64>) -> Vec<i64> {
    let list: Vec<i64> = ids.iter().copied().collect();
    let present: BTreeSet<i64> = client
        .query("SELECT id FROM public.ledger WHERE id = ANY($1)", &[&list])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    ids.difference(&present).copied().collect()
}

async fn wait_present(client: &Client, ids: &BTreeSet<i64>, what: &str, log: impl Fn() -> String) {
    let result = wait_until(what, Duration::from_secs(60), || async {
        missing(client, ids).await.is_empty().then_some(())
    })
    .await;
    if let Err(error) = result {
        let gone = missing(client, ids).await;
        panic!(
            "{error}: {} acknowledged writes missing, e.g. {:?}\n{}",
            gone.len(),
            &gone[..gone.len().min(10)],
            log()
        );
    }
}

async fn setup(name: &str) -> Pair {
    let pair = Pair::new(name).await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.ledger (id bigint PRIMARY KEY, note text NOT NULL);
             CREATE TABLE public.events (id bigserial PRIMARY KEY, note text NOT NULL);
             INSERT INTO public.ledger SELECT g, 'seed' FROM generate_series(1, 2000) g;
             INSERT INTO public.events (note) SELECT 'seed ' || g FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
    pair
}

/// A `ferry run` that is killed when the test ends, even by a panic.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_ferry(pair: &Pair, port: u16) -> Running {
    Running(pair.spawn_run(
        &[
            "--name",
            &pair.name,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        None,
    ))
}

/// Waits until `ferry run` streams (its copy and indexes are done).
async fn wait_streaming(pair: &Pair, port: u16) {
    pair.wait_streaming(2).await;
    wait_until("ferry run to stream", Duration::from_secs(60), || async {
        let (_, body) = http_get(port, "/api/status", None).await?;
        let status: Json = serde_json::from_str(&body).ok()?;
        (status["forward"]["stage"] == "streaming").then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
}

/// Runs a controller command and returns its JSON report (panics with the log on failure).
fn switch(
    pair: &Pair,
    command: &str,
    extra: &[&str],
    failpoint: Option<&str>,
) -> Result<Json, String> {
    let mut ferry = pair.ferry(command, &["--name", &pair.name, "--json"]);
    ferry.args(extra);
    if let Some(failpoint) = failpoint {
        ferry.env("FERRY_FAILPOINT", failpoint);
    }
    let output = ferry.output().expect("run ferry");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if !output.status.success() {
        return Err(format!(
            "ferry {command} failed ({:?}):\n{stdout}\n{stderr}",
            output.status.code()
        ));
    }
    serde_json::from_str(&stdout).map_err(|error| {
        format!("ferry {command} printed no report ({error}):\n{stdout}\n{stderr}")
    })
}

const FAST_GATE: &[&str] = &["--max-lag", "2s", "--stable-for", "1s", "--lag-wait", "60s"];

async fn wait_phase(port: u16, wanted: &str, log: impl Fn() -> String) {
    wait_until(
        "ferry run to report the phase",
        Duration::from_secs(30),
        || async { (phase(port).await?["phase"] == wanted).then_some(()) },
    )
    .await
    .unwrap_or_else(|error| panic!("{error} {wanted}\n{}", log()));
}

/// The whole switch, under an application that never stops writing: dry run, cutover, a crash
/// of `ferry run` while streaming back, rollback, a second cutover, finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_and_rollback_lose_no_acknowledged_write() {
    let pair = setup("switch_over").await;
    let port = ferry_testkit::free_port().unwrap();
    let mut ferry = run_ferry(&pair, port);
    wait_streaming(&pair, port).await;
    let log = || pair.log();

    // The control plane answers.
    assert_eq!(
        http_get(port, "/healthz", None).await.unwrap(),
        (200, "ok\n".to_string())
    );
    let (status, body) = http_get(port, "/api/status", None).await.unwrap();
    assert_eq!(status, 200);
    let status: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(status["phase"], "replicating");
    assert_eq!(status["forward"]["stage"], "streaming");
    assert_eq!(status["forward"]["rows_copied"], 4000);

    let application = Application::start(&pair.name, port);
    application.wait_for_writes(Side::Old, 300, log).await;

    // Cutover refuses without a verification ...
    let refused = switch(&pair, "cutover", FAST_GATE, None).unwrap_err();
    assert!(refused.contains("never verified"), "{refused}");
    // ... which passes under writes.
    let verify = pair
        .ferry("verify", &["--name", &pair.name, "--while-streaming"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // A dry run predicts and changes nothing; while it runs, it serves the phase.
    let controller_port = ferry_testkit::free_port().unwrap();
    let listen = format!("127.0.0.1:{controller_port}");
    let dry_run = pair
        .ferry(
            "cutover",
            &[
                &[
                    "--name",
                    &pair.name,
                    "--json",
                    "--dry-run",
                    "--listen",
                    &listen,
                ][..],
                FAST_GATE,
            ]
            .concat(),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "the controller to serve the phase",
        Duration::from_secs(20),
        || async {
            let (status, body) = http_get(controller_port, "/api/phase", None).await?;
            (status == 200 && body.contains("\"replicating\"")).then_some(())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    let output = dry_run.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rehearsal: Json = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        rehearsal["predicted_downtime_millis"].as_u64().is_some(),
        "{rehearsal}"
    );
    assert_eq!(rehearsal["phase"], "replicating");
    let before = application.count(Side::Old);
    application
        .wait_for_writes(Side::Old, before + 100, log)
        .await;

    // A difference found at the fence aborts the cutover and lifts the fence.
    pair.target
        .batch_execute("UPDATE public.ledger SET note = 'tampered' WHERE id = 7")
        .await
        .unwrap();
    let aborted = switch(
        &pair,
        "cutover",
        &[FAST_GATE, &["--verify-recent", "10m"]].concat(),
        None,
    )
    .unwrap_err();
    assert!(
        aborted.contains("cutover.verify_failed") && aborted.contains("public.ledger"),
        "{aborted}"
    );
    wait_phase(port, "replicating", log).await;
    let before = application.count(Side::Old);
    application
        .wait_for_writes(Side::Old, before + 100, log)
        .await;
    for flags in [&["--repair"][..], &[][..]] {
        let verify = pair
            .ferry(
                "verify",
                &[&["--name", &pair.name, "--while-streaming"][..], flags].concat(),
            )
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "verify {flags:?}: {}\n{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    // Cutover, re-verifying the tables written in the last 10 minutes while fenced.
    let report = switch(
        &pair,
        "cutover",
        &[FAST_GATE, &["--verify-recent", "10m"]].concat(),
        None,
    )
    .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert_eq!(report["phase"], "writes-switched", "{report}");
    let downtime = report["write_downtime_millis"].as_u64().unwrap();
    assert!(downtime < 5_000, "write downtime {downtime} ms");
    println!("cutover write downtime: {downtime} ms");
    wait_phase(port, "writes-switched", log).await;
    application.wait_for_writes(Side::New, 300, log).await;
    // Every write acknowledged by the old database is on the new one.
    let written_on_old: BTreeSet<i64> = application
        .acknowledged
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, side)| *side == Side::Old)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        missing(&pair.target, &written_on_old).await.is_empty(),
        "writes acknowledged on the old database are missing on the new one\n{}",
        log()
    );
    // The old database refuses application writes (the fence ended the sessions it had).
    assert!(pair.source.is_closed());
    let source = servers().source.connect(&pair.name).await.unwrap();
    let refused = source
        .batch_execute("INSERT INTO public.ledger VALUES (-1, 'stray')")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{refused}"
    );
    let (_, metrics) = http_get(port, "/metrics", None).await.unwrap();
    assert!(
        metrics.contains("ferry_phase{phase=\"writes-switched\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_last_write_downtime_seconds"),
        "{metrics}"
    );
    // Repairing from the old database would overwrite newer writes now.
    let repair = pair
        .ferry("verify", &["--name", &pair.name, "--repair"])
        .output()
        .unwrap();
    assert_eq!(repair.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&repair.stderr).contains("verify.repair_after_switch"));

    // The reverse stream carries writes back; it survives kill -9 of ferry run.
    let written = application.acknowledged_ids();
    wait_present(
        &source,
        &written,
        "writes on the new database to reach the old one",
        log,
    )
    .await;
    kill(&mut ferry.0);
    let before = application.count(Side::New);
    ferry = run_ferry(&pair, port);
    application
        .wait_for_writes(Side::New, before + 300, log)
        .await;

    // Rollback: everything written on the new database is on the old one.
    let report =
        switch(&pair, "rollback", &[], None).unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert_eq!(report["phase"], "replicating", "{report}");
    let after_rollback = application.acknowledged_ids();
    // (Unfencing ended the sessions opened while the old database was fenced.)
    let source = servers().source.connect(&pair.name).await.unwrap();
    assert!(
        missing(&source, &after_rollback).await.is_empty(),
        "acknowledged writes missing on the old database after rollback\n{}",
        log()
    );
    let before = application.count(Side::Old);
    application
        .wait_for_writes(Side::Old, before + 200, log)
        .await;
    // The new database is read-only for applications again.
    let refused = servers()
        .target
        .connect(&pair.name)
        .await
        .unwrap()
        .batch_execute("INSERT INTO public.ledger VALUES (-2, 'stray')")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{refused}"
    );

    // Cut over again (the new database's own fence is lifted), then finish.
    let report = switch(&pair, "cutover", &[FAST_GATE, &["--force"]].concat(), None)
        .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert_eq!(report["phase"], "writes-switched");
    let before = application.count(Side::New);
    application
        .wait_for_writes(Side::New, before + 200, log)
        .await;
    let (acknowledged, duplicates) = application.stop().await;
    assert!(
        duplicates.is_empty(),
        "sequences were not moved past the old database: {duplicates:?}"
    );
    let target = servers().target.connect(&pair.name).await.unwrap();
    let source = servers().source.connect(&pair.name).await.unwrap();
    assert!(missing(&target, &acknowledged).await.is_empty());
    wait_present(
        &source,
        &acknowledged,
        "the last writes to reach the old database",
        log,
    )
    .await;
    let new_rows: i64 = target
        .query_one("SELECT count(*) FROM public.ledger", &[])
        .await
        .unwrap()
        .get(0);
    let old_rows: i64 = source
        .query_one("SELECT count(*) FROM public.ledger", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(new_rows, old_rows);
    assert_eq!(stop(&mut ferry.0), Some(0), "{}", log());

    let report =
        switch(&pair, "finish", &[], None).unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert_eq!(report["phase"], "done");
    for client in [&source, &target] {
        let slots: i64 = client.query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'ferry_switch_over%'", &[]).await.unwrap().get(0);
        assert_eq!(slots, 0, "slots left after finish");
    }
    let output = pair.ferry("run", &["--name", &pair.name]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("finished"));
}

/// kill -9 of `ferry cutover` after each of its steps (fence, drain, reverse stream): running it
/// again completes the switch, and no acknowledged write is lost either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_cutover_resumes() {
    let pair = setup("switch_crash").await;
    let port = ferry_testkit::free_port().unwrap();
    let mut ferry = run_ferry(&pair, port);
    wait_streaming(&pair, port).await;
    let log = || pair.log();
    let application = Application::start(&pair.name, port);
    application.wait_for_writes(Side::Old, 100, log).await;
    // A drain that outlasts --fence-timeout (zero: the fence position cannot be durable on the
    // new database the moment the fence goes up) aborts: the fence is lifted, writes go on.
    let aborted = switch(
        &pair,
        "cutover",
        &[FAST_GATE, &["--force", "--fence-timeout", "0s"]].concat(),
        None,
    )
    .unwrap_err();
    assert!(aborted.contains("cutover.fence_timeout"), "{aborted}");
    wait_phase(port, "replicating", log).await;
    let before = application.count(Side::Old);
    application
        .wait_for_writes(Side::Old, before + 100, log)
        .await;
    for failpoint in [
        "cutover.after_fence",
        "cutover.after_drain",
        "cutover.after_reverse_stream",
    ] {
        let crashed = switch(
            &pair,
            "cutover",
            &[FAST_GATE, &["--force"]].concat(),
            Some(failpoint),
        )
        .unwrap_err();
        assert!(crashed.contains("failpoint"), "{crashed}");
        let report = switch(&pair, "cutover", &[FAST_GATE, &["--force"]].concat(), None)
            .unwrap_or_else(|error| panic!("after {failpoint}: {error}\n{}", log()));
        assert_eq!(report["phase"], "writes-switched", "{report}");
        wait_phase(port, "writes-switched", log).await;
        let before = application.count(Side::New);
        application
            .wait_for_writes(Side::New, before + 100, log)
            .await;
        let written = application.acknowledged_ids();
        assert!(
            missing(
                &servers().target.connect(&pair.name).await.unwrap(),
                &written
                    .iter()
                    .copied()
                    .filter(|id| application
                        .acknowledged
                        .lock()
                        .unwrap()
                        .contains(&(*id, Side::Old)))
                    .collect()
            )
            .await
            .is_empty(),
            "after {failpoint}: writes on the old database lost"
        );
        let report = switch(&pair, "rollback", &[], None)
            .unwrap_or_else(|error| panic!("after {failpoint}: {error}\n{}", log()));
        assert_eq!(report["phase"], "replicating");
        assert!(
            missing(
                &servers().source.connect(&pair.name).await.unwrap(),
                &application.acknowledged_ids()
            )
            .await
            .is_empty(),
            "after {failpoint}: writes on the new database lost"
        );
        wait_phase(port, "replicating", log).await;
        let before = application.count(Side::Old);
        application
            .wait_for_writes(Side::Old, before + 100, log)
            .await;
    }
    // A crash during rollback, too.
    switch(&pair, "cutover", &[FAST_GATE, &["--force"]].concat(), None)
        .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    wait_phase(port, "writes-switched", log).await;
    let crashed = switch(&pair, "rollback", &[], Some("rollback.after_fence")).unwrap_err();
    assert!(crashed.contains("failpoint"), "{crashed}");
    switch(&pair, "rollback", &[], None).unwrap_or_else(|error| panic!("{error}\n{}", log()));
    let (acknowledged, duplicates) = application.stop().await;
    assert!(duplicates.is_empty(), "{duplicates:?}");
    let source = servers().source.connect(&pair.name).await.unwrap();
    let target = servers().target.connect(&pair.name).await.unwrap();
    assert!(missing(&source, &acknowledged).await.is_empty());
    // Forward streaming carries the old database's rows to the new one again.
    wait_until(
        "both databases to be equal",
        Duration::from_secs(60),
        || async {
            for table in ["public.ledger", "public.events"] {
                if table_digest(&source, table, "id").await.ok()?
                    != table_digest(&target, table, "id").await.ok()?
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert_eq!(stop(&mut ferry.0), Some(0), "{}", log());
}

/// Listening beyond loopback needs a token; with one, requests without it are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_needs_a_token_beyond_loopback() {
    let pair = setup("control_token").await;
    let port = ferry_testkit::free_port().unwrap();
    // `run` and the controllers (which serve the phase too) follow the same rule.
    for command in ["run", "cutover"] {
        let output = pair
            .ferry(
                command,
                &["--name", &pair.name, "--listen", &format!("0.0.0.0:{port}")],
            )
            .env_remove("FERRY_API_TOKEN")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("needs a token"), "{command}: {stderr}");
    }

    let mut ferry = Running(pair.spawn_run(
        &[
            "--name",
            &pair.name,
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--api-token",
            "s3cret-token",
        ],
        None,
    ));
    pair.wait_streaming(2).await;
    assert_eq!(http_get(port, "/api/status", None).await.unwrap().0, 401);
    assert_eq!(
        http_get(port, "/api/status", Some("wrong"))
            .await
            .unwrap()
            .0,
        401
    );
    let (status, body) = http_get(port, "/api/status", Some("s3cret-token"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(http_get(port, "/healthz", None).await.unwrap().0, 200);
    assert_eq!(stop(&mut ferry.0), Some(0));
    assert!(!pair.log().contains("s3cret-token"), "the token was logged");
}

/// Unique constraints are built beside the stream once it has caught up; the cutover makes sure
/// the new database has every one before applications write there: it builds one that is
/// missing, and refuses (`cutover.objects_missing`) when the rows do not allow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_builds_a_missing_unique_constraint_or_refuses() {
    let pair = Pair::new("cutover_objects").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.ledger (id bigint PRIMARY KEY, note text NOT NULL, CONSTRAINT ledger_note UNIQUE (note));
             CREATE TABLE public.other (id bigint PRIMARY KEY);
             INSERT INTO public.ledger SELECT g, 'seed ' || g FROM generate_series(1, 200) g;
             INSERT INTO public.other SELECT generate_series(1, 10);",
        )
        .await
        .unwrap();
    let port = ferry_testkit::free_port().unwrap();
    let _ferry = run_ferry(&pair, port);
    wait_streaming(&pair, port).await;
    let constraint = "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'ledger_note' AND contype = 'u')";
    wait_true(
        &pair.target,
        "the unique constraint on the target",
        constraint,
        &[],
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));

    // Gone from the new database, and a row there that it would refuse.
    pair.target
        .batch_execute(
            "ALTER TABLE public.ledger DROP CONSTRAINT ledger_note;
             UPDATE public.ledger SET note = 'seed 1' WHERE id = 2;",
        )
        .await
        .unwrap();
    let gate = [FAST_GATE, &["--force"][..]].concat();
    let refused = switch(&pair, "cutover", &gate, None).unwrap_err();
    assert!(
        refused.contains("cutover.objects_missing") && refused.contains("ledger_note"),
        "{refused}"
    );
    wait_phase(port, "replicating", || pair.log()).await;

    // With the row as the source has it, the cutover builds the constraint and switches.
    pair.target
        .batch_execute("UPDATE public.ledger SET note = 'seed 2' WHERE id = 2")
        .await
        .unwrap();
    switch(&pair, "cutover", &gate, None).unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    let found: bool = pair.target.query_one(constraint, &[]).await.unwrap().get(0);
    assert!(found, "{}", pair.log());
}
