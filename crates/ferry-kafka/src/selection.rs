//! Which topics and groups a command works on: comma-separated names and `*` patterns
//! (`orders,payments.*`). `*` matches any run of characters; everything else matches itself.
//! Internal topics (`__consumer_offsets`, `__transaction_state`, ...) are never selected.

use ferry_core::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns {
    patterns: Vec<String>,
}

impl Patterns {
    /// From `orders,payments.*` (`what` names the flag in errors).
    pub fn parse(text: &str, what: &str) -> Result<Patterns> {
        let patterns: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|pattern| !pattern.is_empty())
            .map(str::to_string)
            .collect();
        if patterns.is_empty() {
            return Err(
                Error::operator("config.selection", format!("{what} selects nothing")).with_hint(
                    format!("name them, e.g. {what} 'orders,payments.*' (or '*' for all)"),
                ),
            );
        }
        Ok(Patterns { patterns })
    }

    pub fn matches(&self, name: &str) -> bool {
        !name.starts_with("__")
            && self
                .patterns
                .iter()
                .any(|pattern| glob_matches(pattern, name))
    }

    /// How many names and patterns were given.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Never true: parsing refuses an empty selection.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The names without a `*`: they must exist.
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.patterns
            .iter()
            .filter(|pattern| !pattern.contains('*'))
            .map(String::as_str)
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (index, part) in parts.iter().enumerate() {
        if index == 0 {
            let Some(after) = rest.strip_prefix(part) else {
                return false;
            };
            rest = after;
        } else if index == parts.len() - 1 {
            return rest.len() >= part.len() && rest.ends_with(part);
        } else {
            let Some(found) = rest.find(part) else {
                return false;
            };
            rest = &rest[found + part.len()..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_by_name_and_glob_but_never_internal_topics() {
        let patterns = Patterns::parse("orders, payments.*", "--topics").unwrap();
        assert!(patterns.matches("orders"));
        assert!(patterns.matches("payments.eu"));
        assert!(!patterns.matches("payments"));
        assert!(!patterns.matches("orders2"));
        let all = Patterns::parse("*", "--topics").unwrap();
        assert!(all.matches("anything"));
        assert!(!all.matches("__consumer_offsets"));
        assert!(Patterns::parse(" , ", "--topics").is_err());
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxc"));
        assert!(glob_matches("ab*ab", "ab"[..].repeat(2).as_str()));
        assert!(!glob_matches("ab*ab", "ab"));
        assert_eq!(patterns.exact_names().collect::<Vec<_>>(), vec!["orders"]);
    }
}
