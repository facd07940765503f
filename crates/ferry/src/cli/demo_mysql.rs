//! `ferry demo --mysql`: a live migration from a throwaway MariaDB server to a throwaway
//! PostgreSQL server, across engines, under writes, proven equal at the end by comparing every
//! row as text computed by each server itself.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::{Error, Result};
use ferry_engine::run_migration;
use ferry_testkit::{wait_until, MariaDbServer, PostgresServer};
use tokio::sync::watch;

use crate::progress::Renderer;
use crate::report::EXIT_PROBLEMS;

fn schema(rows: u64) -> String {
    let customers = (rows / 4).max(100);
    format!(
        "CREATE TABLE customers (
           id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100) NOT NULL UNIQUE,
           name VARCHAR(100) NOT NULL, country CHAR(2) NOT NULL, balance DECIMAL(14,2) NOT NULL DEFAULT 0,
           vip TINYINT(1) NOT NULL DEFAULT 0, profile JSON, created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
         CREATE TABLE orders (
           id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, customer_id INT UNSIGNED NOT NULL,
           status ENUM('new','paid','shipped','cancelled') NOT NULL DEFAULT 'new', flags SET('gift','express','fragile'),
           quantity SMALLINT UNSIGNED NOT NULL, placed_at DATETIME(6) NOT NULL, ship_in TIME, note TEXT, KEY by_customer (customer_id));
         INSERT INTO customers (email, name, country, balance, vip, profile, created_at)
           SELECT CONCAT('user', seq, '@example.com'), CONCAT('Customer ', seq, ' Łukasz Müller 顧客'), ELT(1 + seq % 5, 'DE','FR','US','JP','BR'),
                  (seq * 37 % 1000000) / 100, seq % 2, JSON_OBJECT('score', seq % 100, 'pets', JSON_ARRAY('cat')),
                  TIMESTAMPADD(SECOND, seq * 37, '2020-01-01 00:00:00.123456') FROM seq_1_to_{customers};
         INSERT INTO orders (customer_id, status, flags, quantity, placed_at, ship_in, note)
           SELECT 1 + seq % {customers}, ELT(1 + seq % 4, 'new','paid','shipped','cancelled'), ELT(1 + seq % 3, NULL, 'gift', 'gift,express'),
                  1 + seq % 9, TIMESTAMPADD(SECOND, seq * 11, '2023-01-01'), SEC_TO_TIME(seq % 200000), IF(seq % 3 = 0, 'gift wrap', NULL)
           FROM seq_1_to_{rows};
         DELIMITER //
         CREATE PROCEDURE shop_writes(rounds INT) BEGIN DECLARE i INT DEFAULT 0; DECLARE customer, paid, gone BIGINT;
           WHILE i < rounds DO
             -- Random keys drawn first: RAND() in a WHERE clause is evaluated per row (a full scan).
             SET customer = 1 + FLOOR(RAND() * 50), paid = 1 + FLOOR(RAND() * 1000), gone = 1000 + FLOOR(RAND() * 1000);
             START TRANSACTION;
             INSERT INTO orders (customer_id, quantity, placed_at, note) VALUES (1 + FLOOR(RAND() * 40), 2, NOW(6), 'live order');
             UPDATE customers SET balance = balance + 1.25, profile = JSON_SET(profile, '$.live', i) WHERE id = customer;
             UPDATE orders SET status = 'paid', flags = 'express' WHERE id = paid;
             DELETE FROM orders WHERE id = gone;
             COMMIT;
             SET i = i + 1;
           END WHILE;
         END//
         DELIMITER ;"
    )
}

/// A table, its key, and each column as MariaDB and PostgreSQL render it as text.
type TableRendering = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Each table's rows as text, computed the same way by MariaDB (first) and PostgreSQL (second).
const TABLES: &[TableRendering] = &[
    (
        "customers",
        "id",
        &[
            ("id", "id"),
            ("email", "email"),
            (
                "HEX(name)",
                "upper(encode(convert_to(name, 'UTF8'), 'hex'))",
            ),
            ("country", "country"),
            ("balance", "balance"),
            ("vip", "vip"),
            ("profile", "profile"),
            (
                "DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f')",
                "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
            ),
        ],
    ),
    (
        "orders",
        "id",
        &[
            ("id", "id"),
            ("customer_id", "customer_id"),
            ("status", "status"),
            ("flags", "flags"),
            ("quantity", "quantity"),
            (
                "DATE_FORMAT(placed_at, '%Y-%m-%d %H:%i:%s.%f')",
                "to_char(placed_at, 'YYYY-MM-DD HH24:MI:SS.US')",
            ),
            ("ship_in", "ship_in"),
            ("note", "note"),
        ],
    ),
];

fn demo_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::operator("demo.setup", format!("{what}: {error}")).with_hint(
        "the MySQL demo needs MariaDB and PostgreSQL: apt-get install -y mariadb-server postgresql",
    )
}

/// Tables whose rows differ between MariaDB and PostgreSQL.
async fn differences(
    source: &MariaDbServer,
    target: &tokio_postgres::Client,
) -> std::result::Result<Vec<String>, String> {
    let mut different = Vec::new();
    for (table, key, columns) in TABLES {
        let mysql: Vec<String> = columns
            .iter()
            .map(|(mysql, _)| format!("IFNULL(CONVERT({mysql} USING utf8mb4), '~')"))
            .collect();
        // The client runs as a process and is waited for: off the runtime's workers' tasks.
        let left = tokio::task::block_in_place(|| {
            source.execute(&format!("SET time_zone = '+00:00'; USE shop; SELECT CONCAT_WS('|', {}) FROM {table} ORDER BY {key}", mysql.join(", ")))
        })
        .map_err(|error| error.to_string())?;
        let left: Vec<String> = left
            .lines()
            .map(|line| line.replace("\\\\", "\\"))
            .collect();
        let postgres: Vec<String> = columns
            .iter()
            .map(|(_, postgres)| format!("COALESCE(({postgres})::text, '~')"))
            .collect();
        let right: Vec<String> = target
            .query(
                &format!(
                    "SELECT concat_ws('|', {}) FROM shop.{table} ORDER BY {key}",
                    postgres.join(", ")
                ),
                &[],
            )
            .await
            .map_err(|error| error.to_string())?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if left != right {
            different.push(format!(
                "{table}: source {} rows, target {} rows",
                left.len(),
                right.len()
            ));
        }
    }
    Ok(different)
}

pub(super) async fn run(rows: u64, stream_seconds: u64) -> Result<ExitCode> {
    println!(
        "ferry demo --mysql: starting a throwaway MariaDB (source) and PostgreSQL (target) server"
    );
    let source = MariaDbServer::start().map_err(|error| demo_error("starting MariaDB", error))?;
    let target =
        PostgresServer::start().map_err(|error| demo_error("starting PostgreSQL", error))?;
    let source_url = source
        .create_database("shop")
        .map_err(|error| demo_error("creating the source database", error))?;
    let target_url = target
        .create_database("shop")
        .await
        .map_err(|error| demo_error("creating the target database", error))?;
    println!("  source {source_url}\n  target {target_url}");
    let filled = Instant::now();
    source
        .execute(&format!("USE shop; {}", schema(rows)))
        .map_err(|error| demo_error("filling the source", error))?;
    println!(
        "filled MariaDB with {} rows in 2 tables ({:.1} s): unsigned integers, ENUM, SET, JSON, TIMESTAMP(6), TIME, utf8mb4 text",
        rows + (rows / 4).max(100),
        filled.elapsed().as_secs_f64()
    );

    let stop_flag = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop_flag, rounds, socket) = (stop_flag.clone(), rounds.clone(), source.socket());
        std::thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                let status = std::process::Command::new("mariadb")
                    .arg("--no-defaults")
                    .arg(format!("--socket={}", socket.display()))
                    .args(["-uroot", "shop", "-e", "CALL shop_writes(20)"])
                    .status();
                if !status.is_ok_and(|status| status.success()) {
                    break;
                }
                rounds.fetch_add(20, Ordering::Relaxed);
            }
        })
    };
    println!("an application keeps writing to MariaDB while ferry copies and streams its binary log into PostgreSQL");

    let (shutdown_sender, shutdown) = watch::channel(false);
    let options = super::demo::demo_options();
    let (source_endpoint, target_endpoint) = super::demo::endpoints(&source_url, &target_url)?;
    let (source_connector, sink) = (source_endpoint.source(), target_endpoint.sink());
    let progress = Renderer::new();
    let started = Instant::now();
    let client = target
        .connect("shop")
        .await
        .map_err(|error| demo_error("connecting to PostgreSQL", error))?;

    let migration = run_migration(
        source_connector.as_ref(),
        sink.as_ref(),
        &options,
        &progress,
        shutdown,
    );
    let scenario = async {
        let result = async {
            wait_until("the copy to finish", Duration::from_secs(600), || async {
                let row = client.query_opt("SELECT 1 FROM _ferry.stream s WHERE NOT EXISTS (SELECT 1 FROM _ferry.table_state t WHERE t.state <> 'copied') AND (SELECT count(*) FROM _ferry.table_state) = 2", &[]).await.ok()?;
                row.map(|_| ())
            })
            .await
            .map_err(|error| demo_error("waiting", error))?;
            let copied_after = started.elapsed();
            tokio::time::sleep(Duration::from_secs(stream_seconds)).await;
            stop_flag.store(true, Ordering::Relaxed);
            let caught_up = wait_until("PostgreSQL to equal MariaDB", Duration::from_secs(120), || async {
                differences(&source, &client).await.ok().filter(|different| different.is_empty())
            })
            .await;
            Ok::<_, Error>((copied_after, caught_up))
        }
        .await;
        stop_flag.store(true, Ordering::Relaxed);
        let _ = shutdown_sender.send(true);
        result
    };
    let outcome = super::demo::alongside(migration, scenario).await;
    stop_flag.store(true, Ordering::Relaxed);
    let _ = tokio::task::block_in_place(|| writer.join());
    let (copied_after, caught_up) = outcome?;
    progress.finish();
    println!();
    println!(
        "copy finished after {:.1} s; {} application transactions were streamed while ferry ran",
        copied_after.as_secs_f64(),
        rounds.load(Ordering::Relaxed)
    );
    let result = match caught_up {
        Ok(_) => {
            println!("verified: every row is equal on MariaDB and PostgreSQL (each server rendered every value as text):");
            let tables: Vec<String> = TABLES
                .iter()
                .map(|(table, _, _)| format!("shop.{table}"))
                .collect();
            super::demo::print_equal_counts(&client, &tables).await?;
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("NOT EQUAL: {error}");
            for line in differences(&source, &client).await.unwrap_or_default() {
                println!("  {line}");
            }
            ExitCode::from(EXIT_PROBLEMS)
        }
    };
    target.stop();
    Ok(result)
}
