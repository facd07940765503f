//! User-defined types a real schema holds (pagila's `year` domain, composite and range types,
//! enums with odd labels, arrays of them, types from extensions): the target gets the same
//! types, created in dependency order, and every value through the copy and the stream. The
//! definitions are compared through the servers' own catalogs, independently of ferry.

use crate::common::{run_verify, stop, Pair};

const SCHEMA: &str = r#"
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE SCHEMA "odd ""schema""";
CREATE TYPE "odd ""schema""".mood AS ENUM ('happy', 'it''s "odd"', 'sad ', 'ünï');
CREATE DOMAIN public.year AS integer CONSTRAINT year_check CHECK (VALUE >= 1901 AND VALUE <= 2155);
-- A domain over a domain, with a default, NOT NULL and two checks.
CREATE DOMAIN public.recent_year AS public.year DEFAULT 2000 NOT NULL
    CONSTRAINT after_1990 CHECK (VALUE > 1990) CONSTRAINT not_2013 CHECK (VALUE <> 2013);
CREATE DOMAIN public.email AS citext CHECK (VALUE ~ '@');
CREATE TYPE public.address AS (street text, zip int, built public.year, feeling "odd ""schema""".mood);
CREATE TYPE public.float_span AS RANGE (SUBTYPE = float8, SUBTYPE_DIFF = float8mi);
CREATE TABLE public.film (
    id int PRIMARY KEY,
    release public.recent_year,
    first public.year,
    feelings "odd ""schema""".mood[],
    home public.address,
    homes public.address[],
    span public.float_span,
    spans public.float_span[],
    many public.float_span_multirange,
    contact public.email,
    name citext,
    attributes hstore
);
COMMENT ON TABLE public.film IS 'the films';
COMMENT ON COLUMN public.film.home IS 'where ''home'' is';
INSERT INTO public.film
SELECT g, 1991 + g % 20, 1901 + g % 250, ARRAY['happy', 'it''s "odd"', 'sad ']::"odd ""schema""".mood[],
       ROW('Main St ' || g, g, 1950::public.year, 'ünï'::"odd ""schema""".mood)::public.address, ARRAY[ROW('a,b', 1, NULL, NULL)::public.address, NULL],
       public.float_span(g, g + 0.5), ARRAY[public.float_span(1, 2)], '{[1,2), [3,4)}',
       'Person' || g || '@Example.com', 'Name ' || g, hstore('k', g::text)
FROM generate_series(1, 300) g;
"#;

const TABLES: &[(&str, &str)] = &[("public.film", "id")];

/// How each server describes the types: the same text on both sides.
const TYPE_DEFINITIONS: &str = "
SELECT n.nspname, t.typname, t.typtype::text, format_type(t.typbasetype, t.typtypmod), t.typnotnull::text, t.typdefault,
       ARRAY(SELECT format('%s %s', c.conname, pg_get_constraintdef(c.oid)) FROM pg_constraint c WHERE c.contypid = t.oid ORDER BY 1)::text,
       ARRAY(SELECT enumlabel::text FROM pg_enum WHERE enumtypid = t.oid ORDER BY enumsortorder)::text,
       ARRAY(SELECT format('%s %s', attname, format_type(atttypid, atttypmod)) FROM pg_attribute WHERE attrelid = t.typrelid AND attnum > 0 ORDER BY attnum)::text
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname IN ('public', 'odd \"schema\"') AND t.typtype IN ('e', 'd', 'c', 'r', 'm')
  AND t.typrelid NOT IN (SELECT oid FROM pg_class WHERE relkind <> 'c')
ORDER BY 1, 2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_composites_ranges_and_extension_types_move_with_their_values() {
    let pair = Pair::new("usertypes").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();

    let check = pair
        .ferry("check", &["--name", "usertypes"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stderr).to_string()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "check finds nothing to refuse\n{report}"
    );
    assert!(!report.contains("missing_type"), "{report}");

    let mut run = pair.spawn_run(&["--name", "usertypes", "--chunk-rows", "50"], None);
    pair.wait_streaming(1).await;
    pair.wait_equal(TABLES).await;
    pair.source
        .batch_execute(
            "INSERT INTO public.film (id, first, feelings, home, span, contact, name, attributes)
               VALUES (1000, 2155, '{\"sad \"}', ROW('new', 0, 2001::public.year, 'happy'::\"odd \"\"schema\"\"\".mood)::public.address, '(,5]', 'x@y', 'NEW', 'a=>1, b=>NULL');
             UPDATE public.film SET home.street = 'moved', release = 2020, feelings = feelings || 'ünï'::\"odd \"\"schema\"\"\".mood WHERE id = 5;
             DELETE FROM public.film WHERE id = 6;",
        )
        .await
        .unwrap();
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());

    let source_types = type_definitions(&pair.source).await;
    let target_types = type_definitions(&pair.target).await;
    assert!(source_types.len() >= 6, "{source_types:#?}");
    assert_eq!(source_types, target_types);
    // Comments move with the definitions.
    let comments = pair
        .target
        .query_one(
            "SELECT obj_description('public.film'::regclass, 'pg_class'), col_description('public.film'::regclass, (SELECT attnum::int FROM pg_attribute WHERE attrelid = 'public.film'::regclass AND attname = 'home'))",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        comments.get::<_, Option<String>>(0).as_deref(),
        Some("the films")
    );
    assert_eq!(
        comments.get::<_, Option<String>>(1).as_deref(),
        Some("where 'home' is")
    );
    // The domain's checks hold on the target too.
    let refused = pair
        .target
        .batch_execute("INSERT INTO public.film (id, release) VALUES (99999, 2013)")
        .await;
    assert!(refused.is_err(), "the target domain refuses 2013");

    let (code, report, stderr) =
        run_verify(&mut pair.ferry("verify", &["--name", "usertypes", "--json"]));
    assert_eq!(code, Some(0), "{report}\n{stderr}");
}

/// [`TYPE_DEFINITIONS`] as one server answers it, a line per type.
async fn type_definitions(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(TYPE_DEFINITIONS, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| {
            format!(
                "{:?}",
                (0..9)
                    .map(|i| row.get::<_, Option<String>>(i))
                    .collect::<Vec<_>>()
            )
        })
        .collect()
}
