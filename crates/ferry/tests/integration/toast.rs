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
