//! Which tables a migration moves: comma-separated glob patterns over `schema.table`.

use crate::error::{Error, Result};
use crate::schema::TableName;

/// A table selection. An empty selection selects every table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    patterns: Vec<(String, String)>,
    /// Tables these patterns match are left out, whatever `patterns` select.
    excluded: Vec<(String, String)>,
    /// When set, only these tables (of those the patterns select).
    only: Option<Vec<TableName>>,
}

impl Selection {
    /// Parses patterns such as `public.*`, `shop.order*`, `*.audit_log` or a bare `orders`
    /// (which means `*.orders`). `*` matches any run of characters, `?` one character.
    pub fn parse(patterns: &[String]) -> Result<Selection> {
        Ok(Selection {
            patterns: parse_patterns(patterns)?,
            excluded: Vec::new(),
            only: None,
        })
    }

    /// The same selection without the tables these patterns (same form as [`Selection::parse`])
    /// match.
    pub fn excluding(mut self, patterns: &[String]) -> Result<Selection> {
        self.excluded.extend(parse_patterns(patterns)?);
        Ok(self)
    }

    /// The same selection narrowed to exactly these tables.
    pub fn restricted_to(&self, tables: &[TableName]) -> Selection {
        Selection {
            patterns: self.patterns.clone(),
            excluded: self.excluded.clone(),
            only: Some(tables.to_vec()),
        }
    }

    /// The tables it is narrowed to, if it is (see [`Selection::restricted_to`]).
    pub fn restriction(&self) -> Option<&[TableName]> {
        self.only.as_deref()
    }

    /// True when narrowed to a list of tables ([`Selection::restricted_to`]): a look at a few
    /// tables, not the migration's whole selection.
    pub fn is_restricted(&self) -> bool {
        self.only.is_some()
    }

    /// True when the table is selected.
    pub fn matches(&self, table: &TableName) -> bool {
        if self.only.as_ref().is_some_and(|only| !only.contains(table)) {
            return false;
        }
        if self
            .excluded
            .iter()
            .any(|(schema, name)| glob(schema, &table.schema) && glob(name, &table.name))
        {
            return false;
        }
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|(schema, name)| glob(schema, &table.schema) && glob(name, &table.name))
    }
}

/// Patterns such as `public.*`, `shop.order*` or a bare `orders` (`*.orders`), comma-separated.
fn parse_patterns(patterns: &[String]) -> Result<Vec<(String, String)>> {
    let mut parsed = Vec::new();
    for pattern in patterns.iter().flat_map(|pattern| pattern.split(',')) {
        let pattern = pattern.trim();
        if pattern.is_empty() {
            continue;
        }
        let (schema, table) = match pattern.split_once('.') {
            Some((schema, table)) => (schema, table),
            None => ("*", pattern),
        };
        if schema.is_empty() || table.is_empty() || table.contains('.') {
            return Err(Error::operator(
                "config.tables",
                format!("table pattern '{pattern}' is not of the form schema.table"),
            )
            .with_hint("write patterns like 'public.*', 'shop.orders' or 'orders'"));
        }
        parsed.push((schema.to_string(), table.to_string()));
    }
    Ok(parsed)
}

fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let (mut star, mut star_text) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            star_text = t;
            p += 1;
        } else if let Some(star_at) = star {
            p = star_at + 1;
            star_text += 1;
            t = star_text;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == '*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(patterns: &str) -> Selection {
        Selection::parse(&[patterns.to_string()]).unwrap()
    }

    #[test]
    fn patterns_match_schema_and_table() {
        let table = TableName::new("public", "orders");
        assert!(select("").matches(&table));
        assert!(select("public.*").matches(&table));
        assert!(select("orders").matches(&table));
        assert!(select("pub*.ord?rs").matches(&table));
        assert!(select("shop.*, public.orders").matches(&table));
        assert!(!select("shop.*").matches(&table));
        assert!(!select("public.order").matches(&table));
    }

    #[test]
    fn excluded_tables_are_left_out_whatever_is_selected() {
        let selection = select("public.*")
            .excluding(&["public.tmp_*,audit".to_string()])
            .unwrap();
        assert!(selection.matches(&TableName::new("public", "orders")));
        assert!(!selection.matches(&TableName::new("public", "tmp_load")));
        assert!(!selection.matches(&TableName::new("public", "audit")));
        assert!(!select("")
            .excluding(&["*.audit".to_string()])
            .unwrap()
            .matches(&TableName::new("shop", "audit")));
        assert!(select("").excluding(&["a.b.c".to_string()]).is_err());
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert!(Selection::parse(&["a.b.c".to_string()]).is_err());
        assert!(Selection::parse(&[".x".to_string()]).is_err());
    }

    #[test]
    fn a_restricted_selection_takes_exact_names() {
        let all = Selection::parse(&["public.*".to_string()]).unwrap();
        let only = all.restricted_to(&[TableName::new("public", "a*b")]);
        assert!(only.matches(&TableName::new("public", "a*b")));
        assert!(!only.matches(&TableName::new("public", "axb")));
        assert!(!Selection::default()
            .restricted_to(&[TableName::new("public", "t")])
            .matches(&TableName::new("other", "t")));
    }
}
