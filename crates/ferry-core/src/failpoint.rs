//! Named crash points for tests that prove nothing is lost when ferry dies at a bad moment.
//!
//! Set `FERRY_FAILPOINT=name` (or `name:N` to fire on the N-th hit) and the process aborts at
//! once when it reaches that point, without unwinding, flushing or closing connections: the
//! same as `kill -9` at that instant. Unset, a failpoint costs one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn armed() -> &'static Option<(String, u64)> {
    ARMED.get_or_init(|| {
        let spec = std::env::var("FERRY_FAILPOINT").ok()?;
        let (name, nth) = match spec.split_once(':') {
            Some((name, nth)) => (name.to_string(), nth.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Some((name, nth.max(1)))
    })
}

/// Aborts the process if the failpoint `name` is armed and this is its N-th hit.
pub fn hit(name: &str) {
    if let Some((armed_name, nth)) = armed() {
        if armed_name == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth {
            eprintln!("failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
}
