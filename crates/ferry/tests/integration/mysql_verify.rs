//! `ferry verify` between two MariaDB databases: equal after a copy; every planted difference
//! (a changed decimal, a FLOAT change beyond FLOAT's six printed digits, a changed microsecond,
//! a changed byte, a missing row, an extra row, on
//! single and composite keys) found by key; `--repair` makes the databases equal again, which
//! the `mariadb` client confirms independently.

use ferry_testkit::MariaDbServer;

use crate::common::{keys_of, run_verify};
use crate::mysql::{ferry, mariadb, sql};

const TABLES: &str = "
CREATE TABLE items (id INT UNSIGNED PRIMARY KEY, name VARCHAR(40), price DECIMAL(12,2), at DATETIME(6),
  raw BLOB, doc JSON, ratio FLOAT, kind ENUM('a','b'), flags BIT(4));
INSERT INTO items SELECT seq, CONCAT('item ', seq), seq / 100, TIMESTAMPADD(MICROSECOND, seq * 7, '2024-01-01'),
  UNHEX(HEX(seq)), JSON_OBJECT('n', seq), seq / 3, IF(seq % 2, 'a', 'b'), seq % 16 FROM seq_1_to_3000;
UPDATE items SET ratio = 1234567 WHERE id = 20;
CREATE TABLE pairs (a VARCHAR(10) NOT NULL, b INT NOT NULL, v TEXT, PRIMARY KEY (a, b));
INSERT INTO pairs SELECT CONCAT('k', seq % 10), seq, REPEAT('v', seq % 7) FROM seq_1_to_2000;
";

fn verify(source: &str, target: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    run_verify(&mut ferry(
        "verify",
        source,
        target,
        &[
            &["--json", "--name", "my_verify", "--chunk-rows", "500"],
            extra,
        ]
        .concat(),
    ))
}

fn all_rows(server: &MariaDbServer, database: &str) -> String {
    sql(
        server,
        database,
        "SELECT * FROM items ORDER BY id; SELECT * FROM pairs ORDER BY a, b;",
    )
}

#[test]
fn verify_finds_every_planted_difference_and_repair_removes_them() {
    let servers = mariadb();
    let source = servers.source.create_database("my_verify").unwrap();
    sql(&servers.source, "my_verify", TABLES);
    let target = servers.target.url("my_verify_copy");
    let copied = ferry("copy", &source, &target, &["--name", "my_verify"])
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );

    let (code, report, stderr) = verify(&source, &target, &[]);
    assert_eq!(code, Some(0), "{report}\n{stderr}");
    assert_eq!(report["equal"], true);

    sql(
        &servers.target,
        "my_verify_copy",
        "UPDATE items SET price = price + 0.01 WHERE id = 10;
         UPDATE items SET ratio = 1234568 WHERE id = 20;
         UPDATE items SET at = TIMESTAMPADD(MICROSECOND, 1, at) WHERE id = 1500;
         UPDATE items SET raw = x'00' WHERE id = 2999;
         DELETE FROM items WHERE id = 777;
         INSERT INTO items (id, name) VALUES (5000, 'extra');
         UPDATE pairs SET v = 'changed' WHERE a = 'k3' AND b = 13;
         DELETE FROM pairs WHERE a = 'k5' AND b = 1005;",
    );
    let (code, report, stderr) = verify(&source, &target, &[]);
    assert_eq!(code, Some(1), "{report}\n{stderr}");
    assert_eq!(
        keys_of(&report, "items", "different"),
        vec!["(10)", "(1500)", "(20)", "(2999)"]
    );
    assert_eq!(keys_of(&report, "items", "missing"), vec!["(777)"]);
    assert_eq!(keys_of(&report, "items", "extra"), vec!["(5000)"]);
    assert_eq!(keys_of(&report, "pairs", "different"), vec!["('k3',13)"]);
    assert_eq!(keys_of(&report, "pairs", "missing"), vec!["('k5',1005)"]);

    let (code, report, stderr) = verify(&source, &target, &["--repair"]);
    assert_eq!(code, Some(0), "{report}\n{stderr}");
    assert_eq!(
        all_rows(&servers.source, "my_verify"),
        all_rows(&servers.target, "my_verify_copy"),
        "after repair, every row is equal as the mariadb client prints it"
    );
    let (code, _, stderr) = verify(&source, &target, &[]);
    assert_eq!(code, Some(0), "{stderr}");
}
