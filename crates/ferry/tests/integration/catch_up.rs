//! Rows a copy reads after its stream started can be newer than the changes the stream replays
//! first: a MySQL source copies without a snapshot shared with its stream, and any source's
//! resumed copy reads a fresh one. A unique value that moved from one row to another in that
//! window is then, for a moment, held by both rows on the target: the older image of the first
//! row is replayed while the second row already holds the value. The target must not refuse that
//! replay (the table would stop); its unique indexes wait until the stream has caught up.
//!
//! Each test dies after the first copied chunk, moves a unique value between two rows the copy
//! has not read yet, separated by enough other changes that the replay cannot merge them away,
//! and checks that the next run ends equal, with the unique index on the target.

use std::time::Duration;

use ferry_testkit::wait_until;

use crate::common::{stop, wait_true, Pair};
use crate::mysql::{
    ferry, log_tail, mariadb, mysql_select, postgres_select, spawn_run, sql, try_sql,
    wait_engines_equal,
};

/// Rows of `emails` (the moved value lives in the last chunk) and of `filler`, whose one update
/// puts more changes between the moves than a batch holds.
const ROWS: u32 = 3000;
const FILLER: u32 = 25_000;

/// The two tables on a MariaDB source.
fn mariadb_tables() -> String {
    format!(
        "CREATE TABLE emails (id INT PRIMARY KEY, email VARCHAR(40) NOT NULL, UNIQUE KEY by_email (email));
         INSERT INTO emails SELECT seq, CONCAT('e', seq) FROM seq_1_to_{ROWS};
         CREATE TABLE filler (id INT PRIMARY KEY, n INT NOT NULL);
         INSERT INTO filler SELECT seq, 0 FROM seq_1_to_{FILLER};"
    )
}

/// Written once the next run is under way: the target holds it only after every change before it
/// (the moves included) was applied, so equal tables mean the stream went past them.
const MARKER: &str = "INSERT INTO emails VALUES (1000000, 'marker');";

/// The source's changes between the runs: row ROWS-1 takes `moved`, gives it up, and row ROWS
/// takes it.
fn moves(last: u32) -> String {
    format!(
        "UPDATE emails SET email = 'moved' WHERE id = {before};
         UPDATE filler SET n = n + 1;
         UPDATE emails SET email = 'given up' WHERE id = {before};
         UPDATE emails SET email = 'moved' WHERE id = {last};",
        before = last - 1
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_value_moved_during_a_mariadb_copy_reaches_mariadb() {
    moved_between_mariadb_servers("moved_unique_my", Start::Fresh).await;
}

/// `ferry copy` finishing the copy of a migration that streams leaves the same window to the
/// `run` after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_value_moved_before_a_copy_command_reaches_mariadb_through_the_next_run() {
    moved_between_mariadb_servers("moved_unique_my_copy", Start::FinishedByCopy).await;
}

/// A table copied afresh into a target table that already has its unique index (here every
/// table, by `--restart` after a complete run) meets the same window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_value_moved_during_a_copy_afresh_reaches_mariadb() {
    moved_between_mariadb_servers("moved_unique_my_again", Start::Restarted).await;
}

/// How the copy that the moves race begins.
#[derive(PartialEq)]
enum Start {
    /// A first `ferry run`.
    Fresh,
    /// A first `ferry run`, its copy finished by `ferry copy`.
    FinishedByCopy,
    /// `ferry run --restart` after a complete run that built every index.
    Restarted,
}

/// The MariaDB to MariaDB case.
async fn moved_between_mariadb_servers(name: &str, start: Start) {
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    let target_database = format!("{name}_copy");
    let target = servers.target.url(&target_database);
    sql(&servers.source, name, &mariadb_tables());
    if start == Start::Restarted {
        let mut run = spawn_run(name, &source, &target);
        mariadb_unique_index(&target_database)
            .await
            .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
        assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    }
    let mut arguments = vec!["--name", name, "--chunk-rows", "1000", "--parallel", "1"];
    if start == Start::Restarted {
        arguments.push("--restart");
    }
    let crashed = ferry("run", &source, &target, &arguments)
        .env("FERRY_FAILPOINT", "copy.after_chunk_commit:1")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    sql(&servers.source, name, &moves(ROWS));
    if start == Start::FinishedByCopy {
        let copied = ferry("copy", &source, &target, &["--name", name])
            .output()
            .unwrap();
        assert!(
            copied.status.success(),
            "{}",
            String::from_utf8_lossy(&copied.stderr)
        );
    }

    let mut run = spawn_run(name, &source, &target);
    let read = |server: &ferry_testkit::MariaDbServer, database: &str, query: &str| {
        try_sql(server, database, query).ok()
    };
    wait_until("the copy to finish", Duration::from_secs(60), || async {
        let copied = read(
            &servers.target,
            "_ferry",
            &format!("SELECT COUNT(*) FROM tables WHERE migration = '{name}' AND state = 'copied'"),
        )?;
        copied.trim().ends_with('2').then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    sql(&servers.source, name, MARKER);
    let read = |server: &ferry_testkit::MariaDbServer, database: &str, query: &str| {
        try_sql(server, database, query).ok()
    };
    let equal = wait_until(
        "the tables to be equal",
        Duration::from_secs(60),
        || async {
            for query in [
                "SELECT id, email FROM emails ORDER BY id",
                "SELECT id, n FROM filler ORDER BY id",
            ] {
                let left = read(&servers.source, name, query)?;
                let right = read(&servers.target, &target_database, query)?;
                if left != right {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let unique = mariadb_unique_index(&target_database).await;
    let failed = read(
        &servers.target,
        "_ferry",
        &format!(
            "SELECT table_name, state FROM tables WHERE migration = '{name}' AND state = 'failed'"
        ),
    )
    .unwrap_or_default();
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    equal.unwrap_or_else(|error| panic!("{error}\nfailed tables: {failed}\n{}", log_tail(name)));
    unique.unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert!(failed.trim().is_empty(), "{failed}\n{}", log_tail(name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_value_moved_during_a_mariadb_copy_reaches_postgres() {
    let name = "moved_unique_my_pg";
    let (source, target) = crate::mysql::mariadb_source_postgres_target(name).await;
    let servers = mariadb();
    sql(&servers.source, name, &mariadb_tables());
    let crashed = ferry(
        "run",
        &source,
        &target,
        &["--name", name, "--chunk-rows", "1000", "--parallel", "1"],
    )
    .env("FERRY_FAILPOINT", "copy.after_chunk_commit:1")
    .output()
    .unwrap();
    assert!(!crashed.status.success());
    sql(&servers.source, name, &moves(ROWS));

    let client = crate::common::servers().target.connect(name).await.unwrap();
    let mut run = spawn_run(name, &source, &target);
    wait_until("the copy to finish", Duration::from_secs(60), || async {
        let copied: i64 = client
            .query_one(
                "SELECT count(*) FROM _ferry.table_state WHERE migration = $1 AND state = 'copied'",
                &[&name],
            )
            .await
            .ok()?
            .get(0);
        (copied == 2).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    sql(&servers.source, name, MARKER);
    let emails: &[(&str, &str)] = &[("id", "id"), ("email", "email")];
    let filler: &[(&str, &str)] = &[("id", "id"), ("n", "n")];
    wait_engines_equal(
        name,
        (&servers.source, name),
        &client,
        &[
            (
                mysql_select(emails, "emails", "id"),
                postgres_select(emails, &format!("{name}.emails"), "id"),
            ),
            (
                mysql_select(filler, "filler", "id"),
                postgres_select(filler, &format!("{name}.filler"), "id"),
            ),
        ],
    )
    .await;
    let unique = wait_true(
        &client,
        "the unique index on the target",
        "SELECT EXISTS (SELECT 1 FROM pg_index
           WHERE indrelid = $1::text::regclass AND indisunique AND NOT indisprimary AND indisvalid)",
        &[&format!("{name}.emails")],
    )
    .await;
    let failed: Vec<String> = client
        .query(
            "SELECT table_name || ': ' || coalesce(note, '') FROM _ferry.table_state WHERE migration = $1 AND state = 'failed'",
            &[&name],
        )
        .await
        .map(|rows| rows.iter().map(|row| row.get(0)).collect())
        .unwrap_or_default();
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    unique.unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert!(failed.is_empty(), "{failed:?}\n{}", log_tail(name));
}

/// A PostgreSQL source's resumed copy reads a fresh snapshot, newer than the checkpoint the
/// stream starts from: the same window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_value_moved_during_a_resumed_postgres_copy_reaches_postgres() {
    moved_between_postgres_servers("moved_unique_pg", false).await;
}

/// The same, the table copied afresh (`--restart` after a complete run) into a target table
/// that already has its unique constraint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_value_moved_during_a_postgres_copy_afresh_reaches_postgres() {
    moved_between_postgres_servers("moved_unique_pg_again", true).await;
}

async fn moved_between_postgres_servers(name: &str, restarted: bool) {
    let pair = Pair::new(name).await;
    pair.source
        .batch_execute(&format!(
            "CREATE TABLE public.emails (id int PRIMARY KEY, email text NOT NULL, CONSTRAINT by_email UNIQUE (email));
             INSERT INTO public.emails SELECT g, 'e' || g FROM generate_series(1, {ROWS}) g;
             CREATE TABLE public.filler (id int PRIMARY KEY, n int NOT NULL);
             INSERT INTO public.filler SELECT g, 0 FROM generate_series(1, {FILLER}) g;"
        ))
        .await
        .unwrap();
    if restarted {
        let mut run = pair.spawn_run(&["--name", name], None);
        pair.wait_streaming(2).await;
        postgres_unique_constraint(&pair)
            .await
            .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
        assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
    }
    let mut arguments = vec!["--name", name, "--chunk-rows", "1000", "--parallel", "1"];
    if restarted {
        arguments.push("--restart");
    }
    let crashed = pair
        .ferry("run", &arguments)
        .env("FERRY_FAILPOINT", "copy.after_chunk_commit:1")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    pair.source
        .batch_execute(
            &moves(ROWS)
                .replace("UPDATE emails", "UPDATE public.emails")
                .replace("UPDATE filler", "UPDATE public.filler"),
        )
        .await
        .unwrap();
    let mut run = pair.spawn_run(&["--name", name], None);
    pair.wait_streaming(2).await;
    pair.source
        .batch_execute(&MARKER.replace("emails", "public.emails"))
        .await
        .unwrap();
    pair.wait_equal(&[("public.emails", "id"), ("public.filler", "id")])
        .await;
    let unique = postgres_unique_constraint(&pair).await;
    let failed: Vec<String> = pair
        .target
        .query(
            "SELECT table_name || ': ' || coalesce(note, '') FROM _ferry.table_state WHERE state = 'failed'",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|row| row.get(0)).collect())
        .unwrap_or_default();
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
    unique.unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    assert!(failed.is_empty(), "{failed:?}\n{}", pair.log());
}

/// Waits until the MariaDB target database has `emails`' unique index `by_email`.
async fn mariadb_unique_index(database: &str) -> Result<(), String> {
    wait_until("the unique index on the target", Duration::from_secs(60), || async {
        let found = try_sql(
            &mariadb().target,
            database,
            "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'emails' AND INDEX_NAME = 'by_email' AND NON_UNIQUE = 0",
        )
        .ok()?;
        found.trim().ends_with('1').then_some(())
    })
    .await
}

/// Waits until the PostgreSQL target has the unique constraint `by_email`.
async fn postgres_unique_constraint(pair: &Pair) -> Result<(), String> {
    wait_true(
        &pair.target,
        "the unique constraint on the target",
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'by_email' AND contype = 'u')",
        &[],
    )
    .await
}
