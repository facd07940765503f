//! Classified errors. Every error says what kind of response it needs (retry, stop the table,
//! or ask a human), carries a stable code that documentation and scripts can rely on, and, where
//! we know it, a hint saying how to fix it. Drivers' errors are classified once, at the
//! connector boundary; nothing above it inspects driver error types.

use std::fmt;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Likely to go away by itself (connection reset, server restarting, serialization failure):
    /// retry with backoff.
    Transient,
    /// This table, event or value is wrong and retrying will not help: stop what it affects and
    /// report it.
    Definite,
    /// Needs a human: a setting, a privilege, a missing object. The hint says what to do.
    Operator,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Definite => "definite",
            ErrorClass::Operator => "operator",
        })
    }
}

/// A ferry error: class, stable code (e.g. `source.connect`), message and optional hint.
///
/// Messages never contain passwords: connectors describe servers as `user@host:port/database`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    class: ErrorClass,
    code: &'static str,
    message: String,
    hint: Option<String>,
    /// The table the error concerns, when it concerns one table only.
    table: Option<Box<crate::schema::TableName>>,
    /// The target cannot take writes until the operator acts (a full disk, a read-only server):
    /// wait and try again, however long it takes, rather than give up after some retries.
    waits_for_operator: bool,
    /// Not a failure: the run ended so that it starts again at once (new tables joined).
    starts_over: bool,
    /// The tables whose arrival made the run start over.
    joined_tables: Vec<crate::schema::TableName>,
}

impl Error {
    /// An error of the given class with a stable code.
    pub fn new(class: ErrorClass, code: &'static str, message: impl Into<String>) -> Self {
        Error {
            class,
            code,
            message: message.into(),
            hint: None,
            table: None,
            waits_for_operator: false,
            starts_over: false,
            joined_tables: Vec::new(),
        }
    }

    /// A transient error (retry).
    pub fn transient(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, code, message)
    }

    /// A definite error (stop what it affects).
    pub fn definite(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Definite, code, message)
    }

    /// An error that needs the operator.
    pub fn operator(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Operator, code, message)
    }

    /// Adds how to fix it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prefixes the message with where it happened (`copying public.orders: ...`).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    pub fn class(&self) -> ErrorClass {
        self.class
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Says that the error concerns this table only (so only the table need stop).
    pub fn with_table(mut self, table: crate::schema::TableName) -> Self {
        self.table = Some(Box::new(table));
        self
    }

    pub fn table(&self) -> Option<&crate::schema::TableName> {
        self.table.as_deref()
    }

    /// Says that the target cannot take writes until the operator acts (see the field).
    pub fn until_fixed(mut self) -> Self {
        self.waits_for_operator = true;
        self
    }

    /// Says that the run ended on purpose, to start again at once, because these tables joined
    /// the selection.
    pub fn starting_over_for(mut self, tables: Vec<crate::schema::TableName>) -> Self {
        self.starts_over = true;
        self.joined_tables = tables;
        self
    }

    /// The tables whose arrival made the run start over.
    pub fn joined_tables(&self) -> &[crate::schema::TableName] {
        &self.joined_tables
    }

    /// Whether the run should start again at once, as no failure.
    pub fn starts_over(&self) -> bool {
        self.starts_over
    }

    /// Whether the work should pause and try again until the operator fixes the cause.
    pub fn waits_for_operator(&self) -> bool {
        self.waits_for_operator
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_message_and_keeps_code() {
        let error = Error::operator("source.privilege", "permission denied")
            .with_hint("grant it")
            .context("reading public.t");
        assert_eq!(error.to_string(), "reading public.t: permission denied");
        assert_eq!(error.code(), "source.privilege");
        assert_eq!(error.hint(), Some("grant it"));
        assert_eq!(error.class(), ErrorClass::Operator);
    }
}
