//! Schema changes and names the MySQL stream must not miss: a type changed while ferry was
//! stopped (events written before it must not be decoded with the new type), DDL on a table whose
//! name needs quoting, MariaDB's `CREATE OR REPLACE TABLE`, and a server that folds names to
//! lower case (`lower_case_table_names = 1`) while the URL names the database in mixed case.

use std::sync::OnceLock;
use std::time::Duration;

use ferry_testkit::{wait_until, MariaDbServer};

use crate::common::stop;
use crate::mysql::{
    ferry, log_tail, mariadb, mariadb_source_postgres_target, spawn_run, sql, try_sql,
};
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
            // (A narrowing: a widening would be followed.)
            "ALTER TABLE `order-lines` MODIFY qty SMALLINT NOT NULL",
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
            &format!("{ddl}; INSERT INTO {table} VALUES (3, 30000);"),
        );
        wait_stopped_on_schema_change(&mut run, name, "ferry to stop on the DDL").await;
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

/// Index names made longer than PostgreSQL's 63 bytes by the table's name stay distinct: cut
/// alike, the second (unique) index used to be skipped as already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_index_names_stay_distinct_on_postgres() {
    let name = "my_long_names";
    let (source, target) = mariadb_source_postgres_target(name).await;
    let table = "a_table_name_that_is_quite_long_indeed_for_testing";
    sql(
        &mariadb().source,
        name,
        &format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, a INT, b INT,
               KEY index_on_the_first_column_number_one (a),
               UNIQUE KEY index_on_the_first_column_number_two (b));
             INSERT INTO {table} VALUES (1, 1, 1), (2, 1, 2);"
        ),
    );
    let copied = ferry("copy", &source, &target, &["--name", name])
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let client = crate::common::servers().target.connect(name).await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE i.indisunique AND NOT i.indisprimary)
             FROM pg_index i WHERE i.indrelid = $1::text::regclass",
            &[&format!("{name}.{table}")],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3, "the key and both indexes");
    assert_eq!(row.get::<_, i64>(1), 1, "the unique one among them");
    // Running again finds them all there.
    let again = ferry("copy", &source, &target, &["--name", name])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index WHERE indrelid = $1::text::regclass",
            &[&format!("{name}.{table}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
}

/// `ALTER TABLE ... ADD COLUMN` on a MariaDB source while streaming is followed into a MariaDB
/// and a PostgreSQL target: the column appears there with the same constant default for the
/// existing rows, and later changes carry its values; an index change passes unnoticed; a
/// renamed column still stops the stream (its values would be left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_on_a_mariadb_source_are_followed() {
    let name = "my_add_column";
    let servers = mariadb();
    let StreamingToBoth {
        mut to_mysql,
        mut to_postgres,
        pg_name,
    } = stream_to_both(
        name,
        "CREATE TABLE stock (id INT PRIMARY KEY, qty INT NOT NULL);
         INSERT INTO stock SELECT seq, seq FROM seq_1_to_300;",
    )
    .await;
    sql(
        &servers.source,
        name,
        "ALTER TABLE stock ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'none', ADD COLUMN weight DECIMAL(8,3) NULL AFTER id;
         UPDATE stock SET note = CONCAT('n', id), weight = id / 8 WHERE id % 3 = 0;
         INSERT INTO stock (id, qty, note, weight) VALUES (1000, 7, 'added', 1.125);
         CREATE INDEX by_note ON stock (note);
         DELETE FROM stock WHERE id = 5;",
    );
    wait_both_equal(
        name,
        "SELECT CONCAT_WS('|', id, qty, note, IFNULL(weight, '~')) FROM stock ORDER BY id",
        "1000|7|added|1.125",
        &[
            ("id", "id"),
            ("qty", "qty"),
            ("note", "note"),
            ("weight", "weight"),
        ],
    )
    .await;
    assert_eq!(stop(&mut to_postgres), Some(0), "{}", log_tail(&pg_name));

    // A table created while streaming joins the migration.
    sql(
        &servers.source,
        name,
        "CREATE TABLE late (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO late SELECT seq, CONCAT('v', seq) FROM seq_1_to_500;
         UPDATE stock SET qty = qty + 1 WHERE id < 10;",
    );
    let late = |server: &MariaDbServer, database: &str| {
        try_sql(
            server,
            database,
            "SELECT COUNT(*), SUM(id), GROUP_CONCAT(v ORDER BY id) FROM late",
        )
        .unwrap_or_default()
    };
    sql(
        &servers.source,
        name,
        "UPDATE late SET v = 'changed' WHERE id % 50 = 0; DELETE FROM late WHERE id = 7;",
    );
    let expected = late(&servers.source, name);
    wait_until(
        "the new table on MariaDB",
        Duration::from_secs(60),
        || async { (late(&servers.target, &format!("{name}_copy")) == expected).then_some(()) },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));

    // A rename is not followed: the stream stops and says why.
    sql(
        &servers.source,
        name,
        "ALTER TABLE stock RENAME COLUMN note TO label; UPDATE stock SET label = 'x' WHERE id = 1;",
    );
    wait_stopped_on_schema_change(&mut to_mysql, name, "ferry to stop on the rename").await;
}

/// Columns added while ferry is stopped: the rows logged before the ALTER are decoded by the
/// columns they have, the ALTER is followed, and the rows after it carry the new column, into a
/// MariaDB and a PostgreSQL target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_while_stopped_are_followed() {
    let name = "my_add_stopped";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    let mysql_target = servers.target.url(&format!("{name}_copy"));
    let postgres_target = crate::common::servers()
        .target
        .create_database(name)
        .await
        .unwrap();
    let pg_name = format!("{name}_pg");
    sql(
        &servers.source,
        name,
        "CREATE TABLE stock (id INT PRIMARY KEY, qty INT NOT NULL);
         INSERT INTO stock SELECT seq, seq FROM seq_1_to_300;",
    );
    let mut to_mysql = spawn_run(name, &source, &mysql_target);
    let mut to_postgres = spawn_run(&pg_name, &source, &postgres_target);
    wait_mysql_target_streaming(name).await;
    let client = crate::common::servers().target.connect(name).await.unwrap();
    let before: &[(&str, &str)] = &[("id", "id"), ("qty", "qty")];
    wait_stock_on_postgres(&pg_name, name, &client, before).await;
    assert_eq!(stop(&mut to_mysql), Some(0), "{}", log_tail(name));
    assert_eq!(stop(&mut to_postgres), Some(0), "{}", log_tail(&pg_name));
    // While ferry is stopped: changes under the old definition, the ALTER, changes under the new.
    sql(
        &servers.source,
        name,
        "UPDATE stock SET qty = qty * 10 WHERE id <= 50; DELETE FROM stock WHERE id = 60; INSERT INTO stock VALUES (500, 5);
         ALTER TABLE stock ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'none' AFTER id;
         UPDATE stock SET note = CONCAT('n', id) WHERE id % 7 = 0; INSERT INTO stock (id, qty, note) VALUES (501, 6, 'late');",
    );
    let mut to_mysql = spawn_run(name, &source, &mysql_target);
    let mut to_postgres = spawn_run(&pg_name, &source, &postgres_target);
    wait_copy_equal(
        name,
        "SELECT CONCAT_WS('|', id, qty, note) FROM stock ORDER BY id",
        "501|6|late",
        "the added column on MariaDB",
    )
    .await;
    let after: &[(&str, &str)] = &[("id", "id"), ("qty", "qty"), ("note", "note")];
    wait_stock_on_postgres(&pg_name, name, &client, after).await;
    assert_eq!(stop(&mut to_mysql), Some(0), "{}", log_tail(name));
    assert_eq!(stop(&mut to_postgres), Some(0), "{}", log_tail(&pg_name));

    // A column whose default changed after it was added (both while ferry was stopped): the
    // existing rows hold the first default, the target would get the second: it stops instead.
    sql(
        &servers.source,
        name,
        "ALTER TABLE stock ADD COLUMN flag INT NOT NULL DEFAULT 0; ALTER TABLE stock ALTER COLUMN flag SET DEFAULT 1;
         UPDATE stock SET qty = 1 WHERE id = 2;",
    );
    let (succeeded, stderr) = run_until_exit(name, &source, &mysql_target);
    assert!(!succeeded);
    assert!(
        stderr.contains("source.schema_changed") && stderr.contains("default"),
        "{stderr}"
    );
}

/// Waits until `stock` of MariaDB database `database` and of schema `database` on the
/// PostgreSQL target agree on these columns (migration `migration`'s log on failure).
async fn wait_stock_on_postgres(
    migration: &str,
    database: &str,
    client: &tokio_postgres::Client,
    columns: &[(&str, &str)],
) {
    crate::mysql::wait_engines_equal(
        migration,
        (&mariadb().source, database),
        client,
        &[(
            crate::mysql::mysql_select(columns, "stock", "id"),
            crate::mysql::postgres_select(columns, &format!("{database}.stock"), "id"),
        )],
    )
    .await;
}

/// Waits until `query` reads on the MariaDB copy (`<name>_copy` on the target server) what it
/// reads on the source, which must contain `marker` (the change under test).
async fn wait_copy_equal(name: &str, query: &str, marker: &str, what: &str) {
    let servers = mariadb();
    let rows = |server: &MariaDbServer, database: &str| {
        try_sql(server, database, query).unwrap_or_default()
    };
    let expected = rows(&servers.source, name);
    assert!(expected.contains(marker), "{expected}");
    wait_until(what, Duration::from_secs(60), || async {
        (rows(&servers.target, &format!("{name}_copy")) == expected).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
}

/// Columns dropped and types widened on a MariaDB source while streaming (an application
/// deploying): the targets, MariaDB and PostgreSQL, widen the same columns and take rows without
/// the dropped one; values that only fit the new types arrive intact. A narrowing still stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_dropped_and_widened_on_a_mariadb_source_are_followed() {
    let name = "my_widen";
    let servers = mariadb();
    let StreamingToBoth {
        mut to_mysql,
        mut to_postgres,
        pg_name,
    } = stream_to_both(
        name,
        "CREATE TABLE stock (id INT PRIMARY KEY, qty INT NOT NULL, label VARCHAR(8) NOT NULL, price DECIMAL(6,2), legacy VARCHAR(10) NOT NULL);
         INSERT INTO stock SELECT seq, seq, CONCAT('l', seq), seq / 4, 'old' FROM seq_1_to_300;",
    )
    .await;
    sql(
        &servers.source,
        name,
        "ALTER TABLE stock MODIFY qty BIGINT NOT NULL, MODIFY label VARCHAR(64) NOT NULL, MODIFY price DECIMAL(20,6), DROP COLUMN legacy;
         UPDATE stock SET qty = 5000000000 + id WHERE id % 10 = 0;
         INSERT INTO stock (id, qty, label, price) VALUES (1000, 9000000000, 'a label far longer than eight', 12345678901234.123456);
         DELETE FROM stock WHERE id = 5;",
    );
    wait_both_equal(
        name,
        "SELECT CONCAT_WS('|', id, qty, label, IFNULL(price, '~')) FROM stock ORDER BY id",
        "1000|9000000000|a label far longer than eight|12345678901234.123456",
        &[
            ("id", "id"),
            ("qty", "qty"),
            ("label", "label"),
            ("price", "price"),
        ],
    )
    .await;
    assert_eq!(stop(&mut to_postgres), Some(0), "{}", log_tail(&pg_name));

    // Narrowing a type is not followed: the stream stops and says why.
    sql(
        &servers.source,
        name,
        "ALTER TABLE stock MODIFY price DECIMAL(30,2); UPDATE stock SET qty = 1 WHERE id = 2;",
    );
    wait_stopped_on_schema_change(&mut to_mysql, name, "ferry to stop on the narrowing").await;
}

/// Two runs streaming a MariaDB database: into MariaDB and into PostgreSQL.
struct StreamingToBoth {
    to_mysql: std::process::Child,
    to_postgres: std::process::Child,
    /// The PostgreSQL run's migration name (`<name>_pg`).
    pg_name: String,
}

/// Creates MariaDB database `name` holding `schema` (a table `stock` with `id` and `qty`),
/// starts migration `name` into MariaDB (`<name>_copy`) and `<name>_pg` into PostgreSQL (schema
/// `name`), and waits until a first change reached MariaDB: the appliers have read the
/// targets' columns before whatever the test changes next.
async fn stream_to_both(name: &str, schema: &str) -> StreamingToBoth {
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    let mysql_target = servers.target.url(&format!("{name}_copy"));
    let postgres_target = crate::common::servers()
        .target
        .create_database(name)
        .await
        .unwrap();
    sql(&servers.source, name, schema);
    let pg_name = format!("{name}_pg");
    let to_mysql = spawn_run(name, &source, &mysql_target);
    let to_postgres = spawn_run(&pg_name, &source, &postgres_target);
    wait_mysql_target_streaming(name).await;
    sql(
        &servers.source,
        name,
        "UPDATE stock SET qty = -1 WHERE id = 1;",
    );
    wait_until("the first change", Duration::from_secs(60), || async {
        try_sql(
            &servers.target,
            &format!("{name}_copy"),
            "SELECT qty FROM stock WHERE id = 1",
        )
        .ok()
        .filter(|qty| qty.trim() == "-1")
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    StreamingToBoth {
        to_mysql,
        to_postgres,
        pg_name,
    }
}

/// Waits until run `run` (migration `name`) exits with code 3 on a schema change it does not
/// follow (`source.schema_changed`).
async fn wait_stopped_on_schema_change(run: &mut std::process::Child, name: &str, what: &str) {
    let exited = wait_until(what, Duration::from_secs(60), || {
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

/// Waits until `stock` reads on the MariaDB copy as on the source (through `query`, which must
/// show `marker`) and on the PostgreSQL copy for `columns` (see [`stream_to_both`]).
async fn wait_both_equal(name: &str, query: &str, marker: &str, columns: &[(&str, &str)]) {
    wait_copy_equal(name, query, marker, "the change on MariaDB").await;
    let client = crate::common::servers().target.connect(name).await.unwrap();
    wait_stock_on_postgres(&format!("{name}_pg"), name, &client, columns).await;
}
