//! Transforms on the way (pure): table renames, column renames, dropped columns and row filters,
//! as a monolith split needs them. The engine applies them between source and sink
//! (`ferry-engine/src/transform.rs`); this module holds the rules and the filter language.
//!
//! The filter language is deliberately small and engine-neutral, so the same rule filters the copy
//! and the stream identically: conditions joined by `AND`, each `column OP literal` with OP one of
//! `= != <> < <= > >=`, or `column IN (literal, ...)`, `column IS NULL`, `column IS NOT NULL`.
//! Literals are numbers or single-quoted strings ('' for a quote). Numbers compare as numbers, all
//! else as text; NULL matches only `IS NULL`.

mod indexes;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::schema::{ForeignKey, TableName, TableSchema};
use crate::value::Value;

/// One rule, as written in the config file under `[[transform]]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableTransform {
    /// The source table (`schema.table`; `*` and `?` match as in `--tables`).
    pub table: String,
    /// The table's name on the target (`schema.table`, or `table` to keep the schema).
    pub rename: Option<String>,
    /// The schema on the target (for every table the pattern matches).
    pub schema: Option<String>,
    /// Column renames: source name = target name.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Columns not moved (never a key column).
    #[serde(default)]
    pub drop: Vec<String>,
    /// Only rows matching this condition are moved (see the module documentation).
    pub filter: Option<String>,
}

/// Every rule, checked.
#[derive(Debug, Clone, Default)]
pub struct Transforms {
    rules: Vec<(TableTransform, Option<Filter>)>,
    /// The zero-date policy `null`: MySQL zero dates (`0000-00-00`, or a zero month or day)
    /// become NULL on the way, instead of being refused by a target that cannot hold them.
    zero_dates_to_null: bool,
}

fn config_error(message: String) -> Error {
    Error::operator("config.transform", message)
        .with_hint("see the [[transform]] section of docs/reference.md")
}

fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    fn matches(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| matches(rest, &text[skip..])),
            Some(('?', rest)) => !text.is_empty() && matches(rest, &text[1..]),
            Some((character, rest)) => text.first() == Some(character) && matches(rest, &text[1..]),
        }
    }
    matches(&pattern, &text)
}

impl Transforms {
    /// Checks every rule (filters parse, names are well formed).
    pub fn new(rules: Vec<TableTransform>) -> Result<Transforms> {
        let mut checked = Vec::new();
        for rule in rules {
            if !rule.table.contains('.') {
                return Err(config_error(format!(
                    "transform table '{}' is not of the form schema.table",
                    rule.table
                )));
            }
            let filter = rule
                .filter
                .as_deref()
                .map(|text| {
                    Filter::parse(text).map_err(|message| {
                        config_error(format!(
                            "transform of {}: the filter is malformed: {message}",
                            rule.table
                        ))
                    })
                })
                .transpose()?;
            checked.push((rule, filter));
        }
        Ok(Transforms {
            rules: checked,
            zero_dates_to_null: false,
        })
    }

    /// With the zero-date policy `null` (see the field).
    pub fn with_zero_dates_to_null(mut self, enabled: bool) -> Self {
        self.zero_dates_to_null = enabled;
        self
    }

    pub fn zero_dates_to_null(&self) -> bool {
        self.zero_dates_to_null
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && !self.zero_dates_to_null
    }

    fn rule(&self, table: &TableName) -> Option<&(TableTransform, Option<Filter>)> {
        self.rules.iter().find(|(rule, _)| {
            let (schema, name) = rule.table.split_once('.').unwrap_or(("*", &rule.table));
            glob(schema, &table.schema) && glob(name, &table.name)
        })
    }

    /// The table's name on the target.
    pub fn target_name(&self, table: &TableName) -> TableName {
        let Some((rule, _)) = self.rule(table) else {
            return table.clone();
        };
        let mut name = table.clone();
        if let Some(schema) = &rule.schema {
            name.schema = schema.clone();
        }
        if let Some(rename) = &rule.rename {
            match rename.split_once('.') {
                Some((schema, table)) => name = TableName::new(schema, table),
                None => name.name = rename.clone(),
            }
        }
        name
    }

    /// The target name of a column of `table`.
    pub fn column_name<'a>(&'a self, table: &TableName, column: &'a str) -> &'a str {
        self.rule(table)
            .and_then(|(rule, _)| rule.columns.get(column))
            .map(String::as_str)
            .unwrap_or(column)
    }

    /// Whether a column of `table` is dropped.
    pub fn dropped(&self, table: &TableName, column: &str) -> bool {
        self.rule(table)
            .is_some_and(|(rule, _)| rule.drop.iter().any(|name| name == column))
    }

    /// The filter of `table`, if any.
    pub fn filter(&self, table: &TableName) -> Option<&Filter> {
        self.rule(table).and_then(|(_, filter)| filter.as_ref())
    }

    /// The source definition without dropped columns (what the source reads).
    pub fn read_schema(&self, table: &TableSchema) -> Result<TableSchema> {
        let mut read = table.clone();
        if let Some(key) = table
            .primary_key
            .iter()
            .find(|key| self.dropped(&table.name, key))
        {
            return Err(config_error(format!(
                "transform of {} drops key column {key}; keys cannot be dropped",
                table.name
            )));
        }
        if let Some((rule, filter)) = self.rule(&table.name) {
            for name in rule
                .drop
                .iter()
                .chain(rule.columns.keys())
                .map(String::as_str)
                .chain(filter.iter().flat_map(|filter| filter.columns()))
            {
                if table.column(name).is_none() {
                    return Err(config_error(format!(
                        "transform of {} names column {name}, which the table does not have",
                        table.name
                    )));
                }
            }
            if filter.as_ref().is_some_and(|filter| {
                filter
                    .columns()
                    .any(|column| self.dropped(&table.name, column))
            }) {
                return Err(config_error(format!(
                    "transform of {} filters on a dropped column",
                    table.name
                )));
            }
        }
        read.columns
            .retain(|column| !self.dropped(&table.name, &column.name));
        Ok(read)
    }

    /// A foreign key in target names (either end may be renamed), or `None` when the transforms
    /// drop one of its columns.
    pub fn target_foreign_key(&self, key: &ForeignKey) -> Option<ForeignKey> {
        let columns = |table: &TableName, columns: &[String]| -> Option<Vec<String>> {
            columns
                .iter()
                .map(|column| {
                    (!self.dropped(table, column))
                        .then(|| self.column_name(table, column).to_string())
                })
                .collect()
        };
        Some(ForeignKey {
            table: self.target_name(&key.table),
            referenced_table: self.target_name(&key.referenced_table),
            columns: columns(&key.table, &key.columns)?,
            referenced_columns: columns(&key.referenced_table, &key.referenced_columns)?,
            ..key.clone()
        })
    }

    /// The definition the target gets: renamed, without dropped columns. Plain column indexes
    /// and unique constraints follow the renames; indexes on expressions or dropped columns,
    /// partial indexes, foreign keys and checks of a transformed table are left out (the caller
    /// reports them).
    pub fn target_schema(&self, table: &TableSchema) -> Result<TableSchema> {
        let mut target = self.read_schema(table)?;
        // Foreign keys in target names (either end may be renamed); a key over a dropped
        // column cannot exist on the target.
        target.foreign_keys = table
            .foreign_keys
            .iter()
            .filter_map(|key| self.target_foreign_key(key))
            .collect();
        if self.rule(&table.name).is_none() {
            return Ok(target);
        }
        target.name = self.target_name(&table.name);
        for column in &mut target.columns {
            column.name = self.column_name(&table.name, &column.name).to_string();
        }
        target.primary_key = table
            .primary_key
            .iter()
            .map(|key| self.column_name(&table.name, key).to_string())
            .collect();
        let name = target.name.clone();
        // PostgreSQL index names are per schema; MySQL's are per table (and the PostgreSQL
        // sink prefixes translated MySQL indexes with their table already).
        let renamed = name != table.name && table.dialect == "postgres";
        target.secondary = table
            .secondary
            .iter()
            .filter_map(|object| {
                // A renamed table's objects take its name, so two tables renamed into one
                // schema cannot clash over an index name.
                let object_name = if renamed {
                    renamed_object(&name, &object.name)
                } else {
                    object.name.clone()
                };
                indexes::rewrite(object, &table.dialect, &name, &object_name, |column| {
                    (!self.dropped(&table.name, column))
                        .then(|| self.column_name(&table.name, column).to_string())
                })
            })
            .collect();
        target.checks.clear();
        target.primary_key_name = None;
        Ok(target)
    }
}

/// The name a secondary object of a renamed table takes on the target: the table's new name,
/// `_`, the object's name, cut to 63 bytes (PostgreSQL's limit).
pub fn renamed_object(target: &TableName, object: &str) -> String {
    crate::schema::fit_identifier(&format!("{}_{}", target.name, object), 63)
}

/// Replaces a MySQL zero date or date-time (`0000-00-00`, `2024-00-10`, `2024-05-00 ...`) with
/// NULL; other values stay as they are. True when it replaced one.
pub fn null_zero_date(value: &mut Value) -> bool {
    let Value::Native { type_name, text } = value else {
        return false;
    };
    if !matches!(type_name.as_str(), "date" | "timestamp" | "timestamptz") {
        return false;
    }
    let mut parts = text.get(..10).unwrap_or_default().split('-');
    let zero = (0..3).any(|_| {
        parts
            .next()
            .is_some_and(|part| part.chars().all(|digit| digit == '0'))
    });
    if zero {
        *value = Value::Null;
    }
    zero
}

/// A row filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Number(f64, String),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Compare {
        column: String,
        operator: String,
        literal: Literal,
    },
    In {
        column: String,
        literals: Vec<Literal>,
    },
    IsNull {
        column: String,
        negated: bool,
    },
}

fn tokens(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut characters = text.chars().peekable();
    while let Some(&character) = characters.peek() {
        if character.is_whitespace() {
            characters.next();
        } else if character == '\'' {
            characters.next();
            let mut literal = String::from("'");
            loop {
                match characters.next() {
                    Some('\'') if characters.peek() == Some(&'\'') => {
                        characters.next();
                        literal.push('\'');
                    }
                    Some('\'') => break,
                    Some(other) => literal.push(other),
                    None => return Err("a quoted string is not closed".into()),
                }
            }
            tokens.push(literal);
        } else if "(),".contains(character) {
            tokens.push(characters.next().unwrap_or_default().to_string());
        } else if "<>=!".contains(character) {
            let mut operator = String::new();
            while characters.peek().is_some_and(|next| "<>=!".contains(*next)) {
                operator.push(characters.next().unwrap_or_default());
            }
            tokens.push(operator);
        } else {
            let mut word = String::new();
            while characters
                .peek()
                .is_some_and(|next| !next.is_whitespace() && !"(),<>=!'".contains(*next))
            {
                word.push(characters.next().unwrap_or_default());
            }
            tokens.push(word);
        }
    }
    Ok(tokens)
}

fn literal(token: &str) -> std::result::Result<Literal, String> {
    if let Some(text) = token.strip_prefix('\'') {
        return Ok(Literal::Text(text.to_string()));
    }
    token
        .parse::<f64>()
        .map(|number| Literal::Number(number, token.to_string()))
        .map_err(|_| format!("'{token}' is neither a number nor a quoted string"))
}

impl Filter {
    /// Parses the filter language of the module documentation.
    pub fn parse(text: &str) -> std::result::Result<Filter, String> {
        let tokens = tokens(text)?;
        let mut conditions = Vec::new();
        let mut index = 0;
        let take = |index: &mut usize| -> std::result::Result<String, String> {
            let token = tokens
                .get(*index)
                .cloned()
                .ok_or("the condition ends too early")?;
            *index += 1;
            Ok(token)
        };
        loop {
            let column = take(&mut index)?;
            let operator = take(&mut index)?;
            let upper = operator.to_ascii_uppercase();
            let condition = if upper == "IS" {
                let next = take(&mut index)?.to_ascii_uppercase();
                let negated = next == "NOT";
                let null = if negated {
                    take(&mut index)?.to_ascii_uppercase()
                } else {
                    next
                };
                if null != "NULL" {
                    return Err("IS must be followed by NULL or NOT NULL".into());
                }
                Condition::IsNull { column, negated }
            } else if upper == "IN" {
                if take(&mut index)? != "(" {
                    return Err("IN must be followed by (".into());
                }
                let mut literals = Vec::new();
                loop {
                    literals.push(literal(&take(&mut index)?)?);
                    match take(&mut index)?.as_str() {
                        "," => continue,
                        ")" => break,
                        other => return Err(format!("unexpected '{other}' in an IN list")),
                    }
                }
                Condition::In { column, literals }
            } else if ["=", "!=", "<>", "<", "<=", ">", ">="].contains(&operator.as_str()) {
                Condition::Compare {
                    column,
                    operator,
                    literal: literal(&take(&mut index)?)?,
                }
            } else {
                return Err(format!("unknown operator '{operator}'"));
            };
            conditions.push(condition);
            match tokens.get(index).map(|token| token.to_ascii_uppercase()) {
                None => break,
                Some(and) if and == "AND" => index += 1,
                Some(other) => return Err(format!("expected AND, found '{other}'")),
            }
        }
        Ok(Filter { conditions })
    }

    /// The columns the filter reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.conditions.iter().map(|condition| match condition {
            Condition::Compare { column, .. }
            | Condition::In { column, .. }
            | Condition::IsNull { column, .. } => column.as_str(),
        })
    }

    /// Whether a row matches; `value` gives a column's value (`None`: not known, as for an
    /// unchanged value missing from a change image), and then the answer is `None`.
    pub fn matches<'a>(&self, value: impl Fn(&str) -> Option<&'a Value>) -> Option<bool> {
        for condition in &self.conditions {
            let column = match condition {
                Condition::Compare { column, .. }
                | Condition::In { column, .. }
                | Condition::IsNull { column, .. } => column,
            };
            let value = value(column)?;
            let holds = match condition {
                Condition::IsNull { negated, .. } => matches!(value, Value::Null) != *negated,
                _ if matches!(value, Value::Null) => false,
                Condition::Compare {
                    operator, literal, ..
                } => compare(value, literal).is_some_and(|ordering| match operator.as_str() {
                    "=" => ordering.is_eq(),
                    "!=" | "<>" => ordering.is_ne(),
                    "<" => ordering.is_lt(),
                    "<=" => ordering.is_le(),
                    ">" => ordering.is_gt(),
                    _ => ordering.is_ge(),
                }),
                Condition::In { literals, .. } => literals.iter().any(|literal| {
                    compare(value, literal).is_some_and(|ordering| ordering.is_eq())
                }),
            };
            if !holds {
                return Some(false);
            }
        }
        Some(true)
    }
}

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Int16(number) => Some(f64::from(*number)),
        Value::Int32(number) => Some(f64::from(*number)),
        Value::Int64(number) => Some(*number as f64),
        Value::UInt64(number) => Some(*number as f64),
        Value::Float32(number) => Some(f64::from(*number)),
        Value::Float64(number) => Some(*number),
        Value::Numeric(text) => text.parse().ok(),
        Value::Bool(flag) => Some(if *flag { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn text_of(value: &Value) -> Option<&str> {
    match value {
        Value::Text(text) | Value::Json(text) | Value::Uuid(text) | Value::Numeric(text) => {
            Some(text)
        }
        Value::Native { text, .. } => Some(text),
        _ => None,
    }
}

fn compare(value: &Value, literal: &Literal) -> Option<std::cmp::Ordering> {
    match literal {
        Literal::Number(number, _) => number_of(value)?.partial_cmp(number),
        Literal::Text(text) => Some(text_of(value)?.cmp(text.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match() {
        let filter = Filter::parse(
            "region = 'EU' AND amount >= 10.5 AND deleted_at IS NULL AND kind IN ('a', 'it''s')",
        )
        .unwrap();
        let values = [
            ("region", Value::Text("EU".into())),
            ("amount", Value::Int32(11)),
            ("deleted_at", Value::Null),
            ("kind", Value::Text("it's".into())),
        ];
        assert_eq!(
            filter.matches(|column| values
                .iter()
                .find(|(name, _)| *name == column)
                .map(|(_, value)| value)),
            Some(true)
        );
        let values = [
            ("region", Value::Text("US".into())),
            ("amount", Value::Int32(11)),
            ("deleted_at", Value::Null),
            ("kind", Value::Text("a".into())),
        ];
        assert_eq!(
            filter.matches(|column| values
                .iter()
                .find(|(name, _)| *name == column)
                .map(|(_, value)| value)),
            Some(false)
        );
        assert!(Filter::parse("a = ").is_err());
        assert!(Filter::parse("a LIKE 'x'").is_err());
        assert!(Filter::parse("a = 1 OR b = 2").is_err());
        assert_eq!(
            Filter::parse("a IS NOT NULL")
                .unwrap()
                .columns()
                .collect::<Vec<_>>(),
            vec!["a"]
        );
    }

    #[test]
    fn zero_dates_become_null_only_when_zero() {
        let native = |type_name: &str, text: &str| Value::Native {
            type_name: type_name.into(),
            text: text.into(),
        };
        for text in ["0000-00-00", "2024-00-10", "2024-05-00 10:00:00"] {
            let mut value = native("date", text);
            assert!(null_zero_date(&mut value), "{text}");
            assert_eq!(value, Value::Null);
        }
        let mut kept = native("timestamp", "2024-05-01 00:00:00");
        assert!(!null_zero_date(&mut kept));
        let mut other = native("time", "00:00:00");
        assert!(!null_zero_date(&mut other));
    }

    #[test]
    fn rules_rename_and_refuse_dropping_keys() {
        let transforms = Transforms::new(vec![TableTransform {
            table: "shop.*".into(),
            schema: Some("public".into()),
            columns: BTreeMap::from([("cust".to_string(), "customer_id".to_string())]),
            ..TableTransform::default()
        }])
        .unwrap();
        assert_eq!(
            transforms.target_name(&TableName::new("shop", "orders")),
            TableName::new("public", "orders")
        );
        assert_eq!(
            transforms.column_name(&TableName::new("shop", "orders"), "cust"),
            "customer_id"
        );
        assert_eq!(
            transforms.target_name(&TableName::new("other", "x")),
            TableName::new("other", "x")
        );
        assert!(Transforms::new(vec![TableTransform {
            table: "nodot".into(),
            ..TableTransform::default()
        }])
        .is_err());
    }
}
