//! Loading a MySQL target: `LOAD DATA LOCAL` streamed from memory carries every byte of awkward
//! values (tabs, newlines, backslashes, the text `\N`, NUL bytes, empty strings next to NULLs);
//! a server that refuses LOCAL gets the same rows through INSERTs; and a value the target
//! column cannot hold stops the copy instead of being cut (LOCAL turns such errors into
//! warnings, which ferry must not let pass).

use std::time::Duration;

use ferry_testkit::{wait_until, MariaDbServer};

use crate::mysql::{ferry, mariadb, sql};

const AWKWARD: &str = r"
SET NAMES utf8mb4;
CREATE TABLE awkward (id INT PRIMARY KEY, name VARCHAR(50), raw VARBINARY(10), bits BIT(5), note TEXT, latin VARCHAR(20) CHARACTER SET latin1, yr YEAR);
INSERT INTO awkward VALUES
  (1, 'tab\there', x'00090A5C4E', b'10101', 'line\nbreak\\slash', 'café', 0),
  (2, '\\N', x'', b'0', '', '', 1901),
  (3, NULL, NULL, NULL, NULL, NULL, NULL),
  (4, 'zero\0byte', x'FF00FF', b'11111', CONCAT(REPEAT('long ', 2000), '\r\n'), 'Ærø', 2155),
  (5, 'emoji 😀 顧客', x'5C5C', b'1', 'N', '\\', 99);
";

/// Every column of `awkward`, as hex computed by the server, so nothing is lost to escaping.
fn rows(server: &MariaDbServer, database: &str) -> String {
    sql(
        server,
        database,
        "SELECT id, HEX(name), name IS NULL, HEX(raw), raw IS NULL, BIN(bits), HEX(note), note IS NULL, HEX(CONVERT(latin USING utf8mb4)), yr + 0 FROM awkward ORDER BY id",
    )
}

fn loads(server: &MariaDbServer) -> u64 {
    sql(server, "mysql", "SHOW GLOBAL STATUS LIKE 'Com_load'")
        .split_whitespace()
        .nth(1)
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

fn copy(source: &str, target: &str, name: &str) -> std::process::Output {
    ferry("copy", source, target, &["--name", name])
        .output()
        .expect("run ferry copy")
}

#[test]
fn load_data_local_carries_every_byte_and_insert_serves_when_local_is_off() {
    let name = "my_load";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    sql(&servers.source, name, AWKWARD);
    let expected = rows(&servers.source, name);
    assert_eq!(expected.lines().count(), 5);

    // A target that allows LOCAL: the rows arrive through LOAD DATA.
    let before = loads(&servers.target);
    let copied = copy(&source, &servers.target.url(name), name);
    let stderr = String::from_utf8_lossy(&copied.stderr);
    assert!(copied.status.success(), "{stderr}");
    assert_eq!(rows(&servers.target, name), expected);
    assert!(loads(&servers.target) > before, "the copy used LOAD DATA");
    assert!(!stderr.contains("refuses LOAD DATA LOCAL"), "{stderr}");

    // A target with local_infile off: the same rows, through INSERTs, and the log says so.
    let strict = MariaDbServer::start_with(3, &["--local-infile=0"]).expect("start MariaDB");
    let copied = copy(&source, &strict.url(name), name);
    let stderr = String::from_utf8_lossy(&copied.stderr);
    assert!(copied.status.success(), "{stderr}");
    assert_eq!(rows(&strict, name), expected);
    assert!(stderr.contains("refuses LOAD DATA LOCAL"), "{stderr}");
}

#[test]
fn a_value_the_target_cannot_hold_stops_the_load_instead_of_being_cut() {
    let name = "my_load_narrow";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    sql(
        &servers.source,
        name,
        "CREATE TABLE words (id INT PRIMARY KEY, word VARCHAR(20)); INSERT INTO words VALUES (1, 'ok'), (2, 'far too long');",
    );
    // The operator prepared the target table with a narrower column.
    let target = servers.target.create_database(name).unwrap();
    sql(
        &servers.target,
        name,
        "CREATE TABLE words (id INT PRIMARY KEY, word VARCHAR(3))",
    );
    let copied = copy(&source, &target, name);
    let stderr = String::from_utf8_lossy(&copied.stderr);
    assert!(!copied.status.success(), "a truncating copy must fail");
    assert!(
        stderr.contains("target.rejected_value") && stderr.contains("words"),
        "{stderr}"
    );
    assert_eq!(
        sql(&servers.target, name, "SELECT COUNT(*) FROM words").trim(),
        "0",
        "nothing of the chunk was kept"
    );
}

#[test]
fn target_triggers_are_refused_before_they_can_change_what_the_source_wrote() {
    let name = "my_load_trigger";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    sql(
        &servers.source,
        name,
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT); INSERT INTO accounts VALUES (1, 10);",
    );
    let target = servers.target.create_database(name).unwrap();
    sql(
        &servers.target,
        name,
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT);
         CREATE TRIGGER bonus BEFORE INSERT ON accounts FOR EACH ROW SET NEW.balance = NEW.balance + 1000;",
    );
    let check = ferry("check", &source, &target, &[]).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        !check.status.success() && report.contains("target.triggers") && report.contains("bonus"),
        "{report}"
    );
    let copied = copy(&source, &target, name);
    let stderr = String::from_utf8_lossy(&copied.stderr);
    assert!(
        !copied.status.success() && stderr.contains("target.triggers"),
        "{stderr}"
    );
    assert_eq!(
        sql(&servers.target, name, "SELECT COUNT(*) FROM accounts").trim(),
        "0"
    );
}

/// `status` shows the failures a migration rode out on a MySQL target too (they are recorded
/// in `_ferry`.`failures`), newest first, with their time in UTC.
#[test]
fn status_shows_the_failures_recorded_on_a_mysql_target() {
    let name = "my_failures";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    sql(
        &servers.source,
        name,
        "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
    );
    let target = servers.target.url(name);
    let copied = copy(&source, &target, name);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    sql(
        &servers.target,
        "_ferry",
        &format!(
            "INSERT INTO failures (migration, at_micros, code, message) VALUES
               ('{name}', 951782400000000, 'target.read_only', 'older'),
               ('{name}', 1796477045000000, 'target.unavailable', 'newest'),
               ('another', 1796477999000000, 'target.read_only', 'not ours');"
        ),
    );
    let status = ferry("status", &source, &target, &["--name", name, "--json"])
        .output()
        .expect("run ferry status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_eq!(report["failures"]["count"], 2, "{report}");
    assert_eq!(
        report["failures"]["latest"],
        serde_json::json!([
            ["2026-12-05T13:24:05Z", "target.unavailable", "newest"],
            ["2000-02-29T00:00:00Z", "target.read_only", "older"]
        ]),
        "{report}"
    );
    assert!(
        report["slot"].is_null(),
        "a MySQL source keeps no slot: {report}"
    );
}

/// The `_ferry` table state of `name` on `target` says every table is copied.
fn copied(target: &MariaDbServer, name: &str, tables: usize) -> bool {
    crate::mysql::try_sql(
        target,
        "_ferry",
        &format!("SELECT COUNT(*) FROM tables WHERE migration = '{name}' AND state = 'copied'"),
    )
    .is_ok_and(|output| output.trim() == tables.to_string())
}

/// A large transaction streams into a MariaDB target by `LOAD DATA ... REPLACE` (the server's
/// load counter moves) where the table's only unique index is its key, carrying every awkward
/// byte exactly; a table with a second unique index never takes that path (REPLACE would
/// delete the row holding the other unique value): two rows swapping their unique values in
/// one transaction arrive swapped, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_stream_by_load_data_replace_only_where_the_key_is_the_only_unique_index(
) {
    let name = "my_load_apply";
    let servers = mariadb();
    // A target of its own: the server's load counter counts this test's loads alone.
    let own_target = MariaDbServer::start_with(31, &[]).expect("start MariaDB");
    let source = servers.source.create_database(name).unwrap();
    sql(&servers.source, name, AWKWARD);
    sql(
        &servers.source,
        name,
        "INSERT INTO awkward (id, name, raw, bits, note, latin, yr)
           SELECT 100 + seq, CONCAT('row ', seq), UNHEX(HEX(seq)), seq % 32, REPEAT('n', seq % 50), 'é', 1901 + seq % 200 FROM seq_1_to_3000;
         CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(40) NOT NULL, note TEXT, UNIQUE KEY by_email (email));
         INSERT INTO people SELECT seq, CONCAT('user', seq, '@example.com'), 'first' FROM seq_1_to_2000;",
    );
    let target = own_target.url(name);
    let mut run = crate::mysql::spawn_run(name, &source, &target);
    let outcome = async {
        wait_until("the copy", Duration::from_secs(120), || async {
            copied(&own_target, name, 2).then_some(())
        })
        .await?;
        // Unique indexes are built once the stream has caught up with the copy.
        wait_until("the unique index on the target", Duration::from_secs(60), || async {
            let found = sql(
                &own_target,
                name,
                "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'people' AND INDEX_NAME = 'by_email'",
            );
            found.trim().ends_with('1').then_some(())
        })
        .await?;
        let people = |server: &MariaDbServer| sql(server, name, "SELECT id, email, note FROM people ORDER BY id");
        let before = loads(&own_target);
        // Rows 1 and 2 swap their unique emails, and every row changes, in one transaction.
        sql(
            &servers.source,
            name,
            "START TRANSACTION;
             UPDATE people SET email = 'swap@example.com' WHERE id = 1;
             UPDATE people SET email = 'user1@example.com' WHERE id = 2;
             UPDATE people SET email = 'user2@example.com' WHERE id = 1;
             UPDATE people SET note = CONCAT('second ', id);
             COMMIT;",
        );
        wait_until("the people to arrive", Duration::from_secs(120), || async {
            (people(&own_target) == people(&servers.source)).then_some(())
        })
        .await?;
        assert_eq!(loads(&own_target), before, "a table with a second unique index is not loaded");
        assert_eq!(people(&own_target).lines().count(), 2000);
        // Every awkward row rewritten in one transaction, with the awkward bytes moved around.
        sql(
            &servers.source,
            name,
            "UPDATE awkward SET name = LEFT(CONCAT(IFNULL(note, '\\\\N'), '\t', IFNULL(name, 'x')), 50), note = CONCAT('tab\there\nnew line ', id), raw = UNHEX(CONCAT('00', HEX(id))), yr = IF(yr IS NULL, NULL, 1901 + id % 250)",
        );
        wait_until("the awkward rows to arrive", Duration::from_secs(120), || async {
            (rows(&own_target, name) == rows(&servers.source, name)).then_some(())
        })
        .await?;
        assert!(loads(&own_target) > before, "the large transaction went in by LOAD DATA");
        // A unique index someone adds on the target while ferry streams: from then on the
        // table is no longer loaded by REPLACE (it could delete the row holding a value).
        sql(&own_target, name, "ALTER TABLE awkward ADD UNIQUE KEY by_raw (raw)");
        let before = loads(&own_target);
        sql(&servers.source, name, "UPDATE awkward SET note = CONCAT('third ', id)");
        wait_until("the third rewrite to arrive", Duration::from_secs(120), || async {
            (rows(&own_target, name) == rows(&servers.source, name)).then_some(())
        })
        .await?;
        assert_eq!(loads(&own_target), before, "no LOAD DATA once a second unique index exists");
        Ok::<(), String>(())
    }
    .await;
    let status = crate::common::stop(&mut run);
    outcome.unwrap_or_else(|error| panic!("{error}\n{}", crate::mysql::log_tail(name)));
    assert_eq!(status, Some(0), "{}", crate::mysql::log_tail(name));
    assert_eq!(rows(&own_target, name).lines().count(), 3005);
}

/// MySQL keeps no slot, so two processes could read the binary log and apply at once: once
/// the connection holding a migration's lock is killed and a second process starts, exactly
/// one of the two goes on (the other finds the lock held by someone else at its next batch,
/// or at its start, and stops with `migration.busy`), and every change arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_mysql_migration_lock_is_lost_only_one_process_goes_on() {
    let name = "my_lost_lock";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    sql(
        &servers.source,
        name,
        "CREATE TABLE items (id INT PRIMARY KEY, note VARCHAR(40)); INSERT INTO items SELECT seq, CONCAT('i', seq) FROM seq_1_to_200;",
    );
    let target = servers.target.url(name);
    let items =
        |server: &MariaDbServer| sql(server, name, "SELECT id, note FROM items ORDER BY id");
    let holder = || {
        sql(
            &servers.target,
            "mysql",
            &format!("SELECT IFNULL(IS_USED_LOCK(CONCAT('ferry.migration.', SHA1('{name}'))), 0)"),
        )
        .trim()
        .to_string()
    };
    let mut first = crate::mysql::spawn_run(name, &source, &target);
    let mut second: Option<std::process::Child> = None;
    let outcome = async {
        wait_until("the copy", Duration::from_secs(120), || async {
            (copied(&servers.target, name, 1) && holder() != "0").then_some(())
        })
        .await?;
        sql(
            &servers.target,
            "mysql",
            &format!("KILL CONNECTION {}", holder()),
        );
        second = Some(crate::mysql::spawn_run(name, &source, &target));
        sql(
            &servers.source,
            name,
            "UPDATE items SET note = 'after' WHERE id <= 50; DELETE FROM items WHERE id > 190;",
        );
        wait_until(
            "the changes to arrive",
            Duration::from_secs(120),
            || async { (items(&servers.target) == items(&servers.source)).then_some(()) },
        )
        .await?;
        let processes = [&mut first, second.as_mut().expect("started")];
        let [one, other] = processes;
        let stopped = wait_until("one process to stop", Duration::from_secs(120), || {
            let found = match (
                one.try_wait().ok().flatten(),
                other.try_wait().ok().flatten(),
            ) {
                (Some(status), None) => Some((status, 0)),
                (None, Some(status)) => Some((status, 1)),
                _ => None,
            };
            async move { found }
        })
        .await?;
        // Refused by the lock (migration.busy) or by the source, which lets one reader at a
        // time use the migration's replica server id (source.stream_in_use): an operator error.
        let log = crate::mysql::log_tail(name);
        assert_eq!(stopped.0.code(), Some(3), "{log}");
        assert!(
            log.contains("migration.busy") || log.contains("source.stream_in_use"),
            "{log}"
        );
        sql(
            &servers.source,
            name,
            "UPDATE items SET note = 'later' WHERE id = 1;",
        );
        wait_until(
            "the last change to arrive",
            Duration::from_secs(120),
            || async { (items(&servers.target) == items(&servers.source)).then_some(()) },
        )
        .await?;
        Ok::<usize, String>(stopped.1)
    }
    .await;
    let first_status = crate::common::stop(&mut first);
    let second_status = second.as_mut().map(crate::common::stop);
    let stopped =
        outcome.unwrap_or_else(|error| panic!("{error}\n{}", crate::mysql::log_tail(name)));
    let survivor = if stopped == 0 {
        second_status.flatten()
    } else {
        first_status
    };
    assert_eq!(
        survivor,
        Some(0),
        "the other stops cleanly\n{}",
        crate::mysql::log_tail(name)
    );
}

/// ferry's state tables as version 0.1 created them on a MySQL target: positions in
/// VARCHAR(100), too short for the positions other connectors define (offset maps, tokens).
const STATE_OF_VERSION_0_1: &str = r"
CREATE DATABASE `_ferry` CHARACTER SET utf8mb4;
CREATE TABLE `_ferry`.`streams` (migration VARCHAR(190) NOT NULL PRIMARY KEY, position VARCHAR(100) NOT NULL, commit_time BIGINT NULL, updated BIGINT NOT NULL) ENGINE=InnoDB;
CREATE TABLE `_ferry`.`chunks` (migration VARCHAR(190) NOT NULL, schema_name VARCHAR(190) NOT NULL, table_name VARCHAR(190) NOT NULL, chunk_index INT NOT NULL, key_range LONGTEXT NOT NULL, done TINYINT NOT NULL DEFAULT 0, row_count BIGINT NOT NULL DEFAULT 0, snapshot_position VARCHAR(100) NULL, PRIMARY KEY (migration, schema_name, table_name, chunk_index)) ENGINE=InnoDB;
CREATE TABLE `_ferry`.`copy_end` (migration VARCHAR(190) NOT NULL PRIMARY KEY, position VARCHAR(100) NOT NULL) ENGINE=InnoDB;
";

#[test]
fn positions_stored_on_a_mysql_target_by_an_earlier_version_are_widened() {
    let name = "my_state_widen";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    sql(&servers.source, name, AWKWARD);
    // A target of its own: the shared one's `_ferry` is already in the current shape.
    let target = MariaDbServer::start_with(4, &[]).expect("start MariaDB");
    sql(&target, "mysql", STATE_OF_VERSION_0_1);

    let copied = copy(&source, &target.url(name), name);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert_eq!(rows(&target, name), rows(&servers.source, name));
    let types = sql(
        &target,
        "mysql",
        "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, IS_NULLABLE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '_ferry' \
         AND COLUMN_NAME IN ('position', 'snapshot_position') ORDER BY TABLE_NAME",
    );
    assert_eq!(
        types.trim(),
        "chunks\tsnapshot_position\ttext\tYES\ncopy_end\tposition\ttext\tNO\nstreams\tposition\ttext\tNO",
        "{types}"
    );
    // A position of any length now fits.
    let long = format!("marks:kafka:{}", "orders/0=1,".repeat(60));
    sql(
        &target,
        "_ferry",
        &format!("INSERT INTO streams (migration, position, updated) VALUES ('long', '{long}', 0)"),
    );
}

/// `check` says when the target's AUTO-INC lock mode serializes parallel loads of tables with
/// an AUTO_INCREMENT column, and is silent where it does not.
#[test]
fn check_names_an_auto_increment_lock_that_serializes_parallel_loads() {
    let name = "my_load_autoinc";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    sql(
        &servers.source,
        name,
        "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT); INSERT INTO orders (note) VALUES ('a');",
    );
    let check = |target: &str| {
        let output = ferry("check", &source, target, &[]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    // The shared target runs MariaDB's default, innodb_autoinc_lock_mode = 1.
    let report = check(&servers.target.url(name));
    assert!(
        report.contains("target.autoinc_lock_mode") && report.contains("orders"),
        "{report}"
    );
    let interleaved =
        MariaDbServer::start_with(5, &["--innodb-autoinc-lock-mode=2"]).expect("start MariaDB");
    let report = check(&interleaved.url(name));
    assert!(!report.contains("target.autoinc_lock_mode"), "{report}");
}

/// Where `server`'s binary log ends now: (file, position).
fn binlog_end(server: &MariaDbServer) -> (String, u64) {
    let status = sql(server, "mysql", "SHOW MASTER STATUS");
    let mut fields = status.split_whitespace();
    let file = fields.next().expect("a binary log").to_string();
    (
        file,
        fields
            .next()
            .and_then(|position| position.parse().ok())
            .unwrap(),
    )
}

/// Every event `server` logged since `from` (see [`binlog_end`]), a line each.
fn events_since(server: &MariaDbServer, from: &(String, u64)) -> Vec<String> {
    let files: Vec<String> = sql(server, "mysql", "SHOW BINARY LOGS")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|file| *file >= from.0.as_str())
        .map(str::to_string)
        .collect();
    files
        .iter()
        .flat_map(|file| {
            let start = if *file == from.0 { from.1 } else { 4 };
            sql(
                server,
                "mysql",
                &format!("SHOW BINLOG EVENTS IN '{file}' FROM {start}"),
            )
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
        })
        .collect()
}

/// Of `events`, the row events' table maps naming `database`.`table`: each row written to
/// the table through the binary log comes after one.
fn row_events(events: &[String], database: &str, table: &str) -> usize {
    let needle = format!("({database}.{table})");
    events
        .iter()
        .filter(|event| event.contains("Table_map") && event.contains(&needle))
        .count()
}

/// The rows of `items`, summed up by the server.
fn items(server: &MariaDbServer, database: &str) -> String {
    sql(
        server,
        database,
        "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('|', id, label, qty))) FROM items",
    )
}

#[test]
fn copy_binlog_off_keeps_the_copied_rows_out_of_the_targets_binary_log() {
    let name = "my_copy_binlog";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    sql(
        &servers.source,
        name,
        "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, label VARCHAR(40), qty INT, KEY by_qty (qty));
         INSERT INTO items (id, label, qty) SELECT seq, CONCAT('item ', seq), seq % 97 FROM seq_1_to_3000;",
    );
    let expected = items(&servers.source, name);
    assert!(expected.starts_with("3000\t"), "{expected}");

    // Off: every row arrives, and none through the target's binary log.
    let quiet = format!("{}?copy-binlog=off", servers.target.url(name));
    let from = binlog_end(&servers.target);
    let copied = copy(&source, &quiet, name);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert_eq!(items(&servers.target, name), expected);
    let events = events_since(&servers.target, &from);
    assert_eq!(row_events(&events, name, "items"), 0);
    // The table's creation and its index are logged as always.
    assert!(
        events
            .iter()
            .any(|event| event.contains("CREATE TABLE") && event.contains("items")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|event| event.contains("by_qty")),
        "{events:?}"
    );

    // A source URL has no copy to keep out of a log: the setting is refused there.
    let misplaced = copy(&format!("{source}?copy-binlog=off"), &quiet, name);
    let stderr = String::from_utf8_lossy(&misplaced.stderr);
    assert!(!misplaced.status.success(), "{stderr}");
    assert!(
        stderr.contains("config.url") && stderr.contains("only a target URL"),
        "{stderr}"
    );

    // By default the copy is logged like any other write (so the check above can fail).
    let logged = "my_copy_binlog_on";
    let from = binlog_end(&servers.target);
    let copied = copy(&source, &servers.target.url(logged), logged);
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert_eq!(items(&servers.target, logged), expected);
    assert!(row_events(&events_since(&servers.target, &from), logged, "items") > 0);

    // A user who may not turn the log off hears so before anything is created, and the
    // password stays out of it.
    servers
        .target
        .execute(
            "CREATE USER IF NOT EXISTS 'loader'@'%' IDENTIFIED BY 'loader-s3cret';
             GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, CREATE TEMPORARY TABLES, LOCK TABLES ON *.* TO 'loader'@'%';",
        )
        .unwrap();
    let denied = "my_copy_binlog_denied";
    let url = format!(
        "mysql://loader:loader-s3cret@127.0.0.1:{}/{denied}?copy-binlog=off",
        servers.target.port()
    );
    let check = ferry("check", &source, &url, &[]).output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        !check.status.success() && report.contains("target.binlog_privilege"),
        "{report}"
    );
    assert!(!report.contains("loader-s3cret"), "{report}");
    let copied = copy(&source, &url, denied);
    let stderr = String::from_utf8_lossy(&copied.stderr);
    assert!(!copied.status.success(), "{stderr}");
    assert!(
        stderr.contains("target.binlog_privilege") && stderr.contains("BINLOG ADMIN"),
        "{stderr}"
    );
    assert!(!stderr.contains("loader-s3cret"), "{stderr}");
    assert_eq!(
        sql(
            &servers.target,
            "mysql",
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{denied}'"
            ),
        )
        .trim(),
        "0",
        "nothing was created"
    );
}
