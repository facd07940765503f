//! Classifies MySQL driver errors once, at the connector boundary.

use ferry_core::{Error, ErrorClass};

/// Turns a `mysql_async` error into a ferry error. `what` says what was being done and where; it
/// must not contain a password.
pub(crate) fn classify(error: mysql_async::Error, what: &str) -> Error {
    match error {
        mysql_async::Error::Server(server) => {
            // Another reader with this replica server id: MariaDB says 4052, MySQL 1236 with
            // these words (1236 otherwise means a purged log).
            let same_replica = matches!(server.code, 4052 | 1236)
                && server.message.contains("same server_uuid/server_id");
            let (class, code, hint) = if same_replica {
                (
                    ErrorClass::Operator,
                    "source.stream_in_use",
                    Some(STREAM_IN_USE_HINT),
                )
            } else {
                class_of(server.code)
            };
            let mut result = Error::new(
                class,
                code,
                format!("{what}: {} [MySQL error {}]", server.message, server.code),
            );
            if let Some(hint) = hint {
                result = result.with_hint(hint);
            }
            // A full disk or table, or a read-only server (1290 also names other options).
            let read_only = server.code == 1836
                || server.code == 1290 && server.message.to_ascii_lowercase().contains("read-only");
            if matches!(server.code, 1021 | 1114) || read_only {
                result = result.until_fixed();
            }
            result
        }
        mysql_async::Error::Io(io) => Error::transient("mysql.connection", format!("{what}: {io}"))
            .with_hint("check that the server is running and reachable at that host and port"),
        mysql_async::Error::Driver(driver) => {
            let text = driver.to_string();
            if text.contains("closed") || text.contains("Connection") {
                Error::transient("mysql.connection", format!("{what}: {text}"))
            } else {
                Error::definite("mysql.error", format!("{what}: {text}"))
            }
        }
        other => Error::definite("mysql.error", format!("{what}: {other}")),
    }
}

const STREAM_IN_USE_HINT: &str = "another process reads the binary log with this migration's replica server id: another ferry streams the same migration; stop it first, or give this one another --name";

/// Class, stable code and a hint for a server error number.
fn class_of(number: u16) -> (ErrorClass, &'static str, Option<&'static str>) {
    match number {
        1045 | 1698 => (ErrorClass::Operator, "mysql.authentication", Some("check the user and password (FERRY_SOURCE_PASSWORD / FERRY_TARGET_PASSWORD) and the host the user may connect from")),
        1044 | 1142 | 1143 | 1227 | 1370 => (ErrorClass::Operator, "mysql.privilege", Some("grant the privilege named above to the user ferry connects as (see `ferry check`)")),
        1049 => (ErrorClass::Operator, "mysql.no_database", Some("create the database first, or fix the database name in the URL")),
        1236 => (ErrorClass::Operator, "source.log_purged", Some("the binary log ferry must resume from was purged: keep binary logs longer (binlog_expire_logs_seconds) and copy the tables again with `ferry run --restart`")),
        1205 | 1213 | 1317 | 2006 | 2013 | 1053 | 1927 | 1040 | 1203 => (ErrorClass::Transient, "mysql.transient", None),
        1146 => (ErrorClass::Definite, "mysql.no_table", Some("the table was dropped or renamed on the server")),
        1062 | 1264 | 1292 | 1366 | 1406 | 1048 | 1265 | 1452 | 3140 | 4025 => (ErrorClass::Definite, "target.rejected_value", Some("the target cannot store a value as the source has it; see the type mapping in docs/mysql.md")),
        _ => (ErrorClass::Definite, "mysql.error", None),
    }
}
