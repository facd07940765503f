//! PostgreSQL declarative partitioning (pagila's `payment`): a partitioned table moves whole,
//! with its partitions (sub-partitions and a DEFAULT partition included) re-created on the
//! target, rows that change partition moved, and nothing read twice or missed across a kill -9.
//! Rows and the partition each row lands in are compared through each server's own catalog.

use crate::common::{kill, run_verify, stop, Pair};

const SCHEMA: &str = "
CREATE TABLE public.payment (
    payment_id bigint NOT NULL, customer_id int NOT NULL, amount numeric(5,2) NOT NULL,
    payment_date timestamptz NOT NULL, region text NOT NULL,
    PRIMARY KEY (payment_date, payment_id, region)
) PARTITION BY RANGE (payment_date);
CREATE TABLE public.payment_2022_01 PARTITION OF public.payment
    FOR VALUES FROM ('2022-01-01 00:00:00+00') TO ('2022-02-01 00:00:00+00') PARTITION BY LIST (region);
CREATE TABLE public.payment_2022_01_eu PARTITION OF public.payment_2022_01 FOR VALUES IN ('eu');
CREATE TABLE public.\"payment 2022-01 rest\" PARTITION OF public.payment_2022_01 DEFAULT;
CREATE TABLE public.payment_2022_02 PARTITION OF public.payment
    FOR VALUES FROM ('2022-02-01 00:00:00+00') TO ('2022-03-01 00:00:00+00');
CREATE TABLE public.payment_default PARTITION OF public.payment DEFAULT;
CREATE INDEX payment_customer ON public.payment (customer_id);
CREATE TABLE public.plain (id int PRIMARY KEY, note text);
INSERT INTO public.payment
SELECT g, g % 500, (g % 100) / 10.0, '2022-01-01'::timestamptz + (g || ' hours')::interval,
       (ARRAY['eu', 'us', 'apac'])[1 + g % 3]
FROM generate_series(1, 3000) g;
INSERT INTO public.plain SELECT g, 'n' || g FROM generate_series(1, 10) g;
";

const TABLES: &[(&str, &str)] = &[
    ("public.payment", "payment_date, payment_id, region"),
    ("public.plain", "id"),
];

/// Each row with the partition that holds it, as one server sees it.
async fn placement(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT tableoid::regclass::text || ' ' || payment_id || ' ' || amount FROM public.payment ORDER BY payment_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

const TREE: &str = "SELECT t.relid::regclass::text, t.parentrelid::regclass::text, t.isleaf, t.level,
        pg_get_expr(c.relpartbound, c.oid), CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
 FROM pg_partition_tree('public.payment') t JOIN pg_class c ON c.oid = t.relid ORDER BY 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_table_moves_whole_with_its_partitions_through_a_kill() {
    let pair = Pair::new("partitions").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    let check = pair
        .ferry("check", &["--name", "partitions"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut run = pair.spawn_run(&["--name", "partitions", "--chunk-rows", "200"], None);
    pair.wait_streaming(2).await;
    pair.wait_equal(TABLES).await;
    // Moves between partitions (and sub-partitions), a row into the DEFAULT partition, plain
    // changes, inserts and deletes.
    let changes = "
        UPDATE public.payment SET payment_date = '2022-02-15' WHERE payment_id % 50 = 0;
        UPDATE public.payment SET region = 'eu' WHERE payment_id % 51 = 0;
        UPDATE public.payment SET payment_date = '2030-01-01' WHERE payment_id % 52 = 0;
        UPDATE public.payment SET amount = amount + 1 WHERE payment_id % 7 = 0;
        DELETE FROM public.payment WHERE payment_id % 53 = 0;
        INSERT INTO public.payment SELECT 10000 + g, 1, 1, '2022-01-15', 'eu' FROM generate_series(1, 100) g;";
    pair.source.batch_execute(changes).await.unwrap();
    pair.wait_equal(TABLES).await;
    kill(&mut run);
    pair.source
        .batch_execute(&changes.replace("10000 + g", "20000 + g"))
        .await
        .unwrap();
    let mut run = pair.spawn_run(&["--name", "partitions", "--chunk-rows", "200"], None);
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());

    assert_eq!(placement(&pair.source).await, placement(&pair.target).await);
    let tree = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter()
            .map(|row| {
                format!(
                    "{} {} {} {} {:?} {:?}",
                    row.get::<_, String>(0),
                    row.get::<_, Option<String>>(1).unwrap_or_default(),
                    row.get::<_, bool>(2),
                    row.get::<_, i32>(3),
                    row.get::<_, Option<String>>(4),
                    row.get::<_, Option<String>>(5)
                )
            })
            .collect()
    };
    let source_tree = tree(pair.source.query(TREE, &[]).await.unwrap());
    assert_eq!(source_tree.len(), 6, "{source_tree:#?}");
    assert_eq!(
        source_tree,
        tree(pair.target.query(TREE, &[]).await.unwrap())
    );
    let (code, report, stderr) =
        run_verify(&mut pair.ferry("verify", &["--name", "partitions", "--json"]));
    assert_eq!(code, Some(0), "{report}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_selected_without_its_table_is_refused_by_name() {
    let pair = Pair::new("partition_alone").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    let check = pair
        .ferry(
            "check",
            &[
                "--name",
                "partition_alone",
                "--tables",
                "public.payment_2022_02",
            ],
        )
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stderr).to_string()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success(), "{report}");
    assert!(
        report.contains("partition of public.payment") && report.contains("select public.payment"),
        "{report}"
    );
}
