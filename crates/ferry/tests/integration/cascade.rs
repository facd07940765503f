//! MySQL and MariaDB apply `ON DELETE CASCADE`, `SET NULL` and `ON UPDATE CASCADE` inside the
//! storage engine and leave the rows they change out of the binary log. ferry must reproduce
//! them on the target, in their place among the other changes, to any depth, on MariaDB and
//! PostgreSQL targets alike. Compared through the servers' own clients.

use std::time::Duration;

use ferry_testkit::wait_until;

use crate::common::{servers, stop};
use crate::mysql::{
    log_tail, mariadb, mariadb_source_postgres_target, mysql_select, postgres_select, spawn_run,
    sql, try_sql, wait_engines_equal,
};
use crate::mysql_values::{wait_mysql_target_streaming, wait_postgres_target_streaming};

const SCHEMA: &str = "
CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(20));
CREATE TABLE items (id INT PRIMARY KEY, order_id INT, qty INT,
  CONSTRAINT fk_items FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE ON UPDATE CASCADE);
CREATE TABLE options (id INT PRIMARY KEY, item_id INT,
  CONSTRAINT fk_options FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE);
CREATE TABLE notes (id INT PRIMARY KEY, order_id INT NULL,
  CONSTRAINT fk_notes FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE SET NULL ON UPDATE SET NULL);
CREATE TABLE staff (id INT PRIMARY KEY, manager_id INT NULL,
  CONSTRAINT fk_staff FOREIGN KEY (manager_id) REFERENCES staff (id) ON DELETE CASCADE);
CREATE TABLE codes (code VARCHAR(10) PRIMARY KEY);
CREATE TABLE uses (id INT PRIMARY KEY, code VARCHAR(10),
  CONSTRAINT fk_uses FOREIGN KEY (code) REFERENCES codes (code) ON UPDATE CASCADE);
INSERT INTO orders SELECT seq, CONCAT('o', seq) FROM seq_1_to_200;
INSERT INTO items SELECT seq, 1 + (seq - 1) DIV 3, seq % 7 FROM seq_1_to_600;
INSERT INTO options SELECT seq, 1 + (seq - 1) DIV 2 FROM seq_1_to_1200;
INSERT INTO notes SELECT seq, seq FROM seq_1_to_200;
INSERT INTO staff VALUES (1, NULL);
INSERT INTO staff SELECT seq, 1 FROM seq_2_to_10;
INSERT INTO staff SELECT seq, 2 + seq % 9 FROM seq_11_to_100;
INSERT INTO codes SELECT CONCAT('c', seq) FROM seq_1_to_20;
INSERT INTO uses SELECT seq, CONCAT('c', 1 + seq % 20) FROM seq_1_to_100;
";

/// Written while ferry streams: cascades at every depth, interleaved with the rows they touch.
const CHANGES: &str = "
DELETE FROM orders WHERE id <= 20;
START TRANSACTION;
  INSERT INTO orders VALUES (1000, 'new');
  INSERT INTO items VALUES (5000, 1000, 1), (5001, 1000, 2);
  INSERT INTO options VALUES (9000, 5000);
  DELETE FROM orders WHERE id = 1000;
  INSERT INTO orders VALUES (1000, 'again');
  INSERT INTO items VALUES (5002, 1000, 3);
COMMIT;
START TRANSACTION;
  INSERT INTO items VALUES (5003, 40, 9);
  UPDATE items SET qty = 100 WHERE order_id = 40;
  DELETE FROM orders WHERE id = 40;
  UPDATE items SET qty = qty + 1 WHERE order_id = 41;
COMMIT;
UPDATE orders SET id = id + 5000 WHERE id BETWEEN 21 AND 30;
INSERT INTO items VALUES (5004, 5021, 4);
DELETE FROM staff WHERE id = 2;
UPDATE codes SET code = CONCAT(code, 'x') WHERE code IN ('c1', 'c2', 'c3');
DELETE FROM items WHERE id BETWEEN 100 AND 110;
-- With the checks off the server takes no action: the children stay, on the target too.
SET SESSION foreign_key_checks = 0;
DELETE FROM orders WHERE id = 50;
UPDATE orders SET id = 6000 WHERE id = 51;
SET SESSION foreign_key_checks = 1;
";

const TABLES: &[(&str, &[&str])] = &[
    ("orders", &["id", "note"]),
    ("items", &["id", "order_id", "qty"]),
    ("options", &["id", "item_id"]),
    ("notes", &["id", "order_id"]),
    ("staff", &["id", "manager_id"]),
    ("codes", &["code"]),
    ("uses", &["id", "code"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cascades_reach_a_mariadb_target() {
    let name = "cascade_my";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    let target_database = format!("{name}_copy");
    let target = servers.target.url(&target_database);
    sql(&servers.source, name, SCHEMA);
    let mut run = spawn_run(name, &source, &target);
    wait_mysql_target_streaming(name).await;
    sql(&servers.source, name, CHANGES);
    let result = wait_until(
        "the cascades to arrive",
        Duration::from_secs(60),
        || async {
            for (table, _) in TABLES {
                let query = format!("SELECT * FROM {table} ORDER BY 1");
                let left = try_sql(&servers.source, name, &query).ok()?;
                let right = try_sql(&servers.target, &target_database, &query).ok()?;
                if left != right {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    if let Err(error) = result {
        for (table, _) in TABLES {
            let query = format!("SELECT COUNT(*) FROM {table}");
            eprintln!(
                "{table}: source {} target {}",
                sql(&servers.source, name, &query).trim(),
                try_sql(&servers.target, &target_database, &query)
                    .unwrap_or_default()
                    .trim()
            );
        }
        panic!("{error}\n{}", log_tail(name));
    }
    // The foreign keys exist on the target, so applications keep their cascades after cutover
    // (built once the stream has caught up with the copy).
    wait_until("every foreign key on the target", Duration::from_secs(60), || async {
        let keys = try_sql(
            &servers.target,
            &target_database,
            "SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()",
        )
        .ok()?;
        keys.trim().ends_with('5').then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cascades_reach_a_postgres_target() {
    let name = "cascade_pg";
    let (source, target) = mariadb_source_postgres_target(name).await;
    sql(&mariadb().source, name, SCHEMA);
    let client = servers().target.connect(name).await.unwrap();
    // The VARCHAR key of `uses` compares without case on MariaDB, exactly on PostgreSQL: said.
    let check = crate::mysql::ferry("check", &source, &target, &[])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success()
            && said.contains("target.folded_cascade_key")
            && said.contains("fk_uses"),
        "{said}"
    );
    let mut run = spawn_run(name, &source, &target);
    wait_postgres_target_streaming(name, &client).await;
    sql(&mariadb().source, name, CHANGES);
    let queries: Vec<(String, String)> = TABLES
        .iter()
        .map(|(table, columns)| {
            let pairs: Vec<(&str, &str)> =
                columns.iter().map(|column| (*column, *column)).collect();
            (
                mysql_select(&pairs, table, "1"),
                postgres_select(&pairs, &format!("{name}.{table}"), "1"),
            )
        })
        .collect();
    wait_engines_equal(name, (&mariadb().source, name), &client, &queries).await;
    // Keys the copied rows refused at first are retried beside the stream until they exist.
    ferry_testkit::wait_until(
        "every foreign key on the target",
        std::time::Duration::from_secs(60),
        || async {
            let keys: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = $1::text::regnamespace",
                    &[&name],
                )
                .await
                .ok()?
                .get(0);
            (keys == 5).then_some(())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
}

/// A key change that cascades while the copy is still being caught up cannot be replayed by value
/// (child rows copied after it already carry its effect): its child table stops, and the next run
/// copies it afresh, so the target ends equal instead of losing the re-pointed children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascading_key_change_during_the_copy_stops_its_table_until_recopied() {
    let name = "cascade_catchup";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    let target_database = format!("{name}_copy");
    let target = servers.target.url(&target_database);
    sql(
        &servers.source,
        name,
        "CREATE TABLE parent (id INT PRIMARY KEY);
         CREATE TABLE child (id INT PRIMARY KEY, parent_id INT,
           CONSTRAINT fk_child FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE);
         INSERT INTO parent SELECT seq FROM seq_1_to_10;
         INSERT INTO child SELECT seq, 1 + seq % 10 FROM seq_1_to_2000;",
    );
    // The first run dies after two chunks: the rest is copied by the next run, after the changes.
    let crashed = crate::mysql::ferry(
        "run",
        &source,
        &target,
        &["--name", name, "--chunk-rows", "200", "--parallel", "1"],
    )
    .env("FERRY_FAILPOINT", "copy.after_chunk_commit:2")
    .output()
    .unwrap();
    assert!(!crashed.status.success());
    // Parent 1 goes (its children with it), then parent 2 takes its key (its children follow).
    sql(
        &servers.source,
        name,
        "DELETE FROM parent WHERE id = 1; UPDATE parent SET id = 1 WHERE id = 2;",
    );
    let mut run = spawn_run(name, &source, &target);
    let stopped = wait_until(
        "the child table to stop",
        Duration::from_secs(60),
        || async {
            let state = try_sql(
                &servers.target,
                "_ferry",
                &format!(
                    "SELECT state FROM tables WHERE migration = '{name}' AND table_name = 'child'"
                ),
            )
            .ok()?;
            (state.trim() == "failed").then_some(())
        },
    )
    .await;
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    stopped.unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    // The next run copies it afresh.
    let mut run = spawn_run(name, &source, &target);
    let query = "SELECT * FROM child ORDER BY id";
    wait_until(
        "the child table to be equal",
        Duration::from_secs(60),
        || async {
            let left = try_sql(&servers.source, name, query).ok()?;
            let right = try_sql(&servers.target, &target_database, query).ok()?;
            (left == right).then_some(())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
}
