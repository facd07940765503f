//! What real MySQL/MariaDB schemas hold (sakila's FULLTEXT index, prefix indexes, tables keyed
//! by a UNIQUE index instead of a primary key, `ON UPDATE CURRENT_TIMESTAMP`, VIRTUAL generated
//! columns) moves MariaDB to MariaDB with the definitions intact and every row equal, compared
//! through the `mariadb` client; and into PostgreSQL with each index as its nearest equivalent.

use crate::common::stop;
use crate::mysql::{ferry, log_tail, mariadb, mariadb_source_postgres_target, spawn_run, sql};
use crate::mysql_values::wait_mysql_target_streaming;

const SCHEMA: &str = "
CREATE TABLE film_text (
  film_id SMALLINT NOT NULL, title VARCHAR(255) NOT NULL, description TEXT,
  last_update TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  title_length INT AS (CHAR_LENGTH(title)) VIRTUAL,
  PRIMARY KEY (film_id), KEY by_description (description(20)), FULLTEXT KEY idx_title_description (title, description)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE address (
  address_id INT PRIMARY KEY, district VARCHAR(20) NOT NULL, location GEOMETRY NOT NULL, spot POINT NULL,
  SPATIAL KEY idx_location (location)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO address SELECT seq, CONCAT('d', seq), ST_GeomFromText(CONCAT('POINT(', seq, ' ', seq / 3, ')')),
  IF(seq % 2 = 0, ST_GeomFromText('POINT(1.5 -2.25)', 4326), NULL) FROM seq_1_to_200;
CREATE TABLE staff_shift (
  staff_id INT NOT NULL, shift_date DATE NOT NULL, note VARCHAR(100),
  UNIQUE KEY by_staff_day (staff_id, shift_date), KEY by_note (note)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO film_text (film_id, title, description, last_update)
  SELECT seq, CONCAT('Film ', seq), CONCAT(REPEAT('a long description ', 50), seq), '2024-01-01 00:00:00'
  FROM seq_1_to_400;
INSERT INTO staff_shift SELECT seq % 20, DATE_ADD('2024-01-01', INTERVAL seq DAY), CONCAT('n', seq) FROM seq_1_to_300;
";

fn rows(server: &ferry_testkit::MariaDbServer, database: &str) -> String {
    sql(
        server,
        database,
        "SELECT film_id, title, description, last_update, title_length FROM film_text ORDER BY film_id;
         SELECT staff_id, shift_date, note FROM staff_shift ORDER BY staff_id, shift_date;
         SELECT address_id, ST_AsText(location), ST_SRID(location), HEX(spot), ST_SRID(spot) FROM address ORDER BY address_id;",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulltext_prefix_unique_keys_and_on_update_move_mariadb_to_mariadb() {
    let name = "my_real_schema";
    let source = mariadb().source.create_database(name).unwrap();
    let target = mariadb().target.create_database(name).unwrap();
    sql(&mariadb().source, name, SCHEMA);

    let check = ferry("check", &source, &target, &["--name", name])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut run = spawn_run(name, &source, &target);
    wait_mysql_target_streaming(name).await;
    sql(
        &mariadb().source,
        name,
        "UPDATE film_text SET title = 'Renamed' WHERE film_id = 5;
         DELETE FROM film_text WHERE film_id = 6;
         INSERT INTO film_text (film_id, title, description) VALUES (1000, 'New', 'streamed');
         UPDATE staff_shift SET note = 'changed' WHERE staff_id = 3;
         UPDATE staff_shift SET shift_date = '2030-01-01' WHERE staff_id = 4 AND shift_date = '2024-01-05';
         DELETE FROM staff_shift WHERE staff_id = 5;
         UPDATE address SET location = ST_GeomFromText('LINESTRING(0 0, 1 1, 2 5)'), spot = ST_GeomFromText('POINT(9 9)', 3857) WHERE address_id = 3;
         INSERT INTO address VALUES (1000, 'new', ST_GeomFromText('POLYGON((0 0, 4 0, 4 4, 0 0))'), NULL);",
    );
    let expected = rows(&mariadb().source, name);
    ferry_testkit::wait_until(
        "the target to equal the source",
        std::time::Duration::from_secs(120),
        || async { (rows(&mariadb().target, name) == expected).then_some(()) },
    )
    .await
    .unwrap_or_else(|error| {
        let target = rows(&mariadb().target, name);
        let differing: Vec<(&str, &str)> = expected
            .lines()
            .zip(target.lines())
            .filter(|(left, right)| left != right)
            .take(5)
            .collect();
        panic!(
            "{error}\nsource {} lines, target {} lines, first differences {differing:?}\n{}",
            expected.lines().count(),
            target.lines().count(),
            log_tail(name)
        )
    });
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));

    // The definition is the same, index kinds, prefix, ON UPDATE and VIRTUAL included.
    let definition = |server| {
        sql(server, name, "SHOW CREATE TABLE film_text")
            .replace("\\n", "\n")
            .lines()
            .filter(|line| !line.contains("ENGINE="))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(definition(&mariadb().source), definition(&mariadb().target));
    let address = |server| sql(server, name, "SHOW CREATE TABLE address");
    assert_eq!(address(&mariadb().source), address(&mariadb().target));
    let shift = sql(&mariadb().target, name, "SHOW CREATE TABLE staff_shift");
    assert!(
        shift.contains("PRIMARY KEY (`staff_id`,`shift_date`)") && shift.contains("KEY `by_note`"),
        "the unique index is the target's key: {shift}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulltext_and_prefix_indexes_get_their_postgres_equivalents() {
    let name = "my_real_schema_pg";
    let (source, target) = mariadb_source_postgres_target(name).await;
    // (Generated columns do not cross engines yet: check refuses them.)
    sql(
        &mariadb().source,
        name,
        &SCHEMA.replace("title_length INT AS (CHAR_LENGTH(title)) VIRTUAL,", ""),
    );
    // Spatial columns land in PostGIS (created on the target), the SPATIAL key as GiST.
    let check = ferry("check", &source, &target, &["--name", name])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // A description longer than a PostgreSQL B-tree entry may be: a whole-column index on the
    // target would refuse it.
    sql(
        &mariadb().source,
        name,
        "UPDATE film_text SET description = REPEAT('x', 9000) WHERE film_id = 7;",
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
    let indexes: Vec<String> = client
        .query(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::text::regclass ORDER BY 1",
            &[&format!("{name}.film_text")],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(indexes.len(), 3, "{indexes:#?}");
    assert!(
        indexes
            .iter()
            .any(|index| index.contains("USING gin (to_tsvector")),
        "{indexes:#?}"
    );
    assert!(
        indexes
            .iter()
            .any(|index| index.contains("substr(description, 1, 20)")),
        "{indexes:#?}"
    );
    let spatial: String = client
        .query_one(
            &format!("SELECT count(*) || ' ' || count(spot) || ' ' || min(ST_SRID(spot)) || ' ' || (SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = '{name}.address'::regclass AND NOT indisprimary) FROM {name}.address"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        spatial.starts_with("200 100 4326 CREATE INDEX")
            && spatial.ends_with("USING gist (location)"),
        "{spatial}"
    );
    let count: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {name}.film_text WHERE to_tsvector('simple'::regconfig, coalesce(title, '') || ' ' || coalesce(description, '')) @@ to_tsquery('simple', 'Film & 12')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

/// Values the target would refuse are found by `check` (a bounded scan), not hours into a copy:
/// zero dates into PostgreSQL (unless `zero_dates = "null"`), MySQL's invalid-ENUM `''` into a
/// strict MySQL target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_values_the_target_would_refuse() {
    let name = "my_refused_values";
    let source = mariadb().source.create_database(name).unwrap();
    let target = mariadb().target.create_database(name).unwrap();
    let postgres = crate::common::servers()
        .target
        .create_database(name)
        .await
        .unwrap();
    sql(
        &mariadb().source,
        name,
        "SET SESSION sql_mode = '';
         CREATE TABLE legacy (id INT PRIMARY KEY, d DATE, rating ENUM('G','PG') NULL, fine DATETIME);
         INSERT INTO legacy VALUES (1, '2024-01-01', 'G', NOW()), (2, '0000-00-00', 'PG', NOW()), (3, '2024-05-01', 'X', NULL);",
    );
    let report = |target: &str, extra: &[&str]| {
        let output = ferry("check", &source, target, extra).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
        )
    };
    let (ok, text) = report(&postgres, &[]);
    assert!(
        !ok && text.contains("legacy.d holds zero dates") && !text.contains("legacy.fine"),
        "{text}"
    );
    assert!(
        !text.contains("legacy.rating"),
        "PostgreSQL holds '' as text: {text}"
    );
    let config = std::env::temp_dir().join(format!("ferry-{name}-{}.toml", std::process::id()));
    std::fs::write(&config, "zero_dates = \"null\"\n").unwrap();
    let (_, text) = report(&postgres, &["-c", config.to_str().unwrap()]);
    assert!(!text.contains("zero dates"), "{text}");
    let (ok, text) = report(&target, &[]);
    assert!(
        !ok && text.contains("legacy.rating holds MySQL's invalid-ENUM value")
            && !text.contains("zero dates"),
        "{text}"
    );
}

/// A MySQL name longer than PostgreSQL's 63 bytes is never truncated silently: `check` names it
/// with a rename that cannot collide, and with that rename in the config the table moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_too_long_for_postgres_get_a_rename_to_accept() {
    let name = "my_long_columns";
    let (source, target) = mariadb_source_postgres_target(name).await;
    let long = format!("c{}", "x".repeat(63));
    sql(
        &mariadb().source,
        name,
        &format!("CREATE TABLE t (id INT PRIMARY KEY, `{long}` INT); INSERT INTO t VALUES (1, 10), (2, 20);"),
    );
    let check = ferry("check", &source, &target, &["--name", name])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(!check.status.success(), "{report}");
    let hint_start =
        report.find("columns = { ").expect("a rename to accept") + "columns = { ".len();
    let rename = report[hint_start..].split(" }").next().unwrap().to_string();
    assert!(rename.starts_with(&format!("\"{long}\" = \"")), "{rename}");
    let config = std::env::temp_dir().join(format!("ferry-{name}-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!("[[transform]]\ntable = \"{name}.t\"\ncolumns = {{ {rename} }}\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let check = ferry("check", &source, &target, &["--name", name, "-c", config])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let copy = ferry("copy", &source, &target, &["--name", name, "-c", config])
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let renamed = rename.rsplit('"').nth(1).unwrap().to_string();
    assert!(renamed.len() <= 63);
    let total: i64 = crate::common::servers()
        .target
        .connect(name)
        .await
        .unwrap()
        .query_one(
            &format!("SELECT sum(\"{renamed}\")::bigint FROM {name}.t"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 30);
}

/// Generated columns (STORED and VIRTUAL, one extracting from JSON) move into PostgreSQL as plain
/// columns holding the source's values, copied and streamed; `check` says so, and `verify`
/// finds the tables equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_reach_postgres_as_their_values() {
    let name = "my_generated_pg";
    let (source, target) = mariadb_source_postgres_target(name).await;
    sql(
        &mariadb().source,
        name,
        "CREATE TABLE orders (id INT PRIMARY KEY, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, doc JSON,
           total DECIMAL(20,2) AS (qty * price) STORED,
           customer VARCHAR(40) AS (JSON_UNQUOTE(JSON_EXTRACT(doc, '$.customer'))) VIRTUAL,
           label VARCHAR(60) AS (CONCAT('order-', id)) VIRTUAL, KEY by_customer (customer));
         INSERT INTO orders (id, qty, price, doc) SELECT seq, seq % 7, seq / 4, JSON_OBJECT('customer', CONCAT('c', seq % 13)) FROM seq_1_to_3000;",
    );
    let check = ferry("check", &source, &target, &[]).output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains("source.generated_column") && report.contains("orders.total"),
        "{report}"
    );

    let mut run = spawn_run(name, &source, &target);
    sql(
        &mariadb().source,
        name,
        "UPDATE orders SET qty = qty + 1, doc = JSON_SET(doc, '$.customer', 'changed') WHERE id % 10 = 0;
         DELETE FROM orders WHERE id % 17 = 0;
         INSERT INTO orders (id, qty, price, doc) VALUES (5000, 3, 2.50, '{\"customer\": \"new\"}');",
    );
    let client = crate::common::servers().target.connect(name).await.unwrap();
    let columns: &[(&str, &str)] = &[
        ("id", "id"),
        ("qty", "qty"),
        ("total", "total"),
        ("customer", "customer"),
        ("label", "label"),
    ];
    crate::mysql::wait_engines_equal(
        name,
        (&mariadb().source, name),
        &client,
        &[(
            crate::mysql::mysql_select(columns, "orders", "id"),
            crate::mysql::postgres_select(columns, &format!("{name}.orders"), "id"),
        )],
    )
    .await;
    crate::mysql::wait_copied_on_postgres(name, &client).await;
    let verified = ferry(
        "verify",
        &source,
        &target,
        &["--name", name, "--while-streaming"],
    )
    .output()
    .unwrap();
    assert!(
        verified.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr),
        log_tail(name)
    );
    assert_eq!(stop(&mut run), Some(0), "{}", log_tail(name));
}
