//! Every value survives the copy and the stream exactly, with the real server as the oracle:
//! both sides render their rows in text under the same settings and the texts must be equal.

use crate::common::{stop, Pair};

const SCHEMA: &str = r#"
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy', 'ünïcode ☺');
CREATE TABLE public.scalars (
    id bigint PRIMARY KEY,
    small smallint, regular integer, big bigint,
    exact numeric, money_like numeric(12, 4), single real, double double precision,
    flag boolean, body text, short varchar(10), fixed char(5), raw bytea,
    document json, binary_document jsonb, identifier uuid,
    day date, clock time, clock_zone timetz, moment timestamp, instant timestamptz, span interval,
    numbers integer[], matrix text[][], address inet, network cidr, hardware macaddr, bits bit(3), varying_bits varbit,
    spot point
);
CREATE TABLE public.with_enums (
    id text PRIMARY KEY,
    feeling public.mood,
    feelings public.mood[],
    note text
);
"#;

const SCALAR_ROWS: &str = r#"
INSERT INTO public.scalars VALUES
 (1, -32768, -2147483648, -9223372036854775808,
  '123456789012345678901234567890123456789012345678901234567890.123456789012345678901234567890', -99999999.9999, 3.4028235e38, 1.7976931348623157e308,
  true, E'tab\there\nnewline \\ backslash ''quote'' "double" 😀 日本語 Ωmega', 'ten chars!', 'ab', '\x00ff00deadbeef',
  '{"b": 1,   "a": [1, 2.50, null], "b": 2}', '{"z": {"nested": [true, false]}, "a": 1.000}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '2024-02-29', '23:59:59.999999', '12:00:00.000001+05:30', '2000-01-01 00:00:00.000001', '1999-12-31 23:59:59.999999+14', '1 year 2 mons 3 days 04:05:06.789012',
  '{1,NULL,3}', '{{a,b},{"c d",NULL}}', '2001:db8::1/64', '10.0.0.0/8', '08:00:2b:01:02:03', B'101', B'1100110011',
  '(1.5,-2.25)'),
 (2, 0, 0, 0, 'NaN', 0, '-Infinity', 'Infinity',
  false, '', '', '', '\x', 'null', '[]', '00000000-0000-0000-0000-000000000000',
  'infinity', '00:00', '00:00+00', '-infinity', 'infinity', '-178000000 years',
  '{}', '{}', '0.0.0.0', '0.0.0.0/0', '00:00:00:00:00:00', B'000', B'',
  '(0,0)'),
 (3, NULL, NULL, NULL, '-0.000000000000000000000000000001', NULL, 'NaN', '-0', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  '4713-01-01 BC', NULL, NULL, '294276-12-31 23:59:59.999999', '4713-01-01 00:00:00+00 BC', '-00:00:00.000001',
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 1, 2, 3, '1e-300', 1, 1.17549435e-38, 4.9e-324, true, repeat('long text ', 2000), 'x', 'xyz', decode(repeat('ab', 5000), 'hex'),
  '{"deep": {"deeper": {"deepest": "\u00e9"}}}', '{"unicode": "\u00e9\ud83d\ude00"}', gen_random_uuid(),
  '0001-01-01', '12:34:56', '23:59:59-12', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '0 seconds',
  '{-1,-2}', '{{x}}', '192.168.1.1', '192.168.0.0/16', 'ff:ff:ff:ff:ff:ff', B'111', B'1', '(1e300,-1e-300)');
"#;

const TABLES: &[(&str, &str)] = &[("public.scalars", "id"), ("public.with_enums", "id")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_survives_the_copy_and_the_stream() {
    let pair = Pair::new("types").await;
    pair.source.batch_execute(SCHEMA).await.unwrap();
    pair.source.batch_execute(SCALAR_ROWS).await.unwrap();
    pair.source
        .batch_execute(
            "INSERT INTO public.with_enums VALUES ('a', 'sad', '{sad,happy}', 'plain'), ('ünïcode key ☺', 'ünïcode ☺', '{\"ünïcode ☺\",NULL}', NULL), ('', NULL, '{}', 'empty key');",
        )
        .await
        .unwrap();
    let mut ferry = pair.spawn_run(&["--name", "types"], None);
    pair.wait_streaming(2).await;
    pair.wait_equal(TABLES).await;

    // The same values again, this time through the change stream: inserts, updates and deletes.
    pair.source
        .batch_execute(
            &SCALAR_ROWS
                .replace("(1, -32768", "(101, -32768")
                .replace("(2, 0, 0", "(102, 0, 0")
                .replace("(3, NULL", "(103, NULL")
                .replace("(4, 1, 2, 3", "(104, 1, 2, 3"),
        )
        .await
        .unwrap();
    pair.source
        .batch_execute(
            "UPDATE public.scalars SET exact = exact * 3, double = 'NaN', body = body || ' edited', moment = 'infinity', span = span * 2 WHERE id IN (1, 101);
             UPDATE public.scalars SET id = 1000 WHERE id = 2;
             DELETE FROM public.scalars WHERE id = 3;
             INSERT INTO public.with_enums VALUES ('streamed', 'happy', '{ok,ok}', E'line\nbreak');
             UPDATE public.with_enums SET feeling = 'ok', feelings = feelings || 'sad'::public.mood WHERE id = 'a';
             DELETE FROM public.with_enums WHERE id = '';",
        )
        .await
        .unwrap();
    pair.wait_equal(TABLES).await;
    assert_eq!(stop(&mut ferry), Some(0), "graceful stop\n{}", pair.log());

    // Spot checks read back through each server: the padded char(5), a 90-digit numeric.
    let query = "SELECT exact::text, octet_length(fixed)::text, short, body FROM public.scalars WHERE id = 101";
    let on_target = pair.target.query_one(query, &[]).await.unwrap();
    let on_source = pair.source.query_one(query, &[]).await.unwrap();
    assert_eq!(on_target.get::<_, String>(0), on_source.get::<_, String>(0));
    assert_eq!(
        on_target.get::<_, String>(0).len(),
        91,
        "every digit of 3 x the 90-digit numeric kept"
    );
    assert_eq!(
        on_target.get::<_, String>(1),
        "5",
        "char(5) keeps its padding"
    );
    assert_eq!(on_target.get::<_, String>(2), "ten chars!");
    assert!(on_target.get::<_, String>(3).ends_with("Ωmega edited"));
}
