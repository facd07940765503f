//! PostGIS columns (geometry and geography, with and without a type and SRID, a GiST index)
//! moved PostgreSQL to PostgreSQL: copied, streamed, verified, compared through each server.

use crate::common::{stop, Pair};

const SCHEMA: &str = "
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE public.places (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    spot geometry(Point, 4326),
    area geography(Polygon, 4326),
    shape geometry,
    path geometry(LineStringZ, 3857)
);
CREATE INDEX places_spot ON public.places USING gist (spot);
INSERT INTO public.places
SELECT g, 'place ' || g,
       ST_SetSRID(ST_MakePoint(g / 100.0, -g / 50.0), 4326),
       ST_GeogFromText('SRID=4326;POLYGON((0 0, 0 ' || (g % 10 + 1) || ', 1 1, 0 0))'),
       CASE WHEN g % 3 = 0 THEN ST_GeomFromText('MULTIPOINT(1 2, 3 4)') WHEN g % 3 = 1 THEN NULL ELSE ST_Buffer(ST_MakePoint(g, g), 2, 2) END,
       ST_GeomFromText('LINESTRING Z (0 0 0, ' || g || ' 1 2)', 3857)
FROM generate_series(1, 400) g;
";

const TABLES: &[(&str, &str)] = &[("public.places", "id")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgis_columns_move_postgres_to_postgres() {
    let pair = Pair::new("spatial").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    let mut run = pair.spawn_run(&["--name", "spatial", "--chunk-rows", "100"], None);
    pair.wait_streaming(1).await;
    pair.wait_equal(TABLES).await;
    pair.source
        .batch_execute(
            "INSERT INTO public.places VALUES (1000, 'new', 'SRID=4326;POINT(13.4 52.5)', 'SRID=4326;POLYGON((1 1, 1 2, 2 2, 1 1))', 'SRID=2154;POINT(700000 6600000)', 'SRID=3857;LINESTRING Z (1 1 1, 2 2 2)');
             UPDATE public.places SET spot = ST_Translate(spot, 1, 1), shape = ST_Union(shape, 'POINT(9 9)') WHERE id % 7 = 0;
             DELETE FROM public.places WHERE id = 5;",
        )
        .await
        .unwrap();
    pair.wait_equal(TABLES).await;
    let verify = pair
        .ferry("verify", &["--name", "spatial"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(stop(&mut run), Some(0), "{}", pair.log());
    // The same types (with their SRIDs) and the index on the target.
    let source_shape = shape(&pair.source).await;
    assert!(
        source_shape.contains("geometry(Point,4326)"),
        "{source_shape}"
    );
    assert_eq!(source_shape, shape(&pair.target).await);
    // Exact values, SRIDs included, compared by the servers' own binary forms.
    let digest = "SELECT md5(string_agg(id || ':' || coalesce(ST_AsEWKB(spot)::text, '~') || coalesce(ST_AsEWKB(area::geometry)::text, '~') || coalesce(ST_AsEWKB(shape)::text, '~') || coalesce(ST_AsEWKB(path)::text, '~'), ',' ORDER BY id)) FROM public.places";
    let left: String = pair.source.query_one(digest, &[]).await.unwrap().get(0);
    let right: String = pair.target.query_one(digest, &[]).await.unwrap().get(0);
    assert_eq!(left, right);
}

/// The table's column types and its indexes, as the server writes them.
async fn shape(client: &tokio_postgres::Client) -> String {
    client
        .query(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) || ' / ' || (SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'places')
             FROM pg_attribute WHERE attrelid = 'public.places'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .unwrap()[0]
        .get::<_, String>(0)
}

/// MariaDB spatial columns (typed and untyped, NULLs, SRIDs 0, 4326 and 2154, a SPATIAL index)
/// moved to PostgreSQL: PostGIS created on the target, the values copied and streamed with
/// their SRIDs, compared through each server's own WKB, `ferry verify` across the engines, and
/// the SPATIAL index as a GiST index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_spatial_columns_move_to_postgis() {
    use crate::mysql::{
        ferry, mariadb, mariadb_source_postgres_target, mysql_select, postgres_select, spawn_run,
        sql, wait_engines_equal,
    };
    let name = "my_spatial";
    let (source, target) = mariadb_source_postgres_target(name).await;
    sql(
        &mariadb().source,
        name,
        "CREATE TABLE places (
             id int PRIMARY KEY,
             spot POINT NOT NULL,
             area POLYGON,
             shape GEOMETRY,
             SPATIAL INDEX places_spot (spot)
         );
         INSERT INTO places SELECT seq,
             ST_GeomFromText(CONCAT('POINT(', seq / 8, ' ', -seq / 4, ')'), 4326),
             IF(seq % 4 = 0, NULL, ST_GeomFromText(CONCAT('POLYGON((0 0,0 ', seq % 10 + 1, ',1 1,0 0))'), 2154)),
             CASE seq % 3 WHEN 0 THEN ST_GeomFromText('MULTIPOINT(1 2,3 4)') WHEN 1 THEN NULL
                 ELSE ST_GeomFromText(CONCAT('LINESTRING(0 0,', seq, ' 1.5)'), 3857) END
         FROM seq_1_to_300;",
    );
    let client = crate::common::servers().target.connect(name).await.unwrap();
    // A target user that may not create PostGIS (not a trusted extension) is told so by check.
    client
        .batch_execute("DO $$ BEGIN CREATE ROLE spatial_user LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; GRANT CREATE ON DATABASE my_spatial TO spatial_user;")
        .await
        .unwrap();
    let limited = ferry(
        "check",
        &source,
        &target.replacen("postgres@", "spatial_user@", 1),
        &[],
    )
    .output()
    .unwrap();
    let report = String::from_utf8_lossy(&limited.stdout);
    assert!(
        !limited.status.success()
            && report.contains("target.privilege")
            && report.contains("CREATE EXTENSION postgis"),
        "{report}"
    );
    let check = ferry("check", &source, &target, &[]).output().unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut run = spawn_run(name, &source, &target);
    let columns: &[(&str, &str)] = &[
        ("id", "id"),
        (
            "CONCAT(ST_SRID(spot), ':', HEX(ST_AsBinary(spot)))",
            "ST_SRID(spot) || ':' || upper(encode(ST_AsBinary(spot, 'NDR'), 'hex'))",
        ),
        (
            "CONCAT(ST_SRID(area), ':', HEX(ST_AsBinary(area)))",
            "ST_SRID(area) || ':' || upper(encode(ST_AsBinary(area, 'NDR'), 'hex'))",
        ),
        (
            "CONCAT(ST_SRID(shape), ':', HEX(ST_AsBinary(shape)))",
            "ST_SRID(shape) || ':' || upper(encode(ST_AsBinary(shape, 'NDR'), 'hex'))",
        ),
    ];
    let queries = [(
        mysql_select(columns, "places", "id"),
        postgres_select(columns, &format!("{name}.places"), "id"),
    )];
    wait_engines_equal(name, (&mariadb().source, name), &client, &queries).await;
    sql(
        &mariadb().source,
        name,
        "INSERT INTO places VALUES (1000, ST_GeomFromText('POINT(13.4 52.5)', 4326), ST_GeomFromText('POLYGON((1 1,1 2,2 2,1 1))', 4326), ST_GeomFromText('POINT(700000 6600000)', 2154));
         UPDATE places SET spot = ST_GeomFromText('POINT(9 9)', 4326), shape = NULL WHERE id % 7 = 0;
         UPDATE places SET shape = ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1),LINESTRING(0 0,1 1))') WHERE id % 11 = 0;
         DELETE FROM places WHERE id = 5;",
    );
    wait_engines_equal(name, (&mariadb().source, name), &client, &queries).await;
    crate::mysql::wait_copied_on_postgres(name, &client).await;
    let verify = ferry(
        "verify",
        &source,
        &target,
        &["--name", name, "--tables", &format!("{name}.places")],
    )
    .output()
    .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(stop(&mut run), Some(0), "{}", crate::mysql::log_tail(name));
    let shape: String = client
        .query_one(
            "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) || ' / ' || (SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'places' AND indexdef LIKE '%gist%')
             FROM pg_attribute WHERE attrelid = 'my_spatial.places'::regclass AND attnum > 0 AND NOT attisdropped",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        shape.starts_with("id integer, spot geometry(Point), area geometry(Polygon), shape geometry / CREATE INDEX"),
        "{shape}"
    );
    assert!(shape.contains("USING gist (spot)"), "{shape}");
}
