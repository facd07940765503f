//! Bad input gets a clear error with a stable code, a hint and a documented exit code; never a
//! panic, never a password. `check` reports every problem at once; `status` reports progress.

use std::process::Command;

use ferry_testkit::PostgresServer;

use crate::common::{stop, Pair};

fn ferry(arguments: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(arguments)
        .env_remove("FERRY_SOURCE")
        .env_remove("FERRY_TARGET")
        .output()
        .expect("run ferry");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_clean(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
}

#[test]
fn malformed_url_is_a_usage_error_without_the_password() {
    let (code, _, stderr) = ferry(&[
        "run",
        "--source",
        "postgres://app:hunter2@db.example:notaport/shop",
        "--target",
        "postgres://app@127.0.0.1:1/shop",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("error[config.url]") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert_clean(&stderr);
}

#[test]
fn unknown_option_and_missing_settings_are_usage_errors() {
    let (code, _, stderr) = ferry(&["run", "--paralel", "3"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--paralel"), "{stderr}");
    let (code, _, stderr) = ferry(&["copy", "--name", "Bad Name", "--tables", "a.b.c"]);
    assert_eq!(code, Some(2), "{stderr}");
    for expected in ["source:", "target:", "name:", "tables:"] {
        assert!(stderr.contains(expected), "{expected} missing: {stderr}");
    }
    let (code, _, stderr) = ferry(&[
        "run",
        "--source",
        "oracle://a@b/c",
        "--target",
        "postgres://a@b/c",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("config.unsupported_engine"), "{stderr}");
    assert_clean(&stderr);
}

#[test]
fn an_unreachable_server_is_transient_and_keeps_the_password_secret() {
    // Port 1 on loopback refuses connections at once.
    let (code, _, stderr) = ferry(&[
        "copy",
        "--max-retries",
        "0",
        "--source",
        "postgres://app:hunter2@127.0.0.1:1/shop",
        "--target",
        "postgres://app:hunter2@127.0.0.1:1/shop",
    ]);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("error[postgres.connection]")
            && stderr.contains("app@127.0.0.1:1/shop")
            && stderr.contains("hint:"),
        "{stderr}"
    );
    assert_clean(&stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_problem_with_its_fix() {
    // A source that cannot stream: wal_level replica.
    let server = PostgresServer::start_with(&[("wal_level", "replica")])
        .expect("start a wal_level=replica server");
    let source_url = server.create_database("checked").await.unwrap();
    let client = server.connect("checked").await.unwrap();
    client.batch_execute("CREATE TABLE public.keyless (a int, b text); CREATE TABLE public.keyed (id int PRIMARY KEY); CREATE ROLE weak LOGIN; CREATE TABLE public.measurements (at date NOT NULL, value int) PARTITION BY RANGE (at); CREATE TABLE public.measurements_2026 PARTITION OF public.measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); CREATE UNLOGGED TABLE public.scratch (id int PRIMARY KEY);").await.unwrap();
    let pair = Pair::new("check_target").await;
    pair.target
        .batch_execute(
            "CREATE TABLE public.keyed (id int PRIMARY KEY); INSERT INTO public.keyed VALUES (1);",
        )
        .await
        .unwrap();
    let (code, stdout, stderr) = ferry(&[
        "check",
        "--source",
        &source_url,
        "--target",
        &pair.target_url,
    ]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    for expected in [
        "error[source.wal_level]",
        "wal_level = logical",
        "REPLICA IDENTITY FULL",
        "error[source.unsupported_table]",
        "public.scratch",
        "public.measurements ",
        "public.keyless",
        "error[target.not_empty]",
        "fix:",
    ] {
        assert!(stdout.contains(expected), "{expected} missing:\n{stdout}");
    }
    let weak_url = source_url.replace("postgres@", "weak@");
    let (code, stdout, _) = ferry(&[
        "check",
        "--json",
        "--source",
        &weak_url,
        "--target",
        &pair.target_url,
    ]);
    assert_eq!(code, Some(1));
    let report: serde_json::Value =
        serde_json::from_str(&stdout).expect("check --json prints JSON");
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"source.replication_privilege") && codes.contains(&"source.wal_level"),
        "{codes:?}"
    );
    // A later cutover would need a superuser: said now, as a warning.
    assert!(codes.contains(&"cutover.not_ready"), "{codes:?}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_tables_and_lag() {
    let pair = Pair::new("status").await;
    pair.source.batch_execute("CREATE TABLE public.items (id int PRIMARY KEY, name text); INSERT INTO public.items SELECT g, 'item' FROM generate_series(1, 1000) g;").await.unwrap();
    let (code, stdout, stderr) = ferry(&[
        "check",
        "--source",
        &pair.source_url,
        "--target",
        &pair.target_url,
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let mut ferry_run = pair.spawn_run(&["--name", "status"], None);
    pair.wait_streaming(1).await;
    // The stream connects a moment after the copy is recorded: wait for status to say so.
    let status = || {
        let (code, stdout, stderr) = ferry(&[
            "status",
            "--json",
            "--name",
            "status",
            "--source",
            &pair.source_url,
            "--target",
            &pair.target_url,
        ]);
        assert_eq!(code, Some(0), "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).expect("status --json prints JSON")
    };
    let report = ferry_testkit::wait_until(
        "status to report streaming",
        std::time::Duration::from_secs(60),
        || async {
            let report = status();
            (report["phase"] == "streaming").then_some(report)
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}: {}\n{}", status(), pair.log()));
    assert_eq!(report["phase"], "streaming", "{report}");
    assert_eq!(report["tables"][0]["table"], "public.items");
    assert_eq!(report["tables"][0]["rows_copied"], 1000);
    assert_eq!(report["tables"][0]["percent"], 100.0);
    assert!(report["lag_bytes"].is_u64(), "{report}");
    assert_eq!(stop(&mut ferry_run), Some(0));
    let (_, stdout, _) = ferry(&[
        "status",
        "--name",
        "status",
        "--source",
        &pair.source_url,
        "--target",
        &pair.target_url,
    ]);
    assert!(
        stdout.contains("stopped") && stdout.contains("public.items"),
        "{stdout}"
    );
}

/// The default log level shows the connectors' progress lines too (each connector is a crate of
/// its own, and every one of them must be in the default filter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_log_shows_what_the_connectors_do() {
    let pair = crate::common::Pair::new("log_lines").await;
    pair.source
        .batch_execute("CREATE TABLE public.items (id integer PRIMARY KEY, name text); INSERT INTO public.items SELECT g, 'n' || g FROM generate_series(1, 10) g;")
        .await
        .unwrap();
    let output = pair
        .ferry("copy", &["--name", "log_lines"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("adding the primary key"), "{stderr}");
}
