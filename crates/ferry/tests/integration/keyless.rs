//! Tables without any key (pgbench's `pgbench_history`, logs, staging tables): copied whole,
//! streamed change by change with the whole old row as identity, and compared as multisets
//! (ordered by every column, duplicates included) independently of ferry. Duplicate rows stay
//! duplicates, an update or delete of one of several identical rows changes exactly one, and a
//! kill -9 during the copy (the table then copied under a later snapshot) or during the stream
//! neither loses nor doubles a row.

use std::time::Duration;

use crate::common::{kill, run_verify, stop, Pair};

const SCHEMA: &str = "
CREATE TABLE public.accounts (id int PRIMARY KEY, balance int NOT NULL);
INSERT INTO public.accounts SELECT g, 0 FROM generate_series(1, 2000) g;
CREATE TABLE public.history (tid int, delta int, mtime timestamp, filler char(22), note text, doc json, ratio real);
ALTER TABLE public.history REPLICA IDENTITY FULL;
INSERT INTO public.history SELECT g % 10, g, '2020-01-01'::timestamp + g * interval '1 minute', 'x', NULL, '{\"a\": 1}', 0.1
  FROM generate_series(1, 500) g;
-- Three identical rows, and one with NULLs everywhere.
INSERT INTO public.history SELECT 1, 1, '2020-01-01', 'dup', 'same', '[1, 2]', 1.5 FROM generate_series(1, 3);
INSERT INTO public.history VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL);
-- Equal is not identical: 1.0 and 1.00 are two rows.
CREATE TABLE public.amounts (v numeric, t text);
ALTER TABLE public.amounts REPLICA IDENTITY FULL;
INSERT INTO public.amounts VALUES (1.0, 'x'), (1.00, 'x');
";

const TABLES: &[(&str, &str)] = &[
    ("public.accounts", "id"),
    ("public.amounts", "v::text, t"),
    (
        "public.history",
        "tid, delta, mtime, filler, note, doc::text, ratio",
    ),
];

/// Changes that only come out right if each touches exactly one of several identical rows.
fn changes(round: i32) -> String {
    // In round 1 (before the table is copied afresh) a TRUNCATE that the copy already holds:
    // replayed, it would empty the copy.
    let truncate = if round == 1 {
        "TRUNCATE public.amounts; INSERT INTO public.amounts VALUES (1.0, 'x'), (1.00, 'x'), (2.50, 'y');"
    } else {
        ""
    };
    format!(
        "{truncate}
         INSERT INTO public.amounts VALUES (1.0, 'r{round}'), (1.00, 'r{round}');
         DELETE FROM public.amounts WHERE ctid = (SELECT ctid FROM public.amounts WHERE v::text = '1.00' AND t = 'r{round}' LIMIT 1);
         INSERT INTO public.history VALUES ({round}, 7, '2021-01-01', 'new', 'twin', '{{}}', 2.5), ({round}, 7, '2021-01-01', 'new', 'twin', '{{}}', 2.5);
         UPDATE public.history SET note = 'one of three' WHERE ctid = (SELECT ctid FROM public.history WHERE filler = 'dup' AND note = 'same' LIMIT 1);
         DELETE FROM public.history WHERE ctid = (SELECT ctid FROM public.history WHERE note = 'twin' LIMIT 1);
         UPDATE public.history SET delta = delta + 1 WHERE tid = 3;
         DELETE FROM public.history WHERE tid = 4 AND delta % 20 = 4;
         UPDATE public.history SET note = 'was null' WHERE ctid = (SELECT ctid FROM public.history WHERE tid IS NULL AND note IS NULL LIMIT 1);
         INSERT INTO public.history VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         BEGIN; INSERT INTO public.history SELECT 99, g, NULL, 'tx', NULL, NULL, NULL FROM generate_series(1, 300) g;
                UPDATE public.history SET delta = -delta WHERE tid = 99 AND delta <= 100;
                DELETE FROM public.history WHERE tid = 99 AND delta > 250; COMMIT;
         UPDATE public.accounts SET balance = balance + {round} WHERE id % 7 = 0;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_a_key_move_exactly_once_through_kills() {
    let pair = Pair::new("keyless").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    let check = pair
        .ferry("check", &["--name", "keyless"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains("warning[source.no_primary_key]"),
        "{report}"
    );

    // Die after a few chunks of `accounts`, before `history` is copied: the next run copies it
    // under a later snapshot while the stream starts from the first one.
    let arguments = [
        "--name",
        "keyless",
        "--chunk-rows",
        "100",
        "--parallel",
        "1",
    ];
    let mut run = pair.spawn_run(&arguments, Some("copy.after_chunk_commit:5"));
    let mut exited = false;
    for _ in 0..1200 {
        if run.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited, "ferry did not reach its failpoint\n{}", pair.log());
    pair.source.batch_execute(&changes(1)).await.unwrap();

    let mut run = pair.spawn_run(&arguments, None);
    pair.wait_streaming(3).await;
    pair.wait_equal(TABLES).await;
    pair.source.batch_execute(&changes(2)).await.unwrap();
    pair.wait_equal(TABLES).await;

    // kill -9 while streaming, changes meanwhile, and back.
    kill(&mut run);
    pair.source.batch_execute(&changes(3)).await.unwrap();
    let mut run = pair.spawn_run(&arguments, None);
    pair.source.batch_execute(&changes(4)).await.unwrap();
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());

    let (code, report, stderr) =
        run_verify(&mut pair.ferry("verify", &["--name", "keyless", "--json"]));
    assert_eq!(code, Some(0), "{report}\n{stderr}");
    // A difference in a table without a key is found (as a whole-table difference).
    pair.target
        .batch_execute(
            "DELETE FROM public.history WHERE ctid = (SELECT ctid FROM public.history WHERE filler = 'dup' LIMIT 1)",
        )
        .await
        .unwrap();
    let (code, report, stderr) =
        run_verify(&mut pair.ferry("verify", &["--name", "keyless", "--json"]));
    assert_eq!(code, Some(1), "{report}\n{stderr}");
}

/// MariaDB to MariaDB and to PostgreSQL: the same guarantees with binary-log positions (each
/// chunk's snapshot position is read with it) and full row images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_rows_without_a_key_move_exactly_once_through_kills() {
    use crate::mysql::{ferry, log_tail, mariadb, sql};
    let name = "my_keyless";
    let source = mariadb().source.create_database(name).unwrap();
    let target = mariadb().target.create_database(name).unwrap();
    let postgres_target = crate::common::servers()
        .target
        .create_database(name)
        .await
        .unwrap();
    sql(
        &mariadb().source,
        name,
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL);
         INSERT INTO accounts SELECT seq, 0 FROM seq_1_to_2000;
         CREATE TABLE audit_log (who VARCHAR(20), what TEXT, amount DECIMAL(8,2), ratio FLOAT, at DATETIME(3));
         INSERT INTO audit_log SELECT CONCAT('u', seq % 10), 'login', seq / 4, 0.1, '2024-01-01 00:00:00.5' FROM seq_1_to_500;
         INSERT INTO audit_log SELECT 'dup', 'same', 1.5, 1.1, '2024-01-01' FROM seq_1_to_3;
         INSERT INTO audit_log VALUES (NULL, NULL, NULL, NULL, NULL);",
    );
    let changes = |round: i32| {
        format!(
            "INSERT INTO audit_log VALUES ('r{round}', 'twin', 2.5, 1.1, '2025-01-01'), ('r{round}', 'twin', 2.5, 1.1, '2025-01-01');
             INSERT INTO audit_log VALUES ('Case{round}', 'x', 1, 1, NULL), ('case{round}', 'x', 1, 1, NULL);
             DELETE FROM audit_log WHERE BINARY who = 'case{round}' LIMIT 1;
             UPDATE audit_log SET what = 'one of three' WHERE who = 'dup' AND what = 'same' LIMIT 1;
             DELETE FROM audit_log WHERE what = 'twin' LIMIT 1;
             UPDATE audit_log SET amount = amount + 1 WHERE who = 'u3';
             UPDATE audit_log SET what = 'was null' WHERE who IS NULL AND what IS NULL LIMIT 1;
             INSERT INTO audit_log VALUES (NULL, NULL, NULL, NULL, NULL);
             START TRANSACTION; INSERT INTO audit_log SELECT 'tx', seq, seq, 0.5, NULL FROM seq_1_to_300;
               DELETE FROM audit_log WHERE who = 'tx' AND amount > 250; COMMIT;
             UPDATE accounts SET balance = balance + {round} WHERE id % 7 = 0;"
        )
    };
    let rows = |server: &ferry_testkit::MariaDbServer| {
        sql(
            server,
            name,
            "SELECT who, what, amount, ratio, at FROM audit_log ORDER BY BINARY who, BINARY what, 3, 4, 5; SELECT * FROM accounts ORDER BY id;",
        )
    };
    let postgres_rows = |client: tokio_postgres::Client| async move {
        let mut lines: Vec<String> = client
            .query(
                &format!("SELECT concat_ws('|', coalesce(who, 'NULL'), coalesce(what, 'NULL'), coalesce(amount::text, 'NULL'), coalesce(ratio::text, 'NULL'), coalesce(to_char(at, 'YYYY-MM-DD HH24:MI:SS.MS'), 'NULL')) FROM {name}.audit_log"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        lines.sort();
        lines
    };
    let mysql_lines = || {
        let mut lines: Vec<String> = sql(
            &mariadb().source,
            name,
            "SELECT CONCAT_WS('|', IFNULL(who, 'NULL'), IFNULL(what, 'NULL'), IFNULL(amount, 'NULL'), IFNULL(ratio, 'NULL'),
                    IFNULL(CONCAT(DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.'), LPAD(FLOOR(MICROSECOND(at) / 1000), 3, '0')), 'NULL'))
             FROM audit_log",
        )
        .lines()
        .map(str::to_string)
        .collect();
        lines.sort();
        lines
    };
    for (target, label) in [(&target, "mariadb"), (&postgres_target, "postgres")] {
        let migration = format!("{name}_{label}");
        let arguments = [
            "--name",
            migration.as_str(),
            "--chunk-rows",
            "100",
            "--parallel",
            "1",
        ];
        let spawn = |failpoint: Option<&str>| {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(crate::common::log_path(&migration))
                .unwrap();
            let mut command = ferry("run", &source, target, &arguments);
            if let Some(failpoint) = failpoint {
                command.env("FERRY_FAILPOINT", failpoint);
            }
            command
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        };
        let mut run = spawn(Some("copy.after_chunk_commit:5"));
        let mut exited = false;
        for _ in 0..1200 {
            if run.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            exited,
            "ferry did not reach its failpoint\n{}",
            log_tail(&migration)
        );
        sql(&mariadb().source, name, &changes(1));
        let mut run = spawn(None);
        sql(&mariadb().source, name, &changes(2));
        let wait = |what: &'static str| {
            let migration = migration.clone();
            async move {
                ferry_testkit::wait_until(what, Duration::from_secs(120), || async {
                    let equal = if label == "mariadb" {
                        rows(&mariadb().source) == rows(&mariadb().target)
                    } else {
                        let client = crate::common::servers().target.connect(name).await.ok()?;
                        mysql_lines() == postgres_rows(client).await
                    };
                    equal.then_some(())
                })
                .await
                .unwrap_or_else(|error| panic!("{error}\n{}", log_tail(&migration)));
            }
        };
        wait("the target to equal the source").await;
        kill(&mut run);
        sql(&mariadb().source, name, &changes(3));
        let mut run = spawn(None);
        sql(&mariadb().source, name, &changes(4));
        wait("the target to equal the source after a kill").await;
        assert_eq!(stop(&mut run), Some(0), "{}", log_tail(&migration));
    }
}

/// PostgreSQL to MariaDB: rows without a key, with padded CHAR and case-different text, matched
/// one by one on the MySQL side (its collation neither folds case nor keeps CHAR's padding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_without_a_key_reach_mariadb_exactly() {
    use crate::mysql::{log_tail, mariadb, sql};
    let name = "pg_keyless_my";
    let source = servers_source(name).await;
    let target = mariadb().target.create_database(name).unwrap();
    let client = crate::common::servers().source.connect(name).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE public.log (code char(10), who text, n int);
             ALTER TABLE public.log REPLICA IDENTITY FULL;
             INSERT INTO public.log SELECT 'c' || (g % 3), CASE WHEN g % 2 = 0 THEN 'Ann' ELSE 'ann' END, g % 4 FROM generate_series(1, 60) g;",
        )
        .await
        .unwrap();
    let log = crate::common::log_path(name);
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "run", "--source", &source, "--target", &target, "--name", name,
        ])
        .env("FERRY_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    crate::mysql_values::wait_mysql_target_streaming(name).await;
    client
        .batch_execute(
            "INSERT INTO public.log VALUES ('twin', 'Bob', 1), ('twin', 'Bob', 1), ('twin', 'bob', 1);
             DELETE FROM public.log WHERE ctid = (SELECT ctid FROM public.log WHERE who = 'bob' LIMIT 1);
             DELETE FROM public.log WHERE ctid = (SELECT ctid FROM public.log WHERE code = 'twin' AND who = 'Bob' LIMIT 1);
             UPDATE public.log SET n = 99 WHERE ctid = (SELECT ctid FROM public.log WHERE code = 'c1' AND who = 'ann' LIMIT 1);
             DELETE FROM public.log WHERE ctid = (SELECT ctid FROM public.log WHERE who = 'Ann' AND n = 0 LIMIT 1);",
        )
        .await
        .unwrap();
    let expected: Vec<String> = client
        .query(
            "SELECT concat_ws('|', rtrim(code), who, n, count(*)) FROM public.log GROUP BY code, who, n ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    ferry_testkit::wait_until("MariaDB to hold the same rows", std::time::Duration::from_secs(60), || async {
        let mut lines: Vec<String> = sql(
            &mariadb().target,
            name,
            "SELECT CONCAT_WS('|', code, who, n, COUNT(*)) FROM log GROUP BY BINARY code, BINARY who, n",
        )
        .lines()
        .map(str::to_string)
        .collect();
        lines.sort();
        (lines == expected).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{expected:?}\n{}", log_tail(name)));
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
}

async fn servers_source(name: &str) -> String {
    crate::common::servers()
        .source
        .create_database(name)
        .await
        .unwrap()
}
