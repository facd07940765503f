//! `ferry check`'s bounded look at the data: values a target would refuse, found before a copy
//! runs for hours. Each table is scanned up to [`ROWS_SCANNED`] rows, in one query for all its
//! suspect columns.

use ferry_core::check::Finding;
use ferry_core::schema::Catalog;
use ferry_core::Result;
use mysql_async::prelude::Queryable;

use super::catalog::kind_of;
use super::config::MysqlConfig;
use super::connection::connect;
use super::ddl::ident;
use super::errors::classify;
use super::types::Kind;

/// How many rows of each table are looked at.
pub(super) const ROWS_SCANNED: u64 = 1_000_000;

/// What the target cannot hold.
#[derive(Debug, Clone, Copy)]
pub struct Unrepresentable {
    /// Zero dates (`0000-00-00`, a zero month or day): PostgreSQL has none.
    pub zero_dates: bool,
    /// MySQL's invalid-ENUM value `''` (index 0): a strict MySQL session refuses it.
    pub enum_errors: bool,
}

/// Findings for the columns of `catalog` that hold values the target cannot hold.
pub async fn unrepresentable_values(
    config: &MysqlConfig,
    catalog: &Catalog,
    what_target_refuses: Unrepresentable,
) -> Vec<Finding> {
    match scan(config, catalog, what_target_refuses).await {
        Ok(findings) => findings,
        Err(error) => vec![Finding::failed("source.check_failed", &error)],
    }
}

async fn scan(
    config: &MysqlConfig,
    catalog: &Catalog,
    refuses: Unrepresentable,
) -> Result<Vec<Finding>> {
    let mut conn = connect(config, true).await?;
    let mut findings = Vec::new();
    for table in &catalog.tables {
        let mut probes: Vec<(String, String)> = Vec::new();
        for column in table.writable_columns() {
            let name = ident(&column.name);
            match kind_of(column) {
                Kind::Date | Kind::DateTime | Kind::Timestamp if refuses.zero_dates => {
                    probes.push((
                        column.name.clone(),
                        format!(
                        "MAX({name} IS NOT NULL AND (MONTH({name}) = 0 OR DAYOFMONTH({name}) = 0))"
                    ),
                    ))
                }
                Kind::Enum { labels }
                    if refuses.enum_errors && !labels.iter().any(String::is_empty) =>
                {
                    probes.push((column.name.clone(), format!("MAX({name} + 0 = 0)")))
                }
                _ => {}
            }
        }
        if probes.is_empty() {
            continue;
        }
        let columns: Vec<String> = table
            .writable_columns()
            .map(|column| ident(&column.name))
            .collect();
        let sql = format!(
            "SELECT {} FROM (SELECT {} FROM {} LIMIT {ROWS_SCANNED}) scanned",
            probes
                .iter()
                .map(|(_, probe)| format!("IFNULL({probe}, 0)"))
                .collect::<Vec<_>>()
                .join(", "),
            columns.join(", "),
            ident(&table.name.name)
        );
        let row: Option<mysql_async::Row> = conn
            .query_first(sql)
            .await
            .map_err(|error| classify(error, &format!("scanning {}", table.name)))?;
        let Some(row) = row else { continue };
        for (index, (column, _)) in probes.iter().enumerate() {
            let found: Option<i64> = row.get(index);
            if found != Some(1) {
                continue;
            }
            let enum_column = table
                .column(column)
                .is_some_and(|column| matches!(kind_of(column), Kind::Enum { .. }));
            findings.push(if enum_column {
                Finding::error(
                    "source.unrepresentable_value",
                    format!("{}.{column} holds MySQL's invalid-ENUM value '' (written in non-strict mode), which the target refuses", table.name),
                    format!("set those rows to a label or NULL on the source (UPDATE {} SET {} = NULL WHERE {} + 0 = 0), or leave the table out", ident(&table.name.name), ident(column), ident(column)),
                )
            } else {
                Finding::error(
                    "source.unrepresentable_value",
                    format!("{}.{column} holds zero dates ('0000-00-00', or a zero month or day), which PostgreSQL cannot store", table.name),
                    "set zero_dates = \"null\" in the config file (they arrive as NULL), or fix the rows on the source",
                )
            });
        }
    }
    Ok(findings)
}
