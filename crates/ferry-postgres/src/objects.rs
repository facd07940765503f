//! The objects ferry does not create on the target, as a SQL script for the cutover runbook
//! (`ferry objects`): functions and procedures, views and materialized views of the selected
//! tables' schemas, in creation order; then the selected tables' triggers, row-level security
//! with its policies, and table grants. Each statement is the server's own definition
//! (`pg_get_functiondef`, `pg_get_viewdef`, `pg_get_triggerdef`), so the script recreates the
//! objects as the source has them.
//!
//! Why not copied: a trigger on the target would act again on rows the stream already carries
//! (an audit table written twice), and functions, views, policies and grants often name roles
//! or objects the new home does not have yet. The operator runs the script at cutover.

use std::fmt::Write as _;

use ferry_core::schema::Catalog;
use ferry_core::Result;

use super::config::ConnectionConfig;
use super::connection::connect;
use super::ddl::qualified;
use super::errors::classify;

/// The script for the objects of `catalog`'s tables and schemas on the source.
pub async fn objects_script(source: &ConnectionConfig, catalog: &Catalog) -> Result<String> {
    let client = connect(source).await?;
    let what = "reading the definitions of functions, views, triggers, policies and grants";
    let tables: Vec<String> = catalog
        .tables
        .iter()
        .map(|table| qualified(&table.name))
        .collect();
    let schemas: Vec<String> = catalog
        .tables
        .iter()
        .map(|table| table.name.schema.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut script = String::new();
    let _ = writeln!(
        script,
        "-- Objects ferry does not create on the target, as the source defines them.\n-- Run at cutover, after the data is in place (psql -v ON_ERROR_STOP=1 -f FILE).\n-- Schemas: {}; tables: {}.\n",
        schemas.join(", "),
        catalog.tables.len()
    );
    // Functions, procedures and views together in creation order: a view may call a function
    // and a SQL function may read a view. Members of extensions come with their extension.
    let routines_and_views = client
        .query(
            "SELECT kind, definition FROM (
                 SELECT p.oid, CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END AS kind,
                        pg_get_functiondef(p.oid) || ';' AS definition
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = ANY($1) AND p.prokind IN ('f', 'p')
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
                 UNION ALL
                 SELECT c.oid, CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END,
                        CASE c.relkind
                            WHEN 'm' THEN format('CREATE MATERIALIZED VIEW %I.%I AS%s WITH NO DATA;', n.nspname, c.relname, rtrim(pg_get_viewdef(c.oid), ';'))
                            ELSE format('CREATE OR REPLACE VIEW %I.%I AS%s;', n.nspname, c.relname, rtrim(pg_get_viewdef(c.oid), ';'))
                        END
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = ANY($1) AND c.relkind IN ('v', 'm')
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
             ) objects ORDER BY oid",
            &[&schemas],
        )
        .await
        .map_err(|error| classify(error, what))?;
    section(
        &mut script,
        "functions, procedures and views",
        &routines_and_views,
    );
    let materialized: Vec<String> = client
        .query(
            "SELECT format('REFRESH MATERIALIZED VIEW %I.%I;', schemaname, matviewname) FROM pg_matviews WHERE schemaname = ANY($1) ORDER BY 1",
            &[&schemas],
        )
        .await
        .map_err(|error| classify(error, what))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !materialized.is_empty() {
        let _ = writeln!(
            script,
            "-- Fill the materialized views once the data is in place.\n{}\n",
            materialized.join("\n")
        );
    }
    let triggers = client
        .query(
            "SELECT 'trigger', pg_get_triggerdef(t.oid) || ';' FROM pg_trigger t
             WHERE NOT t.tgisinternal AND t.tgrelid = ANY(SELECT to_regclass(name) FROM unnest($1::text[]) name)
             ORDER BY t.tgrelid::regclass::text, t.tgname",
            &[&tables],
        )
        .await
        .map_err(|error| classify(error, what))?;
    section(&mut script, "triggers", &triggers);
    let security = client
        .query(
            "SELECT 'row-level security', format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY;', c.oid::regclass)
                    || CASE WHEN c.relforcerowsecurity THEN format(E'\\nALTER TABLE %s FORCE ROW LEVEL SECURITY;', c.oid::regclass) ELSE '' END
             FROM pg_class c
             WHERE c.relrowsecurity AND c.oid = ANY(SELECT to_regclass(name) FROM unnest($1::text[]) name)
             UNION ALL
             SELECT 'policy', format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s;',
                        p.polname, p.polrelid::regclass,
                        CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                        CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                        CASE WHEN p.polroles = '{0}' THEN 'PUBLIC'
                             ELSE (SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname) FROM pg_roles r WHERE r.oid = ANY(p.polroles)) END,
                        CASE WHEN p.polqual IS NOT NULL THEN ' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')' ELSE '' END,
                        CASE WHEN p.polwithcheck IS NOT NULL THEN ' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')' ELSE '' END)
             FROM pg_policy p
             WHERE p.polrelid = ANY(SELECT to_regclass(name) FROM unnest($1::text[]) name)",
            &[&tables],
        )
        .await
        .map_err(|error| classify(error, what))?;
    section(&mut script, "row-level security and policies", &security);
    // Privileges the owner granted to others on the tables and the views (the owner's own are
    // implied on the target by whoever creates the objects).
    let grants = client
        .query(
            "SELECT 'grant', format('GRANT %s ON %s TO %s%s;', a.privilege_type, c.oid::regclass,
                        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
             WHERE a.grantee <> c.relowner
               AND (c.oid = ANY(SELECT to_regclass(name) FROM unnest($1::text[]) name)
                    OR (n.nspname = ANY($2) AND c.relkind IN ('v', 'm')))
             ORDER BY c.oid::regclass::text, 2",
            &[&tables, &schemas],
        )
        .await
        .map_err(|error| classify(error, what))?;
    section(&mut script, "grants", &grants);
    Ok(script)
}

/// Appends the rows (kind, statement) under a heading; a heading with `none` when empty.
fn section(script: &mut String, title: &str, rows: &[tokio_postgres::Row]) {
    let _ = writeln!(script, "-- {title}");
    if rows.is_empty() {
        let _ = writeln!(script, "-- (none)\n");
        return;
    }
    for row in rows {
        let kind: String = row.get(0);
        let statement: String = row.get(1);
        let _ = writeln!(script, "-- {kind}\n{}\n", statement.trim_end());
    }
}
