//! `ferry check`: everything that would stop or spoil a migration, found before it starts and
//! reported all at once, each finding with the fix.

use ferry_core::check::Finding;
use ferry_core::schema::UserType;
use ferry_core::select::Selection;
use ferry_core::state::stored::failure_summary as failure_summary_of;
use ferry_core::state::{FailureSummary, StreamRetention};
use ferry_core::{Result, TableName};
use tokio_postgres::Client;

use super::catalog::read_catalog;
use super::cdc::stream_name;
use super::config::ConnectionConfig;
use super::connection::connect;
use super::ddl::qualified;
use super::errors::classify;
use super::state;

/// Checks source and target for a migration named `migration` of the selected tables.
pub async fn check(
    source: &ConnectionConfig,
    target: &ConnectionConfig,
    selection: &Selection,
    migration: &str,
) -> Vec<Finding> {
    check_sides(Some(source), Some(target), selection, migration).await
}

/// The checks of one side only (the other side is another engine, checked by its connector).
pub async fn check_sides(
    source: Option<&ConnectionConfig>,
    target: Option<&ConnectionConfig>,
    selection: &Selection,
    migration: &str,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let source_client = match source {
        Some(source) => match connect(source).await {
            Ok(client) => Some(client),
            Err(error) => {
                findings.push(Finding::unreachable("source", &error));
                None
            }
        },
        None => None,
    };
    let target_client = match target {
        Some(target) => match connect(target).await {
            Ok(client) => Some(client),
            Err(error) => {
                findings.push(Finding::unreachable("target", &error));
                None
            }
        },
        None => None,
    };
    let mut tables = Vec::new();
    let mut types = Vec::new();
    // 0: no PostgreSQL source, so no version to compare with.
    let mut source_version = 0;
    if let Some(client) = &source_client {
        match check_source(client, selection, migration, &mut findings).await {
            Ok((selected, version, user_types)) => {
                tables = selected;
                types = user_types;
                source_version = version;
            }
            Err(error) => findings.push(Finding::failed("source.check_failed", &error)),
        }
    }
    if let Some(client) = &target_client {
        if let Err(error) = check_target(
            client,
            &tables,
            &types,
            migration,
            source_version,
            &mut findings,
        )
        .await
        {
            findings.push(Finding::failed("target.check_failed", &error));
        }
    }
    findings
}

/// A selected table.
struct SelectedTable {
    name: TableName,
}

async fn check_source(
    client: &Client,
    selection: &Selection,
    migration: &str,
    findings: &mut Vec<Finding>,
) -> Result<(Vec<SelectedTable>, i32, Vec<UserType>)> {
    let what = "checking the source settings";
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int,
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*) FROM pg_replication_slots)::int,
                    (SELECT count(*) FROM pg_stat_replication)::int,
                    r.rolreplication, r.rolsuper, current_setting('server_version_num')::int, current_user::text,
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)
             FROM pg_roles r WHERE r.rolname = current_user",
            &[&stream_name(migration)],
        )
        .await
        .map_err(|error| classify(error, what))?;
    let wal_level: String = row.get(0);
    let (max_slots, max_senders, used_slots, used_senders): (i32, i32, i32, i32) =
        (row.get(1), row.get(2), row.get(3), row.get(4));
    let (replication, superuser, version, user, own_slot): (bool, bool, i32, String, bool) =
        (row.get(5), row.get(6), row.get(7), row.get(8), row.get(9));
    if wal_level != "logical" {
        findings.push(Finding::error(
            "source.wal_level",
            format!("the source has wal_level = {wal_level}; streaming changes needs wal_level = logical"),
            "run ALTER SYSTEM SET wal_level = logical on the source and restart it (on managed services: enable logical replication in the parameter group)",
        ));
    }
    if !replication && !superuser {
        findings.push(Finding::error(
            "source.replication_privilege",
            format!("user {user} may not open replication connections"),
            format!("run ALTER ROLE {user} REPLICATION on the source"),
        ));
    }
    if !own_slot && used_slots >= max_slots {
        findings.push(Finding::error(
            "source.replication_slots",
            format!("all {max_slots} replication slots of the source are in use"),
            "raise max_replication_slots (restart needed) or drop an unused slot (SELECT pg_drop_replication_slot(name))",
        ));
    }
    if used_senders >= max_senders {
        findings.push(Finding::error(
            "source.wal_senders",
            format!("all {max_senders} WAL senders of the source are in use"),
            "raise max_wal_senders on the source (restart needed)",
        ));
    }
    if version < 140000 {
        findings.push(Finding::error(
            "source.version",
            format!("the source runs PostgreSQL {}; ferry streams changes from 14 or later (its replication client asks pgoutput for logical messages, an option added in 14)", version / 10000),
            "upgrade the source, or use `ferry copy` for a one-time copy (10 or later)",
        ));
    }

    let catalog = read_catalog(client, selection).await?;
    if catalog.tables.is_empty() {
        findings.push(Finding::error(
            "source.no_tables",
            "no table on the source matches the selection",
            "check --tables (patterns like 'public.*') and that the source user can see the tables",
        ));
    }
    for (name, reason) in &catalog.unsupported {
        findings.push(Finding::error(
            "source.unsupported_table",
            format!("table {name} cannot be migrated: {reason}"),
            "leave it out with --tables",
        ));
    }
    let mut selected = Vec::new();
    for table in &catalog.tables {
        if table.primary_key.is_empty() {
            let full: bool = client
                .query_one(
                    "SELECT relreplident = 'f' FROM pg_class WHERE oid = $1::text::regclass",
                    &[&qualified(&table.name)],
                )
                .await
                .map_err(|error| classify(error, what))?
                .get(0);
            let partitions = match full {
                true => super::cdc::replica_identity_problem(client, &table.name).await?,
                false => None,
            };
            if let Some((problem, hint)) = partitions {
                findings.push(Finding::error("source.replica_identity", problem, hint));
            } else if full {
                findings.push(Finding::warning(
                    "source.no_primary_key",
                    format!("table {} has no primary key and no unique index on NOT NULL columns: it is copied in one piece, and each update or delete scans the target table for one matching row", table.name),
                    format!("fine for append-only or small tables; for a large table that changes often, add a key (ALTER TABLE {} ADD PRIMARY KEY (...))", qualified(&table.name)),
                ));
            } else {
                findings.push(Finding::error(
                    "source.replica_identity",
                    format!("table {} has no primary key and no unique index on NOT NULL columns: its updates and deletes reach the log with the whole old row (which ferry finds the row by) only with REPLICA IDENTITY FULL, and once published without it they fail on the source", table.name),
                    format!("ALTER TABLE {} REPLICA IDENTITY FULL (or add a primary key), or leave the table out with --exclude", qualified(&table.name)),
                ));
            }
        } else if let Some((problem, hint)) =
            super::cdc::replica_identity_problem(client, &table.name).await?
        {
            findings.push(Finding::error("source.replica_identity", problem, hint));
        }
        let privileges = client
            .query_one(
                "SELECT has_table_privilege($1::text::regclass, 'SELECT'), pg_has_role(c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&qualified(&table.name)],
            )
            .await
            .map_err(|error| classify(error, what))?;
        if !privileges.get::<_, bool>(0) {
            findings.push(Finding::error(
                "source.select_privilege",
                format!("user {user} may not read {}", table.name),
                format!("GRANT SELECT ON {} TO {user}", qualified(&table.name)),
            ));
        }
        if !privileges.get::<_, bool>(1) && !superuser {
            findings.push(Finding::error(
                "source.publication_privilege",
                format!("user {user} does not own {}, so it cannot add it to a publication", table.name),
                "run ferry as the tables' owner or a superuser, or create the publication ferry_<name> yourself",
            ));
        }
        if table.partitioning.is_some() {
            findings.push(Finding::warning(
                "source.partition_maintenance",
                format!("{} is partitioned: TRUNCATE of one partition and ATTACH, DETACH or DROP PARTITION change rows without a trace in the change stream", table.name),
                "after such maintenance during the migration, run ferry verify on the table and, if it differs, copy it afresh (a row ferry cannot route, into a partition created since, stops the table, which the next run copies afresh with the new partitions)",
            ));
        }
        selected.push(SelectedTable {
            name: table.name.clone(),
        });
    }
    findings.extend(objects_left_behind(client, &catalog).await?);
    Ok((selected, version, catalog.types))
}

/// Triggers on the selected tables, and views and routines in their schemas: ferry does not
/// create them on the target (a trigger there would act again on what the stream already
/// carries), so `check` lists them, with their definitions, for the cutover runbook.
async fn objects_left_behind(
    client: &Client,
    catalog: &ferry_core::schema::Catalog,
) -> Result<Vec<Finding>> {
    let what = "listing triggers, views and routines";
    let mut findings = Vec::new();
    let tables: Vec<String> = catalog
        .tables
        .iter()
        .map(|table| qualified(&table.name))
        .collect();
    let triggers = client
        .query(
            "SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
             WHERE NOT t.tgisinternal AND t.tgrelid::regclass::text = ANY($1)
             ORDER BY 1, 2",
            &[&catalog
                .tables
                .iter()
                .map(|table| table.name.to_string())
                .chain(tables.iter().cloned())
                .collect::<Vec<_>>()],
        )
        .await
        .map_err(|error| classify(error, what))?;
    for row in &triggers {
        let (table, name, definition): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        findings.push(Finding::warning(
            "source.trigger_not_copied",
            format!("trigger {name} on {table} is not created on the target (there it would act again on rows the stream already carries)"),
            format!("create it at cutover, with its function: {definition}"),
        ));
    }
    let schemas: Vec<String> = catalog
        .tables
        .iter()
        .map(|table| table.name.schema.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let others = client
        .query(
            "SELECT 'view', format('%I.%I', schemaname, viewname) FROM pg_views WHERE schemaname = ANY($1)
             UNION ALL
             SELECT 'materialized view', format('%I.%I', schemaname, matviewname) FROM pg_matviews WHERE schemaname = ANY($1)
             UNION ALL
             SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, p.oid::regprocedure::text
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = ANY($1) AND p.prokind IN ('f', 'p')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
             ORDER BY 1, 2",
            &[&schemas],
        )
        .await
        .map_err(|error| classify(error, what))?;
    let mut kinds: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in &others {
        kinds
            .entry(row.get(0))
            .or_default()
            .push(row.get::<_, String>(1));
    }
    for (kind, names) in kinds {
        findings.push(Finding::warning(
            "source.object_not_copied",
            format!("{} {kind}(s) in the migrated schemas are not created on the target: {}", names.len(), names.join(", ")),
            format!("create them at cutover: `ferry objects --source URL -o objects.sql` writes their definitions (with triggers, policies and grants) as one script (schemas {})", schemas.join(", ")),
        ));
    }
    Ok(findings)
}

async fn check_target(
    client: &Client,
    tables: &[SelectedTable],
    types: &[UserType],
    migration: &str,
    source_version: i32,
    findings: &mut Vec<Finding>,
) -> Result<()> {
    let what = "checking the target";
    let row = client
        .query_one(
            "SELECT has_database_privilege(current_database(), 'CREATE'), r.rolsuper, current_setting('server_version_num')::int, current_user::text,
                    has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE') AND has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE')
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|error| classify(error, what))?;
    let (create, superuser, version, user): (bool, bool, i32, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if !create {
        findings.push(Finding::error(
            "target.create_privilege",
            format!("user {user} may not create schemas in the target database"),
            format!("GRANT CREATE ON DATABASE <database> TO {user}"),
        ));
    }
    if !superuser && !row.get::<_, bool>(4) {
        findings.push(Finding::error(
            "target.replication_origin",
            format!("user {user} may not use replication origins on the target; ferry tags its writes with one so that a reverse stream after cutover never replays them"),
            format!("GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_session_setup(text) TO {user}"),
        ));
    }
    if !superuser {
        findings.push(Finding::warning(
            "target.not_superuser",
            format!("user {user} is not a superuser on the target, so ferry cannot set session_replication_role = replica while applying"),
            "target triggers will fire for replicated rows and foreign keys may reject rows applied out of order; use a superuser for the target if you can",
        ));
    }
    if source_version > 0 && version / 10000 < source_version / 10000 {
        findings.push(Finding::warning("target.older_version", format!("the target (PostgreSQL {}) is older than the source ({})", version / 10000, source_version / 10000), "types or syntax new in the source version may not load; prefer a target at least as new"));
    }
    let known = state::load(client, migration).await?;
    for table in tables {
        let name = qualified(&table.name);
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await
            .map_err(|error| classify(error, what))?
            .get(0);
        if exists && !known.tables.contains_key(&table.name) {
            let empty: bool = client
                .query_one(
                    &format!(
                        "SELECT NOT EXISTS (SELECT 1 FROM {})",
                        super::ddl::own_rows_on(client, &table.name).await?
                    ),
                    &[],
                )
                .await
                .map_err(|error| classify(error, what))?
                .get(0);
            if !empty {
                findings.push(Finding::error(
                    "target.not_empty",
                    format!(
                        "target table {} already holds rows that ferry did not write",
                        table.name
                    ),
                    format!("empty it (TRUNCATE {name}) or drop it, or leave it out with --tables"),
                ));
            }
        }
    }
    type_findings(client, types, findings).await
}

/// Findings for the types a catalog from another engine needs on the PostgreSQL `target` once
/// translated (PostGIS for MySQL spatial columns): an extension the target server does not
/// have is an error now, not when the tables are created.
pub async fn check_translated_types(
    target: &ConnectionConfig,
    catalog: &ferry_core::schema::Catalog,
) -> Vec<Finding> {
    let Ok(translated) = super::translate::catalog(catalog) else {
        // What cannot be translated is reported on its own.
        return Vec::new();
    };
    if translated.types.is_empty() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    let outcome = async {
        let client = connect(target).await?;
        // The translated columns name PostGIS's types in `public`.
        let postgis_needed = translated
            .types
            .iter()
            .any(|user_type| user_type.extension.as_deref() == Some("postgis"));
        let installed: Option<String> = client
            .query_opt(
                "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis'",
                &[],
            )
            .await
            .map_err(|error| classify(error, "looking up PostGIS on the target"))?
            .map(|row| row.get(0));
        if let Some(schema) = installed.filter(|schema| {
            postgis_needed && schema.as_str() != super::translate::POSTGIS_SCHEMA
        }) {
            findings.push(Finding::error(
                "target.extension_schema",
                format!("PostGIS is installed in schema {schema} on the target; ferry creates the MySQL spatial columns as {}.geometry", super::translate::POSTGIS_SCHEMA),
                format!("move it (ALTER EXTENSION postgis SET SCHEMA {}) if nothing else depends on its place, or leave the tables with spatial columns out", super::translate::POSTGIS_SCHEMA),
            ));
            return Ok(());
        }
        type_findings(&client, &translated.types, &mut findings).await
    }
    .await;
    if let Err(error) = outcome {
        findings.push(Finding::error(
            error.code(),
            error.message(),
            error.hint().unwrap_or_default(),
        ));
    }
    findings
}

/// Types ferry creates itself need nothing; an extension's type needs the extension available
/// on the target server.
async fn type_findings(
    client: &Client,
    types: &[UserType],
    findings: &mut Vec<Finding>,
) -> Result<()> {
    let what = "checking the target's types";
    for user_type in types {
        let present: bool = client
            .query_one(
                "SELECT to_regtype($1) IS NOT NULL",
                &[&qualified(&user_type.name)],
            )
            .await
            .map_err(|error| classify(error, what))?
            .get(0);
        if present {
            continue;
        }
        if let Some(problem) = super::types::missing_on_target(client, user_type).await? {
            findings.push(Finding::error(
                problem.code(),
                problem.message(),
                problem.hint().unwrap_or_default(),
            ));
        }
    }
    Ok(())
}

/// A warning for each of these source tables (those with a row filter) whose updates may leave
/// out unchanged large values: a row entering the filter that way is read from the source (an
/// extra query per such update), which REPLICA IDENTITY FULL avoids.
pub async fn partial_update_findings(
    config: &ConnectionConfig,
    filtered: &[TableName],
) -> Vec<Finding> {
    if filtered.is_empty() {
        return Vec::new();
    }
    match partial_update_tables(config, filtered).await {
        Ok(tables) => tables
            .into_iter()
            .map(|table| {
                Finding::warning(
                    "transform.partial_image",
                    format!("{table} has a row filter and columns PostgreSQL may leave out of an update (unchanged large values): a row entering the filter that way is read from the source"),
                    format!("on the source: ALTER TABLE {table} REPLICA IDENTITY FULL makes every update carry the whole row, with no extra read"),
                )
            })
            .collect(),
        Err(error) => vec![Finding::failed("source.check_failed", &error)],
    }
}

/// Of these source tables, those whose updates may arrive without their unchanged large
/// (TOASTed) values: a column that can be stored out of line, and a replica identity other than
/// FULL. A row entering a row filter through such an update is read from the source, so
/// `check` says that FULL would spare the read.
async fn partial_update_tables(
    config: &ConnectionConfig,
    tables: &[TableName],
) -> Result<Vec<TableName>> {
    let client = connect(config).await?;
    let mut partial = Vec::new();
    for table in tables {
        let risky: bool = client
            .query_one(
                "SELECT c.relreplident <> 'f' AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                        AND NOT a.attisdropped AND a.attlen = -1 AND a.attstorage IN ('x', 'e'))
                 FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&qualified(table)],
            )
            .await
            .map_err(|error| classify(error, "reading replica identities"))?
            .get(0);
        if risky {
            partial.push(table.clone());
        }
    }
    Ok(partial)
}

/// The failures recorded on the target for `migration`.
pub(crate) async fn failure_summary(
    config: &ConnectionConfig,
    migration: &str,
) -> Result<FailureSummary> {
    let client = connect(config).await?;
    let what = "reading recorded failures";
    if !state::state_table_exists(&client, "failure", what).await? {
        return Ok(FailureSummary::default());
    }
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM _ferry.failure WHERE migration = $1",
            &[&migration],
        )
        .await
        .map_err(|error| classify(error, what))?
        .get(0);
    let rows = client
        .query("SELECT (extract(epoch FROM at) * 1000000)::bigint, code, message FROM _ferry.failure WHERE migration = $1 ORDER BY at DESC LIMIT 5", &[&migration])
        .await
        .map_err(|error| classify(error, what))?;
    Ok(failure_summary_of(
        count,
        rows.iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect(),
    ))
}

/// The slot of `migration`, if it exists.
pub(crate) async fn slot_status(
    config: &ConnectionConfig,
    migration: &str,
) -> Result<Option<StreamRetention>> {
    let client = connect(config).await?;
    let row = client
        .query_opt(
            "SELECT active, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint, wal_status, safe_wal_size FROM pg_replication_slots WHERE slot_name = $1",
            &[&stream_name(migration)],
        )
        .await
        .map_err(|error| classify(error, "reading the replication slot"))?;
    Ok(row.map(|row| {
        let mut retention = StreamRetention {
            active: row.get(0),
            retained_bytes: row.get(1),
            wal_status: row.get(2),
            safe_wal_bytes: row.get(3),
            stream: stream_name(migration),
            warning: None,
        };
        retention.warning = retention_warning(&retention);
        retention
    }))
}

/// The retention guard: a warning when the source is close to dropping WAL the slot needs.
fn retention_warning(status: &StreamRetention) -> Option<String> {
    match status.wal_status.as_deref() {
        Some("lost") => return Some("the replication slot was invalidated: changes are lost; start over with `ferry run --restart` after raising max_slot_wal_keep_size".into()),
        Some("unreserved") => return Some("the source is about to remove WAL the replication slot still needs: speed ferry up (more --parallel, a faster target) or raise max_slot_wal_keep_size now, or the migration must start over".into()),
        _ => {}
    }
    match status.safe_wal_bytes {
        Some(safe) if safe < status.retained_bytes => Some(format!(
            "the replication slot holds {} MiB of WAL and only {} MiB more may be written before the source invalidates it: raise max_slot_wal_keep_size or let ferry catch up",
            status.retained_bytes >> 20,
            safe.max(0) >> 20
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_guard_warns_before_the_slot_is_lost() {
        let status = |wal_status: &str, retained: i64, safe: Option<i64>| StreamRetention {
            active: true,
            retained_bytes: retained,
            wal_status: Some(wal_status.into()),
            safe_wal_bytes: safe,
            stream: "ferry_shop".into(),
            warning: None,
        };
        assert_eq!(retention_warning(&status("reserved", 1 << 20, None)), None);
        assert_eq!(
            retention_warning(&status("reserved", 1 << 20, Some(1 << 30))),
            None
        );
        assert!(
            retention_warning(&status("reserved", 1 << 30, Some(1 << 20)))
                .unwrap()
                .contains("max_slot_wal_keep_size")
        );
        assert!(retention_warning(&status("unreserved", 0, None)).is_some());
        assert!(retention_warning(&status("lost", 0, None))
            .unwrap()
            .contains("--restart"));
    }
}
