//! PostgreSQL leaves unchanged large (TOASTed) values out of the WAL. An update that does not
//! touch them must not write NULL or anything else over them on the target.

use crate::common::{stop, Pair};

const TABLES: &[(&str, &str)] = &[("public.documents", "id")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_large_values_are_never_overwritten() {
    let pair = Pair::new("toast").await;
    // md5 hex is hard to compress, so 20 kB values are stored out of line (TOAST).
    pair.source
        .batch_execute(
            "CREATE TABLE public.documents (id integer PRIMARY KEY, version integer NOT NULL, body text, blob bytea, tags jsonb);
             CREATE FUNCTION public.big(seed int) RETURNS text LANGUAGE sql AS
               $$ SELECT string_agg(md5(seed::text || '-' || i::text), '') FROM generate_series(1, 640) i $$;
             INSERT INTO public.documents SELECT g, 0, public.big(g), decode(public.big(g + 1000), 'hex'), jsonb_build_object('text', public.big(g + 2000)) FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let toasted: i64 = pair
        .source
        .query_one(
            "SELECT count(*) FROM public.documents WHERE pg_column_size(body) > 8000",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(toasted, 20, "the test values must be over 8 kB as stored");

    let mut ferry = pair.spawn_run(&["--name", "toast"], None);
    pair.wait_streaming(1).await;
    pair.wait_equal(TABLES).await;

    pair.source
        .batch_execute(
            // Rows copied before the stream: update only the small column.
            "UPDATE public.documents SET version = version + 1 WHERE id <= 10;
             -- A row inserted and then updated within the stream (merged in one batch).
             INSERT INTO public.documents VALUES (21, 0, public.big(21), decode(public.big(1021), 'hex'), '{}');
             UPDATE public.documents SET version = 5 WHERE id = 21;
             -- Change one large value, leave the others unchanged.
             UPDATE public.documents SET body = 'short now' WHERE id = 11;
             UPDATE public.documents SET version = version + 1 WHERE id = 11;
             -- Move rows to a new key while their large values stay unchanged.
             UPDATE public.documents SET id = 100 + id, version = 9 WHERE id IN (12, 13);
             UPDATE public.documents SET version = 10 WHERE id = 112;",
        )
        .await
        .unwrap();
    pair.wait_equal(TABLES).await;
    let nulls: i64 = pair.target.query_one("SELECT count(*) FROM public.documents WHERE body IS NULL OR blob IS NULL OR tags IS NULL", &[]).await.unwrap().get(0);
    assert_eq!(nulls, 0);
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());
}

/// A row filter on a table with TOASTed values: an update that moves a row into the filter
/// without touching its large values must still bring the whole row: read from the source, or
/// carried by the update itself with REPLICA IDENTITY FULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_entering_a_filter_arrives_whole() {
    let pair = Pair::new("toast_filter").await;
    pair.source
        .batch_execute(
            "CREATE FUNCTION public.big(seed int) RETURNS text LANGUAGE sql AS
               $$ SELECT string_agg(md5(seed::text || '-' || i::text), '') FROM generate_series(1, 640) i $$;
             CREATE TABLE public.docs (id integer PRIMARY KEY, status text NOT NULL, body text);
             INSERT INTO public.docs SELECT g, CASE WHEN g <= 5 THEN 'published' ELSE 'draft' END, public.big(g) FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let config =
        std::env::temp_dir().join(format!("ferry-toast-filter-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[[transform]]\ntable = \"public.docs\"\nfilter = \"status = 'published'\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();

    // Without FULL, check says such rows are read from the source.
    let check = pair.ferry("check", &["-c", &config]).output().unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(0), "{said}");
    assert!(
        said.contains("transform.partial_image") && said.contains("REPLICA IDENTITY FULL"),
        "{said}"
    );

    let mut run = pair.spawn_run(&["--name", "toast_filter", "-c", &config], None);
    pair.wait_streaming(1).await;
    let (source, target) = (&pair.source, &pair.target);
    let filtered_equal = || async {
        ferry_testkit::wait_until(
            "the filtered rows to match",
            std::time::Duration::from_secs(60),
            || async {
                let left = ferry_testkit::table_digest(
                    source,
                    "public.docs WHERE status = 'published'",
                    "id",
                )
                .await
                .ok()?;
                let right = ferry_testkit::table_digest(target, "public.docs", "id")
                    .await
                    .ok()?;
                (left == right).then_some(())
            },
        )
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", pair.log()));
    };
    // Rows enter the filter without touching their large values: read whole from the source.
    pair.source
        .batch_execute(
            "UPDATE public.docs SET status = 'published' WHERE id = 6;
             UPDATE public.docs SET status = 'draft' WHERE id = 1;
             UPDATE public.docs SET id = 80, status = 'published' WHERE id = 9;
             BEGIN; UPDATE public.docs SET status = 'published' WHERE id = 10; DELETE FROM public.docs WHERE id = 10; COMMIT;",
        )
        .await
        .unwrap();
    filtered_equal().await;

    // With FULL the update carries the whole row: no warning, and the row arrives whole.
    pair.source
        .batch_execute("ALTER TABLE public.docs REPLICA IDENTITY FULL;")
        .await
        .unwrap();
    let check = pair.ferry("check", &["-c", &config]).output().unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(!said.contains("transform.partial_image"), "{said}");
    pair.source
        .batch_execute(
            "UPDATE public.docs SET status = 'published' WHERE id = 7;
             UPDATE public.docs SET id = 70 WHERE id = 8;
             UPDATE public.docs SET status = 'published' WHERE id = 70;",
        )
        .await
        .unwrap();
    filtered_equal().await;
    let whole: i64 = target
        .query_one(
            "SELECT count(*) FROM public.docs WHERE id IN (6, 7, 70, 80) AND length(body) > 8000",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(whole, 4);
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
}
