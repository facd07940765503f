//! Removing servers that earlier runs left behind. The watchdog of [`crate::PostgresServer`] and
//! [`crate::MariaDbServer`] cleans up after its own process, but not after a machine restart or a
//! `kill -9` of the watchdog itself; the first server a process starts sweeps those remains.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Once;

/// Directory name prefixes of the test kit's servers: `<prefix><owner pid>-<port>`.
const PREFIXES: &[&str] = &["ferry-pg-", "ferry-mariadb-", "ferry-kafka-"];

/// Once per process: stops and removes every test-kit server directory in the temporary
/// directory whose owning process is gone.
pub(crate) fn sweep_stale_servers() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(owner) = owner_of(&name) else {
                continue;
            };
            if Path::new(&format!("/proc/{owner}")).exists() {
                continue;
            }
            let directory = entry.path();
            for pid_file in ["data/postmaster.pid", "mysqld.pid"] {
                stop_server(&directory, &directory.join(pid_file));
            }
            let _ = std::fs::remove_dir_all(&directory);
        }
    });
}

/// The owning process of a test-kit server directory, from its name.
fn owner_of(name: &str) -> Option<u32> {
    let rest = PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))?;
    let (owner, port) = rest.split_once('-')?;
    port.parse::<u16>().ok()?;
    owner.parse().ok()
}

/// Kills the server whose pid file this is, if that process still runs from `directory`.
fn stop_server(directory: &Path, pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
    else {
        return;
    };
    let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let directory = format!("{}/", directory.to_string_lossy());
    if String::from_utf8_lossy(&command_line).contains(&directory) {
        let _ = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_test_kit_directories_have_an_owner() {
        assert_eq!(owner_of("ferry-pg-1234-5432"), Some(1234));
        assert_eq!(owner_of("ferry-mariadb-77-3306"), Some(77));
        assert_eq!(owner_of("ferry-pg-1234"), None);
        assert_eq!(owner_of("ferry-bench.abc"), None);
        assert_eq!(owner_of("ferry-test-x-1.log"), None);
    }
}
