//! `ferry check` for MySQL and MariaDB: every problem at once, each with its fix.

use ferry_core::check::Finding;
use ferry_core::schema::Catalog;
use ferry_core::select::Selection;
use ferry_core::Result;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::catalog::read_catalog_for;
use super::config::MysqlConfig;
use super::connection::{connect, is_mariadb};
use super::ddl::{untranslatable, Flavor};
use super::errors::classify;
use super::sink::{triggers_on, TRIGGERS_HINT};

/// Checks a MySQL source and/or target. `foreign_catalog` is the catalog read from a source of
/// another engine, to check that the MySQL target can hold it.
pub async fn check(
    source: Option<&MysqlConfig>,
    target: Option<&MysqlConfig>,
    selection: &Selection,
    foreign_catalog: Option<&Catalog>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut catalog = foreign_catalog.cloned();
    if let Some(source) = source {
        match connect(source, true).await {
            Ok(mut conn) => match check_source(&mut conn, source, selection, &mut findings).await {
                Ok(read) => catalog = Some(read),
                Err(error) => findings.push(Finding::failed("source.check_failed", &error)),
            },
            Err(error) => findings.push(Finding::unreachable("source", &error)),
        }
    }
    if let Some(target) = target {
        // The target database may not exist yet: ferry creates it.
        match connect(target, false).await {
            Ok(mut conn) => {
                if let Err(error) =
                    check_target(&mut conn, target, catalog.as_ref(), &mut findings).await
                {
                    findings.push(Finding::failed("target.check_failed", &error));
                }
            }
            Err(error) => findings.push(Finding::unreachable("target", &error)),
        }
    }
    findings
}

/// A global server variable's value (None: the server has no such variable).
pub(crate) async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>> {
    let row: Option<(String, String)> = conn
        .exec_first("SHOW GLOBAL VARIABLES WHERE Variable_name = ?", (name,))
        .await
        .map_err(|error| classify(error, "reading the server settings"))?;
    Ok(row.map(|(_, value)| value))
}

async fn check_source(
    conn: &mut Conn,
    config: &MysqlConfig,
    selection: &Selection,
    findings: &mut Vec<Finding>,
) -> Result<Catalog> {
    let mariadb = is_mariadb(conn).await?;
    let setting = |name: &str, value: Option<String>, wanted: &str| -> Option<Finding> {
        let actual = value.unwrap_or_default();
        (!actual.eq_ignore_ascii_case(wanted)).then(|| {
            Finding::error(
                "source.binlog_setting",
                format!("the source has {name} = '{actual}'; ferry needs {wanted}"),
                format!("set {name}={wanted} in the server configuration and restart it (SET GLOBAL affects new sessions only)"),
            )
        })
    };
    let log_bin = variable(conn, "log_bin").await?;
    findings.extend(setting("log_bin", log_bin, "ON"));
    let format = variable(conn, "binlog_format").await?;
    findings.extend(setting("binlog_format", format, "ROW"));
    let image = variable(conn, "binlog_row_image").await?;
    findings.extend(setting("binlog_row_image", image, "FULL"));
    if let Some(compress) = variable(conn, "log_bin_compress").await? {
        findings.extend(setting("log_bin_compress", Some(compress), "OFF"));
    }
    if let Some(metadata) = variable(conn, "binlog_row_metadata").await? {
        if !metadata.eq_ignore_ascii_case("FULL") {
            findings.push(Finding::warning(
                "source.binlog_setting",
                format!("the source has binlog_row_metadata = '{metadata}': an ALTER TABLE made while ferry is stopped is caught only when it changes the column count"),
                "SET GLOBAL binlog_row_metadata = FULL on the source (it logs column names and ENUM/SET labels with every change)",
            ));
        }
    }
    if let Some(options) = variable(conn, "binlog_row_value_options").await? {
        if !options.is_empty() {
            findings.push(Finding::error(
                "source.binlog_setting",
                "binlog_row_value_options logs partial JSON updates",
                "set binlog_row_value_options='' on the source",
            ));
        }
    }

    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(|error| classify(error, "reading the privileges"))?;
    let all = grants.join(" ").to_ascii_uppercase();
    let has = |privilege: &str| all.contains("ALL PRIVILEGES ON *.*") || all.contains(privilege);
    if !has("REPLICATION SLAVE") && !has("REPLICATION REPLICA") {
        findings.push(Finding::error(
            "source.privilege",
            "ferry's user lacks REPLICATION SLAVE (needed to read the binary log)",
            "GRANT REPLICATION SLAVE ON *.* TO the user",
        ));
    }
    if !has("REPLICATION CLIENT") && !has("BINLOG MONITOR") {
        findings.push(Finding::error("source.privilege", "ferry's user lacks REPLICATION CLIENT / BINLOG MONITOR (needed to read binary log positions)", "GRANT REPLICATION CLIENT ON *.* TO the user (BINLOG MONITOR on MariaDB 10.5+)"));
    }
    if !mariadb && !has("RELOAD") {
        findings.push(Finding::error("source.privilege", "ferry's user lacks RELOAD (MySQL needs a moment's FLUSH TABLES WITH READ LOCK to take a consistent start position)", "GRANT RELOAD ON *.* TO the user"));
    }

    let (catalog, materialized) = read_catalog_for(conn, config, selection).await?;
    for column in materialized {
        findings.push(Finding::warning(
            "source.generated_column",
            format!("generated column {column} becomes a plain column on the target, holding the source's values (the expression is not translated)"),
            "recreate the expression on the target after the switch if applications rely on it",
        ));
    }
    if catalog.tables.is_empty() && catalog.unsupported.is_empty() {
        findings.push(Finding::error(
            "source.no_tables",
            format!(
                "no table of database {} matches the selection",
                config.database()
            ),
            "check --tables and that the user can see the tables",
        ));
    }
    for table in catalog
        .tables
        .iter()
        .filter(|table| table.primary_key.is_empty())
    {
        findings.push(Finding::warning(
            "source.no_primary_key",
            format!(
                "table {} has no primary key and no unique index on NOT NULL columns: it is copied in one piece, and each update or delete scans the target table for one matching row",
                table.name
            ),
            "fine for append-only or small tables; for a large table that changes often, add a key (ALTER TABLE ... ADD PRIMARY KEY)",
        ));
    }
    for table in &catalog.tables {
        if let Some((column, charset)) = super::values::unreadable_column(table) {
            findings.push(Finding::error(
                "source.unsupported_charset",
                format!("{}: column {column} is in character set {charset}, which ferry cannot read from the binary log yet (a copy works; streaming would stop at the first change)", table.name),
                format!("convert it (ALTER TABLE {} CONVERT TO CHARACTER SET utf8mb4), or leave the table out with --tables", table.name.name),
            ));
        }
    }
    findings.extend(objects_left_behind(conn, config.database(), &catalog).await?);
    for (table, reason) in &catalog.unsupported {
        findings.push(Finding::error(
            "source.unsupported_type",
            format!("{table}: {reason}"),
            "leave the table out with --tables",
        ));
    }

    // Binary log retention against a rough copy time (50 MB/s of table data).
    let bytes: Option<Option<u64>> = conn
        .exec_first(
            "SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (config.database(),),
        )
        .await
        .map_err(|error| classify(error, "estimating the data size"))?;
    let copy_seconds = bytes.flatten().unwrap_or(0) / 50_000_000;
    let seconds = variable(conn, "binlog_expire_logs_seconds")
        .await?
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    let days = variable(conn, "expire_logs_days")
        .await?
        .and_then(|value| value.parse::<f64>().ok())
        .unwrap_or(0.0);
    let retention = if seconds > 0 {
        seconds
    } else {
        (days * 86_400.0) as u64
    };
    if retention > 0 && retention < copy_seconds.saturating_mul(4).max(3_600) {
        findings.push(Finding::warning(
            "source.binlog_retention",
            format!("the source keeps binary logs for {retention} s; the copy may take about {copy_seconds} s, and the stream must resume within the retention after any stop"),
            "raise binlog_expire_logs_seconds (or expire_logs_days) for the migration's duration, or the binary log ferry needs may be purged",
        ));
    }
    Ok(catalog)
}

async fn check_target(
    conn: &mut Conn,
    config: &MysqlConfig,
    catalog: Option<&Catalog>,
    findings: &mut Vec<Finding>,
) -> Result<()> {
    let flavor = Flavor {
        mariadb: is_mariadb(conn).await?,
    };
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(|error| classify(error, "reading the privileges"))?;
    let all = grants.join(" ").to_ascii_uppercase();
    if !(all.contains("ALL PRIVILEGES ON *.*")
        || all.contains("ON `_FERRY`.*")
        || all.contains("CREATE,") && all.contains("ON *.*"))
    {
        findings.push(Finding::warning("target.privilege", "ferry's user may not be able to create its state database `_ferry`", "GRANT ALL ON `_ferry`.* TO the user, and CREATE, INSERT, UPDATE, DELETE, DROP, INDEX, ALTER on the target database"));
    }
    if let Some(catalog) = catalog {
        for problem in untranslatable(catalog, flavor) {
            findings.push(Finding::error("target.unsupported_type", problem, "see the type mapping in docs/mysql.md: change the column on the source, or leave the table out with --tables"));
        }
        let names: Vec<&str> = catalog
            .tables
            .iter()
            .map(|table| table.name.name.as_str())
            .collect();
        for trigger in triggers_on(conn, config.database(), &names).await? {
            findings.push(Finding::error(
                "target.triggers",
                format!("target table trigger {trigger} would fire for ferry's writes and change what the source wrote"),
                TRIGGERS_HINT,
            ));
        }
    }
    if let Some(catalog) = catalog {
        let counters: Vec<String> = catalog
            .tables
            .iter()
            .filter(|table| table.columns.iter().any(|column| column.identity.is_some()))
            .map(|table| table.name.to_string())
            .collect();
        let mode = variable(conn, "innodb_autoinc_lock_mode").await?;
        if !counters.is_empty() && matches!(mode.as_deref(), Some("0") | Some("1")) {
            findings.push(Finding::warning(
                "target.autoinc_lock_mode",
                format!(
                    "the target's innodb_autoinc_lock_mode is {}: a LOAD DATA into a table with an AUTO_INCREMENT column holds the table's AUTO-INC lock until it ends, so parallel copy workers of one table wait for each other (tables with one: {}, e.g. {})",
                    mode.unwrap_or_default(),
                    counters.len(),
                    counters[0]
                ),
                "for a large copy, start the target server with innodb_autoinc_lock_mode = 2 (safe with a row-based binary log), so that the copy workers load side by side",
            ));
        }
    }
    if !config.copy_binlog() {
        match crate::sink::keep_out_of_binlog(conn).await {
            Ok(()) => {
                // The check's session goes on logging like any other.
                conn.query_drop("SET SESSION sql_log_bin = 1")
                    .await
                    .map_err(|error| classify(error, "reading the privileges"))?;
            }
            Err(error) if error.code() == "target.binlog_privilege" => {
                findings.push(Finding::error(
                    "target.binlog_privilege",
                    error.to_string(),
                    error.hint().unwrap_or_default(),
                ))
            }
            Err(error) => return Err(error),
        }
    }
    if variable(conn, "local_infile").await?.as_deref() == Some("OFF") {
        findings.push(Finding::warning(
            "target.local_infile",
            "the target does not allow LOAD DATA LOCAL (local_infile = OFF): ferry will load with INSERT statements, which is slower",
            "SET GLOBAL local_infile = 1 on the target for the copy",
        ));
    }
    Ok(())
}

/// Triggers on the selected tables, views and routines of the database: ferry does not create
/// them on the target (a trigger there would act again on what the stream already carries), so
/// `check` lists them for the cutover runbook.
async fn objects_left_behind(
    conn: &mut Conn,
    database: &str,
    catalog: &ferry_core::schema::Catalog,
) -> Result<Vec<Finding>> {
    let what = "listing triggers, views and routines";
    let mut findings = Vec::new();
    let triggers: Vec<(String, String, String, String, String)> = conn
        .exec(
            "SELECT EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, ACTION_STATEMENT
             FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY 1, 2",
            (database,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    for (table, name, timing, event, statement) in triggers {
        if !catalog
            .tables
            .iter()
            .any(|selected| selected.name.name == table)
        {
            continue;
        }
        findings.push(Finding::warning(
            "source.trigger_not_copied",
            format!("trigger {name} on {database}.{table} is not created on the target (there it would act again on rows the stream already carries)"),
            format!("create it at cutover: CREATE TRIGGER {name} {timing} {event} ON {table} FOR EACH ROW {statement}"),
        ));
    }
    let others: Vec<(String, String)> = conn
        .exec(
            "SELECT 'view', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?
             UNION ALL
             SELECT LOWER(ROUTINE_TYPE), ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?
             ORDER BY 1, 2",
            (database, database),
        )
        .await
        .map_err(|error| classify(error, what))?;
    let mut kinds: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (kind, name) in others {
        kinds.entry(kind).or_default().push(name);
    }
    for (kind, names) in kinds {
        findings.push(Finding::warning(
            "source.object_not_copied",
            format!("{} {kind}(s) of {database} are not created on the target: {}", names.len(), names.join(", ")),
            "create them at cutover: `ferry objects --source URL -o objects.sql` writes their definitions (with the triggers) as one script".to_string(),
        ));
    }
    Ok(findings)
}
