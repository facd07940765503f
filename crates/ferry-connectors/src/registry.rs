//! The one place that turns a connection URL into a connector.

use ferry_core::{Error, Result};

/// The kind of system a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
}

/// Which engine a URL is for, from its scheme.
pub fn engine_of(url: &str) -> Result<Engine> {
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres") | Some("postgresql") => Ok(Engine::Postgres),
        Some("mysql") | Some("mariadb") => Ok(Engine::Mysql),
        Some(other) => Err(Error::operator(
            "config.unsupported_engine",
            format!("unknown database kind '{other}'"),
        )
        .with_hint(
            "use a URL like postgres://user@host:5432/database or mysql://user@host:3306/database",
        )),
        None => Err(
            Error::operator("config.url", "the connection string is not a URL")
                .with_hint("use a URL like postgres://user@host:5432/database"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_engines() {
        assert_eq!(engine_of("postgres://a@b/c").unwrap(), Engine::Postgres);
        assert_eq!(engine_of("PostgreSQL://a@b/c").unwrap(), Engine::Postgres);
        assert_eq!(engine_of("mariadb://a@b/c").unwrap(), Engine::Mysql);
        assert_eq!(
            engine_of("oracle://a@b/c").unwrap_err().code(),
            "config.unsupported_engine"
        );
        assert_eq!(engine_of("host=x").unwrap_err().code(), "config.url");
    }
}
