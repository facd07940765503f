//! How errors and logs reach the operator, and the exit codes.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success (for `check`: no errors found) |
//! | 1 | `check` found problems |
//! | 2 | bad usage or settings (unknown flag, malformed URL or config file) |
//! | 3 | the operator must act (missing privilege, wrong setting, lost slot, target not empty) |
//! | 4 | a transient failure outlasted the retries (server unreachable, connection lost) |
//! | 5 | a definite failure (a value or change the target rejected, an internal error) |
//! | 130 | interrupted twice (exited at once; the next run resumes from the last checkpoint) |

use ferry_core::{Error, ErrorClass};
use tracing_subscriber::EnvFilter;

pub(crate) const EXIT_PROBLEMS: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_OPERATOR: u8 = 3;
pub(crate) const EXIT_TRANSIENT: u8 = 4;
pub(crate) const EXIT_DEFINITE: u8 = 5;

/// Logs go to stderr; `FERRY_LOG` (an env-filter directive) overrides `--log-level`.
pub(crate) fn init_logging(level: &str) {
    let filter = std::env::var("FERRY_LOG").ok().and_then(|directive| EnvFilter::try_new(directive).ok()).unwrap_or_else(|| {
        EnvFilter::try_new(format!("warn,ferry={level},ferry_engine={level},ferry_connectors={level},ferry_core={level}")).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Prints a report as indented JSON on standard output (the `--json` of every command).
pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Prints `error[code]: message` and the hint.
pub(crate) fn print_error(error: &Error) {
    eprintln!("error[{}]: {}", error.code(), error.message());
    if let Some(hint) = error.hint() {
        eprintln!("  hint: {hint}");
    }
}

pub(crate) fn exit_code(error: &Error) -> u8 {
    if error.code().starts_with("config.") {
        return EXIT_USAGE;
    }
    match error.class() {
        ErrorClass::Operator => EXIT_OPERATOR,
        ErrorClass::Transient => EXIT_TRANSIENT,
        ErrorClass::Definite => EXIT_DEFINITE,
    }
}
