//! The Kafka move's benchmark (ignored in normal runs; `scripts/bench-kafka.sh` runs it in
//! release mode): records per second mirrored by `ferry kafka move` (offset map on, every
//! record durable on the target), next to a plain consume-and-produce loop with the same client
//! library and the same producer durability (`acks=all`, idempotent), on the same source broker
//! and fresh target brokers, in the same run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_testkit::{wait_until, KafkaServer};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::common::{json_request, stop};
use crate::kafka_move::create_topic;

const PARTITIONS: i32 = 4;

fn records() -> usize {
    std::env::var("FERRY_KAFKA_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300_000)
}

fn runs() -> usize {
    std::env::var("FERRY_KAFKA_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

/// `count` records of about 250 bytes (key, JSON value, one header). Returns the bytes.
async fn fill(bootstrap: &str, topic: &str, count: usize) -> usize {
    create_topic(bootstrap, topic, PARTITIONS).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let mut bytes = 0;
    let mut pending = Vec::new();
    for number in 0..count {
        let key = format!("customer-{}", number % 1000);
        let value = format!(
            "{{\"order\":{number},\"customer\":\"{key}\",\"total\":\"12.50\",\"note\":\"{}\"}}",
            "x".repeat(180)
        );
        bytes += key.len() + value.len() + 14;
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .partition((number % PARTITIONS as usize) as i32)
            .headers(OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "source",
                value: Some("shop"),
            }));
        let mut record = record;
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((_, back)) => {
                    // The producer's queue is full: let it drain.
                    record = back;
                    for delivery in pending.drain(..) {
                        delivery.await.unwrap().unwrap();
                    }
                }
            }
        }
        if pending.len() >= 20_000 {
            for delivery in pending.drain(..) {
                delivery.await.unwrap().unwrap();
            }
        }
    }
    for delivery in pending {
        delivery.await.unwrap().unwrap();
    }
    bytes
}

struct Counter(Arc<AtomicUsize>);

impl ClientContext for Counter {}

impl ProducerContext for Counter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        result.as_ref().expect("delivery");
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The plain loop: consume every record and produce it to the same partition, until all are
/// acknowledged. Returns the seconds taken.
fn plain_loop(source: &str, target: &str, topic: &str, count: usize) -> f64 {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", source)
        .set("group.id", "bench-loop")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        list.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let delivered = Arc::new(AtomicUsize::new(0));
    let producer: ThreadedProducer<Counter> = ClientConfig::new()
        .set("bootstrap.servers", target)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Counter(delivered.clone()))
        .unwrap();
    let mut consumed = 0;
    while consumed < count {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        consumed += 1;
        let mut headers = OwnedHeaders::new();
        if let Some(found) = message.headers() {
            for header in found.iter() {
                headers = headers.insert(header);
            }
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
            .partition(message.partition())
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        if let Some(ms) = message.timestamp().to_millis() {
            record = record.timestamp(ms);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    assert_eq!(delivered.load(Ordering::Relaxed), count);
    started.elapsed().as_secs_f64()
}

/// `ferry kafka move` until every record is copied: seconds, and the process's peak memory.
async fn ferry_move(
    source: &KafkaServer,
    target: &KafkaServer,
    topic: &str,
    count: usize,
    run: usize,
) -> (f64, u64) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state =
        std::env::temp_dir().join(format!("ferry-kafka-bench-{}-{run}.db", std::process::id()));
    let _ = std::fs::remove_file(&state);
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "kafka",
            "move",
            "--source",
            &source.url(),
            "--target",
            &target.url(),
            "--topics",
            topic,
        ])
        .arg("--state")
        .arg(&state)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("FERRY_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = ferry_relay::http::client::HttpClient::new(None).unwrap();
    let url = format!("http://127.0.0.1:{port}/api/status");
    wait_until(
        "ferry to copy every record",
        Duration::from_secs(600),
        || {
            let client = &client;
            let url = &url;
            async move {
                let (_, body) = json_request(client, "GET", url, "", Duration::from_secs(5))
                    .await
                    .ok()?;
                let status: serde_json::Value = serde_json::from_str(&body).ok()?;
                (status["copied"].as_u64()? as usize >= count).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let peak_kib = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    assert_eq!(stop(&mut child), Some(0));
    (seconds, peak_kib)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench-kafka.sh"]
async fn kafka_move_benchmark() {
    let count = records();
    let source = KafkaServer::start().unwrap();
    let bytes = fill(&source.bootstrap(), "bench", count).await;
    let megabytes = bytes as f64 / 1e6;
    let mut ferry_seconds = Vec::new();
    let mut loop_seconds = Vec::new();
    let mut peak = 0;
    for run in 0..runs() {
        // Alternate who goes first; every run writes to fresh brokers.
        for ferry_first in [run % 2 == 0, run % 2 != 0] {
            let target = KafkaServer::start().unwrap();
            if ferry_first {
                let (seconds, peak_kib) = ferry_move(&source, &target, "bench", count, run).await;
                peak = peak.max(peak_kib);
                ferry_seconds.push(seconds);
            } else {
                create_topic(&target.bootstrap(), "bench", PARTITIONS).await;
                let (source_bootstrap, target_bootstrap) = (source.bootstrap(), target.bootstrap());
                let seconds = tokio::task::spawn_blocking(move || {
                    plain_loop(&source_bootstrap, &target_bootstrap, "bench", count)
                })
                .await
                .unwrap();
                loop_seconds.push(seconds);
            }
        }
    }
    let ferry = median(&mut ferry_seconds);
    let plain = median(&mut loop_seconds);
    println!("kafka move benchmark: {count} records ({megabytes:.1} MB), {PARTITIONS} partitions, median of {} runs", ferry_seconds.len());
    println!("  ferry kafka move: {ferry:.2} s, {:.0} records/s, {:.1} MB/s (process start, topic creation and offset map included); peak RSS {:.0} MiB", count as f64 / ferry, megabytes / ferry, peak as f64 / 1024.0);
    println!(
        "  plain consume-and-produce loop: {plain:.2} s, {:.0} records/s, {:.1} MB/s",
        count as f64 / plain,
        megabytes / plain
    );
    println!("  ferry throughput / loop throughput: {:.2}", plain / ferry);
    println!("  all runs: ferry {ferry_seconds:.2?}, loop {loop_seconds:.2?}");
}
