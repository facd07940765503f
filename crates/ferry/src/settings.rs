//! Settings from a TOML file and command-line flags (flags win), validated all at once.

use std::path::{Path, PathBuf};

use ferry_core::select::Selection;
use ferry_core::{Error, Result};
use serde::Deserialize;

/// The TOML configuration file (`ferry run -c ferry.toml`).
///
/// ```toml
/// name = "shop"                    # names the slot, publication and state; [a-z0-9_], default "main"
/// tables = ["public.*"]            # glob patterns over schema.table; default: every table
/// exclude = ["public.scratch_*"]   # tables left out, whatever `tables` selects
/// parallel = 4                     # parallel copy workers
/// chunk_rows = 100000              # rows per copy chunk
/// network_timeout_seconds = 90     # silence on the change stream that counts as a lost connection
/// zero_dates = "refuse"            # MySQL zero dates a target cannot hold: "refuse" or "null"
///
/// [source]
/// url = "postgres://app@old-db:5432/shop"   # a password here works, but prefer password_env
/// password_env = "SHOP_SOURCE_PASSWORD"     # read the password from this environment variable
///
/// [target]
/// url = "postgres://app@new-db:5432/shop"
///
/// [[transform]]                    # optional, repeatable: renames, dropped columns, row filters
/// table = "shop.customers"         # the source table (glob patterns allowed)
/// rename = "public.clients"        # its target name (`table` alone keeps the schema)
/// columns = { cust_name = "name" } # column renames
/// drop = ["password_hash"]         # columns not moved (never a key column)
/// filter = "region = 'EU' AND deleted_at IS NULL"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSettings {
    /// The migration's name.
    pub name: Option<String>,
    /// Which tables to move.
    pub tables: Option<Vec<String>>,
    /// Tables left out, whatever `tables` selects.
    pub exclude: Option<Vec<String>>,
    /// Parallel copy workers.
    pub parallel: Option<usize>,
    /// Rows per copy chunk.
    pub chunk_rows: Option<u64>,
    /// Seconds of silence on the change stream that count as a lost connection; a chunk copy or a
    /// batch apply may take four times as long before it is abandoned and retried.
    pub network_timeout_seconds: Option<u64>,
    /// The database to move from.
    pub source: Option<Endpoint>,
    /// The database to move to.
    pub target: Option<Endpoint>,
    /// Transforms on the way.
    pub transform: Option<Vec<ferry_core::transform::TableTransform>>,
    /// What to do with MySQL zero dates a target cannot hold: "refuse" (default) or "null".
    pub zero_dates: Option<String>,
}

/// One database.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Endpoint {
    /// A connection URL such as `postgres://user@host:5432/database`.
    pub url: Option<String>,
    /// The name of an environment variable holding the password.
    pub password_env: Option<String>,
}

/// What the flags said (each overrides the file).
#[derive(Debug, Default, Clone)]
pub(crate) struct FlagSettings {
    pub config: Option<PathBuf>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub tables: Option<String>,
    pub exclude: Option<String>,
    pub name: Option<String>,
    pub parallel: Option<usize>,
    pub chunk_rows: Option<u64>,
    pub network_timeout_seconds: Option<u64>,
}

/// The settings a command runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub name: String,
    pub source_url: String,
    pub source_password: Option<String>,
    pub target_url: String,
    pub target_password: Option<String>,
    pub selection: Selection,
    pub parallel: usize,
    pub chunk_rows: u64,
    pub network_timeout: std::time::Duration,
    /// Renames, dropped columns and row filters (empty: none).
    pub transforms: ferry_core::transform::Transforms,
}

pub(crate) const DEFAULT_NAME: &str = "main";
pub(crate) const DEFAULT_PARALLEL: usize = 4;
pub(crate) const DEFAULT_CHUNK_ROWS: u64 = 100_000;
pub(crate) const DEFAULT_NETWORK_TIMEOUT_SECONDS: u64 = 90;

fn read_file(path: &Path) -> Result<FileSettings> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Error::operator(
            "config.file",
            format!("cannot read the config file {}: {error}", path.display()),
        )
        .with_hint("check the path given with -c/--config")
    })?;
    toml::from_str(&text).map_err(|error| {
        Error::operator(
            "config.file",
            format!(
                "the config file {} is malformed: {}",
                path.display(),
                error.to_string().trim()
            ),
        )
        .with_hint("see the example in the README (section Configuration)")
    })
}

/// Merges file and flags and validates the result, reporting every problem at once.
pub(crate) fn resolve(flags: &FlagSettings) -> Result<Settings> {
    let file = match &flags.config {
        Some(path) => read_file(path)?,
        None => FileSettings::default(),
    };
    let mut problems = Vec::new();
    let source = file.source.unwrap_or_default();
    let target = file.target.unwrap_or_default();
    let source_url = flags.source.clone().or(source.url);
    let target_url = flags.target.clone().or(target.url);
    if source_url.is_none() {
        problems.push("source: no source database given (--source URL, FERRY_SOURCE, or [source] url in the config file)".to_string());
    }
    if target_url.is_none() {
        problems.push("target: no target database given (--target URL, FERRY_TARGET, or [target] url in the config file)".to_string());
    }
    let password = |variable: Option<String>,
                    fallback: &str,
                    path: &str,
                    problems: &mut Vec<String>|
     -> Option<String> {
        match variable {
            Some(name) => match std::env::var(&name) {
                Ok(value) => Some(value),
                Err(_) => {
                    problems.push(format!(
                        "{path}.password_env: the environment variable {name} is not set"
                    ));
                    None
                }
            },
            None => std::env::var(fallback).ok(),
        }
    };
    let source_password = password(
        source.password_env,
        "FERRY_SOURCE_PASSWORD",
        "source",
        &mut problems,
    );
    let target_password = password(
        target.password_env,
        "FERRY_TARGET_PASSWORD",
        "target",
        &mut problems,
    );
    let name = flags
        .name
        .clone()
        .or(file.name)
        .unwrap_or_else(|| DEFAULT_NAME.to_string());
    if name.is_empty()
        || name.len() > 40
        || !name.chars().all(|character| {
            character.is_ascii_lowercase() || character.is_ascii_digit() || character == '_'
        })
    {
        problems.push(format!("name: '{name}' must be 1 to 40 characters of a-z, 0-9 and _ (it names a replication slot)"));
    }
    let parallel = flags.parallel.or(file.parallel).unwrap_or(DEFAULT_PARALLEL);
    if parallel == 0 || parallel > 64 {
        problems.push(format!("parallel: {parallel} is out of range (1 to 64)"));
    }
    let chunk_rows = flags
        .chunk_rows
        .or(file.chunk_rows)
        .unwrap_or(DEFAULT_CHUNK_ROWS);
    if chunk_rows == 0 {
        problems.push("chunk_rows: must be at least 1".to_string());
    }
    let network_timeout_seconds = flags
        .network_timeout_seconds
        .or(file.network_timeout_seconds)
        .unwrap_or(DEFAULT_NETWORK_TIMEOUT_SECONDS);
    if network_timeout_seconds == 0 {
        problems.push("network_timeout_seconds: must be at least 1".to_string());
    }
    // A flag (one comma-separated list) wins over the file's list.
    let patterns_of = |flag: &Option<String>, listed: Option<Vec<String>>| match (flag, listed) {
        (Some(flag), _) => vec![flag.clone()],
        (None, Some(list)) => list,
        (None, None) => Vec::new(),
    };
    let patterns = patterns_of(&flags.tables, file.tables);
    let excluded = patterns_of(&flags.exclude, file.exclude);
    let selection = match Selection::parse(&patterns) {
        Ok(selection) => match selection.excluding(&excluded) {
            Ok(selection) => Some(selection),
            Err(error) => {
                problems.push(format!("exclude: {error}"));
                None
            }
        },
        Err(error) => {
            problems.push(format!("tables: {error}"));
            None
        }
    };
    let zero_dates_to_null = match file.zero_dates.as_deref() {
        None | Some("refuse") => false,
        Some("null") => true,
        Some(other) => {
            problems.push(format!(
                "zero_dates: '{other}' is neither \"refuse\" nor \"null\""
            ));
            false
        }
    };
    let transforms =
        match ferry_core::transform::Transforms::new(file.transform.unwrap_or_default()) {
            Ok(transforms) => Some(transforms.with_zero_dates_to_null(zero_dates_to_null)),
            Err(error) => {
                problems.push(format!("transform: {error}"));
                None
            }
        };
    if !problems.is_empty() {
        return Err(Error::operator(
            "config.invalid",
            format!(
                "the settings have {} problem(s):\n  - {}",
                problems.len(),
                problems.join("\n  - ")
            ),
        )
        .with_hint("fix the settings named above; `ferry help` lists the flags"));
    }
    Ok(Settings {
        name,
        source_url: source_url.expect("checked"),
        source_password,
        target_url: target_url.expect("checked"),
        target_password,
        selection: selection.expect("checked"),
        parallel,
        chunk_rows,
        network_timeout: std::time::Duration::from_secs(network_timeout_seconds),
        transforms: transforms.expect("checked"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let source = include_str!("settings.rs");
        let start = source.find("/// ```toml").expect("example present") + "/// ```toml".len();
        let end = start + source[start..].find("/// ```").expect("example closed");
        let example: String = source[start..end]
            .lines()
            .map(|line| {
                line.trim_start()
                    .trim_start_matches("///")
                    .strip_prefix(' ')
                    .unwrap_or("")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: FileSettings = toml::from_str(&example).expect("the example parses");
        assert_eq!(parsed.name.as_deref(), Some("shop"));
        assert_eq!(parsed.parallel, Some(4));
        assert_eq!(
            parsed.source.unwrap().password_env.as_deref(),
            Some("SHOP_SOURCE_PASSWORD")
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<FileSettings>("paralel = 3").is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let flags = FlagSettings {
            name: Some("Bad-Name".into()),
            parallel: Some(0),
            tables: Some("a.b.c".into()),
            ..FlagSettings::default()
        };
        let error = resolve(&flags).unwrap_err();
        let message = error.to_string();
        for expected in ["source:", "target:", "name:", "parallel:", "tables:"] {
            assert!(
                message.contains(expected),
                "{expected} missing from {message}"
            );
        }
        assert_eq!(error.code(), "config.invalid");
    }

    #[test]
    fn flags_override_the_file() {
        let directory = std::env::temp_dir().join(format!("ferry-settings-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("ferry.toml");
        std::fs::write(&path, "name = \"shop\"\nparallel = 2\n[source]\nurl = \"postgres://a@b/c\"\n[target]\nurl = \"postgres://a@d/c\"\n").unwrap();
        let settings = resolve(&FlagSettings {
            config: Some(path),
            parallel: Some(8),
            ..FlagSettings::default()
        })
        .unwrap();
        assert_eq!(settings.name, "shop");
        assert_eq!(settings.parallel, 8);
        assert_eq!(settings.target_url, "postgres://a@d/c");
        std::fs::remove_dir_all(directory).unwrap();
    }
}
