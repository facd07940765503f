//! Tables without a primary key that a unique index on NOT NULL columns identifies (join and
//! staging tables of real schemas) move and stream keyed by that index; one whose updates the
//! source could not publish is named by `check` with the fix. Compared independently of ferry.

use crate::common::{run_verify, stop, Pair};

const SCHEMA: &str = "
CREATE TABLE public.tagged (a int NOT NULL, b text NOT NULL, note text, CONSTRAINT tagged_ab UNIQUE (a, b));
ALTER TABLE public.tagged REPLICA IDENTITY USING INDEX tagged_ab;
CREATE TABLE public.staged (x int NOT NULL, y text, z int);
CREATE UNIQUE INDEX staged_x ON public.staged (x);
CREATE UNIQUE INDEX staged_partial ON public.staged (z) WHERE z > 0;
ALTER TABLE public.staged REPLICA IDENTITY FULL;
INSERT INTO public.tagged SELECT g % 50, 'b' || g, 'note ' || g FROM generate_series(1, 1000) g;
INSERT INTO public.staged SELECT g, 'y' || g, NULL FROM generate_series(1, 1000) g;
";

const TABLES: &[(&str, &str)] = &[("public.tagged", "a, b"), ("public.staged", "x")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_index_on_not_null_columns_keys_a_table_without_primary_key() {
    let pair = Pair::new("uniquekeys").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    let check = pair
        .ferry("check", &["--name", "uniquekeys"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut run = pair.spawn_run(&["--name", "uniquekeys", "--chunk-rows", "100"], None);
    pair.wait_streaming(2).await;
    pair.wait_equal(TABLES).await;
    pair.source
        .batch_execute(
            "UPDATE public.tagged SET note = 'changed' WHERE a = 3;
             UPDATE public.tagged SET b = 'moved ' || b WHERE a = 4;
             DELETE FROM public.tagged WHERE a = 5;
             INSERT INTO public.tagged VALUES (1000, 'new', NULL);
             UPDATE public.staged SET y = 'changed', z = x WHERE x % 7 = 0;
             UPDATE public.staged SET x = x + 10000 WHERE x % 11 = 0;
             DELETE FROM public.staged WHERE x % 13 = 0;",
        )
        .await
        .unwrap();
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
    let (code, report, stderr) =
        run_verify(&mut pair.ferry("verify", &["--name", "uniquekeys", "--json"]));
    assert_eq!(code, Some(0), "{report}\n{stderr}");
    // The partial unique index is not a key, but it is on the target too.
    let partial: bool = pair
        .target
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'staged_partial')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(partial);

    // Published without an identity, the application's own UPDATE would fail: check says so.
    pair.source
        .batch_execute("CREATE TABLE public.unpublishable (k int NOT NULL UNIQUE, v text);")
        .await
        .unwrap();
    let check = pair
        .ferry("check", &["--name", "uniquekeys2"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stderr).to_string()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{report}");
    assert!(
        report.contains("source.replica_identity")
            && report.contains("public.unpublishable")
            && report.contains("REPLICA IDENTITY USING INDEX unpublishable_k_key"),
        "{report}"
    );
}
