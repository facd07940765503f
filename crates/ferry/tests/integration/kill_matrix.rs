//! kill -9 at random moments, for every engine pair (PostgreSQL and MariaDB, both ways, and each
//! to itself), during the copy and during streaming, under concurrent writes (updates, deletes,
//! inserts and key moves, and twins inserted, deleted and updated one at a time in a table without
//! a key). After the last restart the writes stop and both sides must hold the
//! same rows, each once, compared through the servers' own SQL, never through ferry's code.
//!
//! `FERRY_KILL_POINTS` (default 3) sets how many kills each pair takes; `FERRY_KILL_SEED` replays
//! a run (the seed is printed). `scripts/kill-soak.sh` runs hundreds.

use std::process::Child;
use std::time::Duration;

use crate::common::{kill, servers, stop, Pair, Writer};
use crate::mysql::{
    log_tail, mariadb, mariadb_source_postgres_target, mysql_select, postgres_select, spawn_run,
    sql, wait_engines_equal,
};

const ROWS: i64 = 30_000;

/// A small deterministic generator (xorshift), seeded per run.
struct Chaos {
    state: u64,
}

impl Chaos {
    fn new(pair: &str) -> Chaos {
        let seed = std::env::var("FERRY_KILL_SEED")
            .ok()
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            })
            | 1;
        eprintln!("{pair}: FERRY_KILL_SEED={seed}");
        Chaos { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// A moment to kill at: anywhere from the copy's first chunk to well into streaming.
    fn delay(&mut self) -> Duration {
        Duration::from_millis(30 + self.next() % 2470)
    }
}

fn points() -> usize {
    std::env::var("FERRY_KILL_POINTS")
        .ok()
        .and_then(|points| points.parse().ok())
        .unwrap_or(3)
}

/// Kills the run at random moments, restarting it after each kill; returns the last run.
async fn kill_at_random(chaos: &mut Chaos, mut run: Child, spawn: impl Fn() -> Child) -> Child {
    for _ in 0..points() {
        // The moment of the kill is the point of the test, not a wait for a condition.
        tokio::time::sleep(chaos.delay()).await;
        kill(&mut run);
        run = spawn();
    }
    run
}

const MYSQL_TABLE: &str = "
CREATE TABLE events (id BIGINT PRIMARY KEY, payload VARCHAR(200) NOT NULL, counter INT NOT NULL, email VARCHAR(40), UNIQUE KEY by_email (email));
INSERT INTO events SELECT seq, CONCAT('row ', seq), 0, CONCAT('e', seq) FROM seq_1_to_30000;
CREATE TABLE journal (n INT, note VARCHAR(20));
INSERT INTO journal SELECT seq % 100, 'entry' FROM seq_1_to_3000;
DELIMITER //
CREATE PROCEDURE churn(rounds INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < rounds DO
    START TRANSACTION;
    UPDATE events SET counter = counter + 1, payload = CONCAT(payload, 'u') WHERE id = 1 + (i * 7919) % 30000;
    DELETE FROM events WHERE id = 1 + (i * 104729) % 30000;
    INSERT INTO events (id, payload, counter) VALUES (100000 + i, CONCAT('new ', i), 0) ON DUPLICATE KEY UPDATE counter = counter + 100;
    UPDATE events SET id = id + 1000000 WHERE id = 1 + (i * 31) % 30000;
    SET @moved = NULL;
    SELECT email INTO @moved FROM events WHERE id = 1 + (i * 13) % 30000;
    UPDATE events SET email = NULL WHERE id = 1 + (i * 13) % 30000;
    UPDATE events SET email = @moved WHERE id = 1 + (i * 17) % 30000 AND email IS NULL AND @moved IS NOT NULL;
    INSERT INTO journal VALUES (i % 100, 'twin'), (i % 100, 'twin');
    DELETE FROM journal WHERE n = (i * 7) % 100 LIMIT 1;
    UPDATE journal SET note = 'seen' WHERE n = (i * 13) % 100 AND note = 'entry' LIMIT 1;
    COMMIT;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
";

const POSTGRES_TABLE: &str = "
CREATE TABLE events (id bigint PRIMARY KEY, payload text NOT NULL, counter int NOT NULL, email text UNIQUE);
INSERT INTO events SELECT g, 'row ' || g, 0, 'e' || g FROM generate_series(1, 30000) g;
-- A table without a key: duplicates must stay exactly as many through every kill.
CREATE TABLE journal (n int, note text);
ALTER TABLE journal REPLICA IDENTITY FULL;
INSERT INTO journal SELECT g % 100, 'entry' FROM generate_series(1, 3000) g;
";

/// A writer on the table without a key: inserts twins, deletes and updates one of several
/// identical rows.
fn postgres_journal_churn(
    client: tokio_postgres::Client,
    rounds: i64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..rounds {
            client
                .batch_execute(&format!(
                    "BEGIN;
                     INSERT INTO journal VALUES ({n}, 'twin'), ({n}, 'twin');
                     DELETE FROM journal WHERE ctid = (SELECT ctid FROM journal WHERE n = {m} LIMIT 1);
                     UPDATE journal SET note = 'seen' WHERE ctid = (SELECT ctid FROM journal WHERE n = {k} AND note = 'entry' LIMIT 1);
                     COMMIT;",
                    n = i % 100,
                    m = (i * 7) % 100,
                    k = (i * 13) % 100
                ))
                .await
                .expect("journal statement");
            if i % 20 == 0 {
                tokio::task::yield_now().await;
            }
        }
    })
}

/// A PostgreSQL writer like the MariaDB procedure (updates, deletes, inserts, key moves).
fn postgres_churn(client: tokio_postgres::Client, rounds: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..rounds {
            client
                .batch_execute(&format!(
                    "BEGIN;
                     UPDATE events SET counter = counter + 1, payload = payload || 'u' WHERE id = {};
                     DELETE FROM events WHERE id = {};
                     INSERT INTO events (id, payload, counter) VALUES ({}, 'new {i}', 0) ON CONFLICT (id) DO UPDATE SET counter = events.counter + 100;
                     UPDATE events SET id = id + 1000000 WHERE id = {};
                     COMMIT;",
                    1 + (i * 7919) % ROWS,
                    1 + (i * 104729) % ROWS,
                    100_000 + i,
                    1 + (i * 31) % ROWS
                ))
                .await
                .expect("writer statement");
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    })
}

fn mysql_churn(database: &str, rounds: u32) -> std::thread::JoinHandle<()> {
    let database = database.to_string();
    std::thread::spawn(move || {
        sql(
            &mariadb().source,
            &database,
            &format!("CALL churn({rounds})"),
        );
    })
}

const COLUMNS: &[(&str, &str)] = &[
    ("id", "id"),
    ("payload", "payload"),
    ("counter", "counter"),
    ("email", "email"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_postgres_to_postgres() {
    let pair = Pair::new("kill_pg_pg").await;
    pair.source.batch_execute(POSTGRES_TABLE).await.unwrap();
    let mut chaos = Chaos::new("postgres to postgres");
    let arguments = ["--name", "kill", "--chunk-rows", "2000", "--parallel", "3"];
    let writer = Writer::start("kill_pg_pg", "events", ROWS).await;
    let journal =
        postgres_journal_churn(servers().source.connect("kill_pg_pg").await.unwrap(), 1500);
    let run = pair.spawn_run(&arguments, None);
    let mut run = kill_at_random(&mut chaos, run, || pair.spawn_run(&arguments, None)).await;
    writer.stop().await;
    journal.await.expect("journal writer");
    pair.wait_streaming(2).await;
    pair.wait_equal(&[("public.events", "id"), ("public.journal", "n, note")])
        .await;
    let keyed: bool = pair
        .target
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'public.events'::regclass AND contype = 'p')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(keyed, "the target has its primary key\n{}", pair.log());
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_mariadb_to_mariadb() {
    let name = "kill_my_my";
    let source = mariadb().source.create_database(name).unwrap();
    let target_database = format!("{name}_copy");
    let target = mariadb().target.url(&target_database);
    sql(&mariadb().source, name, MYSQL_TABLE);
    let mut chaos = Chaos::new("mariadb to mariadb");
    let writer = mysql_churn(name, 3000);
    let run = spawn_run(name, &source, &target);
    let mut run = kill_at_random(&mut chaos, run, || spawn_run(name, &source, &target)).await;
    writer.join().expect("writer");
    let query = "SELECT * FROM events ORDER BY id; SELECT n, note, COUNT(*) FROM journal GROUP BY n, note ORDER BY n, note";
    let result = ferry_testkit::wait_until(
        "both sides to be equal",
        Duration::from_secs(120),
        || async {
            let left = crate::mysql::try_sql(&mariadb().source, name, query).ok()?;
            let right = crate::mysql::try_sql(&mariadb().target, &target_database, query).ok()?;
            (left == right).then_some(())
        },
    )
    .await;
    if let Err(error) = result {
        let count = "SELECT COUNT(*), COUNT(DISTINCT id) FROM events";
        panic!(
            "{error}: source {} target {}\n{}",
            sql(&mariadb().source, name, count).trim(),
            crate::mysql::try_sql(&mariadb().target, &target_database, count)
                .unwrap_or_default()
                .trim(),
            log_tail(name)
        );
    }
    // The unique index exists once the stream has caught up, even if a value moved between two
    // chunks while they were read.
    ferry_testkit::wait_until("the unique index", Duration::from_secs(60), || async {
        let found = crate::mysql::try_sql(
            &mariadb().target,
            &target_database,
            "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND INDEX_NAME = 'by_email'",
        )
        .ok()?;
        (found.trim() == "1").then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_mariadb_to_postgres() {
    let name = "kill_my_pg";
    let (source, target) = mariadb_source_postgres_target(name).await;
    sql(&mariadb().source, name, MYSQL_TABLE);
    let client = servers().target.connect(name).await.unwrap();
    let mut chaos = Chaos::new("mariadb to postgres");
    let writer = mysql_churn(name, 3000);
    let run = spawn_run(name, &source, &target);
    let mut run = kill_at_random(&mut chaos, run, || spawn_run(name, &source, &target)).await;
    writer.join().expect("writer");
    wait_engines_equal(
        name,
        (&mariadb().source, name),
        &client,
        &[(
            mysql_select(COLUMNS, "events", "id"),
            postgres_select(COLUMNS, &format!("{name}.events"), "id"),
        )],
    )
    .await;
    let keyed: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p')",
            &[&format!("{name}.events")],
        )
        .await
        .unwrap()
        .get(0);
    assert!(keyed, "the target has its primary key\n{}", log_tail(name));
    ferry_testkit::wait_until("the unique index", Duration::from_secs(60), || async {
        client
            .query_opt(
                "SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE '%by_email'",
                &[&name],
            )
            .await
            .ok()?
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_postgres_to_mariadb() {
    let name = "kill_pg_my";
    let source = servers().source.create_database(name).await.unwrap();
    let client = servers().source.connect(name).await.unwrap();
    client.batch_execute(POSTGRES_TABLE).await.unwrap();
    let target = mariadb().target.url(name);
    let mut chaos = Chaos::new("postgres to mariadb");
    let writer = postgres_churn(servers().source.connect(name).await.unwrap(), 3000);
    let run = spawn_run(name, &source, &target);
    let mut run = kill_at_random(&mut chaos, run, || spawn_run(name, &source, &target)).await;
    writer.await.unwrap();
    wait_engines_equal(
        name,
        (&mariadb().target, name),
        &client,
        &[(
            mysql_select(COLUMNS, "events", "id"),
            postgres_select(COLUMNS, "public.events", "id"),
        )],
    )
    .await;
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
}
