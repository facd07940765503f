//! MySQL/MariaDB in every direction, against real servers: MariaDB to MariaDB, MariaDB to
//! PostgreSQL and PostgreSQL to MariaDB. Each test copies typed tables, streams changes made by a
//! concurrent writer, survives kill -9, and compares both sides row for row through the
//! servers' own clients (the `mariadb` command-line tool and SQL text on PostgreSQL), never
//! through ferry's code.

use std::sync::OnceLock;
use std::time::Duration;

use ferry_testkit::{wait_until, MariaDbServer};

use crate::common::{keys_of, kill, log_path, run_verify, servers, stop};

pub(crate) struct MariaDbServers {
    pub source: MariaDbServer,
    pub target: MariaDbServer,
}

pub(crate) fn mariadb() -> &'static MariaDbServers {
    static SERVERS: OnceLock<MariaDbServers> = OnceLock::new();
    SERVERS.get_or_init(|| MariaDbServers {
        source: MariaDbServer::start_with(1, &[]).expect("start the MariaDB source"),
        target: MariaDbServer::start_with(2, &[]).expect("start the MariaDB target"),
    })
}

/// A MariaDB source database and a PostgreSQL target database, both named `name`: their URLs.
pub(crate) async fn mariadb_source_postgres_target(name: &str) -> (String, String) {
    let source = mariadb().source.create_database(name).unwrap();
    let target = crate::common::servers()
        .target
        .create_database(name)
        .await
        .unwrap();
    (source, target)
}

/// Runs SQL in `database` through the `mariadb` client.
pub(crate) fn sql(server: &MariaDbServer, database: &str, statements: &str) -> String {
    try_sql(server, database, statements).unwrap_or_else(|error| {
        panic!("{error}\nSQL: {}", &statements[..statements.len().min(500)])
    })
}

/// [`sql`], with the error returned (a table may not exist yet).
pub(crate) fn try_sql(
    server: &MariaDbServer,
    database: &str,
    statements: &str,
) -> std::io::Result<String> {
    server.execute(&format!(
        "SET time_zone = '+00:00'; USE `{database}`; {statements}"
    ))
}

pub(crate) fn ferry(
    command: &str,
    source: &str,
    target: &str,
    extra: &[&str],
) -> std::process::Command {
    let mut ferry = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    ferry
        .arg(command)
        .args(["--source", source, "--target", target])
        .args(extra)
        .env_remove("FERRY_FAILPOINT")
        .env("FERRY_LOG", "info");
    ferry
}

pub(crate) fn spawn_run(name: &str, source: &str, target: &str) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(name))
        .unwrap();
    ferry(
        "run",
        source,
        target,
        &["--name", name, "--chunk-rows", "3000", "--parallel", "3"],
    )
    .stdin(std::process::Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log)
    .spawn()
    .expect("spawn ferry")
}

pub(crate) fn log_tail(name: &str) -> String {
    let text = std::fs::read_to_string(log_path(name)).unwrap_or_default();
    let start = text.len().saturating_sub(5000);
    format!(
        "--- ferry log (tail) ---\n{}",
        &text[text.floor_char_boundary(start)..]
    )
}

/// The MariaDB source table with every MySQL type ferry maps, 20,000 rows, and a procedure that
/// keeps changing it (updates, deletes, inserts and key moves in transactions).
const MYSQL_ITEMS: &str = "
CREATE TABLE items (
  id INT UNSIGNED PRIMARY KEY, note VARCHAR(200) CHARACTER SET latin1, qty INT NOT NULL,
  price DECIMAL(65,30), big BIGINT UNSIGNED, flag TINYINT(1), bits BIT(12),
  kind ENUM('a','B','c'), tags SET('x','y','z'), day DATE, at DATETIME(6), stamp TIMESTAMP(6) NULL,
  dur TIME, yr YEAR, doc JSON, data LONGBLOB, fixed BINARY(4), ratio FLOAT, score DOUBLE,
  body MEDIUMTEXT, KEY by_note (note), UNIQUE KEY by_qty_id (qty, id));
INSERT INTO items SELECT seq, CONCAT('naïve café ', seq), seq % 97,
  CONCAT(seq, '.', LPAD(seq, 30, '7')), 18446744073709551615 - seq, seq % 2, seq % 4096,
  ELT(1 + seq % 3, 'a', 'b', 'c'), ELT(1 + seq % 4, '', 'x', 'x,z', 'x,y,z'),
  DATE_ADD('1999-12-31', INTERVAL seq DAY), TIMESTAMPADD(MICROSECOND, seq * 1234567, '2024-02-29 23:59:59'),
  FROM_UNIXTIME(1700000000 + seq), SEC_TO_TIME((CAST(seq AS SIGNED) % 3000) * 1000 - 1500000), 1901 + seq % 255,
  JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('é', seq / 7)), IF(seq % 1000 = 0, REPEAT(x'00FF10', 100000), UNHEX(HEX(seq))),
  UNHEX(LPAD(HEX(seq % 256), 2, '0')), seq / 3, seq / 7, IF(seq % 5000 = 0, REPEAT('long text ', 20000), 'short')
FROM seq_1_to_20000;
INSERT INTO items (id, note, qty, dur, yr, price) VALUES (4294967295, NULL, -1, '838:59:59', 2155, -99999999999999999999999999999999999.999999999999999999999999999999);
CREATE TABLE pairs (a VARCHAR(20) NOT NULL, b INT NOT NULL, v TEXT, PRIMARY KEY (a, b));
INSERT INTO pairs SELECT CONCAT('k', seq % 50), seq, REPEAT('p', seq % 100) FROM seq_1_to_5000;
CREATE TABLE emails (id INT PRIMARY KEY, email VARCHAR(40) NOT NULL, UNIQUE KEY by_email (email));
INSERT INTO emails SELECT seq, CONCAT('e', seq) FROM seq_1_to_100;
DELIMITER //
CREATE PROCEDURE churn(rounds INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < rounds DO
    START TRANSACTION;
    UPDATE items SET qty = qty + 1, note = CONCAT(IFNULL(note, ''), 'ü'), stamp = NOW(6), doc = JSON_SET(IFNULL(doc, '{}'), '$.u', i) WHERE id = 1 + (i * 7919) % 20000;
    DELETE FROM items WHERE id = 1 + (i * 104729) % 20000;
    INSERT INTO items (id, note, qty, bits, kind, tags, at, data) VALUES (30000 + i, CONCAT('new ', i), i, b'101', 'c', 'y', NOW(6), x'C0FFEE')
      ON DUPLICATE KEY UPDATE qty = qty + 100;
    UPDATE pairs SET v = CONCAT(IFNULL(v, ''), 'w') WHERE a = CONCAT('k', i % 50) AND b <= 20;
    UPDATE pairs SET b = b + 100000 WHERE a = CONCAT('k', i % 50) AND b = i + 1;
    SELECT email INTO @freed FROM emails WHERE id = 1 + i % 100;
    UPDATE emails SET email = CONCAT('m', i) WHERE id = 1 + i % 100;
    INSERT INTO emails VALUES (100000 + i, @freed);
    UPDATE emails SET email = CONCAT('m', i, 'b') WHERE id = 1 + i % 100;
    DELETE FROM emails WHERE id = 100000 + i - 50;
    COMMIT;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
";

/// Every row of a MariaDB table as the `mariadb` client prints it, in key order.
fn mysql_rows(server: &MariaDbServer, database: &str, table: &str, key: &str) -> String {
    sql(
        server,
        database,
        &format!("SELECT * FROM {table} ORDER BY {key}"),
    )
}

/// Runs `CALL churn(rounds)` on a thread (the writer), returning when it is done.
fn churn(database: &str, rounds: u32) -> std::thread::JoinHandle<()> {
    let database = database.to_string();
    std::thread::spawn(move || {
        sql(
            &mariadb().source,
            &database,
            &format!("CALL churn({rounds})"),
        );
    })
}

async fn wait_mysql_equal(name: &str, database: &str, target_database: &str) {
    let result = wait_until("MariaDB source and target to be equal", Duration::from_secs(180), || async {
        for (table, key) in [("items", "id"), ("pairs", "a, b"), ("emails", "id")] {
            let left = mysql_rows(&mariadb().source, database, table, key);
            let right = mariadb().target.execute(&format!("SET time_zone = '+00:00'; USE `{target_database}`; SELECT * FROM {table} ORDER BY {key}")).ok()?;
            if left != right {
                return None;
            }
        }
        Some(())
    })
    .await;
    if let Err(error) = result {
        let left = mysql_rows(&mariadb().source, database, "items", "id");
        let right = mariadb()
            .target
            .execute(&format!(
                "USE `{target_database}`; SELECT * FROM items ORDER BY id"
            ))
            .unwrap_or_default();
        let first = left.lines().zip(right.lines()).find(|(l, r)| l != r);
        panic!(
            "{error}: {} vs {} lines, first difference {first:?}\n{}",
            left.lines().count(),
            right.lines().count(),
            log_tail(name)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_mariadb_copies_streams_and_survives_kill_nine() {
    let name = "my_to_my";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    let target = servers.target.url(&format!("{name}_copy"));
    sql(&servers.source, name, MYSQL_ITEMS);

    let writer = churn(name, 1500);
    let mut run = spawn_run(name, &source, &target);
    // Killed twice while copying or streaming under writes, then resumed.
    for delay in [1500, 2500] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        kill(&mut run);
        run = spawn_run(name, &source, &target);
    }
    writer.join().expect("writer");
    sql(&servers.source, name, "UPDATE items SET kind = 'b', tags = 'x,y', bits = b'111111111111', dur = '-838:59:59', yr = 0 WHERE id <= 100; TRUNCATE TABLE pairs; INSERT INTO pairs VALUES ('after', 1, 'truncate');");
    wait_mysql_equal(name, name, &format!("{name}_copy")).await;
    // ferry's own proof agrees, checked while the stream runs and writes go on.
    let writer = churn(name, 200);
    let verified = ferry(
        "verify",
        &source,
        &target,
        &["--name", name, "--while-streaming", "--chunk-rows", "4000"],
    )
    .output()
    .unwrap();
    writer.join().expect("writer");
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    wait_mysql_equal(name, name, &format!("{name}_copy")).await;
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));

    // The target table has the source's definition, indexes included.
    let definition = sql(
        &servers.target,
        &format!("{name}_copy"),
        "SHOW CREATE TABLE items",
    );
    assert!(
        definition.contains("UNIQUE KEY `by_qty_id`") && definition.contains("KEY `by_note`"),
        "{definition}"
    );
    assert!(definition.contains("CHARACTER SET latin1"), "{definition}");
}

/// One row of the MariaDB items table and of its PostgreSQL copy as the same text.
const ITEM_COLUMNS: &[(&str, &str)] = &[
    ("id", "id"),
    (
        "HEX(CONVERT(note USING utf8mb4))",
        "upper(encode(convert_to(note, 'UTF8'), 'hex'))",
    ),
    ("qty", "qty"),
    ("price", "price"),
    ("big", "big"),
    ("flag", "flag"),
    ("LPAD(BIN(bits), 12, '0')", "bits"),
    ("kind", "kind"),
    ("tags", "tags"),
    ("day", "day"),
    (
        "DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(at, 'YYYY-MM-DD HH24:MI:SS.US')",
    ),
    (
        "DATE_FORMAT(stamp, '%Y-%m-%d %H:%i:%s.%f')",
        "to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    ),
    ("dur", "dur"),
    ("yr + 0", "yr"),
    ("doc", "doc"),
    ("MD5(data)", "md5(data)"),
    ("HEX(fixed)", "upper(encode(fixed, 'hex'))"),
    ("CAST(ratio AS DOUBLE)", "ratio::float8"),
    ("score", "score"),
    ("MD5(body)", "md5(body)"),
];

pub(crate) fn mysql_select(columns: &[(&str, &str)], table: &str, key: &str) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|(mysql, _)| format!("IFNULL(CONVERT({mysql} USING utf8mb4), '~')"))
        .collect();
    format!(
        "SELECT CONCAT_WS('|', {}) FROM {table} ORDER BY {key}",
        parts.join(", ")
    )
}

pub(crate) fn postgres_select(columns: &[(&str, &str)], table: &str, key: &str) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|(_, postgres)| format!("COALESCE(({postgres})::text, '~')"))
        .collect();
    format!(
        "SELECT concat_ws('|', {}) FROM {table} ORDER BY {key}",
        parts.join(", ")
    )
}

async fn postgres_lines(client: &tokio_postgres::Client, query: &str) -> Option<Vec<String>> {
    let rows = client.query(query, &[]).await.ok()?;
    Some(rows.iter().map(|row| row.get::<_, String>(0)).collect())
}

/// Waits until each (MariaDB query, PostgreSQL query) pair returns the same lines; on timeout,
/// fails with the first differing row and ferry's log.
pub(crate) async fn wait_engines_equal(
    name: &str,
    (server, database): (&MariaDbServer, &str),
    client: &tokio_postgres::Client,
    queries: &[(String, String)],
) {
    let read = |mysql: &str, postgres: &str| {
        let mysql = try_sql(server, database, mysql).map(|output| mysql_lines(&output));
        let postgres = postgres.to_string();
        async move { (mysql, postgres_lines(client, &postgres).await) }
    };
    let result = wait_until(
        "MariaDB and PostgreSQL to be equal",
        Duration::from_secs(180),
        || async {
            for (mysql, postgres) in queries {
                let (Ok(left), Some(right)) = read(mysql, postgres).await else {
                    return None;
                };
                if left != right {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    if let Err(error) = result {
        for (mysql, postgres) in queries {
            let (left, right) = read(mysql, postgres).await;
            let left = left.unwrap_or_else(|error| panic!("{error}"));
            let right = right.unwrap_or_default();
            if let Some(first) = left.iter().zip(&right).find(|(l, r)| l != r) {
                panic!(
                    "{error}: {} vs {} rows, first difference {first:?}\n{}",
                    left.len(),
                    right.len(),
                    log_tail(name)
                );
            }
            if left.len() != right.len() {
                panic!(
                    "{error}: {} vs {} rows\n{}",
                    left.len(),
                    right.len(),
                    log_tail(name)
                );
            }
        }
        panic!("{error}\n{}", log_tail(name));
    }
}

/// Waits until every table of migration `name` is copied on the PostgreSQL target (its keys
/// and indexes are created at the end of its copy: equal rows alone do not mean that).
pub(crate) async fn wait_copied_on_postgres(name: &str, client: &tokio_postgres::Client) {
    wait_until("the copy to finish", Duration::from_secs(180), || async {
        client
            .query_opt(
                "SELECT 1 FROM _ferry.table_state WHERE migration = $1 HAVING count(*) > 0 AND bool_and(state = 'copied')",
                &[&name],
            )
            .await
            .ok()?
            .map(|_| ())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
}

/// The `mariadb` client escapes tabs, newlines and backslashes in batch output: undo it.
pub(crate) fn mysql_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .map(|line| line.replace("\\\\", "\\"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_postgres_maps_every_type_streams_and_survives_kill_nine() {
    let name = "my_to_pg";
    let (source, target) = mariadb_source_postgres_target(name).await;
    sql(&mariadb().source, name, MYSQL_ITEMS);
    let client = servers().target.connect(name).await.unwrap();

    let check = ferry("check", &source, &target, &[]).output().unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let writer = churn(name, 800);
    let mut run = spawn_run(name, &source, &target);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    kill(&mut run);
    run = spawn_run(name, &source, &target);
    writer.join().expect("writer");
    sql(&mariadb().source, name, "UPDATE items SET kind = 'b', dur = '-838:59:59' WHERE id <= 100; DELETE FROM pairs WHERE b % 3 = 0;");

    let pairs: &[(&str, &str)] = &[("a", "a"), ("b", "b"), ("v", "v")];
    // One table's rows as text on MariaDB and on PostgreSQL.
    let selects = |table: &str, columns: &[(&str, &str)], key: &str| {
        (
            mysql_select(columns, table, key),
            postgres_select(columns, &format!("{name}.{table}"), key),
        )
    };
    wait_engines_equal(
        name,
        (&mariadb().source, name),
        &client,
        &[
            selects("items", ITEM_COLUMNS, "id"),
            selects("pairs", pairs, "a, b"),
        ],
    )
    .await;
    wait_copied_on_postgres(name, &client).await;
    // ferry's own proof across engines, while the stream runs and the application writes on.
    // (Not `emails`: every round rewrites the same few keys, so no re-check can catch a moment
    // when source and target agree on them until the writes stop.)
    let writer = churn(name, 300);
    let tables = format!("{name}.items,{name}.pairs");
    let verified = ferry(
        "verify",
        &source,
        &target,
        &["--name", name, "--while-streaming", "--tables", &tables],
    )
    .output()
    .unwrap();
    writer.join().expect("writer");
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    // The writes are over: every table catches up before ferry stops.
    let emails: &[(&str, &str)] = &[("id", "id"), ("email", "email")];
    wait_engines_equal(
        name,
        (&mariadb().source, name),
        &client,
        &[
            selects("items", ITEM_COLUMNS, "id"),
            selects("emails", emails, "id"),
        ],
    )
    .await;
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));

    // Types as documented, and the identity moved past the copied keys.
    let types: Vec<(String, String)> = client
        .query("SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'items' ORDER BY ordinal_position", &[&name])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let type_of = |column: &str| {
        types
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, kind)| kind.as_str())
            .unwrap_or("?")
    };
    assert_eq!(type_of("big"), "numeric");
    assert_eq!(type_of("id"), "bigint");
    assert_eq!(type_of("dur"), "interval");
    assert_eq!(type_of("stamp"), "timestamp with time zone");
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = 'items'",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(indexes, 3, "primary key, by_note and by_qty_id");

    // ferry verify across engines agrees (every type rendered alike by both servers), and finds
    // a changed microsecond, a changed float, a changed byte, a missing and an extra row.
    let verify = || {
        let (code, report, _) = run_verify(&mut ferry(
            "verify",
            &source,
            &target,
            &["--name", name, "--json"],
        ));
        (code, report)
    };
    let (code, report) = verify();
    assert_eq!(code, Some(0), "{report:#}");
    // Doubles where MySQL and PostgreSQL switch between plain and exponent form differently,
    // -0, FLOAT widened to double, and text keys with commas and quotes.
    sql(
        &mariadb().source,
        name,
        "CREATE TABLE floats (k VARCHAR(20), n INT, d DOUBLE, f FLOAT, PRIMARY KEY (k, n));
         INSERT INTO floats VALUES ('a,b', 1, 1e-5, 1e-5), ('a', 2, -1.5e-7, -1.5e-7), ('it''s', 3, 1e-4, 1e-4),
           ('x', 4, 1e-15, 1e15), ('y', 5, 9.99e-16, 3.4e38), ('z', 6, 1e15, 1.5), ('w', 7, 1234567890123456.5, 0),
           ('v', 8, -0.0, -0.0), ('u', 9, 123456789012345678901234, 1e-30);",
    );
    let copied = ferry(
        "copy",
        &source,
        &target,
        &["--name", "floats", "--tables", &format!("{name}.floats")],
    )
    .output()
    .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let (code, report) = verify();
    assert_eq!(code, Some(0), "{report:#}");
    client
        .batch_execute(&format!(
            "UPDATE {name}.items SET at = at + interval '1 microsecond' WHERE id = 11;
             UPDATE {name}.items SET ratio = ratio + 0.5 WHERE id = 12;
             UPDATE {name}.items SET data = '\\x00' WHERE id = 13;
             DELETE FROM {name}.items WHERE id = 14;
             DELETE FROM {name}.pairs WHERE a = 'after';
             INSERT INTO {name}.pairs VALUES ('extra', 1, 'x');"
        ))
        .await
        .unwrap();
    let (code, report) = verify();
    assert_eq!(code, Some(1), "{report:#}");
    let keys = |table: &str, kind: &str| keys_of(&report, table, kind);
    assert_eq!(
        keys("items", "different"),
        vec!["(11)", "(12)", "(13)"],
        "{report:#}"
    );
    assert_eq!(keys("items", "missing"), vec!["(14)"]);
    assert_eq!(keys("pairs", "extra"), vec!["('extra',1)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_mariadb_keeps_keys_distinct_streams_and_survives_kill_nine() {
    let name = "pg_to_my";
    let source = servers().source.create_database(name).await.unwrap();
    let client = servers().source.connect(name).await.unwrap();
    let target = mariadb().target.url(name);
    client
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('ok', 'meh', 'bad');
             CREATE TABLE docs (code text PRIMARY KEY, id uuid, amount numeric(30,10), happened timestamptz,
                                local timestamp(3), tags int[], mood mood, doc jsonb, span interval, ok boolean,
                                raw bytea, small smallint, ratio double precision, note varchar(40));
             CREATE INDEX docs_happened ON docs (happened);
             INSERT INTO docs SELECT 'code-' || g, md5(g::text)::uuid, g * 1234567.0123456789, timestamptz '2024-01-01 00:00:00+02' + g * interval '1.5 second',
                    timestamp '2000-02-29 12:00:00.123' + g * interval '1 day', ARRAY[g, -g], (ARRAY['ok','meh','bad'])[1 + g % 3]::mood,
                    jsonb_build_object('g', g, 'nested', jsonb_build_array('é', g / 3.0)), g * interval '1 minute 1.5 second', g % 2 = 0,
                    decode(md5(g::text), 'hex'), (g % 30000)::smallint, g / 8.0, repeat('x', g % 40)
             FROM generate_series(1, 10000) g;
             INSERT INTO docs (code, note) VALUES ('abc', 'lower'), ('ABC', 'upper'), ('abc ', 'trailing space'), ('ÄBC', 'umlaut'), (E'tab\\there', 'tab');",
        )
        .await
        .unwrap();

    let mut run = spawn_run(name, &source, &target);
    let writer = {
        let client = servers().source.connect(name).await.unwrap();
        tokio::spawn(async move {
            for round in 0..600 {
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         UPDATE docs SET amount = amount + 1, doc = doc || '{{\"u\": {round}}}', happened = now() WHERE code = 'code-{}';
                         DELETE FROM docs WHERE code = 'code-{}';
                         INSERT INTO docs (code, tags, mood, raw) VALUES ('new-{round}', ARRAY[{round}], 'bad', '\\x00ff') ON CONFLICT (code) DO UPDATE SET small = 1;
                         UPDATE docs SET code = code || '-moved' WHERE code = 'code-{}';
                         COMMIT;",
                        1 + (round * 7919) % 10000,
                        1 + (round * 104729) % 10000,
                        1 + (round * 31) % 10000
                    ))
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    kill(&mut run);
    run = spawn_run(name, &source, &target);
    writer.await.unwrap();

    // (MariaDB, PostgreSQL) renderings of each column.
    let columns: &[(&str, &str)] = &[
        (
            "HEX(code)",
            "upper(encode(convert_to(code, 'UTF8'), 'hex'))",
        ),
        ("id", "id"),
        ("amount", "amount"),
        (
            "DATE_FORMAT(happened, '%Y-%m-%d %H:%i:%s.%f')",
            "to_char(happened AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
        ),
        (
            "DATE_FORMAT(`local`, '%Y-%m-%d %H:%i:%s.%f')",
            "to_char(local, 'YYYY-MM-DD HH24:MI:SS.US')",
        ),
        ("tags", "tags"),
        ("mood", "mood"),
        ("doc", "doc"),
        ("span", "span"),
        ("ok", "ok::int"),
        ("HEX(raw)", "upper(encode(raw, 'hex'))"),
        ("small", "small"),
        ("ratio", "ratio"),
        ("note", "note"),
    ];
    wait_engines_equal(
        name,
        (&mariadb().target, name),
        &client,
        &[(
            mysql_select(columns, "docs", "CAST(code AS BINARY)"),
            postgres_select(columns, "docs", "convert_to(code, 'UTF8')"),
        )],
    )
    .await;
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    let keys = sql(
        &mariadb().target,
        name,
        "SELECT COUNT(*) FROM docs WHERE code IN ('abc', 'ABC', 'abc ')",
    );
    assert_eq!(
        keys.trim(),
        "3",
        "keys that differ only in case or trailing space stay distinct"
    );

    // ferry verify from PostgreSQL to MariaDB agrees, then finds planted differences by key.
    let verify = || {
        let (code, report, _) = run_verify(&mut ferry(
            "verify",
            &source,
            &target,
            &["--name", name, "--json"],
        ));
        (code, report)
    };
    let (code, report) = verify();
    assert_eq!(code, Some(0), "{report:#}");
    sql(
        &mariadb().target,
        name,
        "UPDATE docs SET happened = TIMESTAMPADD(MICROSECOND, 1, happened) WHERE code = 'code-5';
         UPDATE docs SET ratio = ratio + 0.5 WHERE code = 'code-6';
         DELETE FROM docs WHERE code = 'abc ';
         INSERT INTO docs (code) VALUES ('extra');",
    );
    let (code, report) = verify();
    assert_eq!(code, Some(1), "{report:#}");
    let differences: Vec<(String, String)> = report["tables"][0]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|difference| {
            (
                difference["kind"].as_str().unwrap().to_string(),
                difference["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut differences = differences;
    differences.sort();
    assert_eq!(
        differences,
        vec![
            ("different".to_string(), "('code-5')".to_string()),
            ("different".to_string(), "('code-6')".to_string()),
            ("extra".to_string(), "('extra')".to_string()),
            ("missing".to_string(), "('abc ')".to_string()),
        ],
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_run_refuse_what_cannot_move_and_a_purged_binlog_says_so() {
    let name = "my_refusals";
    let source = mariadb().source.create_database(name).unwrap();
    let postgres = servers().source.create_database(name).await.unwrap();
    sql(&mariadb().source, name, "CREATE TABLE keyless (a INT); CREATE TABLE zero (id INT PRIMARY KEY, d DATE); INSERT INTO zero VALUES (1, '0000-00-00');");

    // MariaDB to PostgreSQL: a table without a key is named by check (it moves, but each of
    // its updates scans the target table).
    let target = servers().target.create_database(name).await.unwrap();
    let check = ferry("check", &source, &target, &[]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains("warning[source.no_primary_key]") && text.contains("keyless"),
        "{text}"
    );
    // A zero date cannot be stored by PostgreSQL: refused with the table named, nothing invented.
    let copy = ferry(
        "copy",
        &source,
        &target,
        &["--tables", "zero", "--name", name],
    )
    .output()
    .unwrap();
    let error = String::from_utf8_lossy(&copy.stderr);
    assert!(
        !copy.status.success() && error.contains("zero date") && error.contains("zero"),
        "{error}"
    );
    // With the explicit policy zero_dates = "null", the zero date arrives as NULL.
    let config = std::env::temp_dir().join(format!("ferry-{name}-{}.toml", std::process::id()));
    std::fs::write(&config, "zero_dates = \"null\"\n").unwrap();
    let copy = ferry(
        "copy",
        &source,
        &target,
        &[
            "--tables",
            "zero",
            "--name",
            name,
            "-c",
            config.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let client = servers().target.connect(name).await.unwrap();
    let nulled: bool = client
        .query_one(
            &format!("SELECT d IS NULL FROM {name}.zero WHERE id = 1"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(nulled, "the zero date became NULL");

    // PostgreSQL to MariaDB: a numeric without precision cannot fit DECIMAL: refused up front.
    let client = servers().source.connect(name).await.unwrap();
    client
        .batch_execute("CREATE TABLE money (id int PRIMARY KEY, amount numeric)")
        .await
        .unwrap();
    let check = ferry("check", &postgres, &mariadb().target.url(name), &[])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        !check.status.success()
            && text.contains("target.unsupported_type")
            && text.contains("amount"),
        "{text}"
    );
    let run = ferry("copy", &postgres, &mariadb().target.url(name), &[])
        .output()
        .unwrap();
    assert!(
        !run.status.success() && String::from_utf8_lossy(&run.stderr).contains("precision"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // A stream whose binary log was purged: an operator error saying to copy again.
    let own = MariaDbServer::start_with(3, &[]).expect("start a MariaDB server of its own");
    let source = own.create_database(name).unwrap();
    sql(
        &own,
        name,
        "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1);",
    );
    let target = mariadb().target.url(&format!("{name}_purged"));
    let copy = ferry("run", &source, &target, &["--name", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut child = copy.unwrap();
    wait_until("the copy to finish", Duration::from_secs(60), || async {
        mariadb()
            .target
            .execute(&format!(
                "SELECT state FROM _ferry.tables WHERE migration = '{name}'"
            ))
            .ok()
            .filter(|state| state.contains("copied"))
    })
    .await
    .unwrap();
    stop(&mut child);
    own.execute("FLUSH BINARY LOGS; FLUSH BINARY LOGS;")
        .unwrap();
    let last = own.execute("SHOW MASTER STATUS").unwrap();
    let file = last.split_whitespace().next().unwrap().to_string();
    // The server keeps a file a replica thread still reads: purge until it is gone.
    wait_until(
        "the first binary log to be purged",
        Duration::from_secs(60),
        || async {
            own.execute(&format!("PURGE BINARY LOGS TO '{file}'"))
                .ok()?;
            (!own
                .execute("SHOW BINARY LOGS")
                .ok()?
                .contains("binlog.000001"))
            .then_some(())
        },
    )
    .await
    .unwrap();
    let mut resumed = ferry(
        "run",
        &source,
        &target,
        &["--name", name, "--max-retries", "0"],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(log_path(name)).unwrap())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = resumed.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = resumed.kill();
            panic!(
                "the resumed run did not stop within 60 s\n{}",
                log_tail(name)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = log_tail(name);
    let resumed = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    assert!(
        !resumed.status.success()
            && error.contains("source.log_purged")
            && error.contains("--restart"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transforms_rename_drop_and_filter_on_the_way() {
    let name = "my_transform";
    let (source, target) = mariadb_source_postgres_target(name).await;
    sql(&mariadb().source, name, "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50), secret VARCHAR(50), region CHAR(2),
          KEY by_name (name), KEY by_secret (secret), UNIQUE KEY by_region_id (region, id));
        INSERT INTO customers SELECT seq, CONCAT('name ', seq), 'hunter2', ELT(1 + seq % 3, 'EU', 'US', 'EU') FROM seq_1_to_3000;");
    let config = std::env::temp_dir().join(format!("ferry-{name}-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[[transform]]\ntable = \"{name}.customers\"\nrename = \"public.clients\"\ncolumns = {{ name = \"full_name\" }}\ndrop = [\"secret\"]\nfilter = \"region = 'EU' AND id < 100000\"\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(log_path(name)).unwrap();
    let mut run = ferry(
        "run",
        &source,
        &target,
        &["--name", "transform", "-c", config.to_str().unwrap()],
    )
    .stdout(log.try_clone().unwrap())
    .stderr(log)
    .spawn()
    .unwrap();
    let client = servers().target.connect(name).await.unwrap();
    wait_until("the copy", Duration::from_secs(120), || async {
        client
            .query_opt(
                "SELECT 1 FROM _ferry.table_state WHERE state = 'copied'",
                &[],
            )
            .await
            .ok()?
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    // Rows move into and out of the filter, are inserted on both sides of it, and deleted.
    sql(&mariadb().source, name, "UPDATE customers SET region = 'US' WHERE id BETWEEN 1 AND 30;
        UPDATE customers SET region = 'EU', name = 'moved in' WHERE id BETWEEN 31 AND 60 AND region = 'US';
        INSERT INTO customers VALUES (5000, 'new eu', 'x', 'EU'), (5001, 'new us', 'x', 'US');
        DELETE FROM customers WHERE id BETWEEN 61 AND 90;
        UPDATE customers SET secret = 'changed' WHERE id > 100;");
    let expected: Vec<String> = sql(
        &mariadb().source,
        name,
        "SELECT CONCAT(id, '|', name) FROM customers WHERE region = 'EU' ORDER BY id",
    )
    .lines()
    .map(str::to_string)
    .collect();
    let result = wait_until(
        "the filtered, renamed copy to match",
        Duration::from_secs(120),
        || async {
            let rows = postgres_lines(
                &client,
                "SELECT id || '|' || full_name FROM public.clients ORDER BY id",
            )
            .await?;
            (rows == expected).then_some(())
        },
    )
    .await;
    let columns: Vec<String> = client
        .query("SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'clients' ORDER BY ordinal_position", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    result.unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert_eq!(
        columns,
        vec!["id", "full_name", "region"],
        "secret is dropped, name renamed"
    );
    // Indexes follow the renames; the one on the dropped column is left out.
    let mut indexes: Vec<String> = client
        .query("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'clients' ORDER BY indexname", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    indexes.sort();
    assert_eq!(indexes.len(), 3, "{indexes:?}");
    assert!(
        indexes.iter().any(|index| index.contains("(full_name)")),
        "{indexes:?}"
    );
    assert!(indexes.iter().any(|index| index.starts_with("CREATE UNIQUE INDEX") && index.contains("(region, id)")), "{indexes:?}");
    assert!(
        !indexes.iter().any(|index| index.contains("secret")),
        "{indexes:?}"
    );
}

/// An ALTER made while ferry is stopped reorders an ENUM's labels. The binary log still holds a
/// row written under the old labels; decoded with the new ones it would silently change value.
/// The stream must stop on it instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alter_made_while_stopped_is_caught_before_older_events_decode_wrong() {
    let name = "my_alter";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    let target = servers.target.url(&format!("{name}_copy"));
    sql(
        &servers.source,
        name,
        "CREATE TABLE tickets (id INT PRIMARY KEY, state ENUM('open','held','closed') NOT NULL);
         INSERT INTO tickets VALUES (1, 'open'), (2, 'held');",
    );
    let mut run = spawn_run(name, &source, &target);
    let copied = wait_until("the copy", Duration::from_secs(120), || async {
        let rows = servers
            .target
            .execute(&format!("SELECT COUNT(*) FROM `{name}_copy`.tickets"))
            .ok()?;
        (rows.trim() == "2").then_some(())
    })
    .await;
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    copied.unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));

    // Written under the old labels (index 3 = 'closed'), then the labels are reordered.
    sql(
        &servers.source,
        name,
        "INSERT INTO tickets VALUES (3, 'closed');
         ALTER TABLE tickets MODIFY state ENUM('closed','held','open') NOT NULL;",
    );
    let resumed = ferry(
        "run",
        &source,
        &target,
        &["--name", name, "--chunk-rows", "3000"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        !resumed.status.success()
            && stderr.contains("source.schema_changed")
            && stderr.contains("ENUM labels differ"),
        "{stderr}"
    );
    let rows = sql(
        &servers.target,
        &format!("{name}_copy"),
        "SELECT id, state FROM tickets ORDER BY id",
    );
    assert!(
        !rows.contains("3\topen"),
        "row 3 was decoded with the new labels: {rows}"
    );
}

/// Common column defaults are translated both ways, so an application that leaves columns out
/// of an INSERT keeps working on the new engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_defaults_carry_across_engines_both_ways() {
    // MariaDB to PostgreSQL.
    let name = "my_defaults";
    let (source, target) = mariadb_source_postgres_target(name).await;
    sql(
        &mariadb().source,
        name,
        "CREATE TABLE orders (id INT PRIMARY KEY, state ENUM('new','paid') NOT NULL DEFAULT 'new',
           qty INT NOT NULL DEFAULT 1, price DECIMAL(8,2) DEFAULT -9.99, note VARCHAR(20) DEFAULT 'it''s',
           placed DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), flags BIT(3) DEFAULT b'101', extra TEXT)",
    );
    let copied = ferry("copy", &source, &target, &["--name", name])
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let client = servers().target.connect(name).await.unwrap();
    client
        .batch_execute(&format!("INSERT INTO {name}.orders (id) VALUES (1)"))
        .await
        .unwrap();
    let row = client
        .query_one(
            &format!("SELECT concat_ws('|', state, qty, price, note, placed IS NOT NULL, flags, extra IS NULL) FROM {name}.orders"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "new|1|-9.99|it's|t|101|t");

    // PostgreSQL to MariaDB.
    let name = "pg_defaults";
    let source = servers().source.create_database(name).await.unwrap();
    let target = mariadb().target.url(name);
    servers()
        .source
        .connect(name)
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, state varchar(10) NOT NULL DEFAULT 'open',
               credit numeric(8,2) DEFAULT -1.5, active boolean NOT NULL DEFAULT true,
               opened timestamp NOT NULL DEFAULT now(), memo text DEFAULT 'none', code text DEFAULT upper('x'),
               stamped timestamptz DEFAULT now())",
        )
        .await
        .unwrap();
    let copied = ferry("copy", &source, &target, &["--name", name])
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let row = sql(
        &mariadb().target,
        name,
        "INSERT INTO accounts (id) VALUES (1); SELECT CONCAT_WS('|', state, credit, active, opened IS NOT NULL, memo, code IS NULL, stamped IS NULL) FROM accounts",
    );
    // timestamptz values are stored in UTC on MySQL, which CURRENT_TIMESTAMP is not: no default.
    assert_eq!(row.trim(), "open|-1.50|1|1|none|1|1");
}

/// A failover: ferry streams from a MariaDB primary, the primary dies and its replica (GTID
/// replication with log_slave_updates) takes over. Pointed at the replica, ferry sees another
/// server than its checkpoint's, resumes by GTID, and the target converges to the replica's
/// rows: nothing lost, nothing doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_stream_resumes_on_the_replica_by_gtid() {
    let name = "my_failover";
    let primary = MariaDbServer::start_with(11, &[]).expect("start the primary");
    let replica =
        MariaDbServer::start_with(12, &["--log-slave-updates=1"]).expect("start the replica");
    let source = primary.create_database("shop").unwrap();
    replica
        .execute(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', MASTER_USE_GTID=slave_pos; START SLAVE;",
            primary.port()
        ))
        .unwrap();
    sql(
        &primary,
        "shop",
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_1000;",
    );
    let target_database = format!("{name}_copy");
    let target = mariadb().target.url(&target_database);
    let rows_of = |server: &MariaDbServer, database: &str| {
        try_sql(server, database, "SELECT * FROM t ORDER BY id").ok()
    };
    let converged = |server: &'static str, expected: &MariaDbServer| {
        let expected_rows = rows_of(expected, "shop");
        let target_rows = rows_of(&mariadb().target, &target_database);
        (expected_rows.is_some() && expected_rows == target_rows).then_some(server)
    };

    let mut run = spawn_run(name, &source, &target);
    let copied = wait_until("the copy", Duration::from_secs(120), || async {
        converged("primary", &primary)
    })
    .await;
    copied.unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    // A change through the stream: the checkpoint then carries its GTID.
    sql(
        &primary,
        "shop",
        "UPDATE t SET v = 'streamed' WHERE id <= 100",
    );
    let gtid = sql(&primary, "shop", "SELECT @@gtid_binlog_pos")
        .trim()
        .to_string();
    let caught_up = wait_until(
        "the checkpoint to reach the change's GTID",
        Duration::from_secs(120),
        || async {
            let stored = try_sql(
                &mariadb().target,
                "_ferry",
                &format!("SELECT position FROM streams WHERE migration = '{name}'"),
            )
            .ok()?;
            (stored.trim().ends_with(&format!("#{gtid}"))
                && converged("primary", &primary).is_some())
            .then_some(())
        },
    )
    .await;
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    caught_up.unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));

    // Changes ferry has not seen yet; the replica receives them, then the primary dies.
    sql(
        &primary,
        "shop",
        "UPDATE t SET v = 'while stopped' WHERE id BETWEEN 101 AND 200; DELETE FROM t WHERE id > 990; INSERT INTO t VALUES (5000, 'new');",
    );
    wait_until(
        "the replica to catch up",
        Duration::from_secs(60),
        || async {
            let primary_rows = rows_of(&primary, "shop");
            (primary_rows.is_some() && primary_rows == rows_of(&replica, "shop")).then_some(())
        },
    )
    .await
    .unwrap();
    primary.execute("SHUTDOWN").unwrap();
    replica
        .execute("STOP SLAVE; RESET SLAVE ALL; USE shop; UPDATE t SET v = 'after failover' WHERE id = 1;")
        .unwrap();

    let mut run = spawn_run(name, &replica.url("shop"), &target);
    let result = wait_until(
        "the target to follow the replica",
        Duration::from_secs(120),
        || async { converged("replica", &replica) },
    )
    .await;
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
    result.unwrap_or_else(|error| panic!("{error}\n{}", log_tail(name)));
    assert!(
        log_tail(name).contains("resuming by GTID"),
        "{}",
        log_tail(name)
    );
}
