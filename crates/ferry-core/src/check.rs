//! Findings of a preflight check: every problem at once, each with a stable code and a fix.

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The migration cannot run until this is fixed.
    Error,
    /// The migration can run, but something will not be as the user may expect.
    Warning,
}

/// One problem found by a preflight check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub hint: String,
}

impl Finding {
    pub fn error(code: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Error,
            code,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// A check that could not run to its end: the error, with its hint as the fix.
    pub fn failed(code: &'static str, error: &crate::error::Error) -> Self {
        Finding::error(
            code,
            error.to_string(),
            error.hint().unwrap_or("see the message"),
        )
    }

    /// The `side` ("source" or "target") could not be reached.
    pub fn unreachable(side: &str, error: &crate::error::Error) -> Self {
        Finding::error(
            if side == "source" {
                "source.connect"
            } else {
                "target.connect"
            },
            format!("cannot connect to the {side}: {error}"),
            error
                .hint()
                .unwrap_or("check the URL, that the server runs and accepts connections from here"),
        )
    }

    pub fn warning(
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Finding {
            severity: Severity::Warning,
            code,
            message: message.into(),
            hint: hint.into(),
        }
    }
}
