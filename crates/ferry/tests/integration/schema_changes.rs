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
