//! kill -9 at any moment, under concurrent writes, and the next run converges to a target equal
//! to the source, row for row.

use std::time::Duration;

use ferry_testkit::wait_until;

use crate::common::{kill, stop, Pair, Writer};

const TABLES: &[(&str, &str)] = &[
    ("public.accounts", "id"),
    ("public.ledger", "account_id, entry"),
];

async fn setup(pair: &Pair, rows: i64) {
    pair.source
        .batch_execute(&format!(
            "CREATE TABLE public.accounts (id bigint PRIMARY KEY, payload text NOT NULL, counter integer NOT NULL);
             CREATE TABLE public.ledger (account_id bigint, entry integer, amount numeric(20, 6), PRIMARY KEY (account_id, entry));
             INSERT INTO public.accounts SELECT g, md5(g::text), 0 FROM generate_series(1, {rows}) g;
             INSERT INTO public.ledger SELECT g % 5000, g, g / 7.0 FROM generate_series(1, {rows}) g;
             ANALYZE;"
        ))
        .await
        .unwrap();
}

/// A small pseudo-random sequence (no external crates), seeded from the clock.
fn delays(count: usize, max_millis: u64) -> Vec<Duration> {
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Duration::from_millis(100 + state % max_millis)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_moments_under_writes_loses_nothing() {
    let pair = Pair::new("kill_random").await;
    setup(&pair, 200_000).await;
    let writer = Writer::start("kill_random", "public.accounts", 200_000).await;
    let arguments = [
        "--name",
        "kill_random",
        "--parallel",
        "3",
        "--chunk-rows",
        "8000",
    ];
    let schedule = delays(5, 1500);
    eprintln!("kill schedule: {schedule:?}");
    for delay in schedule {
        let mut ferry = pair.spawn_run(&arguments, None);
        tokio::time::sleep(delay).await;
        kill(&mut ferry);
    }
    let mut ferry = pair.spawn_run(&arguments, None);
    pair.wait_streaming(2).await;
    // Once streaming, die mid-stream too.
    tokio::time::sleep(Duration::from_millis(700)).await;
    kill(&mut ferry);
    let mut ferry = pair.spawn_run(&arguments, None);
    pair.wait_streaming(2).await;
    let writes = writer.stop().await;
    assert!(writes > 100, "the writer made {writes} writes");
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

/// Dies exactly at the dangerous points: after rows are written but before their chunk commits,
/// after a chunk commits, after a batch is applied but before the source is acknowledged, and
/// just before a batch commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dying_at_each_failpoint_loses_nothing() {
    let pair = Pair::new("failpoints").await;
    setup(&pair, 60_000).await;
    let writer = Writer::start("failpoints", "public.accounts", 60_000).await;
    let arguments = [
        "--name",
        "failpoints",
        "--parallel",
        "2",
        "--chunk-rows",
        "5000",
    ];
    for failpoint in [
        "copy.before_chunk_commit:3",
        "copy.after_chunk_commit:5",
        "apply.before_commit:3",
        "stream.after_apply_before_ack:4",
        "apply.before_commit:10",
    ] {
        let mut ferry = pair.spawn_run(&arguments, Some(failpoint));
        let mut exited = None;
        for _ in 0..1200 {
            if let Some(status) = ferry.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = exited.unwrap_or_else(|| {
            let _ = ferry.kill();
            panic!("ferry did not reach failpoint {failpoint}\n{}", pair.log())
        });
        assert!(!status.success(), "ferry should have died at {failpoint}");
        assert!(
            pair.log().contains(&format!(
                "failpoint {}",
                failpoint.split(':').next().unwrap()
            )),
            "died elsewhere than {failpoint}\n{}",
            pair.log()
        );
    }
    let mut ferry = pair.spawn_run(&arguments, None);
    pair.wait_streaming(2).await;
    writer.stop().await;
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

/// A lost slot means lost changes: ferry refuses to continue and says how to start over, and
/// `--restart` does start over and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_is_refused_and_restart_recovers() {
    let pair = Pair::new("lost_slot").await;
    setup(&pair, 5_000).await;
    let arguments = ["--name", "lost_slot"];
    let mut ferry = pair.spawn_run(&arguments, None);
    pair.wait_streaming(2).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
    let source = &pair.source;
    wait_until("the old walsender to release the slot", Duration::from_secs(30), || async {
        let row = source.query_one("SELECT NOT active FROM pg_replication_slots WHERE slot_name = 'ferry_lost_slot'", &[]).await.ok()?;
        row.get::<_, bool>(0).then_some(())
    })
    .await
    .unwrap();
    pair.source.batch_execute("SELECT pg_drop_replication_slot('ferry_lost_slot'); UPDATE public.accounts SET counter = 42 WHERE id <= 100;").await.unwrap();

    let output = pair.ferry("run", &arguments).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("error[source.slot_missing]") && stderr.contains("--restart"),
        "{stderr}"
    );

    let mut ferry = pair.spawn_run(&["--name", "lost_slot", "--restart"], None);
    pair.wait_streaming(2).await;
    pair.source
        .batch_execute("DELETE FROM public.accounts WHERE id <= 10;")
        .await
        .unwrap();
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

/// A value in ferry's state that cannot be read is named with its table, never taken as
/// absent; `--restart` forgets it and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_is_named_and_restart_recovers() {
    let pair = Pair::new("damaged_state").await;
    setup(&pair, 2_000).await;
    let arguments = ["--name", "damaged_state"];
    let mut ferry = pair.spawn_run(&arguments, None);
    pair.wait_streaming(2).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
    let damaged = pair
        .target
        .execute(
            "UPDATE _ferry.copy_end SET position = 'postgres:not a position' WHERE migration = 'damaged_state'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(damaged, 1, "the copy stored where it ended");

    let output = pair.ferry("run", &arguments).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("error[state.corrupt]")
            && stderr.contains("_ferry.copy_end")
            && stderr.contains("--restart"),
        "{stderr}"
    );

    let mut ferry = pair.spawn_run(&["--name", "damaged_state", "--restart"], None);
    pair.wait_streaming(2).await;
    pair.source
        .batch_execute("UPDATE public.accounts SET counter = 7 WHERE id <= 50;")
        .await
        .unwrap();
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

/// SIGTERM during the copy stops cleanly (exit 0) and the next run copies only what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_during_the_copy_resumes_from_committed_chunks() {
    let pair = Pair::new("stop_copy").await;
    setup(&pair, 300_000).await;
    let arguments = [
        "--name",
        "stop_copy",
        "--parallel",
        "1",
        "--chunk-rows",
        "2000",
    ];
    let mut ferry = pair.spawn_run(&arguments, None);
    let target = &pair.target;
    let done_before = wait_until(
        "a few chunks to commit",
        Duration::from_secs(60),
        || async {
            let done: i64 = target
                .query_one(
                    "SELECT count(*) FROM _ferry.chunk WHERE migration = 'stop_copy' AND done",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (done >= 3).then_some(done)
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    assert_eq!(
        stop(&mut ferry),
        Some(0),
        "graceful stop during the copy\n{}",
        pair.log()
    );
    let (done, total): (i64, i64) = {
        let row = target.query_one("SELECT count(*) FILTER (WHERE done), count(*) FROM _ferry.chunk WHERE migration = 'stop_copy'", &[]).await.unwrap();
        (row.get(0), row.get(1))
    };
    assert!(
        done >= done_before && done < total,
        "stopped part-way: {done} of {total} chunks"
    );
    let mut ferry = pair.spawn_run(&arguments, None);
    pair.wait_streaming(2).await;
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
    let copied: i64 = target
        .query_one(
            "SELECT sum(rows)::bigint FROM _ferry.chunk WHERE migration = 'stop_copy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        copied, 600_000,
        "every row copied exactly once across both runs"
    );
}

/// A migration name whose stream checkpoint on the target another kind of source wrote is
/// refused with what to do, not read as a position of this source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_written_by_another_kind_of_source_is_refused() {
    let pair = Pair::new("wrong_kind").await;
    setup(&pair, 100).await;
    let mut ferry = pair.spawn_run(&["--name", "wrong_kind"], None);
    pair.wait_streaming(2).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
    let mariadb = &crate::mysql::mariadb().source;
    let source = mariadb.create_database("wrong_kind").unwrap();
    crate::mysql::sql(
        mariadb,
        "wrong_kind",
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, payload TEXT NOT NULL, counter INT NOT NULL); INSERT INTO accounts VALUES (1, 'a', 0);",
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "run",
            "--source",
            &source,
            "--target",
            &pair.target_url,
            "--name",
            "wrong_kind",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("error[state.position]") && stderr.contains("another kind of source"),
        "{stderr}"
    );
}
