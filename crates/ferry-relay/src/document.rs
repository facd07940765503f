//! A database row change as one JSON document, written by hand so that no value is rounded or
//! re-encoded on the way:
//!
//! ```json
//! {"operation": "update", "table": "public.orders", "key": {"id": 7},
//!  "before": {"id": 6}, "after": {"id": 7, "total": "12.50", "note": "x"},
//!  "unchanged_columns": [], "commit_time": "2026-12-05T10:00:00.123456Z",
//!  "position": "postgres:0/16B3748", "index": 0}
//! ```
//!
//! - `before` holds what the source logged of the old row: the old key when the key changed
//!   (the whole old row for a table without a key, and for deletes the key), else `null`.
//! - `after` is the new row; columns the source did not log because they did not change
//!   (PostgreSQL's large TOASTed values) are left out and listed in `unchanged_columns`.
//! - Values: integers as JSON numbers (exact, even beyond 2^53), exact decimals as strings,
//!   floats as numbers (`"NaN"`, `"Infinity"`, `"-Infinity"` as strings), JSON columns embedded
//!   as the source wrote them, bytes as base64 strings, everything else as its text form.
//! - `truncate` has no key, `before` or `after`; `cascade` (MySQL, whose binary log leaves out
//!   rows changed by foreign-key actions) names the parent row change and the tables the actions
//!   reach (`cascaded_tables`), whose rows the receiver must derive.

use ferry_core::change::{Change, Relation};
use ferry_core::{Cell, TableName, Value};

use crate::signature::base64;

/// One change's document, with the ordering key and the table it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub table: TableName,
    /// The key as compact JSON (`{"id":7}`); for a table without a key, its name, so that its
    /// changes keep their order.
    pub key: String,
    pub body: String,
    /// The old key of a row that moved to another key: ordered against both keys' changes.
    pub old_key: Option<String>,
    /// The change concerns a whole table (a truncate, foreign-key actions): under key ordering
    /// it waits for every earlier pending change of its table, and every later one waits for
    /// it.
    pub barrier: bool,
}

/// Where in the source a change sits, for the document and its identity.
#[derive(Debug, Clone)]
pub struct Coordinates<'a> {
    pub position: &'a str,
    pub index: u64,
    pub commit_time_unix_micros: Option<i64>,
}

/// The documents of one change (a truncate of several tables gives one per table).
pub fn documents(change: &Change, at: &Coordinates<'_>) -> Vec<Document> {
    match change {
        Change::Insert { relation, row } => {
            vec![row_document(relation, "insert", None, Some(row), at)]
        }
        Change::Update {
            relation,
            old_key,
            row,
        } => {
            let before = old_key.as_ref().map(|old| old_image(relation, old));
            let old = before
                .as_ref()
                .filter(|_| !relation.is_keyless())
                .map(|before| object(before));
            let document = row_document(relation, "update", before, Some(row), at);
            vec![Document {
                old_key: old,
                ..document
            }]
        }
        Change::Delete { relation, key } => {
            let before = old_image(relation, key);
            let document = row_document(relation, "delete", Some(before.clone()), None, at);
            vec![Document {
                key: if relation.is_keyless() {
                    relation.table.to_string()
                } else {
                    object(&before)
                },
                ..document
            }]
        }
        Change::Truncate { relations, .. } => relations
            .iter()
            .map(|relation| {
                let mut body = String::from("{\"operation\":\"truncate\",\"table\":");
                push_string(&mut body, &relation.table.to_string());
                push_tail(&mut body, at);
                Document {
                    table: relation.table.clone(),
                    key: relation.table.to_string(),
                    body,
                    old_key: None,
                    barrier: true,
                }
            })
            .collect(),
        Change::Cascade(operation) => {
            let relation = &operation.relation;
            let columns: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
            let before: Vec<(&str, &Value)> = columns.iter().copied().zip(&operation.old).collect();
            let mut body = String::from("{\"operation\":\"cascade\",\"table\":");
            push_string(&mut body, &relation.table.to_string());
            body.push_str(",\"before\":");
            body.push_str(&object(&before));
            body.push_str(",\"after\":");
            match &operation.new {
                Some(new) => {
                    let after: Vec<(&str, &Value)> = columns.iter().copied().zip(new).collect();
                    body.push_str(&object(&after));
                }
                None => body.push_str("null"),
            }
            body.push_str(",\"cascaded_tables\":[");
            for (index, table) in operation.touched_tables().iter().enumerate() {
                if index > 0 {
                    body.push(',');
                }
                push_string(&mut body, &table.to_string());
            }
            body.push(']');
            push_tail(&mut body, at);
            vec![Document {
                table: relation.table.clone(),
                key: relation.table.to_string(),
                body,
                old_key: None,
                barrier: true,
            }]
        }
    }
}

/// The old values a change carries, named: the key columns, or every column of a table
/// without a key.
fn old_image<'a>(relation: &'a Relation, values: &'a [Value]) -> Vec<(&'a str, &'a Value)> {
    let names: Vec<&str> = if relation.is_keyless() {
        relation.columns.iter().map(|c| c.name.as_str()).collect()
    } else {
        relation
            .columns
            .iter()
            .filter(|c| c.is_key)
            .map(|c| c.name.as_str())
            .collect()
    };
    names.into_iter().zip(values).collect()
}

fn row_document(
    relation: &Relation,
    operation: &str,
    before: Option<Vec<(&str, &Value)>>,
    row: Option<&Vec<Cell>>,
    at: &Coordinates<'_>,
) -> Document {
    let table = relation.table.to_string();
    let mut after = Vec::new();
    let mut unchanged = Vec::new();
    let mut key = Vec::new();
    if let Some(row) = row {
        for (column, cell) in relation.columns.iter().zip(row) {
            match cell {
                Cell::Value(value) => {
                    after.push((column.name.as_str(), value));
                    if column.is_key {
                        key.push((column.name.as_str(), value));
                    }
                }
                Cell::Unchanged => unchanged.push(column.name.as_str()),
            }
        }
    }
    let key = if relation.is_keyless() {
        table.clone()
    } else {
        object(&key)
    };
    let mut body = String::with_capacity(128);
    body.push_str("{\"operation\":\"");
    body.push_str(operation);
    body.push_str("\",\"table\":");
    push_string(&mut body, &table);
    body.push_str(",\"key\":");
    if relation.is_keyless() {
        body.push_str("null");
    } else if row.is_some() {
        body.push_str(&key);
    } else {
        body.push_str(&object(before.as_deref().unwrap_or_default()));
    }
    body.push_str(",\"before\":");
    match &before {
        Some(before) => body.push_str(&object(before)),
        None => body.push_str("null"),
    }
    body.push_str(",\"after\":");
    match row {
        Some(_) => body.push_str(&object(&after)),
        None => body.push_str("null"),
    }
    if !unchanged.is_empty() {
        body.push_str(",\"unchanged_columns\":[");
        for (index, name) in unchanged.iter().enumerate() {
            if index > 0 {
                body.push(',');
            }
            push_string(&mut body, name);
        }
        body.push(']');
    }
    push_tail(&mut body, at);
    Document {
        table: relation.table.clone(),
        key,
        body,
        old_key: None,
        barrier: false,
    }
}

fn push_tail(body: &mut String, at: &Coordinates<'_>) {
    body.push_str(",\"commit_time\":");
    match at.commit_time_unix_micros {
        Some(micros) => push_string(body, &rfc3339(micros)),
        None => body.push_str("null"),
    }
    body.push_str(",\"position\":");
    push_string(body, at.position);
    body.push_str(",\"index\":");
    body.push_str(&at.index.to_string());
    body.push('}');
}

/// `{"a":1,"b":"x"}`.
fn object(fields: &[(&str, &Value)]) -> String {
    let mut text = String::from("{");
    for (index, (name, value)) in fields.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        push_string(&mut text, name);
        text.push(':');
        push_value(&mut text, value);
    }
    text.push('}');
    text
}

/// A value as JSON, exactly (see the module notes).
pub fn push_value(text: &mut String, value: &Value) {
    match value {
        Value::Null => text.push_str("null"),
        Value::Bool(value) => text.push_str(if *value { "true" } else { "false" }),
        Value::Int16(value) => text.push_str(&value.to_string()),
        Value::Int32(value) => text.push_str(&value.to_string()),
        Value::Int64(value) => text.push_str(&value.to_string()),
        Value::UInt64(value) => text.push_str(&value.to_string()),
        Value::Float32(value) => push_float(text, f64::from(*value), &value.to_string()),
        Value::Float64(value) => push_float(text, *value, &value.to_string()),
        Value::Numeric(value) | Value::Text(value) | Value::Uuid(value) => push_string(text, value),
        Value::Bytes(bytes) => push_string(text, &base64(bytes)),
        Value::Json(json) => {
            // The source's JSON text, as written (valid JSON by the source's own check).
            if json.trim().is_empty() {
                text.push_str("null");
            } else {
                text.push_str(json.trim());
            }
        }
        Value::Native { text: native, .. } => push_string(text, native),
    }
}

fn push_float(text: &mut String, value: f64, shortest: &str) {
    if value.is_nan() {
        text.push_str("\"NaN\"");
    } else if value.is_infinite() {
        text.push_str(if value > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        // Rust prints the shortest text that reads back as the same float.
        text.push_str(shortest);
    }
}

/// A JSON string literal.
pub fn push_string(text: &mut String, value: &str) {
    text.push('"');
    for character in value.chars() {
        match character {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\t' => text.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                text.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => text.push(c),
        }
    }
    text.push('"');
}

/// `2026-12-05T10:00:00.123456Z` from microseconds since 1970 (UTC).
pub fn rfc3339(unix_micros: i64) -> String {
    let seconds = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = ferry_core::calendar::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ferry_core::change::RelationColumn;
    use ferry_core::TableName;

    use super::*;

    fn relation(keyed: bool) -> Arc<Relation> {
        Arc::new(Relation {
            id: 1,
            table: TableName::new("public", "orders"),
            columns: vec![
                RelationColumn {
                    type_signature: None,
                    name: "id".into(),
                    is_key: keyed,
                },
                RelationColumn {
                    type_signature: None,
                    name: "note".into(),
                    is_key: false,
                },
                RelationColumn {
                    type_signature: None,
                    name: "doc".into(),
                    is_key: false,
                },
            ],
        })
    }

    fn at() -> Coordinates<'static> {
        Coordinates {
            position: "postgres:0/1",
            index: 3,
            commit_time_unix_micros: Some(1_764_930_000_123_456),
        }
    }

    fn parsed(document: &Document) -> serde_json::Value {
        serde_json::from_str(&document.body).expect(&document.body)
    }

    #[test]
    fn inserts_updates_and_deletes_read_back_exactly() {
        let insert = Change::Insert {
            relation: relation(true),
            row: vec![
                Cell::Value(Value::Int64(9_007_199_254_740_993)),
                Cell::Value(Value::Text("a \"quoted\"\n\u{1} line".into())),
                Cell::Value(Value::Json(r#"{"x": 1.000000000000000000001}"#.into())),
            ],
        };
        let inserted = documents(&insert, &at());
        assert_eq!(inserted[0].key, r#"{"id":9007199254740993}"#);
        assert!(inserted[0].body.contains(r#""x": 1.000000000000000000001"#));
        let json = parsed(&inserted[0]);
        assert_eq!(json["operation"], "insert");
        assert_eq!(json["after"]["note"], "a \"quoted\"\n\u{1} line");
        assert_eq!(json["after"]["id"].as_u64(), Some(9_007_199_254_740_993));
        assert_eq!(json["before"], serde_json::Value::Null);
        assert_eq!(json["commit_time"], "2025-12-05T10:20:00.123456Z");
        assert_eq!(json["index"], 3);

        let update = Change::Update {
            relation: relation(true),
            old_key: Some(vec![Value::Int32(1)]),
            row: vec![
                Cell::Value(Value::Int32(2)),
                Cell::Unchanged,
                Cell::Value(Value::Float64(f64::NAN)),
            ],
        };
        let json = parsed(&documents_of(&update));
        assert_eq!(json["before"], serde_json::json!({"id": 1}));
        assert_eq!(json["after"], serde_json::json!({"id": 2, "doc": "NaN"}));
        assert_eq!(json["unchanged_columns"], serde_json::json!(["note"]));

        let delete = Change::Delete {
            relation: relation(true),
            key: vec![Value::Numeric("12.50".into())],
        };
        let document = &documents(&delete, &at())[0];
        assert_eq!(document.key, r#"{"id":"12.50"}"#);
        let json = parsed(document);
        assert_eq!(json["key"], serde_json::json!({"id": "12.50"}));
        assert_eq!(json["after"], serde_json::Value::Null);
    }

    fn documents_of(change: &Change) -> Document {
        documents(change, &at()).remove(0)
    }

    #[test]
    fn keyless_tables_order_by_table() {
        let delete = Change::Delete {
            relation: relation(false),
            key: vec![Value::Int32(1), Value::Null, Value::Bytes(vec![0, 255])],
        };
        let document = documents_of(&delete);
        assert_eq!(document.key, "public.orders");
        let json = parsed(&document);
        assert_eq!(json["key"], serde_json::Value::Null);
        assert_eq!(
            json["before"],
            serde_json::json!({"id": 1, "note": null, "doc": "AP8="})
        );
    }

    #[test]
    fn times_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
    }
}
