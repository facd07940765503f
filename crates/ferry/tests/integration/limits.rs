//! What ferry refuses up front, and what it keeps bounded: replica identities that would break the
//! application or the stream, and memory with very large rows.

use std::process::Stdio;

use crate::common::{stop, Pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identities_that_break_the_application_or_the_stream_are_refused() {
    let pair = Pair::new("identity_refused").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.silent (id int PRIMARY KEY, v text);
             ALTER TABLE public.silent REPLICA IDENTITY NOTHING;
             CREATE TABLE public.other_key (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text);
             ALTER TABLE public.other_key REPLICA IDENTITY USING INDEX other_key_code_key;
             INSERT INTO public.silent VALUES (1, 'a'); INSERT INTO public.other_key VALUES (1, 'x', 'a');",
        )
        .await
        .unwrap();
    let check = pair.ferry("check", &[]).output().unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert_eq!(said.matches("source.replica_identity").count(), 2, "{said}");
    assert!(said.contains("REPLICA IDENTITY DEFAULT"), "{said}");

    let run = pair
        .ferry("run", &["--name", "identity_refused"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(3), "{said}");
    assert!(said.contains("source.replica_identity"), "{said}");
    // Nothing was published, so the application's own writes still work.
    pair.source
        .batch_execute("UPDATE public.silent SET v = 'b'; DELETE FROM public.silent;")
        .await
        .expect("the application's UPDATE and DELETE still work");
    let published: i64 = pair
        .source
        .query_one(
            "SELECT count(*) FROM pg_publication WHERE pubname = 'ferry_identity_refused'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 0);
}

/// Peak resident memory of a process, in bytes (`VmHWM`).
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kilobytes| kilobytes * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rows_stream_in_bounded_memory() {
    let pair = Pair::new("large_rows").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.blobs (id int PRIMARY KEY, body text);
             ALTER TABLE public.blobs ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO public.blobs VALUES (0, 'small');",
        )
        .await
        .unwrap();
    let mut run = pair.spawn_run(&["--name", "large_rows"], None);
    pair.wait_streaming(1).await;
    // 400 rows of 1 MB in one transaction: far more than a batch may hold.
    pair.source
        .batch_execute(
            "INSERT INTO public.blobs SELECT g, repeat(md5(g::text), 32768) FROM generate_series(1, 400) g;",
        )
        .await
        .unwrap();
    pair.wait_equal(&[("public.blobs", "id")]).await;
    let peak = peak_memory(run.id());
    eprintln!(
        "ferry peak memory streaming 400 MB of rows: {} MB",
        peak / 1_048_576
    );
    assert!(
        peak > 0 && peak < 400 * 1_048_576,
        "peak memory {} MB\n{}",
        peak / 1_048_576,
        pair.log()
    );
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlogged_tables_and_large_objects_are_refused_up_front() {
    let pair = Pair::new("unlogged_lo").await;
    pair.source
        .batch_execute(
            "CREATE UNLOGGED TABLE public.scratch (id int PRIMARY KEY, v text);
             CREATE TABLE public.files (id int PRIMARY KEY, content oid);
             INSERT INTO public.files VALUES (1, lo_from_bytea(0, 'hello'));
             CREATE TABLE public.fine (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    let check = pair.ferry("check", &[]).output().unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(
        said.contains("UNLOGGED") && said.contains("SET LOGGED"),
        "{said}"
    );
    assert!(said.contains("large-object"), "{said}");
    let run = pair
        .ferry("run", &["--name", "unlogged_lo"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(3), "{said}");
    assert!(
        said.contains("public.scratch") && said.contains("public.files"),
        "{said}"
    );
    // Leaving them out by name moves the rest.
    let excluded = pair
        .ferry("check", &["--exclude", "public.scratch,public.files"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&excluded.stdout).into_owned();
    assert_eq!(excluded.status.code(), Some(0), "{said}");
}
