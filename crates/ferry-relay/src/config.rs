//! `relay.toml`: what to read, where the delivery log lives, and one `[[route]]` per use case.
//!
//! Every problem of a file is reported at once, each with where it is and how to fix it.
//! Header values may name environment variables as `${NAME}`; secrets are read from the
//! environment (`secret_env`, `password_env`) and never printed: [`Route`]'s `Debug` leaves
//! header values and the key out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_core::{Error, Result};
use serde::Deserialize;

use crate::http::client::Target;
use crate::signature::secret_key;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    source: Option<SourceFile>,
    log: Option<LogFile>,
    #[serde(default)]
    route: Vec<RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    url: Option<String>,
    password_env: Option<String>,
    /// Kafka: where a partition the log has never seen starts (earliest, latest).
    start: Option<String>,
    /// Kafka: librdkafka properties (`security.protocol`, `sasl.username`, ...).
    options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    url: Option<String>,
    /// For a PostgreSQL log: the environment variable holding its password.
    password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    name: Option<String>,
    topics: Option<Vec<String>>,
    tables: Option<Vec<String>>,
    url: Option<String>,
    max_retries: Option<u32>,
    backoff: Option<String>,
    max_backoff: Option<String>,
    timeout: Option<String>,
    format: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    secret_env: Option<String>,
    success_retention: Option<String>,
    failure_retention: Option<String>,
    ordering: Option<String>,
    concurrency: Option<usize>,
    ca_file: Option<PathBuf>,
    /// `format = "protobuf"`: a FileDescriptorSet (`protoc --descriptor_set_out`) and the
    /// fully qualified message name.
    descriptor_set: Option<PathBuf>,
    message: Option<String>,
}

/// A validated relay configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub name: String,
    pub source_url: String,
    pub source_password: Option<String>,
    /// Kafka: start new partitions at the latest offset instead of the earliest.
    pub source_start_latest: bool,
    /// Kafka: client properties, `${NAME}` expanded.
    pub source_options: Vec<(String, String)>,
    /// Where the delivery log is.
    pub log: LogLocation,
    pub routes: Vec<Route>,
}

/// Where the delivery log is kept.
#[derive(Clone)]
pub enum LogLocation {
    /// A SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database (a schema `ferry_relay_NAME` in it).
    Postgres {
        url: String,
        password: Option<String>,
    },
}

impl LogLocation {
    /// For messages: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            LogLocation::Sqlite(path) => path.display().to_string(),
            LogLocation::Postgres { url, .. } => redact_url(url),
        }
    }
}

impl std::fmt::Debug for LogLocation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.describe())
    }
}

/// A URL with any `user:password@` reduced to `user@`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{}", &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// How the messages of one route may overtake each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// A message waits while an earlier one with the same key is not delivered (retrying or
    /// parked as failed); other keys go on.
    Key,
    /// Messages go as they can.
    None,
}

impl Ordering {
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::Key => "key",
            Ordering::None => "none",
        }
    }
}

/// How a message becomes a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON, sent as is (a database change is one JSON document).
    Json,
    /// Any bytes, sent as a JSON string of their base64.
    Raw,
    /// Protobuf, sent as its canonical JSON mapping (see [`Route::protobuf`]).
    Protobuf,
}

/// One use case: which messages, where to, and how hard to try.
#[derive(Clone)]
pub struct Route {
    pub name: String,
    /// Topic names, or table patterns (`schema.table`, `*` wildcards) for a database source.
    pub patterns: Vec<String>,
    pub target: Target,
    /// Retries after the first attempt; a message gets at most `1 + max_retries` attempts.
    pub max_retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
    pub format: Format,
    /// For [`Format::Protobuf`]: the descriptor set file and the message's full name.
    pub protobuf: Option<(PathBuf, String)>,
    pub headers: Vec<(String, String)>,
    /// The Standard Webhooks signing key.
    pub signing_key: Option<Vec<u8>>,
    pub success_retention: Duration,
    pub failure_retention: Duration,
    pub ordering: Ordering,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Route")
            .field("name", &self.name)
            .field("patterns", &self.patterns)
            .field("url", &self.target.origin())
            .field("max_retries", &self.max_retries)
            .field("ordering", &self.ordering)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("signed", &self.signing_key.is_some())
            .finish()
    }
}

/// Reads and checks `path`; `environment` looks variables up (the process environment in
/// production).
pub fn load(path: &Path, environment: &dyn Fn(&str) -> Option<String>) -> Result<RelayConfig> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        Error::operator(
            "config.file",
            format!("cannot read {}: {error}", path.display()),
        )
        .with_hint("pass the relay's settings file with -c relay.toml")
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base, environment).map_err(|error| error.context(path.display()))
}

/// Checks a configuration's text; relative paths are taken from `base`.
pub fn parse(
    text: &str,
    base: &Path,
    environment: &dyn Fn(&str) -> Option<String>,
) -> Result<RelayConfig> {
    let file: FileConfig = toml::from_str(text).map_err(|error| {
        Error::operator("config.malformed", error.to_string())
            .with_hint("fix the TOML; see README.md, `ferry relay`, for every setting")
    })?;
    let mut problems = Vec::new();
    let name = file.name.unwrap_or_default();
    if name.is_empty()
        || name.len() > 40
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.push(format!(
            "name: '{name}' must be 1 to 40 characters of letters, digits, _ and - (it names the consumer and the change stream)"
        ));
    }
    let mut source_start_latest = false;
    let mut source_options = Vec::new();
    let (source_url, source_password) = match file.source {
        Some(SourceFile {
            url: Some(url),
            password_env,
            start,
            options,
        }) => {
            match start.as_deref() {
                None | Some("earliest") => {}
                Some("latest") => source_start_latest = true,
                Some(other) => {
                    problems.push(format!("source.start: '{other}' is not earliest or latest"))
                }
            }
            for (name, value) in options.unwrap_or_default() {
                match expand(&value, environment) {
                    Ok(value) => source_options.push((name, value)),
                    Err(variable) => problems.push(format!(
                        "source.options.{name}: the environment variable {variable} is not set"
                    )),
                }
            }
            let password = match password_env {
                Some(variable) => {
                    let value = environment(&variable);
                    if value.is_none() {
                        problems.push(format!(
                            "source.password_env: the environment variable {variable} is not set"
                        ));
                    }
                    value
                }
                None => environment("FERRY_SOURCE_PASSWORD"),
            };
            (url, password)
        }
        _ => {
            problems.push(
                "source.url: missing (kafka://broker:9092, postgres://user@host/db or mysql://user@host/db)".into(),
            );
            (String::new(), None)
        }
    };
    let (log_url, log_password_env) = match file.log {
        Some(log) => (log.url, log.password_env),
        None => (None, None),
    };
    let log_url = log_url.unwrap_or_else(|| format!("sqlite:{name}.relay.db"));
    let log = if log_url.starts_with("postgres://") || log_url.starts_with("postgresql://") {
        let password = match log_password_env {
            Some(variable) => {
                let value = environment(&variable);
                if value.is_none() {
                    problems.push(format!(
                        "log.password_env: the environment variable {variable} is not set"
                    ));
                }
                value
            }
            None => environment("FERRY_LOG_PASSWORD"),
        };
        LogLocation::Postgres {
            url: log_url,
            password,
        }
    } else {
        if log_password_env.is_some() {
            problems.push("log.password_env: only a PostgreSQL log takes a password".into());
        }
        match log_url.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => {
                // (Joining an absolute path gives that path.)
                LogLocation::Sqlite(base.join(path.trim_start_matches("//")))
            }
            _ => {
                problems.push(format!(
                    "log.url: '{}' is not supported; use sqlite:PATH (a file, created if missing) or postgres://user@host/database",
                    redact_url(&log_url)
                ));
                LogLocation::Sqlite(PathBuf::new())
            }
        }
    };
    if file.route.is_empty() {
        problems.push("route: none; add at least one [[route]] with a name, tables and url".into());
    }
    let mut routes = Vec::new();
    for (index, route) in file.route.into_iter().enumerate() {
        let at = match &route.name {
            Some(name) => format!("route '{name}'"),
            None => format!("route #{}", index + 1),
        };
        if let Some(route) = parse_route(route, &at, base, environment, &mut problems) {
            if routes.iter().any(|other: &Route| other.name == route.name) {
                problems.push(format!("{at}: the name is used by another route"));
            }
            routes.push(route);
        }
    }
    if !problems.is_empty() {
        return Err(Error::operator(
            "config.invalid",
            format!(
                "the relay settings have problems:\n  - {}",
                problems.join("\n  - ")
            ),
        )
        .with_hint("fix the settings named above"));
    }
    Ok(RelayConfig {
        name,
        source_url,
        source_password,
        source_start_latest,
        source_options,
        log,
        routes,
    })
}

fn parse_route(
    route: RouteFile,
    at: &str,
    base: &Path,
    environment: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<Route> {
    let before = problems.len();
    let name = route.name.unwrap_or_default();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        problems.push(format!(
            "{at}: name '{name}' must be letters, digits, _, - and ."
        ));
    }
    let patterns: Vec<String> = route
        .tables
        .into_iter()
        .flatten()
        .chain(route.topics.into_iter().flatten())
        .collect();
    if patterns.is_empty() {
        problems.push(format!(
            "{at}: tables (or topics) is missing: which changes go to this route"
        ));
    }
    let url = route.url.unwrap_or_default();
    let target = match Target::parse(&url) {
        Ok(target) => Some(target),
        Err(problem) => {
            problems.push(format!("{at}: url: {problem}"));
            None
        }
    };
    let mut duration = |field: &str, value: Option<String>, default: &str| {
        let text = value.unwrap_or_else(|| default.to_string());
        match parse_duration(&text) {
            Some(duration) => duration,
            None => {
                problems.push(format!(
                    "{at}: {field} '{text}' is not a duration like 500ms, 5s, 10m, 2h or 30d"
                ));
                Duration::ZERO
            }
        }
    };
    let backoff = duration("backoff", route.backoff, "500ms");
    let max_backoff = duration("max_backoff", route.max_backoff, "10m");
    let timeout = duration("timeout", route.timeout, "5s");
    let success_retention = duration("success_retention", route.success_retention, "1d");
    let failure_retention = duration("failure_retention", route.failure_retention, "30d");
    if timeout.is_zero() {
        problems.push(format!("{at}: timeout must be more than zero"));
    }
    let format = match route.format.as_deref().unwrap_or("json") {
        "json" => Format::Json,
        "raw" => Format::Raw,
        "protobuf" => Format::Protobuf,
        other => {
            problems.push(format!(
                "{at}: format '{other}' is not json, raw or protobuf"
            ));
            Format::Json
        }
    };
    let protobuf = match (format, route.descriptor_set, route.message) {
        (Format::Protobuf, Some(path), Some(message)) => {
            let path = base.join(path);
            if !path.is_file() {
                problems.push(format!(
                    "{at}: descriptor_set {} is not a readable file (make one with protoc --descriptor_set_out)",
                    path.display()
                ));
            }
            Some((path, message))
        }
        (Format::Protobuf, _, _) => {
            problems.push(format!(
                "{at}: format = \"protobuf\" needs descriptor_set (a file from protoc --descriptor_set_out) and message (its full name, like shop.Order)"
            ));
            None
        }
        (_, Some(_), _) | (_, _, Some(_)) => {
            problems.push(format!(
                "{at}: descriptor_set and message go with format = \"protobuf\""
            ));
            None
        }
        _ => None,
    };
    let ordering = match route.ordering.as_deref().unwrap_or("key") {
        "key" => Ordering::Key,
        "none" => Ordering::None,
        other => {
            problems.push(format!("{at}: ordering '{other}' is not key or none"));
            Ordering::Key
        }
    };
    let mut headers = Vec::new();
    for (header, value) in route.headers.unwrap_or_default() {
        if header.is_empty()
            || !header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(format!("{at}: header name '{header}' is not a header name"));
            continue;
        }
        match expand(&value, environment) {
            Ok(value) => headers.push((header, value)),
            Err(variable) => problems.push(format!(
                "{at}: header {header}: the environment variable {variable} is not set"
            )),
        }
    }
    let signing_key = match route.secret_env {
        Some(variable) => match environment(&variable).map(|secret| secret_key(&secret)) {
            Some(Ok(key)) => Some(key),
            Some(Err(problem)) => {
                problems.push(format!("{at}: secret_env {variable}: {problem}"));
                None
            }
            None => {
                problems.push(format!(
                    "{at}: secret_env: the environment variable {variable} is not set"
                ));
                None
            }
        },
        None => None,
    };
    let concurrency = route.concurrency.unwrap_or(16);
    if concurrency == 0 || concurrency > 1024 {
        problems.push(format!("{at}: concurrency must be 1 to 1024"));
    }
    let ca_file = route.ca_file.map(|path| base.join(path));
    if problems.len() > before {
        return None;
    }
    Some(Route {
        name,
        patterns,
        target: target?,
        max_retries: route.max_retries.unwrap_or(8),
        backoff,
        max_backoff: max_backoff.max(backoff),
        timeout,
        format,
        protobuf,
        headers,
        signing_key,
        success_retention,
        failure_retention,
        ordering,
        concurrency,
        ca_file,
    })
}

/// `500ms`, `5s`, `10m`, `2h`, `30d` (also `1.5s`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// Replaces `${NAME}` with the variable's value; the name of a missing one is the error.
fn expand(
    value: &str,
    environment: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut expanded = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(length) = rest[start + 2..].find('}') else {
            break;
        };
        let variable = &rest[start + 2..start + 2 + length];
        expanded.push_str(&rest[..start]);
        expanded.push_str(&environment(variable).ok_or_else(|| variable.to_string())?);
        rest = &rest[start + 3 + length..];
    }
    expanded.push_str(rest);
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "SIGNING" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
            _ => None,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5 weeks"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_duration("999999999999999999999d"), None);
    }

    #[test]
    fn a_full_file_parses() {
        let config = parse(
            r#"
name = "orders-relay"
[source]
url = "postgres://app@db/shop"
[log]
url = "sqlite:relay.db"
[[route]]
name = "orders"
tables = ["public.orders"]
url = "https://billing.internal/hooks/orders"
max_retries = 3
backoff = "1s"
headers = { Authorization = "Bearer ${TOKEN}" }
secret_env = "SIGNING"
ordering = "none"
"#,
            Path::new("/etc/ferry"),
            &environment,
        )
        .unwrap();
        assert_eq!(config.name, "orders-relay");
        assert!(
            matches!(&config.log, LogLocation::Sqlite(path) if path == Path::new("/etc/ferry/relay.db"))
        );
        let route = &config.routes[0];
        assert_eq!(route.max_retries, 3);
        assert_eq!(route.backoff, Duration::from_secs(1));
        assert_eq!(route.max_backoff, Duration::from_secs(600));
        assert_eq!(
            route.headers,
            vec![("Authorization".to_string(), "Bearer s3cret".to_string())]
        );
        assert_eq!(route.ordering, Ordering::None);
        assert!(route.signing_key.is_some());
        let debug = format!("{route:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn a_postgres_log_takes_its_password_from_the_environment() {
        let text = |log: &str| {
            format!("name = \"r\"\n[source]\nurl = \"kafka://b:9092\"\n[log]\n{log}\n[[route]]\nname = \"o\"\ntopics = [\"o\"]\nurl = \"http://x/\"\n")
        };
        let config = parse(
            &text("url = \"postgres://relay@logs/ferry\"\npassword_env = \"TOKEN\""),
            Path::new("."),
            &environment,
        )
        .unwrap();
        match &config.log {
            LogLocation::Postgres { url, password } => {
                assert_eq!(url, "postgres://relay@logs/ferry");
                assert_eq!(password.as_deref(), Some("s3cret"));
            }
            LogLocation::Sqlite(_) => panic!("not a PostgreSQL log"),
        }
        assert!(!format!("{config:?}").contains("s3cret"));
        let error = parse(
            &text("url = \"mongodb://u:hunter2@x/db\""),
            Path::new("."),
            &environment,
        )
        .unwrap_err()
        .message()
        .to_string();
        assert!(
            error.contains("'mongodb://u@x/db' is not supported"),
            "{error}"
        );
        assert!(!error.contains("hunter2"));
    }

    #[test]
    fn protobuf_needs_its_descriptor_set() {
        let text = |extra: &str| {
            format!("name = \"r\"\n[source]\nurl = \"kafka://b:9092\"\n[[route]]\nname = \"o\"\ntopics = [\"o\"]\nurl = \"http://x/\"\n{extra}")
        };
        let message = |extra: &str| {
            parse(&text(extra), Path::new("/nonexistent"), &environment)
                .unwrap_err()
                .message()
                .to_string()
        };
        assert!(message("format = \"protobuf\"").contains("needs descriptor_set"));
        assert!(message(
            "format = \"protobuf\"\ndescriptor_set = \"shop.desc\"\nmessage = \"shop.Order\""
        )
        .contains("/nonexistent/shop.desc is not a readable file"));
        assert!(message("descriptor_set = \"shop.desc\"").contains("go with format"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let error = parse(
            r#"
name = "bad name!"
[[route]]
name = "a"
url = "ftp://x"
backoff = "soon"
headers = { X = "${MISSING}" }
secret_env = "NOPE"
format = "xml"
"#,
            Path::new("."),
            &environment,
        )
        .unwrap_err();
        let message = error.message().to_string();
        for expected in [
            "name: 'bad name!'",
            "source.url: missing",
            "tables (or topics) is missing",
            "url: 'ftp://' is not",
            "backoff 'soon'",
            "MISSING is not set",
            "NOPE is not set",
            "format 'xml'",
        ] {
            assert!(message.contains(expected), "{expected} not in {message}");
        }
        assert_eq!(
            parse("nonsense = 1", Path::new("."), &environment)
                .unwrap_err()
                .code(),
            "config.malformed"
        );
    }
}
