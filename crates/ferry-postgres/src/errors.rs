//! Classifies driver errors once, at the connector boundary.

use ferry_core::{Error, ErrorClass};

/// Turns a `tokio_postgres` error into a ferry error. `what` says what was being done and where
/// (`connecting to app@db:5432/shop`); it must not contain a password.
pub(crate) fn classify(error: tokio_postgres::Error, what: &str) -> Error {
    if let Some(database_error) = error.as_db_error() {
        let code = database_error.code().code();
        let message = format!("{what}: {}", database_error.message());
        let detail = database_error
            .detail()
            .map(|detail| format!(" ({detail})"))
            .unwrap_or_default();
        let hint = database_error.hint().map(str::to_string);
        let (class, stable) = class_of(code);
        let mut result = Error::new(
            class,
            stable,
            format!("{message}{detail} [SQLSTATE {code}]"),
        );
        result = match (hint, stable) {
            (Some(hint), _) => result.with_hint(hint),
            (None, "postgres.privilege") => result.with_hint("grant the privilege named above to the user ferry connects as"),
            (None, "postgres.authentication") => result.with_hint("check the user and password (FERRY_SOURCE_PASSWORD / FERRY_TARGET_PASSWORD) and pg_hba.conf"),
            (None, "postgres.no_database") => result.with_hint("create the database first, or fix the database name in the URL"),
            (None, _) => result,
        };
        // A full disk or a read-only server: nothing to do but wait for the operator.
        if matches!(stable, "postgres.disk_full" | "postgres.read_only") {
            result = result.until_fixed();
        }
        return result;
    }
    let text = error.to_string();
    if error.is_closed()
        || text.contains("error connecting")
        || text.contains("timed out")
        || text.contains("connection")
        || text.contains("I/O")
    {
        return Error::transient(
            "postgres.connection",
            format!("{what}: {}", source_chain(&error)),
        )
        .with_hint("check that the server is running and reachable at that host and port");
    }
    Error::definite(
        "postgres.error",
        format!("{what}: {}", source_chain(&error)),
    )
}

/// The error and its causes on one line.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        current = cause.source();
    }
    text
}

/// The class and stable code of a SQLSTATE.
fn class_of(code: &str) -> (ErrorClass, &'static str) {
    match code {
        // connection exceptions, shutting down, cannot connect now, too many connections
        _ if code.starts_with("08") => (ErrorClass::Transient, "postgres.connection"),
        "57P01" | "57P02" | "57P03" | "53300" => (ErrorClass::Transient, "postgres.unavailable"),
        "40001" | "40P01" | "55P03" => (ErrorClass::Transient, "postgres.conflict"),
        "57014" => (ErrorClass::Transient, "postgres.canceled"),
        _ if code.starts_with("53") && code != "53100" => {
            (ErrorClass::Transient, "postgres.resources")
        }
        "57P04" | "57P05" | "25P03" => (ErrorClass::Transient, "postgres.session_ended"),
        _ if code.starts_with("58") || code.starts_with("XX") => {
            (ErrorClass::Operator, "postgres.server")
        }
        "23503" => (ErrorClass::Definite, "postgres.foreign_key"),
        "42703" | "42804" => (ErrorClass::Definite, "postgres.schema_mismatch"),
        "53100" => (ErrorClass::Operator, "postgres.disk_full"),
        "25006" => (ErrorClass::Operator, "postgres.read_only"),
        "42501" => (ErrorClass::Operator, "postgres.privilege"),
        "28000" | "28P01" => (ErrorClass::Operator, "postgres.authentication"),
        "3D000" => (ErrorClass::Operator, "postgres.no_database"),
        "42704" | "42P01" | "42883" => (ErrorClass::Operator, "postgres.missing_object"),
        "55000" | "55006" => (ErrorClass::Operator, "postgres.prerequisite"),
        _ if code.starts_with("22") || code.starts_with("23") => {
            (ErrorClass::Definite, "postgres.data")
        }
        _ => (ErrorClass::Definite, "postgres.error"),
    }
}

/// Classifies a replication-protocol client error.
pub(crate) fn classify_replication(error: pgwire_replication::PgWireError, what: &str) -> Error {
    let text = error.to_string();
    if text.contains("does not exist") && text.contains("slot") {
        return Error::operator("source.slot_missing", format!("{what}: {text}"))
            .with_hint("the replication slot was dropped, so changes since the last checkpoint are gone: start over with `ferry run --restart`");
    }
    if text.contains("is active for PID") {
        return Error::transient("source.slot_busy", format!("{what}: {text}")).with_hint(
            "another ferry (or another client) is streaming this migration, or the server has not yet noticed that the previous session ended; stop the other one if it exists",
        );
    }
    // A server error carries its SQLSTATE in the text: classify it like any other.
    if let Some(code) = text
        .split("SQLSTATE ")
        .nth(1)
        .map(|rest| rest.chars().take(5).collect::<String>())
    {
        let (class, stable) = class_of(&code);
        if class == ErrorClass::Transient {
            return Error::new(class, stable, format!("{what}: {text}"));
        }
    }
    if error.is_auth() {
        return Error::operator("postgres.authentication", format!("{what}: {text}")).with_hint("check the user, password and pg_hba.conf (a replication connection needs a 'replication' line or the database name)");
    }
    if error.is_transient() || error.is_io() {
        return Error::transient("postgres.connection", format!("{what}: {text}"));
    }
    if text.contains("permission denied")
        || text.contains("must be superuser or replication role")
        || text.contains("42501")
    {
        return Error::operator("source.privilege", format!("{what}: {text}"))
            .with_hint("ALTER ROLE <user> REPLICATION on the source");
    }
    Error::definite("postgres.replication", format!("{what}: {text}"))
}

/// True when an error during apply is about one table's data or definition (a value the target
/// rejects, a column it lacks), so that stopping that table alone is right. Connection, resource,
/// cancellation, server and ordering (foreign key) errors are not.
pub(crate) fn is_table_specific(error: &Error) -> bool {
    error.class() == ErrorClass::Definite
        && (matches!(error.code(), "postgres.data" | "postgres.schema_mismatch")
            || error.code().starts_with("apply."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_states_map_to_classes() {
        assert_eq!(
            class_of("57P03"),
            (ErrorClass::Transient, "postgres.unavailable")
        );
        assert_eq!(
            class_of("08006"),
            (ErrorClass::Transient, "postgres.connection")
        );
        assert_eq!(
            class_of("25006"),
            (ErrorClass::Operator, "postgres.read_only")
        );
        assert_eq!(class_of("23514"), (ErrorClass::Definite, "postgres.data"));
        assert_eq!(class_of("XX000"), (ErrorClass::Operator, "postgres.server"));
        assert_eq!(
            class_of("57014"),
            (ErrorClass::Transient, "postgres.canceled")
        );
        assert_eq!(
            class_of("53200"),
            (ErrorClass::Transient, "postgres.resources")
        );
        assert_eq!(
            class_of("53100"),
            (ErrorClass::Operator, "postgres.disk_full")
        );
        assert_eq!(
            class_of("23503"),
            (ErrorClass::Definite, "postgres.foreign_key")
        );
        assert_eq!(class_of("42P99"), (ErrorClass::Definite, "postgres.error"));
        let data = Error::definite("postgres.data", "new row violates check constraint");
        assert!(is_table_specific(&data));
        assert!(!is_table_specific(&Error::definite(
            "postgres.foreign_key",
            "violates foreign key"
        )));
        assert!(!is_table_specific(&Error::transient(
            "postgres.canceled",
            "canceling statement"
        )));
    }
}
