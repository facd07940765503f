//! Switching over between engines: MariaDB to MariaDB, MariaDB to PostgreSQL and PostgreSQL to
//! MariaDB, under an application that keeps inserting as a non-admin account and records every
//! acknowledged write. After cutover every acknowledged write is on the new database exactly
//! once, inserts there succeed (counters moved past the old values), the reverse stream carries
//! new writes back (also across a kill -9 of `ferry run`), a controller killed after the fence
//! resumes, and rollback loses nothing.
//!
//! Each MariaDB in these tests is a server of its own: the fence (`read_only`) covers a whole
//! server, and the shared test servers serve other tests meanwhile.

use std::collections::BTreeSet;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_testkit::{wait_until, MariaDbServer};
use mysql_async::prelude::Queryable;
use serde_json::Value as Json;

use crate::common::{kill, log_path, servers, stop};
use crate::cutover::http_get;
use crate::mysql::{ferry, log_tail};

/// One database of a switch-over as the test reaches it.
#[derive(Clone)]
struct Database {
    /// ferry's URL (an administrator).
    url: String,
    /// The application's URL (a non-admin account on MariaDB).
    app_url: String,
    /// How the tables are qualified in SQL (`"shop".` on PostgreSQL, nothing on MariaDB).
    prefix: String,
    mariadb: bool,
}

impl Database {
    fn mariadb(server: &MariaDbServer, database: &str) -> Database {
        server
            .execute(&format!(
                "CREATE DATABASE IF NOT EXISTS `{database}`;
                 CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app';
                 GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* TO 'app'@'%';"
            ))
            .unwrap();
        Database {
            url: server.url(database),
            app_url: format!("mysql://app:app@127.0.0.1:{}/{database}", server.port()),
            prefix: String::new(),
            mariadb: true,
        }
    }

    fn postgres(url: String, schema: &str) -> Database {
        Database {
            app_url: url.clone(),
            url,
            prefix: format!("\"{schema}\"."),
            mariadb: false,
        }
    }

    async fn connect(&self, admin: bool) -> Option<Connection> {
        let url = if admin { &self.url } else { &self.app_url };
        if self.mariadb {
            let opts = mysql_async::Opts::from_url(url).ok()?;
            return mysql_async::Conn::new(opts)
                .await
                .ok()
                .map(Connection::Mariadb);
        }
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Some(Connection::Postgres(client))
    }

    /// Every id in `ledger` (None while unreachable or not created yet).
    async fn ledger_ids(&self) -> Option<Vec<i64>> {
        let query = format!("SELECT id FROM {}ledger", self.prefix);
        match self.connect(true).await? {
            Connection::Mariadb(mut conn) => conn.query(query).await.ok(),
            Connection::Postgres(client) => Some(
                client
                    .query(&query, &[])
                    .await
                    .ok()?
                    .iter()
                    .map(|row| row.get(0))
                    .collect(),
            ),
        }
    }

    /// The acknowledged ids missing here, or every one of them while unreadable.
    async fn missing(&self, ids: &BTreeSet<i64>) -> Vec<i64> {
        let present: BTreeSet<i64> = self
            .ledger_ids()
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        ids.difference(&present).copied().collect()
    }
}

enum Connection {
    Mariadb(mysql_async::Conn),
    Postgres(tokio_postgres::Client),
}

/// What happened to one insert.
enum Outcome {
    Acknowledged,
    DuplicateKey(String),
    Failed,
}

impl Connection {
    /// Inserts `id` into `ledger` and one row into `events` (whose id the database assigns) in
    /// one transaction.
    async fn insert(&mut self, prefix: &str, id: i64) -> Outcome {
        match self {
            Connection::Mariadb(conn) => {
                let result = async {
                    let mut transaction = conn
                        .start_transaction(mysql_async::TxOpts::default())
                        .await?;
                    transaction
                        .exec_drop("INSERT INTO ledger (id, note) VALUES (?, 'written')", (id,))
                        .await?;
                    transaction
                        .exec_drop(
                            "INSERT INTO events (note) VALUES (?)",
                            (format!("event {id}"),),
                        )
                        .await?;
                    transaction.commit().await
                }
                .await;
                match result {
                    Ok(()) => Outcome::Acknowledged,
                    Err(mysql_async::Error::Server(error)) if error.code == 1062 => {
                        Outcome::DuplicateKey(error.message)
                    }
                    Err(_) => Outcome::Failed,
                }
            }
            Connection::Postgres(client) => {
                let result = client
                    .query_one(
                        &format!("WITH ledger AS (INSERT INTO {prefix}ledger (id, note) VALUES ($1, 'written') RETURNING id)
                                  INSERT INTO {prefix}events (note) SELECT 'event ' || id FROM ledger RETURNING id"),
                        &[&id],
                    )
                    .await;
                match result {
                    Ok(_) => Outcome::Acknowledged,
                    Err(error)
                        if error.code()
                            == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
                    {
                        Outcome::DuplicateKey(
                            error
                                .as_db_error()
                                .map_or(error.to_string(), |db| db.message().to_string()),
                        )
                    }
                    Err(_) => Outcome::Failed,
                }
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Connection::Mariadb(_) => false,
            Connection::Postgres(client) => client.is_closed(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Old,
    New,
}

/// An application that writes wherever `/api/phase` says, and remembers what was acknowledged.
struct Application {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<(i64, Side)>>>,
    duplicate_keys: Arc<Mutex<Vec<String>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Application {
    fn start(old: Database, new: Database, port: u16) -> Application {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let duplicate_keys = Arc::new(Mutex::new(Vec::new()));
        let handle = {
            let (stop, acknowledged, duplicate_keys) =
                (stop.clone(), acknowledged.clone(), duplicate_keys.clone());
            tokio::spawn(async move {
                let mut next_id: i64 = 1_000_000;
                let mut connection: Option<(Side, Connection)> = None;
                while !stop.load(Ordering::Relaxed) {
                    let side = match phase(port)
                        .await
                        .map(|phase| phase["write_primary"].clone())
                    {
                        Some(Json::String(side)) if side == "source" => Side::Old,
                        Some(Json::String(side)) if side == "target" => Side::New,
                        _ => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let database = if side == Side::Old { &old } else { &new };
                    if connection
                        .as_ref()
                        .is_none_or(|(current, conn)| *current != side || conn.is_closed())
                    {
                        connection = database.connect(false).await.map(|conn| (side, conn));
                        if connection.is_none() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                    let (_, conn) = connection.as_mut().expect("connected above");
                    for _ in 0..5 {
                        next_id += 1;
                        match conn.insert(&database.prefix, next_id).await {
                            Outcome::Acknowledged => {
                                acknowledged.lock().unwrap().push((next_id, side))
                            }
                            outcome => {
                                if let Outcome::DuplicateKey(message) = outcome {
                                    duplicate_keys.lock().unwrap().push(message);
                                }
                                // Reconnect: the session may have been ended by a fence.
                                connection = None;
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

    fn ids(&self, only: Option<Side>) -> BTreeSet<i64> {
        self.acknowledged
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, side)| only.is_none_or(|only| only == *side))
            .map(|(id, _)| *id)
            .collect()
    }

    async fn wait_for_more(&self, side: Side, more: usize, log: &impl Fn() -> String) {
        let at_least = self.count(side) + more;
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
        let ids = {
            let handle = self.handle;
            handle.await.expect("application task");
            self.acknowledged
                .lock()
                .unwrap()
                .iter()
                .map(|(id, _)| *id)
                .collect()
        };
        let duplicates = self.duplicate_keys.lock().unwrap().clone();
        (ids, duplicates)
    }
}

async fn phase(port: u16) -> Option<Json> {
    let (status, body) = http_get(port, "/api/phase", None).await?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// A `ferry run` killed when the test ends, even by a panic.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Switch {
    name: String,
    old: Database,
    new: Database,
    port: u16,
}

const FAST_GATE: &[&str] = &["--max-lag", "2s", "--stable-for", "1s", "--lag-wait", "60s"];

impl Switch {
    fn log(&self) -> String {
        log_tail(&self.name)
    }

    fn run(&self) -> Running {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(&self.name))
            .unwrap();
        Running(
            ferry(
                "run",
                &self.old.url,
                &self.new.url,
                &[
                    "--name",
                    &self.name,
                    "--listen",
                    &format!("127.0.0.1:{}", self.port),
                ],
            )
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ferry"),
        )
    }

    /// A controller command's JSON report, or its output as the error.
    fn switch(
        &self,
        command: &str,
        extra: &[&str],
        failpoint: Option<&str>,
    ) -> Result<Json, String> {
        let mut ferry = ferry(
            command,
            &self.old.url,
            &self.new.url,
            &["--name", &self.name, "--json"],
        );
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

    async fn wait_phase(&self, wanted: &str) {
        wait_until(
            "ferry run to report the phase",
            Duration::from_secs(30),
            || async { (phase(self.port).await?["phase"] == wanted).then_some(()) },
        )
        .await
        .unwrap_or_else(|error| panic!("{error} {wanted}\n{}", self.log()));
    }

    async fn wait_present(&self, database: &Database, ids: &BTreeSet<i64>, what: &str) {
        let result = wait_until(what, Duration::from_secs(60), || async {
            database.missing(ids).await.is_empty().then_some(())
        })
        .await;
        if let Err(error) = result {
            let gone = database.missing(ids).await;
            panic!(
                "{error}: {} acknowledged writes missing, e.g. {:?}\n{}",
                gone.len(),
                &gone[..gone.len().min(10)],
                self.log()
            );
        }
    }

    /// Whether the application's account can write on `database` now (each probe with an id
    /// of its own, below the application's).
    async fn app_can_write(&self, database: &Database) -> bool {
        static PROBE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);
        let Some(mut conn) = database.connect(false).await else {
            return false;
        };
        let id = PROBE.fetch_sub(1, Ordering::Relaxed);
        matches!(
            conn.insert(&database.prefix, id).await,
            Outcome::Acknowledged
        )
    }
}

/// The whole switch under an application that never stops writing: verify, a cutover whose
/// controller dies after fencing (run again, it completes), a kill -9 of `ferry run` while
/// streaming back, a rollback whose controller dies after fencing, the rollback completed.
async fn switch_over_and_back(name: &str, old: Database, new: Database) {
    let _ = std::fs::remove_file(log_path(name));
    let switch = Switch {
        name: name.to_string(),
        old,
        new,
        port: ferry_testkit::free_port().unwrap(),
    };
    let log = || switch.log();
    let mut ferry_run = switch.run();
    wait_until("ferry run to stream", Duration::from_secs(120), || async {
        let (_, body) = http_get(switch.port, "/api/status", None).await?;
        let status: Json = serde_json::from_str(&body).ok()?;
        (status["forward"]["stage"] == "streaming").then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log()));

    let application = Application::start(switch.old.clone(), switch.new.clone(), switch.port);
    application.wait_for_more(Side::Old, 200, &log).await;
    let verify = ferry(
        "verify",
        &switch.old.url,
        &switch.new.url,
        &["--name", name, "--while-streaming"],
    )
    .output()
    .unwrap();
    assert!(
        verify.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr),
        log()
    );
    let dry_run = switch
        .switch("cutover", &[FAST_GATE, &["--dry-run"]].concat(), None)
        .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert!(
        dry_run["predicted_downtime_millis"].as_u64().is_some(),
        "{dry_run}"
    );
    assert_eq!(dry_run["phase"], "replicating");

    // The controller dies after each step in turn (fence, drain, reverse stream); each run
    // resumes the fenced cutover, and writes stay blocked until one completes it.
    for failpoint in [
        "cutover.after_fence",
        "cutover.after_drain",
        "cutover.after_reverse_stream",
    ] {
        let crashed = switch
            .switch("cutover", FAST_GATE, Some(failpoint))
            .unwrap_err();
        assert!(crashed.contains("failpoint"), "{failpoint}: {crashed}");
        assert!(
            !switch.app_can_write(&switch.old).await,
            "the fence let the application write after {failpoint}"
        );
    }
    let report = switch
        .switch("cutover", FAST_GATE, None)
        .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert_eq!(report["phase"], "writes-switched", "{report}");
    switch.wait_phase("writes-switched").await;
    application.wait_for_more(Side::New, 200, &log).await;
    // Every write the old database acknowledged is on the new one, exactly once (`ledger`'s key).
    let written_on_old = application.ids(Some(Side::Old));
    assert!(
        switch.new.missing(&written_on_old).await.is_empty(),
        "writes acknowledged on the old database are missing on the new one\n{}",
        log()
    );
    assert!(
        !switch.app_can_write(&switch.old).await,
        "the old database takes application writes after cutover"
    );

    // The reverse stream carries new writes back, across a kill -9 of ferry run.
    switch
        .wait_present(
            &switch.old,
            &application.ids(None),
            "new writes to reach the old database",
        )
        .await;
    kill(&mut ferry_run.0);
    ferry_run = switch.run();
    switch.wait_phase("writes-switched").await;
    application.wait_for_more(Side::New, 200, &log).await;
    switch
        .wait_present(
            &switch.old,
            &application.ids(None),
            "new writes to reach the old database after a restart",
        )
        .await;
    // Loop safety: what the reverse stream wrote on the old database is not streamed forward
    // again (since the restart, the old database took no other write).
    let (_, body) = http_get(switch.port, "/api/status", None).await.unwrap();
    let status: Json = serde_json::from_str(&body).unwrap();
    assert!(
        status["reverse"]["changes_applied"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert_eq!(
        status["forward"]["changes_applied"], 0,
        "ferry's own writes came back\n{status}"
    );

    // Rollback, its controller killed once after fencing the new database.
    let crashed = switch
        .switch("rollback", &[], Some("rollback.after_fence"))
        .unwrap_err();
    assert!(crashed.contains("failpoint"), "{crashed}");
    let report = switch
        .switch("rollback", &[], None)
        .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert_eq!(report["phase"], "replicating", "{report}");
    assert!(
        switch.old.missing(&application.ids(None)).await.is_empty(),
        "acknowledged writes missing on the old database after rollback\n{}",
        log()
    );
    switch.wait_phase("replicating").await;
    application.wait_for_more(Side::Old, 200, &log).await;
    assert!(
        !switch.app_can_write(&switch.new).await,
        "the new database takes application writes after rollback"
    );

    let (acknowledged, duplicates) = application.stop().await;
    assert!(
        duplicates.is_empty(),
        "counters were not moved past the other database's values: {duplicates:?}"
    );
    switch
        .wait_present(
            &switch.new,
            &acknowledged,
            "the old database's writes to reach the new one again",
        )
        .await;
    for database in [&switch.old, &switch.new] {
        let ids = database.ledger_ids().await.unwrap();
        let distinct: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(ids.len(), distinct.len(), "a row is doubled");
        assert_eq!(
            distinct.len(),
            2000 + acknowledged.len(),
            "rows beyond the acknowledged ones"
        );
    }
    assert_eq!(stop(&mut ferry_run.0), Some(0), "{}", log());

    // Cut over for good and finish: the streams' state goes, the old database takes writes
    // again only when asked to, and the migration cannot be run any more.
    ferry_run = switch.run();
    switch.wait_phase("replicating").await;
    let report = switch
        .switch("cutover", &[FAST_GATE, &["--force"]].concat(), None)
        .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert_eq!(report["phase"], "writes-switched", "{report}");
    assert!(
        switch.app_can_write(&switch.new).await,
        "inserts on the new database fail after cutover"
    );
    switch.wait_phase("writes-switched").await;
    assert_eq!(stop(&mut ferry_run.0), Some(0), "{}", log());
    let report = switch
        .switch("finish", &["--unfence-source"], None)
        .unwrap_or_else(|error| panic!("{error}\n{}", log()));
    assert_eq!(report["phase"], "done", "{report}");
    assert!(
        switch.app_can_write(&switch.old).await,
        "--unfence-source left the old database fenced"
    );
    let output = ferry("run", &switch.old.url, &switch.new.url, &["--name", name])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("finished"));
}

const MARIADB_TABLES: &str = "
CREATE TABLE ledger (id BIGINT PRIMARY KEY, note VARCHAR(100) NOT NULL);
CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100) NOT NULL);
INSERT INTO ledger SELECT seq, 'seed' FROM seq_1_to_2000;
INSERT INTO events (note) SELECT CONCAT('seed ', seq) FROM seq_1_to_2000;";

const POSTGRES_TABLES: &str = "
CREATE TABLE public.ledger (id bigint PRIMARY KEY, note text NOT NULL);
CREATE TABLE public.events (id bigserial PRIMARY KEY, note text NOT NULL);
INSERT INTO public.ledger SELECT g, 'seed' FROM generate_series(1, 2000) g;
INSERT INTO public.events (note) SELECT 'seed ' || g FROM generate_series(1, 2000) g;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_mariadb_switches_over_and_back() {
    let old_server = MariaDbServer::start_with(11, &[]).expect("start MariaDB");
    let new_server = MariaDbServer::start_with(12, &[]).expect("start MariaDB");
    let old = Database::mariadb(&old_server, "shop");
    old_server
        .execute(&format!("USE shop; {MARIADB_TABLES}"))
        .unwrap();
    // Another database name on the new server: the reverse stream maps the names back.
    let new = Database::mariadb(&new_server, "shop_new");
    switch_over_and_back("switch_my_my", old, new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_postgres_switches_over_and_back() {
    let name = "switch_my_pg";
    let old_server = MariaDbServer::start_with(13, &[]).expect("start MariaDB");
    let old = Database::mariadb(&old_server, name);
    old_server
        .execute(&format!("USE {name}; {MARIADB_TABLES}"))
        .unwrap();
    let new = Database::postgres(servers().target.create_database(name).await.unwrap(), name);
    switch_over_and_back(name, old, new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_mariadb_switches_over_and_back() {
    let name = "switch_pg_my";
    let old = Database::postgres(
        servers().source.create_database(name).await.unwrap(),
        "public",
    );
    servers()
        .source
        .connect(name)
        .await
        .unwrap()
        .batch_execute(POSTGRES_TABLES)
        .await
        .unwrap();
    let new_server = MariaDbServer::start_with(14, &[]).expect("start MariaDB");
    let new = Database::mariadb(&new_server, name);
    switch_over_and_back(name, old, new).await;
}
