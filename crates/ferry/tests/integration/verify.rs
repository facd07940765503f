//! `ferry verify` finds every kind of planted difference, repairs it, and raises no false alarm
//! on an equal copy under concurrent writes.

use std::time::Duration;

use crate::common::{keys_of, run_verify, stop, Pair, Writer};

fn verify(pair: &Pair, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    run_verify(&mut pair.ferry("verify", &[&["--json"], extra].concat()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_planted_difference_is_found_and_repaired() {
    let pair = Pair::new("verify_plant").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.items (id integer PRIMARY KEY, at timestamptz NOT NULL, amount numeric NOT NULL, body text, big text);
             INSERT INTO public.items SELECT g, timestamptz '2024-01-01 00:00:00.000001+00' + g * interval '1 second', g / 2.0, 'café ' || g,
                    CASE WHEN g % 10 = 0 THEN (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 300) i) END
             FROM generate_series(1, 30000) g;
             CREATE TABLE public.pairs (a integer, b text, note text, PRIMARY KEY (a, b));
             INSERT INTO public.pairs SELECT g % 100, 'b' || g, 'note' FROM generate_series(1, 5000) g;",
        )
        .await
        .unwrap();
    let output = pair
        .ferry("copy", &["--name", "verify_plant"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (code, report, stderr) = verify(&pair, &["--name", "verify_plant", "--chunk-rows", "4000"]);
    assert_eq!(
        code,
        Some(0),
        "an equal copy verifies equal: {report}\n{stderr}"
    );
    assert_eq!(report["tables"][0]["source_rows"], 30000);

    pair.target
        .batch_execute(
            "UPDATE public.items SET at = at + interval '1 microsecond' WHERE id = 10;
             UPDATE public.items SET amount = 10.00 WHERE id = 20;
             DELETE FROM public.items WHERE id = 30;
             INSERT INTO public.items VALUES (100000, now(), 1, 'extra', NULL);
             UPDATE public.items SET big = NULL WHERE id = 40;
             UPDATE public.items SET body = convert_from(convert_to(body, 'UTF8'), 'LATIN1') WHERE id = 50;
             ALTER TABLE public.pairs DROP CONSTRAINT pairs_pkey;
             INSERT INTO public.pairs SELECT * FROM public.pairs WHERE a = 7 AND b = 'b7';",
        )
        .await
        .unwrap();
    let source_amount: String = pair
        .source
        .query_one("SELECT amount::text FROM public.items WHERE id = 20", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        source_amount, "10.0000000000000000",
        "the planted scale change differs only in scale"
    );
    let (code, report, stderr) = verify(&pair, &["--name", "verify_plant", "--chunk-rows", "4000"]);
    assert_eq!(code, Some(1), "{report}\n{stderr}");
    assert_eq!(
        keys_of(&report, "public.items", "different"),
        ["(10)", "(20)", "(40)", "(50)"]
    );
    assert_eq!(keys_of(&report, "public.items", "missing"), ["(30)"]);
    assert_eq!(keys_of(&report, "public.items", "extra"), ["(100000)"]);
    assert_eq!(keys_of(&report, "public.pairs", "duplicate"), ["(7,b7)"]);

    let (code, report, stderr) = verify(
        &pair,
        &["--name", "verify_plant", "--chunk-rows", "4000", "--repair"],
    );
    assert_eq!(
        code,
        Some(1),
        "the dropped primary key still differs: {report}\n{stderr}"
    );
    pair.target
        .batch_execute("ALTER TABLE public.pairs ADD PRIMARY KEY (a, b);")
        .await
        .unwrap();
    let (code, report, stderr) = verify(&pair, &["--name", "verify_plant"]);
    assert_eq!(code, Some(0), "repaired: {report}\n{stderr}");
    pair.wait_equal(&[("public.items", "id"), ("public.pairs", "a, b")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_alarm_under_writes_and_real_differences_still_found() {
    let pair = Pair::new("verify_live").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.accounts (id bigint PRIMARY KEY, payload text NOT NULL, counter integer NOT NULL);
             INSERT INTO public.accounts SELECT g, md5(g::text), 0 FROM generate_series(1, 50000) g;
             CREATE TABLE public.settings (name text PRIMARY KEY, value text);
             INSERT INTO public.settings VALUES ('mode', 'live'), ('region', 'eu');",
        )
        .await
        .unwrap();
    let mut ferry = pair.spawn_run(&["--name", "verify_live"], None);
    pair.wait_streaming(2).await;
    let writer = Writer::start("verify_live", "public.accounts", 50_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arguments = [
        "--name",
        "verify_live",
        "--while-streaming",
        "--chunk-rows",
        "5000",
    ];
    let (code, report, stderr) = verify(&pair, &arguments);
    assert_eq!(
        code,
        Some(0),
        "no false alarm under writes: {report}\n{stderr}"
    );

    // A real difference the stream will not fix: a row of a table nobody writes to.
    pair.target
        .batch_execute("UPDATE public.settings SET value = 'tampered' WHERE name = 'mode';")
        .await
        .unwrap();
    let (code, report, stderr) = verify(&pair, &arguments);
    writer.stop().await;
    assert_eq!(code, Some(1), "{report}\n{stderr}");
    assert_eq!(keys_of(&report, "public.settings", "different"), ["(mode)"]);
    assert!(
        keys_of(&report, "public.accounts", "different").is_empty(),
        "{report}"
    );
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

/// A verification killed part-way resumes: ranges already checked are not checked again, and
/// what they found is still reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_verification_resumes() {
    let pair = Pair::new("verify_resume").await;
    pair.source
        .batch_execute("CREATE TABLE public.points (id integer PRIMARY KEY, x double precision, label text); INSERT INTO public.points SELECT g, g * 0.5, 'p' || g FROM generate_series(1, 200000) g;")
        .await
        .unwrap();
    let output = pair
        .ferry("copy", &["--name", "verify_resume"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Differences at both ends of the key space, so both the first and the resumed run find one.
    pair.target
        .batch_execute("UPDATE public.points SET label = 'changed' WHERE id IN (3, 199998);")
        .await
        .unwrap();
    let arguments = [
        "--name",
        "verify_resume",
        "--parallel",
        "1",
        "--chunk-rows",
        "500",
    ];
    let mut verifying = pair
        .ferry("verify", &arguments)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let target = &pair.target;
    ferry_testkit::wait_until("some ranges to be verified", Duration::from_secs(60), || async {
        let checked: i64 = target.query_one("SELECT count(*) FROM _ferry.verify_range WHERE migration = 'verify_resume' AND outcome IS NOT NULL", &[]).await.ok()?.get(0);
        (checked >= 20).then_some(())
    })
    .await
    .unwrap();
    crate::common::kill(&mut verifying);
    let (checked, total): (i64, i64) = {
        let row = target.query_one("SELECT count(*) FILTER (WHERE outcome IS NOT NULL), count(*) FROM _ferry.verify_range WHERE migration = 'verify_resume'", &[]).await.unwrap();
        (row.get(0), row.get(1))
    };
    assert!(
        checked >= 20 && checked < total,
        "interrupted part-way: {checked} of {total}"
    );

    let (code, report, stderr) = verify(&pair, &[&arguments[..], &["--resume"]].concat());
    assert_eq!(code, Some(1), "{report}\n{stderr}");
    assert_eq!(
        keys_of(&report, "public.points", "different"),
        ["(199998)", "(3)"]
    );
    assert_eq!(report["tables"][0]["source_rows"], 200000);
    let resumed: usize = stderr
        .split("resumed=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or(0);
    assert!(
        resumed as i64 >= checked,
        "the resumed run reused {resumed} checked ranges: {stderr}"
    );
}

/// A table whose copy was interrupted is reported as not copied yet (with its state), not as
/// a table whose definition or rows differ; verify still exits 1: the copy is not equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_still_being_copied_is_reported_as_not_copied_yet() {
    let pair = Pair::new("verify_copying").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.items (id bigint PRIMARY KEY, v text NOT NULL);
             INSERT INTO public.items SELECT g, 'v' || g FROM generate_series(1, 5000) g;",
        )
        .await
        .unwrap();
    let mut run = pair.spawn_run(
        &[
            "--name",
            "copying",
            "--chunk-rows",
            "500",
            "--parallel",
            "1",
        ],
        Some("copy.after_chunk_commit:3"),
    );
    let status = run.wait().unwrap();
    assert!(!status.success(), "the failpoint stops the copy");
    let verified = pair
        .ferry("verify", &["--name", "copying"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verified.stdout).to_string();
    assert_eq!(verified.status.code(), Some(1), "{text}");
    assert!(
        text.contains("public.items") && text.contains("NOT COPIED YET (copying)"),
        "{text}"
    );
    assert!(!text.contains("definitions differ"), "{text}");
    let json = pair
        .ferry("verify", &["--name", "copying", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["tables"][0]["not_copied"], "copying", "{report}");
}
