//! Sequences, TRUNCATE, tables joining the selection later, and secondary objects.

use std::time::Duration;

use ferry_testkit::wait_until;

use crate::common::{stop, wait_true, Pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_sequences_indexes_and_tables_added_later() {
    let pair = Pair::new("schema").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.parents (id serial PRIMARY KEY, name text UNIQUE);
             CREATE TABLE public.children (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, parent_id integer REFERENCES public.parents (id), twice bigint GENERATED ALWAYS AS (id * 2) STORED, note text);
             CREATE INDEX children_note ON public.children (lower(note));
             CREATE TABLE public.later (id integer PRIMARY KEY, value text);
             INSERT INTO public.parents (name) SELECT 'parent ' || g FROM generate_series(1, 100) g;
             INSERT INTO public.children (parent_id, note) SELECT 1 + g % 100, 'child ' || g FROM generate_series(1, 1000) g;
             INSERT INTO public.later SELECT g, 'later ' || g FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
    let first = &[
        "--name",
        "schema",
        "--tables",
        "public.parents,public.children",
    ];
    let mut ferry = pair.spawn_run(first, None);
    pair.wait_streaming(2).await;
    let tables = [("public.parents", "id"), ("public.children", "id")];
    pair.wait_equal(&tables).await;

    // Secondary objects are created after the copy (while the stream may already run).
    let target = &pair.target;
    let objects = wait_until(
        "indexes and foreign keys on the target",
        Duration::from_secs(60),
        || async {
            let rows = target
                .query(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
                    &[],
                )
                .await
                .ok()?;
            let names: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
            let foreign_keys: i64 = target
                .query_one(
                    "SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (names.len() == 4 && foreign_keys == 1).then_some(names)
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    assert_eq!(
        objects,
        [
            "children_note",
            "children_pkey",
            "parents_name_key",
            "parents_pkey"
        ]
    );
    let foreign_keys: i64 = pair
        .target
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(foreign_keys, 1);

    // A TRUNCATE and new rows, streamed.
    pair.source
        .batch_execute("TRUNCATE public.children; INSERT INTO public.children (parent_id, note) VALUES (1, 'after truncate'); INSERT INTO public.parents (name) VALUES ('newest');")
        .await
        .unwrap();
    pair.wait_equal(&tables).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());

    // Sequences are at least where the source's are, so new rows on the target do not collide.
    for sequence in ["public.parents_id_seq", "public.children_id_seq"] {
        let query = format!("SELECT last_value FROM {sequence}");
        let source: i64 = pair.source.query_one(&query, &[]).await.unwrap().get(0);
        let target: i64 = pair.target.query_one(&query, &[]).await.unwrap().get(0);
        assert!(
            source > 1 && target >= source,
            "{sequence}: source {source}, target {target}"
        );
    }

    // Widen the selection: the new table is copied, then streamed; the others are not copied again.
    let copied_before: i64 = pair
        .target
        .query_one("SELECT count(*) FROM public.children", &[])
        .await
        .unwrap()
        .get(0);
    pair.source.batch_execute("INSERT INTO public.later VALUES (501, 'while ferry was stopped'); INSERT INTO public.children (parent_id, note) VALUES (2, 'while stopped');").await.unwrap();
    let mut ferry = pair.spawn_run(&["--name", "schema", "--tables", "public.*"], None);
    pair.wait_streaming(3).await;
    pair.source.batch_execute("UPDATE public.later SET value = 'streamed' WHERE id <= 10; DELETE FROM public.later WHERE id = 500;").await.unwrap();
    let all = [
        ("public.parents", "id"),
        ("public.children", "id"),
        ("public.later", "id"),
    ];
    pair.wait_equal(&all).await;
    assert_eq!(
        copied_before, 1,
        "the children table held just the post-truncate row"
    );
    let parents_copied: i64 = pair
        .target
        .query_one("SELECT sum(rows)::bigint FROM _ferry.chunk WHERE migration = 'schema' AND table_name = 'parents'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        parents_copied, 100,
        "parents were copied once (100 rows) and never again"
    );
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

/// Rows identified by the whole row in the log (REPLICA IDENTITY FULL) still apply by primary
/// key, and a unique value handed from one row to another within one batch applies in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_full_and_unique_values_changing_hands() {
    let pair = Pair::new("identity").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.people (id integer PRIMARY KEY, email text NOT NULL UNIQUE, nickname text);
             ALTER TABLE public.people REPLICA IDENTITY FULL;
             INSERT INTO public.people VALUES (1, 'x@example.com', NULL), (2, 'z@example.com', 'zed'), (3, 'w@example.com', NULL);",
        )
        .await
        .unwrap();
    let mut ferry = pair.spawn_run(&["--name", "identity"], None);
    pair.wait_streaming(1).await;
    let tables = [("public.people", "id")];
    pair.wait_equal(&tables).await;
    pair.source
        .batch_execute(
            "BEGIN;
             UPDATE public.people SET email = 'y@example.com' WHERE id = 1;
             UPDATE public.people SET email = 'x@example.com', nickname = NULL WHERE id = 2;
             COMMIT;
             DELETE FROM public.people WHERE id = 3;
             INSERT INTO public.people VALUES (4, 'w@example.com', NULL);",
        )
        .await
        .unwrap();
    pair.wait_equal(&tables).await;
    // Two rows swap their emails in one transaction: whichever final image is written first
    // meets the value the other row still holds, unless both are deleted first. (Once the
    // unique constraint exists: it is built when the stream has caught up with the copy.)
    wait_true(
        &pair.target,
        "the unique constraint on the target",
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'public.people'::regclass AND contype = 'u')",
        &[],
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    pair.source
        .batch_execute(
            "BEGIN;
             UPDATE public.people SET email = 'swap' WHERE id = 1;
             UPDATE public.people SET email = 'y@example.com' WHERE id = 2;
             UPDATE public.people SET email = 'x@example.com' WHERE id = 1;
             COMMIT;",
        )
        .await
        .unwrap();
    pair.wait_equal(&tables).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

/// A unique index that appears on the target while ferry streams (an operator's, or one that
/// waited for the stream to catch up, built on another session) is met by the very next batch:
/// two rows swapping their values go in by the careful path instead of failing the table. So
/// is an exclusion constraint, under which two rows swap ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_index_added_on_the_target_while_streaming_is_honoured_at_once() {
    let pair = Pair::new("late_unique").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.handles (id integer PRIMARY KEY, handle text NOT NULL);
             INSERT INTO public.handles SELECT g, 'h' || g FROM generate_series(1, 50) g;
             CREATE TABLE public.bookings (id integer PRIMARY KEY, during int4range NOT NULL);
             INSERT INTO public.bookings VALUES (1, '[1,10)'), (2, '[10,20)'), (3, '[20,30)');",
        )
        .await
        .unwrap();
    let mut ferry = pair.spawn_run(&["--name", "late_unique"], None);
    pair.wait_streaming(2).await;
    let tables = [("public.handles", "id"), ("public.bookings", "id")];
    // A batch with full images first, so the applier has looked at the table's indexes.
    pair.source
        .batch_execute(
            "UPDATE public.handles SET handle = handle || '!' WHERE id <= 10;
             UPDATE public.bookings SET during = during WHERE id = 3;",
        )
        .await
        .unwrap();
    pair.wait_equal(&tables).await;
    pair.target
        .batch_execute("CREATE UNIQUE INDEX handles_by_handle ON public.handles (handle)")
        .await
        .unwrap();
    // Each row's final image holds the value the other still holds on the target.
    pair.source
        .batch_execute(
            "UPDATE public.handles SET handle = CASE id WHEN 1 THEN 'h2!' ELSE 'h1!' END WHERE id IN (1, 2);
             UPDATE public.handles SET handle = CASE id WHEN 3 THEN 'h4!' ELSE 'h3!' END WHERE id IN (3, 4);",
        )
        .await
        .unwrap();
    pair.wait_equal(&tables).await;

    // The same for an exclusion constraint: two rows swap non-overlapping ranges.
    pair.target
        .batch_execute(
            "ALTER TABLE public.bookings ADD CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&)",
        )
        .await
        .unwrap();
    pair.source
        .batch_execute(
            "UPDATE public.bookings SET during = CASE id WHEN 1 THEN '[10,20)'::int4range ELSE '[1,10)'::int4range END WHERE id IN (1, 2)",
        )
        .await
        .unwrap();
    pair.wait_equal(&tables).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
    assert!(!pair.log().contains("rejected a change"), "{}", pair.log());
}

/// A change the target rejects stops only its table: the others keep streaming, status says
/// which table failed and why, and the next run (after the cause is fixed) copies it afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_change_stops_only_its_table() {
    let pair = Pair::new("rejected").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.good (id integer PRIMARY KEY, v integer);
             CREATE TABLE public.strict (id integer PRIMARY KEY, v integer);
             INSERT INTO public.good SELECT g, g FROM generate_series(1, 100) g;
             INSERT INTO public.strict SELECT g, g FROM generate_series(1, 50) g;",
        )
        .await
        .unwrap();
    // The target's copy of `strict` is stricter than the source.
    pair.target.batch_execute("CREATE TABLE public.strict (id integer PRIMARY KEY, v integer CONSTRAINT small CHECK (v < 100));").await.unwrap();
    let arguments = ["--name", "rejected"];
    let mut ferry = pair.spawn_run(&arguments, None);
    pair.wait_streaming(2).await;
    pair.source.batch_execute("INSERT INTO public.strict VALUES (51, 150); INSERT INTO public.good VALUES (101, 101);").await.unwrap();
    let target = &pair.target;
    wait_until("strict to be marked failed", Duration::from_secs(60), || async {
        let row = target.query_opt("SELECT note FROM _ferry.table_state WHERE migration = 'rejected' AND table_name = 'strict' AND state = 'failed'", &[]).await.ok()??;
        Some(row.get::<_, String>(0))
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    // The other table goes on streaming.
    pair.source.batch_execute("UPDATE public.good SET v = -v WHERE id <= 10; DELETE FROM public.good WHERE id = 100; UPDATE public.strict SET v = 2 WHERE id = 1;").await.unwrap();
    pair.wait_equal(&[("public.good", "id")]).await;
    assert!(
        ferry.try_wait().unwrap().is_none(),
        "ferry keeps running\n{}",
        pair.log()
    );
    let status = pair
        .ferry("status", &["--json", "--name", "rejected"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let strict = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|table| table["table"] == "public.strict")
        .unwrap()
        .clone();
    assert_eq!(strict["state"], "failed", "{report}");
    assert!(
        strict["error"].as_str().unwrap_or("").contains("small"),
        "the reason names the constraint: {report}"
    );
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());

    // Fixed on the target: the next run copies the table afresh and streams it.
    pair.target
        .batch_execute("ALTER TABLE public.strict DROP CONSTRAINT small;")
        .await
        .unwrap();
    let mut ferry = pair.spawn_run(&arguments, None);
    pair.wait_streaming(2).await;
    pair.source
        .batch_execute("INSERT INTO public.strict VALUES (52, 500);")
        .await
        .unwrap();
    pair.wait_equal(&[("public.good", "id"), ("public.strict", "id")])
        .await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}
