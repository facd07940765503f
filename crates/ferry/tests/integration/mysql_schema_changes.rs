//! Schema changes and names the MySQL stream must not miss: a type changed while ferry was
//! stopped (events written before it must not be decoded with the new type), DDL on a table whose
//! name needs quoting, MariaDB's `CREATE OR REPLACE TABLE`, and a server that folds names to
//! lower case (`lower_case_table_names = 1`) while the URL names the database in mixed case.

use std::sync::OnceLock;
use std::time::Duration;

use ferry_testkit::{wait_until, MariaDbServer};

use crate::common::stop;
use crate::mysql::{ferry, log_tail, mariadb, spawn_run, sql, try_sql};
use crate::mysql_values::wait_mysql_target_streaming;

/// Runs `ferry run` in the foreground until it exits; returns (success, stderr).
fn run_until_exit(name: &str, source: &str, target: &str) -> (bool, String) {
    let output = ferry(
        "run",
        source,
        target,
        &["--name", name, "--chunk-rows", "3000"],
    )
    .output()
    .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_changed_while_stopped_stops_before_older_events_decode_wrong() {
    let name = "my_retype";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    let target = servers.target.url(&format!("{name}_copy"));
    sql(
        &servers.source,
        name,
        "CREATE TABLE stock (id INT PRIMARY KEY, qty INT NOT NULL, price DECIMAL(10,2));
         INSERT INTO stock VALUES (1, 7, 1.50);",
    );
    let mut run = spawn_run(name, &source, &target);
    wait_mysql_target_streaming(name).await;
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    // Logged as INT and DECIMAL(10,2), then both columns change type.
    sql(
        &servers.source,
        name,
        "INSERT INTO stock VALUES (2, -8, 2.25);
         ALTER TABLE stock MODIFY qty BIGINT NOT NULL, MODIFY price DECIMAL(20,6);
         UPDATE stock SET qty = 5000000000 WHERE id = 1;",
    );
    let (success, stderr) = run_until_exit(name, &source, &target);
    assert!(
        !success && stderr.contains("source.schema_changed") && stderr.contains("logged as"),
        "{stderr}"
    );
    let rows = sql(
        &servers.target,
        &format!("{name}_copy"),
        "SELECT id, qty FROM stock ORDER BY id",
    );
    assert!(
        !rows.contains("2\t"),
        "row 2 was decoded with the new type: {rows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_on_a_quoted_name_or_a_replaced_table_stops_the_stream() {
    for (name, table, ddl) in [
        (
            "my_dash",
            "`order-lines`",
            "ALTER TABLE `order-lines` MODIFY qty BIGINT NOT NULL",
        ),
        (
            "my_replace",
            "plain",
            "CREATE OR REPLACE TABLE plain (id INT PRIMARY KEY, qty BIGINT NOT NULL)",
        ),
    ] {
        let servers = mariadb();
        let source = servers.source.create_database(name).unwrap();
        let target = servers.target.url(&format!("{name}_copy"));
        sql(
            &servers.source,
            name,
            &format!(
                "CREATE TABLE {table} (id INT PRIMARY KEY, qty INT NOT NULL);
                 INSERT INTO {table} VALUES (1, 1), (2, 2);"
            ),
        );
        let mut run = spawn_run(name, &source, &target);
        wait_mysql_target_streaming(name).await;
        sql(
            &servers.source,
            name,
            &format!("{ddl}; INSERT INTO {table} VALUES (3, 5000000000);"),
        );
        let exited = wait_until("ferry to stop on the DDL", Duration::from_secs(60), || {
            let status = run.try_wait().ok().flatten();
            async move { status }
        })
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}\n{}", log_tail(name)));
        assert_eq!(exited.code(), Some(3), "{name}: {}", log_tail(name));
        assert!(
            log_tail(name).contains("source.schema_changed"),
            "{name}: {}",
            log_tail(name)
        );
    }
}

fn folding_server() -> &'static MariaDbServer {
    static SERVER: OnceLock<MariaDbServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        MariaDbServer::start_with(3, &["--lower-case-table-names=1"])
            .expect("start a MariaDB that folds names")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_folds_names_streams_a_mixed_case_database() {
    let name = "my_fold";
    let server = folding_server();
    server
        .execute("CREATE DATABASE MixedCase CHARACTER SET utf8mb4")
        .unwrap();
    let source = server.url("MixedCase");
    let target_database = format!("{name}_copy");
    let target = mariadb().target.url(&target_database);
    server
        .execute(
            "USE MixedCase; CREATE TABLE Accounts (id INT PRIMARY KEY, balance INT NOT NULL);
             INSERT INTO Accounts VALUES (1, 10), (2, 20);",
        )
        .unwrap();
    let mut run = spawn_run(name, &source, &target);
    wait_mysql_target_streaming(name).await;
    server
        .execute(
            "USE MixedCase; UPDATE Accounts SET balance = 11 WHERE id = 1;
             DELETE FROM Accounts WHERE id = 2; INSERT INTO Accounts VALUES (3, 30);",
        )
        .unwrap();
    let result = wait_until("the changes to arrive", Duration::from_secs(60), || async {
        let rows = try_sql(
            &mariadb().target,
            &target_database,
            "SELECT id, balance FROM accounts ORDER BY id",
        )
        .ok()?;
        (rows.trim() == "1\t11\n3\t30").then_some(())
    })
    .await;
    result.unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
}
