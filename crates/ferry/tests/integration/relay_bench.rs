//! The relay's benchmark (ignored in normal runs; `scripts/bench-relay.sh` runs it in release
//! mode): messages per second delivered from Kafka to a local endpoint with every attempt
//! logged, next to minimal consume-and-POST loops without any log, on the same broker and
//! endpoint in the same run; then the latency added under a steady produce rate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_relay::http::client::{HttpClient, Target};
use ferry_testkit::{wait_until, KafkaServer, Receiver};
use futures_util::stream::{self, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

use crate::common::stop;
use crate::relay::Relay;

fn count() -> usize {
    std::env::var("FERRY_RELAY_BENCH_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000)
}

async fn fill(broker: &KafkaServer, topic: &str, messages: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for result in admin
        .create_topics(
            &[NewTopic::new(topic, 4, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        result.unwrap();
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "20")
        .create()
        .unwrap();
    stream::iter(0..messages)
        .map(|n| {
            let producer = producer.clone();
            async move {
                let key = format!("customer-{}", n % 1000);
                let value = serde_json::json!({"order": n, "customer": key, "total": "12.50", "items": [1, 2, 3], "note": "x".repeat(100)}).to_string();
                let record = FutureRecord::to(topic).key(&key).payload(&value).partition((n % 4) as i32);
                producer.send(record, Duration::from_secs(30)).await.map_err(|(error, _)| error).unwrap();
            }
        })
        .buffer_unordered(1000)
        .collect::<Vec<_>>()
        .await;
}

/// A consume-and-POST loop with no log: `in_flight` requests at once, in partition order.
async fn bare_loop(
    broker: &KafkaServer,
    topic: &str,
    target: &Target,
    messages: usize,
    in_flight: usize,
) -> Duration {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set(
            "group.id",
            format!("bare-{in_flight}-{}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..4 {
        list.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let client = Arc::new(HttpClient::new(None).unwrap());
    let started = Instant::now();
    let mut sent = 0;
    while sent < messages {
        let mut batch = Vec::new();
        while batch.len() < in_flight * 4 && sent + batch.len() < messages {
            let message = consumer.recv().await.unwrap();
            batch.push(message.payload().unwrap_or_default().to_vec());
        }
        sent += batch.len();
        stream::iter(batch)
            .map(|body| {
                let client = client.clone();
                async move {
                    let headers = [("Content-Type".to_string(), "application/json".to_string())];
                    let response = client
                        .send("POST", target, &headers, &body, Duration::from_secs(5))
                        .await
                        .unwrap();
                    assert_eq!(response.status, 200);
                }
            })
            .buffered(in_flight)
            .collect::<Vec<_>>()
            .await;
    }
    started.elapsed()
}

fn percentile(sorted: &[i64], fraction: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: scripts/bench-relay.sh"]
async fn relay_benchmark() {
    let messages = count();
    let broker = KafkaServer::start().expect("start tansu");
    let phase = Instant::now();
    fill(&broker, "bench", messages).await;
    eprintln!("filled in {:?}", phase.elapsed());
    let receiver = Receiver::start().await;
    let target = Target::parse(&receiver.url("/bare")).unwrap();
    let sequential = bare_loop(&broker, "bench", &target, messages, 1).await;
    eprintln!("sequential loop {sequential:?}");
    let concurrent = bare_loop(&broker, "bench", &target, messages, 16).await;
    eprintln!("concurrent loop {concurrent:?}");

    let route = format!(
        "[[route]]\nname = \"bench\"\ntopics = [\"bench\"]\nurl = \"{}\"\nordering = \"{}\"\nconcurrency = 16\n",
        receiver.url("/relay"),
        std::env::var("FERRY_RELAY_BENCH_ORDERING").unwrap_or_else(|_| "key".into())
    );
    let relay = Relay::new("relay-bench", &broker.url(), &route);
    let delivered_before = receiver.delivered_count();
    let started = Instant::now();
    let mut run = relay.spawn();
    // FERRY_RELAY_BENCH_PERF=FILE records a profile of the relay while it delivers.
    let mut profiler = std::env::var("FERRY_RELAY_BENCH_PERF").ok().map(|file| {
        std::process::Command::new("perf")
            .args([
                "record",
                "-F",
                "499",
                "-g",
                "-o",
                &file,
                "-p",
                &run.id().to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf")
    });
    wait_until(
        "the relay to deliver every message",
        Duration::from_secs(600),
        || {
            let done = receiver.delivered_count() - delivered_before >= messages;
            async move { done.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", relay.log()));
    let relayed = started.elapsed();
    let (_, metrics) = relay.call("GET", "/metrics", "").await;
    let metrics = metrics.as_str().unwrap_or("").to_string();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    let attempts = value("ferry_relay_attempt_seconds_count{route=\"bench\"}");
    eprintln!(
        "relay: {attempts} attempts, mean attempt latency {:.3} ms",
        1000.0 * value("ferry_relay_attempt_seconds_sum{route=\"bench\"}") / attempts.max(1.0)
    );
    if let Some(profiler) = profiler.as_mut() {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &profiler.id().to_string()])
            .status();
        let _ = profiler.wait();
    }
    let relay_rss = peak_rss_mib(run.id());

    // The same messages again, through a relay whose log is in PostgreSQL (its own group).
    let log_url = crate::common::servers()
        .target
        .create_database("relay_bench_log")
        .await
        .unwrap();
    let postgres_relay = Relay::with_log(
        "relay-bench-pg",
        &broker.url(),
        &route.replace("/relay", "/relay-pg"),
        &log_url,
    );
    let delivered_before = receiver.delivered_count();
    let started = Instant::now();
    let mut postgres_run = postgres_relay.spawn();
    wait_until(
        "the relay with a PostgreSQL log to deliver every message",
        Duration::from_secs(600),
        || {
            let done = receiver.delivered_count() - delivered_before >= messages;
            async move { done.then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", postgres_relay.log()));
    let relayed_postgres = started.elapsed();
    let postgres_rss = peak_rss_mib(postgres_run.id());
    stop(&mut postgres_run);

    // Latency under a steady rate (400 messages/s for 10 s), produce to endpoint, for the relay
    // and, reading the same records at the same time, a bare loop.
    let stop_bare = Arc::new(AtomicBool::new(false));
    let bare_consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("bare-steady-{}", std::process::id()))
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..4 {
        list.add_partition_offset("bench", partition, rdkafka::Offset::End)
            .unwrap();
    }
    bare_consumer.assign(&list).unwrap();
    let bare_target = Target::parse(&receiver.url("/bare-steady")).unwrap();
    let bare_stop = stop_bare.clone();
    let bare = tokio::spawn(async move {
        let client = HttpClient::new(None).unwrap();
        while !bare_stop.load(Ordering::Relaxed) {
            let Ok(Ok(message)) =
                tokio::time::timeout(Duration::from_millis(200), bare_consumer.recv()).await
            else {
                continue;
            };
            let headers = [("Content-Type".to_string(), "application/json".to_string())];
            let body = message.payload().unwrap_or_default().to_vec();
            let _ = client
                .send(
                    "POST",
                    &bare_target,
                    &headers,
                    &body,
                    Duration::from_secs(5),
                )
                .await;
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let mut produced = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let key = format!("steady-{}", produced % 50);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let value = serde_json::json!({"steady": produced, "produced_at_ms": now}).to_string();
        let _ = producer
            .send(
                FutureRecord::to("bench")
                    .key(&key)
                    .payload(&value)
                    .partition(produced % 4),
                Duration::from_secs(5),
            )
            .await;
        produced += 1;
        tokio::time::sleep(Duration::from_micros(2500)).await;
    }
    let latencies = |path: &'static str| {
        let mut found: Vec<i64> = receiver
            .received()
            .iter()
            .filter(|request| request.path == path && request.body.contains("produced_at_ms"))
            .map(|request| {
                request.received_at_ms - request.json()["produced_at_ms"].as_i64().unwrap()
            })
            .collect();
        found.sort_unstable();
        found
    };
    wait_until("the steady messages", Duration::from_secs(60), || {
        let arrived = latencies("/relay").len() >= produced as usize
            && latencies("/bare-steady").len() >= produced as usize;
        async move { arrived.then_some(()) }
    })
    .await
    .unwrap();
    stop_bare.store(true, Ordering::Relaxed);
    bare.await.unwrap();
    stop(&mut run);
    let relay_latency = latencies("/relay");
    let bare_latency = latencies("/bare-steady");
    let rate = |elapsed: Duration| messages as f64 / elapsed.as_secs_f64();
    println!("relay benchmark: {messages} JSON messages (~200 B), 4 partitions, 1,000 keys, tansu broker, local endpoint");
    println!(
        "  bare loop, 1 request in flight:   {:>8.0} msg/s ({:.2} s)",
        rate(sequential),
        sequential.as_secs_f64()
    );
    println!(
        "  bare loop, 16 requests in flight: {:>8.0} msg/s ({:.2} s)",
        rate(concurrent),
        concurrent.as_secs_f64()
    );
    println!("  ferry relay, every attempt logged: {:>7.0} msg/s ({:.2} s), {:.0}% of the 16-in-flight loop, peak RSS {relay_rss:.0} MiB", rate(relayed), relayed.as_secs_f64(), 100.0 * concurrent.as_secs_f64() / relayed.as_secs_f64());
    println!("  ferry relay, log in PostgreSQL:    {:>7.0} msg/s ({:.2} s), {:.0}% of the 16-in-flight loop, peak RSS {postgres_rss:.0} MiB", rate(relayed_postgres), relayed_postgres.as_secs_f64(), 100.0 * concurrent.as_secs_f64() / relayed_postgres.as_secs_f64());
    println!(
        "  latency at 400 msg/s, produce to endpoint: relay p50 {} ms, p99 {} ms; bare loop p50 {} ms, p99 {} ms",
        percentile(&relay_latency, 0.5),
        percentile(&relay_latency, 0.99),
        percentile(&bare_latency, 0.5),
        percentile(&bare_latency, 0.99)
    );
}
