//! PostgreSQL table inheritance: a parent and its children are separate tables whose rows must
//! each move once. Reads of a parent include its children unless they say `ONLY`, and so does a
//! publication: without care the children's rows land in the parent too. Compared with
//! `SELECT ... FROM ONLY`, independently of ferry.

use crate::common::{keys_of, run_verify, stop, Pair};

const SCHEMA: &str = "
CREATE TABLE public.m (id int PRIMARY KEY, v text NOT NULL DEFAULT 'parent', CHECK (id > 0));
CREATE TABLE public.m1 (extra text, PRIMARY KEY (id)) INHERITS (public.m);
INSERT INTO public.m1 (id, v, extra) SELECT g, 'child ' || g, 'x' FROM generate_series(1, 1000) g;
-- The parent's own rows share keys with the child's: each table has its own key.
INSERT INTO public.m (id, v) SELECT g, 'own ' || g FROM generate_series(1, 10) g;
";

const TABLES: &[(&str, &str)] = &[("ONLY public.m", "id"), ("ONLY public.m1", "id")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inherited_rows_move_once_and_the_link_is_kept() {
    let pair = Pair::new("inherit").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    let mut run = pair.spawn_run(
        &[
            "--name",
            "inherit",
            "--tables",
            "public.*",
            "--chunk-rows",
            "100",
        ],
        None,
    );
    pair.wait_streaming(2).await;
    pair.wait_equal(TABLES).await;
    pair.source
        .batch_execute(
            "UPDATE ONLY public.m SET v = 'changed' WHERE id = 5;
             UPDATE public.m1 SET v = 'child changed' WHERE id = 5;
             DELETE FROM ONLY public.m WHERE id = 6;
             INSERT INTO public.m1 (id, v, extra) VALUES (2000, 'new child', 'y');
             INSERT INTO public.m (id, v) VALUES (3000, 'new parent');
             -- Without ONLY: deletes the key from the parent and from the child.
             DELETE FROM public.m WHERE id = 7;
             TRUNCATE ONLY public.m;
             INSERT INTO public.m (id) VALUES (1);",
        )
        .await
        .unwrap();
    pair.wait_equal(TABLES).await;
    let counts = pair
        .target
        .query_one(
            "SELECT (SELECT count(*) FROM ONLY public.m), (SELECT count(*) FROM ONLY public.m1),
                    EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = 'public.m1'::regclass AND inhparent = 'public.m'::regclass)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        counts.get::<_, i64>(0),
        1,
        "the parent holds only its own row"
    );
    assert_eq!(counts.get::<_, i64>(1), 1000);
    assert!(counts.get::<_, bool>(2), "m1 inherits from m on the target");
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());

    let (code, report, stderr) =
        run_verify(&mut pair.ferry("verify", &["--name", "inherit", "--json"]));
    assert_eq!(code, Some(0), "{report}\n{stderr}");
    // A child row moved into the parent on the target: the parent has an extra row and the
    // child a missing one, although the parent read with its children is unchanged.
    pair.target
        .batch_execute(
            "BEGIN; DELETE FROM public.m1 WHERE id = 500;
             INSERT INTO public.m (id, v) VALUES (500, 'child 500'); COMMIT;",
        )
        .await
        .unwrap();
    let (code, report, stderr) =
        run_verify(&mut pair.ferry("verify", &["--name", "inherit", "--json"]));
    assert_eq!(code, Some(1), "{report}\n{stderr}");
    assert_eq!(keys_of(&report, "m", "extra"), vec!["(500)".to_string()]);
    assert_eq!(keys_of(&report, "m1", "missing"), vec!["(500)".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_selected_alone_streams_while_its_children_change() {
    let pair = Pair::new("inherit_parent").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    let mut run = pair.spawn_run(&["--name", "inherit_parent", "--tables", "public.m"], None);
    pair.wait_streaming(1).await;
    pair.source
        .batch_execute(
            "UPDATE public.m1 SET v = 'child only' WHERE id < 100;
             INSERT INTO public.m1 (id, v) VALUES (5000, 'c');
             UPDATE ONLY public.m SET v = 'after the child' WHERE id = 3;
             INSERT INTO public.m (id) VALUES (4000);",
        )
        .await
        .unwrap();
    pair.wait_equal(&[("ONLY public.m", "id")]).await;
    let rows: i64 = pair
        .target
        .query_one("SELECT count(*) FROM ONLY public.m", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 11);
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
}
