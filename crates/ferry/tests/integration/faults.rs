//! Faults ferry rides out on its own, under concurrent writes: restarts of either server (fast
//! and immediate shutdown), connections cut, and networks black-holed, during the copy and during
//! streaming. Each test has its own servers, since it restarts them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_testkit::{wait_until, Fault, FaultProxy, PostgresServer};

use crate::common::{stop, Pair};

const TABLES: &[(&str, &str)] = &[("public.accounts", "id")];

/// Servers for one test; the source answers keepalives fast so silence is noticed quickly.
fn start_servers() -> (PostgresServer, PostgresServer) {
    (
        PostgresServer::start_with(&[("wal_sender_timeout", "'4s'")]).expect("source server"),
        PostgresServer::start().expect("target server"),
    )
}

async fn fill(source: &PostgresServer, rows: i64) {
    let client = source.connect("faults").await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE public.accounts (id bigint PRIMARY KEY, payload text NOT NULL, counter integer NOT NULL);
             INSERT INTO public.accounts SELECT g, md5(g::text), 0 FROM generate_series(1, {rows}) g; ANALYZE;"
        ))
        .await
        .unwrap();
}

/// Dedicated servers with a filled source database and an empty target database.
async fn prepare() -> (PostgresServer, PostgresServer, String, String) {
    let (source, target) = start_servers();
    let source_url = source.create_database("faults").await.unwrap();
    let target_url = target.create_database("faults").await.unwrap();
    fill(&source, 150_000).await;
    (source, target, source_url, target_url)
}

/// A fault proxy in front of each server, and URLs of the `faults` databases through them.
async fn proxies(
    source: &PostgresServer,
    target: &PostgresServer,
) -> (FaultProxy, FaultProxy, String, String) {
    let address = |server: &PostgresServer| -> SocketAddr {
        format!("127.0.0.1:{}", server.port()).parse().unwrap()
    };
    let source_proxy = FaultProxy::start(address(source)).await.unwrap();
    let target_proxy = FaultProxy::start(address(target)).await.unwrap();
    let source_url = format!(
        "postgres://postgres@127.0.0.1:{}/faults",
        source_proxy.port()
    );
    let target_url = format!(
        "postgres://postgres@127.0.0.1:{}/faults",
        target_proxy.port()
    );
    (source_proxy, target_proxy, source_url, target_url)
}

const FERRY_ARGUMENTS: &[&str] = &[
    "--name",
    "faults",
    "--chunk-rows",
    "3000",
    "--parallel",
    "2",
    "--network-timeout",
    "3",
];

/// Waits until the writer has had `count` more transactions acknowledged.
async fn more_writes(acknowledged: &AtomicU64, count: u64) {
    let after = acknowledged.load(Ordering::Relaxed);
    wait_until(
        "more acknowledged writes",
        Duration::from_secs(60),
        || async { (acknowledged.load(Ordering::Relaxed) > after + count).then_some(()) },
    )
    .await
    .unwrap();
}

/// A writer that reconnects after errors (the server may be restarting) and counts only
/// acknowledged transactions.
fn resilient_writer(
    source_url: String,
    max_id: i64,
) -> (Arc<AtomicBool>, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let handle = {
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        tokio::spawn(async move {
            let mut round: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&source_url, tokio_postgres::NoTls).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(connection);
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let sql = format!(
                        "BEGIN; UPDATE public.accounts SET counter = counter + 1 WHERE id = {};
                         DELETE FROM public.accounts WHERE id = {};
                         INSERT INTO public.accounts VALUES ({}, 'new', 0) ON CONFLICT (id) DO UPDATE SET counter = accounts.counter + 100; COMMIT;",
                        1 + (round * 7919) % max_id,
                        1 + (round * 104729) % max_id,
                        max_id + round
                    );
                    if client.batch_execute(&sql).await.is_err() {
                        break;
                    }
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    if round % 10 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
        })
    };
    (stop, acknowledged, handle)
}

/// A query against the target that tolerates the target being down.
async fn target_count(target: &PostgresServer, sql: &str) -> Option<i64> {
    let client = target.connect("faults").await.ok()?;
    client.query_one(sql, &[]).await.ok().map(|row| row.get(0))
}

async fn chunks_done(target: &PostgresServer) -> Option<i64> {
    target_count(target, "SELECT count(*) FROM _ferry.chunk WHERE done").await
}

async fn streaming(target: &PostgresServer) -> Option<()> {
    let copied = target_count(
        target,
        "SELECT count(*) FROM _ferry.table_state WHERE state = 'copied'",
    )
    .await?;
    (copied == 1).then_some(())
}

/// Fresh clients (the old ones died with the restarts) for the final comparison.
async fn final_pair(
    name: &str,
    source: &PostgresServer,
    target: &PostgresServer,
    source_url: &str,
    target_url: &str,
) -> Pair {
    Pair {
        name: name.into(),
        source_url: source_url.into(),
        target_url: target_url.into(),
        source: source.connect("faults").await.unwrap(),
        target: target.connect("faults").await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarts_during_copy_and_streaming_lose_nothing() {
    const NAME: &str = "faults_restarts";
    let (source, target, source_url, target_url) = prepare().await;
    let (stop_writer, acknowledged, writer) = resilient_writer(source_url.clone(), 150_000);
    let pair = final_pair(NAME, &source, &target, &source_url, &target_url).await;
    let mut ferry = pair.spawn_run(FERRY_ARGUMENTS, None);

    wait_until("a few chunks", Duration::from_secs(60), || async {
        chunks_done(&target).await.filter(|done| *done >= 3)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    target.restart("fast").unwrap();
    wait_until(
        "streaming after the target restart",
        Duration::from_secs(120),
        || streaming(&target),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    source.restart("immediate").unwrap();
    more_writes(&acknowledged, 50).await;
    target.restart("immediate").unwrap();
    more_writes(&acknowledged, 50).await;
    source.restart("fast").unwrap();
    more_writes(&acknowledged, 50).await;
    stop_writer.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let pair = final_pair(NAME, &source, &target, &source_url, &target_url).await;
    pair.wait_equal(TABLES).await;
    assert!(
        pair.log().contains("transient failure"),
        "the faults were seen and retried\n{}",
        pair.log()
    );
    let status = pair
        .ferry("status", &["--json", "--name", "faults"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert!(
        report["failures"]["count"].as_i64().unwrap_or(0) >= 1,
        "status counts the failures ridden out: {report}"
    );
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_and_black_holed_connections_lose_nothing() {
    const NAME: &str = "faults_network";
    let (source, target, source_url, target_url) = prepare().await;
    let (source_proxy, target_proxy, proxied_source, proxied_target) =
        proxies(&source, &target).await;
    let (stop_writer, acknowledged, writer) = resilient_writer(source_url.clone(), 150_000);
    let pair = final_pair(NAME, &source, &target, &proxied_source, &proxied_target).await;
    let mut ferry = pair.spawn_run(FERRY_ARGUMENTS, None);

    // During the copy: every connection to both servers cut at once.
    wait_until("a few chunks", Duration::from_secs(60), || async {
        chunks_done(&target).await.filter(|done| *done >= 3)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    source_proxy.cut();
    target_proxy.cut();
    // Then the source black-holed while chunks are being read.
    let before = chunks_done(&target).await.unwrap_or(0);
    wait_until(
        "more chunks after the cut",
        Duration::from_secs(60),
        || async { chunks_done(&target).await.filter(|done| *done > before + 2) },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    source_proxy.set(Fault::BlackHole);
    tokio::time::sleep(Duration::from_secs(5)).await;
    source_proxy.set(Fault::None);
    wait_until("streaming after the cut", Duration::from_secs(120), || {
        streaming(&target)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));

    // During streaming: the source's network black-holed, then the target's.
    for proxy in [&source_proxy, &target_proxy] {
        proxy.set(Fault::BlackHole);
        more_writes(&acknowledged, 200).await;
        tokio::time::sleep(Duration::from_secs(7)).await; // longer than --network-timeout: ferry must notice
        proxy.set(Fault::None);
    }
    // During streaming: every connection cut again.
    source_proxy.cut();
    target_proxy.cut();
    more_writes(&acknowledged, 200).await;
    // A slow network: delayed traffic while writes go on.
    source_proxy.set(Fault::Delay(Duration::from_millis(20)));
    more_writes(&acknowledged, 200).await;
    source_proxy.set(Fault::None);
    stop_writer.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let direct = final_pair(NAME, &source, &target, &source_url, &target_url).await;
    direct.wait_equal(TABLES).await;
    let log = pair.log();
    assert!(
        log.contains("stream.silent")
            || log.contains("apply.timeout")
            || log.contains("postgres.connection"),
        "the black holes were noticed\n{log}"
    );
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{log}");
}

/// A target that turns read-only pauses the migration (no crash, no exit); it continues by itself
/// once the target is writable again, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_target_pauses_until_it_is_writable() {
    let pair = Pair::new("read_only").await;
    pair.source.batch_execute("CREATE TABLE public.accounts (id bigint PRIMARY KEY, payload text NOT NULL, counter integer NOT NULL); INSERT INTO public.accounts SELECT g, md5(g::text), 0 FROM generate_series(1, 1000) g;").await.unwrap();
    let mut ferry = pair.spawn_run(&["--name", "read_only", "--network-timeout", "3"], None);
    pair.wait_streaming(1).await;
    pair.target
        .batch_execute("ALTER DATABASE read_only SET default_transaction_read_only = on; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'read_only' AND application_name = 'ferry';")
        .await
        .unwrap();
    pair.source.batch_execute("INSERT INTO public.accounts SELECT g, 'while read-only', 0 FROM generate_series(1001, 1100) g; UPDATE public.accounts SET counter = 7 WHERE id <= 10;").await.unwrap();
    wait_until("ferry to pause", Duration::from_secs(60), || async {
        pair.log().contains("paused").then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    assert!(
        ferry.try_wait().unwrap().is_none(),
        "ferry keeps running while paused\n{}",
        pair.log()
    );
    pair.target
        .batch_execute("ALTER DATABASE read_only RESET default_transaction_read_only;")
        .await
        .unwrap();
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

/// The soak scenario, not a CI test: `scripts/soak.sh [SECONDS] [FAULT_EVERY_SECONDS]`. A live
/// migration under steady writes while a random fault hits every few seconds (connections cut,
/// networks black-holed or slowed, either server restarted fast or immediately); then the writer
/// stops and the time until the target equals the source is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak scenario; run with scripts/soak.sh"]
async fn soak() {
    const NAME: &str = "faults_soak";
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(120);
    let every: u64 = std::env::var("SOAK_FAULT_EVERY")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    let (source, target, source_url, target_url) = prepare().await;
    let (source_proxy, target_proxy, proxied_source, proxied_target) =
        proxies(&source, &target).await;
    let (stop_writer, acknowledged, writer) = resilient_writer(source_url.clone(), 150_000);
    let pair = final_pair(NAME, &source, &target, &proxied_source, &proxied_target).await;
    let mut ferry = pair.spawn_run(FERRY_ARGUMENTS, None);
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut faults: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(every)).await;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let fault = match state % 9 {
            0 => {
                source_proxy.cut();
                "cut source connections"
            }
            1 => {
                target_proxy.cut();
                "cut target connections"
            }
            2 | 3 => {
                let proxy = if state % 9 == 2 {
                    &source_proxy
                } else {
                    &target_proxy
                };
                proxy.set(Fault::BlackHole);
                tokio::time::sleep(Duration::from_secs(5)).await;
                proxy.set(Fault::None);
                if state % 9 == 2 {
                    "black-hole source 5 s"
                } else {
                    "black-hole target 5 s"
                }
            }
            4 => {
                source.restart("fast").unwrap();
                "restart source (fast)"
            }
            5 => {
                source.restart("immediate").unwrap();
                "restart source (immediate)"
            }
            6 => {
                target.restart("fast").unwrap();
                "restart target (fast)"
            }
            7 => {
                target.restart("immediate").unwrap();
                "restart target (immediate)"
            }
            _ => {
                source_proxy.set(Fault::Delay(Duration::from_millis(50)));
                tokio::time::sleep(Duration::from_secs(5)).await;
                source_proxy.set(Fault::None);
                "slow source network 5 s"
            }
        };
        eprintln!("soak: {:>5.0} s: {fault}", started.elapsed().as_secs_f64());
        *faults.entry(fault).or_default() += 1;
    }
    stop_writer.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let writes = acknowledged.load(Ordering::Relaxed);
    let direct = final_pair(NAME, &source, &target, &source_url, &target_url).await;
    let converging = std::time::Instant::now();
    direct.wait_equal(TABLES).await;
    let recovered = converging.elapsed().as_secs_f64();
    let rows: i64 = direct
        .source
        .query_one("SELECT count(*) FROM public.accounts", &[])
        .await
        .unwrap()
        .get(0);
    let total: u32 = faults.values().sum();
    println!(
        "SOAK {}",
        serde_json::json!({ "seconds": seconds, "fault_every_seconds": every, "faults": total, "by_kind": faults, "acknowledged_writes": writes, "rows": rows, "equal": true, "converged_seconds_after_writes_stopped": recovered })
    );
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}
