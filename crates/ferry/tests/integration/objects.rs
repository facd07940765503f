//! `ferry objects`: what ferry leaves for the cutover (triggers, views, routines, row-level
//! security, grants) as a script that, run on the target after the copy, recreates each object
//! working: the trigger fires, the views answer, the policy and the grant are in place.

use crate::common::Pair;
use crate::mysql::{ferry, mariadb, sql};

const POSTGRES_SCHEMA: &str = "
DO $$ BEGIN CREATE ROLE objects_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE SCHEMA shop;
CREATE TABLE shop.orders (id bigint PRIMARY KEY, owner text NOT NULL, total numeric(10,2) NOT NULL);
CREATE TABLE shop.audit (id bigserial PRIMARY KEY, order_id bigint NOT NULL, action text NOT NULL);
CREATE FUNCTION shop.audit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO shop.audit (order_id, action) VALUES (NEW.id, TG_OP);
    RETURN NEW;
END $$;
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.audit_order();
CREATE FUNCTION shop.big(total numeric) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT total > 100';
CREATE VIEW shop.big_orders AS SELECT id, total FROM shop.orders WHERE shop.big(total);
CREATE VIEW shop.big_order_count AS SELECT count(*) AS orders FROM shop.big_orders;
CREATE MATERIALIZED VIEW shop.totals AS SELECT owner, sum(total) AS total FROM shop.orders GROUP BY owner;
CREATE PROCEDURE shop.raise(amount numeric) LANGUAGE sql AS 'UPDATE shop.orders SET total = total + amount';
ALTER TABLE shop.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_orders ON shop.orders AS PERMISSIVE FOR SELECT TO objects_reader USING (owner = current_user);
GRANT SELECT, INSERT ON shop.orders TO objects_reader;
GRANT SELECT ON shop.big_orders TO objects_reader;
INSERT INTO shop.orders SELECT g, 'user' || (g % 3), g * 1.5 FROM generate_series(1, 200) g;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_objects_script_recreates_what_ferry_leaves_for_the_cutover() {
    let pair = Pair::new("objects_pg").await;
    pair.source.batch_execute(POSTGRES_SCHEMA).await.unwrap();
    let copied = pair
        .ferry("copy", &["--name", "objects", "--tables", "shop.*"])
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let script = std::env::temp_dir().join(format!("ferry-objects-{}.sql", std::process::id()));
    let objects = pair
        .ferry(
            "objects",
            &["--tables", "shop.*", "-o", script.to_str().unwrap()],
        )
        .output()
        .unwrap();
    assert!(
        objects.status.success(),
        "{}",
        String::from_utf8_lossy(&objects.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    // The copy left them out: the target has none of them yet.
    let triggers: i64 = pair
        .target
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0);
    // The operator's part: the role exists on the new server.
    pair.target
        .batch_execute("DO $$ BEGIN CREATE ROLE objects_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;")
        .await
        .unwrap();
    pair.target
        .batch_execute(&text)
        .await
        .unwrap_or_else(|error| panic!("{error:?}\n{text}"));
    let shape: String = pair
        .target
        .query_one(
            "SELECT concat_ws(' | ',
                 (SELECT string_agg(tgname, ',') FROM pg_trigger WHERE NOT tgisinternal),
                 (SELECT string_agg(viewname, ',' ORDER BY viewname) FROM pg_views WHERE schemaname = 'shop'),
                 (SELECT string_agg(proname || ':' || prokind::text, ',' ORDER BY proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname = 'shop'),
                 (SELECT string_agg(polname, ',') FROM pg_policy),
                 (SELECT relrowsecurity::text FROM pg_class WHERE oid = 'shop.orders'::regclass),
                 (SELECT string_agg(table_name || ':' || privilege_type, ',' ORDER BY table_name, privilege_type) FROM information_schema.role_table_grants WHERE grantee = 'objects_reader'),
                 (SELECT count(*)::text FROM shop.totals))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        shape,
        "orders_audit | big_order_count,big_orders | audit_order:f,big:f,raise:p | own_orders | true | big_orders:SELECT,orders:INSERT,orders:SELECT | 3",
        "{text}"
    );
    // They work: the trigger writes the audit row, the views answer.
    pair.target
        .batch_execute("INSERT INTO shop.orders VALUES (1000, 'user1', 500)")
        .await
        .unwrap();
    let check: String = pair
        .target
        .query_one(
            "SELECT (SELECT action FROM shop.audit WHERE order_id = 1000) || ' ' || (SELECT orders FROM shop.big_order_count)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(check, "INSERT 135");
    let _ = std::fs::remove_file(&script);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_objects_script_recreates_what_ferry_leaves_for_the_cutover() {
    let name = "objects_my";
    let servers = mariadb();
    let source = servers.source.create_database(name).unwrap();
    let target = servers.target.url(&format!("{name}_copy"));
    sql(
        &servers.source,
        name,
        "CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(10,2) NOT NULL);
         CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT NOT NULL, action VARCHAR(10) NOT NULL);
         DELIMITER ;;
         CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW
             BEGIN INSERT INTO audit (order_id, action) VALUES (NEW.id, 'insert'); END;;
         CREATE PROCEDURE raise_all(amount DECIMAL(10,2)) BEGIN UPDATE orders SET total = total + amount; SELECT 1; END;;
         DELIMITER ;
         CREATE FUNCTION big(total DECIMAL(10,2)) RETURNS BOOLEAN DETERMINISTIC RETURN total > 100;
         CREATE VIEW z_base AS SELECT id, total FROM orders WHERE big(total);
         CREATE VIEW a_count AS SELECT count(*) AS orders FROM z_base;
         INSERT INTO orders SELECT seq, seq * 1.5 FROM seq_1_to_200;",
    );
    let copied = ferry("copy", &source, &target, &["--name", name])
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let objects = ferry("objects", &source, &target, &[]).output().unwrap();
    assert!(
        objects.status.success(),
        "{}",
        String::from_utf8_lossy(&objects.stderr)
    );
    let script = String::from_utf8(objects.stdout).unwrap();
    let target_database = format!("{name}_copy");
    sql(&servers.target, &target_database, &script);
    let shape = sql(
        &servers.target,
        &target_database,
        "SELECT CONCAT_WS(' | ',
             (SELECT GROUP_CONCAT(TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()),
             (SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()),
             (SELECT GROUP_CONCAT(CONCAT(ROUTINE_NAME, ':', ROUTINE_TYPE) ORDER BY ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()));
         INSERT INTO orders VALUES (1000, 500);
         SELECT CONCAT((SELECT action FROM audit WHERE order_id = 1000), ' ', (SELECT orders FROM a_count));",
    );
    assert_eq!(
        shape.trim(),
        "orders_audit | a_count,z_base | big:FUNCTION,raise_all:PROCEDURE\ninsert 135",
        "{script}"
    );
}
