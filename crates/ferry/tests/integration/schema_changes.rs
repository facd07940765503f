//! Columns added to a table on the source while ferry streams it (an application deploying):
//! the target gains them, with their defaults, before the first change that uses them, and
//! streaming goes on. Compared through each server, independently of ferry.

use crate::common::{kill, stop, Pair};

const SCHEMA: &str = "
CREATE TABLE public.orders (id bigint PRIMARY KEY, amount numeric(10,2) NOT NULL, note text);
INSERT INTO public.orders SELECT g, g / 10.0, 'n' || g FROM generate_series(1, 1000) g;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_added_on_the_source_while_streaming_reach_the_target() {
    let pair = Pair::new("addcolumn").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    let arguments = ["--name", "addcolumn", "--chunk-rows", "200"];
    let mut run = pair.spawn_run(&arguments, None);
    pair.wait_streaming(1).await;
    pair.wait_equal(&[("public.orders", "id")]).await;
    pair.source
        .batch_execute(
            "ALTER TABLE public.orders ADD COLUMN status text NOT NULL DEFAULT 'new';
             INSERT INTO public.orders (id, amount, status) VALUES (5001, 1, 'paid');
             UPDATE public.orders SET status = 'shipped' WHERE id % 10 = 0;
             -- The change and rows using it in one transaction.
             BEGIN;
             ALTER TABLE public.orders ADD COLUMN tags text[], ADD COLUMN weight real DEFAULT 1.5;
             INSERT INTO public.orders VALUES (5002, 2, 'x', 'new', '{a,b}', 2.5);
             UPDATE public.orders SET tags = '{c}' WHERE id < 5;
             COMMIT;",
        )
        .await
        .unwrap();
    pair.wait_equal(&[("public.orders", "id")]).await;

    // Across a kill -9: a column added while ferry is down.
    kill(&mut run);
    pair.source
        .batch_execute(
            "ALTER TABLE public.orders ADD COLUMN region varchar(8) DEFAULT 'eu';
             INSERT INTO public.orders (id, amount, region) VALUES (5003, 3, 'us');",
        )
        .await
        .unwrap();
    let mut run = pair.spawn_run(&arguments, None);
    pair.source
        .batch_execute("UPDATE public.orders SET region = 'apac' WHERE id = 7;")
        .await
        .unwrap();
    pair.wait_equal(&[("public.orders", "id")]).await;
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
    let defaults: Vec<Option<String>> = pair
        .target
        .query(
            "SELECT column_default FROM information_schema.columns WHERE table_name = 'orders' AND column_name IN ('status', 'weight', 'region') ORDER BY column_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        defaults,
        vec![
            Some("'eu'::character varying".to_string()),
            Some("'new'::text".to_string()),
            Some("1.5".to_string())
        ]
    );
}

/// A column added with a computed default (`random()`, `now()`, a sequence) gave the existing source rows
/// values the log never carried: the table stops and the next run copies it afresh. Under a
/// table rename too (the stream names tables as the target does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_with_a_computed_default_recopies_its_table_under_a_rename() {
    let pair = Pair::new("addcomputed").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    let config =
        std::env::temp_dir().join(format!("ferry-addcomputed-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[[transform]]\ntable = \"public.orders\"\nrename = \"public.purchases\"\n",
    )
    .unwrap();
    let arguments = ["--name", "addcomputed", "-c", config.to_str().unwrap()];
    let mut run = pair.spawn_run(&arguments, None);
    pair.wait_streaming(1).await;
    let compare = "SELECT id, amount, note, seq FROM public.{} ORDER BY id";
    pair.source
        .batch_execute(
            "ALTER TABLE public.orders ADD COLUMN label text DEFAULT 'plain';
             INSERT INTO public.orders (id, amount) VALUES (6001, 1);",
        )
        .await
        .unwrap();
    ferry_testkit::wait_until(
        "the plain column on the target",
        std::time::Duration::from_secs(60),
        || async {
            pair.target
                .query_opt(
                    "SELECT 1 FROM public.purchases WHERE id = 6001 AND label = 'plain'",
                    &[],
                )
                .await
                .ok()?
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    pair.source
        .batch_execute(
            "ALTER TABLE public.orders ADD COLUMN seq bigint DEFAULT (random() * 1000000000)::bigint;
             INSERT INTO public.orders (id, amount) VALUES (6002, 2);",
        )
        .await
        .unwrap();
    ferry_testkit::wait_until("the table to stop", std::time::Duration::from_secs(60), || async {
        pair.target
            .query_opt("SELECT 1 FROM _ferry.table_state WHERE table_name = 'purchases' AND state = 'failed'", &[])
            .await
            .ok()?
    })
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
    let mut run = pair.spawn_run(&arguments, None);
    pair.wait_streaming(1).await;
    // The copy afresh brought the source's own values (the target's default would differ).
    ferry_testkit::wait_until(
        "the copy afresh",
        std::time::Duration::from_secs(60),
        || async {
            let source = aggregate(&pair.source, &compare.replace("{}", "orders")).await?;
            let target = aggregate(&pair.target, &compare.replace("{}", "purchases")).await?;
            (source == target).then_some(())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
}

/// The rows of `sql` as one text (None while the query fails).
async fn aggregate(client: &tokio_postgres::Client, sql: &str) -> Option<Option<String>> {
    client
        .query_one(
            &format!("SELECT string_agg(t::text, '|') FROM ({sql}) t"),
            &[],
        )
        .await
        .ok()
        .map(|row| row.get(0))
}

/// Tables created on the source while ferry streams, which the selection takes in, are copied
/// and streamed without a restart by hand (one with a key, one without); a table outside the
/// selection is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_created_while_streaming_join_the_migration() {
    let pair = Pair::new("newtables").await;
    pair.source
        .batch_execute(&format!("{SCHEMA} CREATE SCHEMA scratch;"))
        .await
        .unwrap();
    let arguments = ["--name", "newtables", "--tables", "public.*"];
    let mut run = pair.spawn_run(&arguments, None);
    pair.wait_streaming(1).await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.late (id int PRIMARY KEY, v text);
             INSERT INTO public.late SELECT g, 'v' || g FROM generate_series(1, 2000) g;
             CREATE TABLE public.late_log (at int, what text);
             ALTER TABLE public.late_log REPLICA IDENTITY FULL;
             INSERT INTO public.late_log SELECT g % 10, 'same' FROM generate_series(1, 50) g;
             CREATE TABLE scratch.ignored (id int PRIMARY KEY);
             UPDATE public.orders SET note = 'during' WHERE id <= 10;",
        )
        .await
        .unwrap();
    // Changes keep coming while the new tables are picked up.
    for round in 0..20 {
        pair.source
            .batch_execute(&format!(
                "UPDATE public.late SET v = v || '.{round}' WHERE id % 20 = {round};
                 DELETE FROM public.late WHERE id = {};
                 INSERT INTO public.late_log VALUES ({round}, 'round');
                 DELETE FROM public.late_log WHERE ctid = (SELECT ctid FROM public.late_log WHERE at = {} LIMIT 1);",
                1000 + round,
                round % 10
            ))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    pair.wait_equal(&[
        ("public.orders", "id"),
        ("public.late", "id"),
        ("public.late_log", "at, what"),
    ])
    .await;
    let ignored: i64 = pair
        .target
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'scratch'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ignored, 0, "a table outside the selection was copied");
    assert!(
        pair.log().contains("new tables joined the selection"),
        "{}",
        pair.log()
    );

    // A new table ferry must refuse (no key, and REPLICA IDENTITY DEFAULT: its updates could not
    // be streamed) does not stop the migration: the others go on, and the log says why.
    pair.source
        .batch_execute(
            "CREATE TABLE public.refused (a int, b text);
             INSERT INTO public.refused VALUES (1, 'x');",
        )
        .await
        .unwrap();
    ferry_testkit::wait_until(
        "ferry to leave the refused table out",
        std::time::Duration::from_secs(60),
        || async {
            pair.log()
                .contains("cannot join the migration")
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    pair.source
        .batch_execute("UPDATE public.late SET v = 'after' WHERE id <= 5; INSERT INTO public.orders (id, amount) VALUES (9999, 1);")
        .await
        .unwrap();
    pair.wait_equal(&[("public.orders", "id"), ("public.late", "id")])
        .await;
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
}

/// A column type widened on the source (an application deploying a bigger integer, a longer
/// text, more digits) is widened on the target before the first change that needs it, while
/// streaming and while ferry was down; values that only fit the new type arrive intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widened_column_types_on_the_source_are_widened_on_the_target() {
    let pair = Pair::new("widen").await;
    pair.source
        .batch_execute(
            "CREATE TABLE public.readings (id integer PRIMARY KEY, counter integer NOT NULL, label varchar(8), amount numeric(6,2), ratio real);
             INSERT INTO public.readings SELECT g, g, 'r' || g, g / 10.0, g / 3.0 FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
    let arguments = ["--name", "widen"];
    let mut run = pair.spawn_run(&arguments, None);
    pair.wait_streaming(1).await;
    // A change first: the applier has read the target's types before they widen.
    pair.source
        .batch_execute("UPDATE public.readings SET counter = counter + 1 WHERE id = 1;")
        .await
        .unwrap();
    pair.wait_equal(&[("public.readings", "id")]).await;
    pair.source
        .batch_execute(
            "ALTER TABLE public.readings ALTER COLUMN counter TYPE bigint, ALTER COLUMN label TYPE varchar(64);
             INSERT INTO public.readings VALUES (501, 9000000000, 'a label far longer than eight', 1.5, 0.5);
             UPDATE public.readings SET counter = counter + 5000000000 WHERE id % 50 = 0;
             BEGIN;
             ALTER TABLE public.readings ALTER COLUMN amount TYPE numeric(20,6);
             INSERT INTO public.readings VALUES (502, 1, 'x', 12345678901234.123456, 0.25);
             COMMIT;",
        )
        .await
        .unwrap();
    pair.wait_equal(&[("public.readings", "id")]).await;

    // While ferry is down.
    kill(&mut run);
    pair.source
        .batch_execute(
            "ALTER TABLE public.readings ALTER COLUMN ratio TYPE double precision, ALTER COLUMN label TYPE text;
             INSERT INTO public.readings VALUES (503, 2, repeat('long ', 100), 2.5, 0.1234567890123);",
        )
        .await
        .unwrap();
    let mut run = pair.spawn_run(&arguments, None);
    pair.source
        .batch_execute("UPDATE public.readings SET ratio = 1.0 / 7 WHERE id = 7;")
        .await
        .unwrap();
    pair.wait_equal(&[("public.readings", "id")]).await;
    // A change that is not a widening (fewer decimals: the source rounded its values) stops
    // the table rather than let the target hold other values.
    pair.source
        .batch_execute(
            "CREATE TABLE public.other (id int PRIMARY KEY, price numeric(12,4));
             INSERT INTO public.other VALUES (1, 1.2345);",
        )
        .await
        .unwrap();
    pair.wait_equal(&[("public.other", "id")]).await;
    pair.source
        .batch_execute(
            "ALTER TABLE public.other ALTER COLUMN price TYPE numeric(12,2);
             INSERT INTO public.other VALUES (2, 2.5);",
        )
        .await
        .unwrap();
    ferry_testkit::wait_until(
        "the retyped table to stop",
        std::time::Duration::from_secs(60),
        || {
            let log = pair.log();
            async move { log.contains("stream.column_retyped").then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
    let types: Vec<String> = pair
        .target
        .query(
            "SELECT column_name || ' ' || format_type(atttypid, atttypmod) FROM information_schema.columns c JOIN pg_attribute a ON a.attrelid = 'public.readings'::regclass AND a.attname = c.column_name WHERE c.table_name = 'readings' ORDER BY column_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        types,
        vec![
            "amount numeric(20,6)",
            "counter bigint",
            "id integer",
            "label text",
            "ratio double precision"
        ]
    );
}
