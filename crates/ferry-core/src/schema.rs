//! Tables, columns, keys, and the objects that travel with them (sequences, indexes, foreign keys,
//! enum types). Native type names and definitions are in the source engine's dialect, named by
//! [`TableSchema::dialect`]; a sink of another dialect must map or refuse them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A schema-qualified table (or sequence, or type) name, unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}", self.schema, self.name)
    }
}

/// How an identity column generates values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    Always,
    ByDefault,
}

/// One column as the source defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// The full type in the source dialect, with modifiers (`numeric(12,2)`, `text[]`).
    pub native_type: String,
    /// True when the type is defined by the user (an enum, say) rather than built in.
    pub user_defined_type: bool,
    pub nullable: bool,
    /// The default expression in the source dialect.
    pub default: Option<String>,
    pub identity: Option<Identity>,
    /// For a stored generated column: its expression. Such columns are never written; the target
    /// computes them.
    pub generated: Option<String>,
    /// The collation when it differs from the type's default.
    pub collation: Option<String>,
    /// MySQL's `ON UPDATE` expression (`current_timestamp(6)`), kept on MySQL targets. Never
    /// fires for ferry's own writes, which set every column.
    #[serde(default)]
    pub on_update: Option<String>,
    /// For a generated column: computed when read (MySQL `VIRTUAL`) rather than stored.
    #[serde(default)]
    pub generated_virtual: bool,
    /// The column's comment, if it has one.
    #[serde(default)]
    pub comment: Option<String>,
    /// The type's identity as the source's change log describes it (PostgreSQL: the type's oid
    /// and modifier), when the source gives one: the stream compares it with the log's to know
    /// that a type changed without reading the catalog again. Not a type name.
    #[serde(default)]
    pub type_signature: Option<String>,
}

/// A secondary object created after the bulk load: an index or a constraint (unique, exclusion,
/// foreign key), as a definition in the source dialect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondaryObject {
    pub name: String,
    pub kind: SecondaryKind,
    /// `CREATE INDEX ...` for an index, the constraint definition (`FOREIGN KEY (a) REFERENCES ...`)
    /// for a constraint.
    pub definition: String,
}

impl SecondaryObject {
    /// Whether the object refuses a row for what other rows hold: a unique index, a unique or
    /// exclusion constraint, or a foreign key (which may need a unique index, and is only sure
    /// to hold once every row is current). Replaying a change older than rows already on the
    /// target can meet such an object transiently, so it waits until the stream has caught up
    /// with the copy (see [`TableSchema::without_objects_held_until_caught_up`]).
    pub fn waits_for_catch_up(&self) -> bool {
        let definition = self.definition.trim_start().to_ascii_uppercase();
        match self.kind {
            SecondaryKind::Index => definition.starts_with("CREATE UNIQUE "),
            SecondaryKind::Constraint => {
                definition.starts_with("UNIQUE") || definition.starts_with("EXCLUDE")
            }
            SecondaryKind::ForeignKey => true,
            SecondaryKind::Inherit => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecondaryKind {
    Index,
    Constraint,
    ForeignKey,
    /// PostgreSQL table inheritance: the table is a child of the table named (quoted and
    /// qualified) in the definition. Each table's rows travel on their own (reads use `ONLY`);
    /// a PostgreSQL target re-creates the link after the bulk load, other targets leave it out.
    Inherit,
}

/// A table as the source defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    pub name: TableName,
    /// The dialect of native types and definitions (`postgres`).
    pub dialect: String,
    pub columns: Vec<Column>,
    /// Names of the primary key columns, in key order. Empty when the table has none.
    pub primary_key: Vec<String>,
    /// Name of the primary key constraint.
    pub primary_key_name: Option<String>,
    /// Check constraints, created with the table: (name, definition).
    pub checks: Vec<(String, String)>,
    /// Created after the bulk load.
    pub secondary: Vec<SecondaryObject>,
    /// The source's estimate of the row count (for progress and chunk sizing only).
    pub estimated_rows: u64,
    /// The foreign keys this table holds to migrated tables, in structured form (for sources
    /// that do not log what the keys' actions change, and for targets that create them).
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKey>,
    /// For a partitioned table (PostgreSQL declarative partitioning): how its rows are split.
    /// The table is migrated as one table (its rows are read and its changes published through
    /// it); a target that partitions re-creates the same partitions, another holds every row in
    /// one table.
    #[serde(default)]
    pub partitioning: Option<Partitioning>,
    /// The table's comment, if it has one.
    #[serde(default)]
    pub comment: Option<String>,
}

/// How a partitioned table splits its rows, in the source dialect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partitioning {
    /// What follows `PARTITION BY` (`RANGE (payment_date)`).
    pub key: String,
    /// Every partition below the table, each after its parent.
    pub partitions: Vec<Partition>,
}

/// One partition of a partitioned table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub name: TableName,
    /// The partitioned table it belongs to (the migrated table, or a partition of it).
    pub parent: TableName,
    /// Its bound: `FOR VALUES FROM (...) TO (...)`, `FOR VALUES IN (...)`, or `DEFAULT`.
    pub bound: String,
    /// For a partition that is partitioned in turn: what follows its `PARTITION BY`.
    pub key: Option<String>,
}

/// What a foreign key does to the rows that reference a row when that row is deleted or its
/// referenced columns change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReferentialAction {
    NoAction,
    Restrict,
    Cascade,
    SetNull,
    SetDefault,
}

impl ReferentialAction {
    /// From the SQL words (`CASCADE`, `SET NULL`, `NO ACTION`, `RESTRICT`, `SET DEFAULT`).
    pub fn parse(words: &str) -> Option<ReferentialAction> {
        Some(match words.trim().to_ascii_uppercase().as_str() {
            "NO ACTION" => ReferentialAction::NoAction,
            "RESTRICT" => ReferentialAction::Restrict,
            "CASCADE" => ReferentialAction::Cascade,
            "SET NULL" => ReferentialAction::SetNull,
            "SET DEFAULT" => ReferentialAction::SetDefault,
            _ => return None,
        })
    }

    /// The SQL words.
    pub fn sql(&self) -> &'static str {
        match self {
            ReferentialAction::NoAction => "NO ACTION",
            ReferentialAction::Restrict => "RESTRICT",
            ReferentialAction::Cascade => "CASCADE",
            ReferentialAction::SetNull => "SET NULL",
            ReferentialAction::SetDefault => "SET DEFAULT",
        }
    }

    /// True when the action changes the referencing rows (rather than refusing the change).
    pub fn changes_rows(&self) -> bool {
        matches!(
            self,
            ReferentialAction::Cascade | ReferentialAction::SetNull | ReferentialAction::SetDefault
        )
    }
}

/// A foreign key from `table` (the referencing, child table) to `referenced_table`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    pub table: TableName,
    pub columns: Vec<String>,
    pub referenced_table: TableName,
    /// The referenced columns, in the order of `columns`.
    pub referenced_columns: Vec<String>,
    pub on_delete: ReferentialAction,
    pub on_update: ReferentialAction,
}

impl TableSchema {
    /// Whether the table has objects that wait until the stream has caught up with a copy
    /// ([`SecondaryObject::waits_for_catch_up`], and structured foreign keys).
    pub fn has_objects_held_until_caught_up(&self) -> bool {
        !self.foreign_keys.is_empty()
            || self
                .secondary
                .iter()
                .any(SecondaryObject::waits_for_catch_up)
    }

    /// The table without the objects that wait until the stream has caught up with a copy: what
    /// a target may build while older changes are still being replayed over newer rows.
    pub fn without_objects_held_until_caught_up(&self) -> TableSchema {
        let mut table = self.clone();
        table
            .secondary
            .retain(|object| !object.waits_for_catch_up());
        table.foreign_keys.clear();
        table
    }

    /// The columns a copy or an apply writes: every column but generated ones.
    pub fn writable_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns
            .iter()
            .filter(|column| column.generated.is_none())
    }

    /// The column with this name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|column| column.name == name)
    }
}

/// A user-defined type the tables depend on. A catalog lists them in dependency order: a type
/// comes after every type its definition uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserType {
    pub name: TableName,
    /// Enum labels in sort order (for [`UserTypeKind::Enum`]).
    pub enum_labels: Vec<String>,
    #[serde(default)]
    pub kind: UserTypeKind,
    /// The body of the type's definition in the source dialect: for a domain, what follows
    /// `CREATE DOMAIN name AS` (base type, collation, default, NOT NULL, named CHECKs); for a
    /// composite, the attribute list inside `AS (...)`; for a range, the options inside
    /// `AS RANGE (...)`. Empty for enums and extension types.
    #[serde(default)]
    pub definition: String,
    /// For a domain: its base type in the source dialect (itself possibly user-defined), so a
    /// target without domains can store the values as the base type.
    #[serde(default)]
    pub base_type: Option<String>,
    /// For a type an extension provides (`citext`, `hstore`): the extension, created on the
    /// target (when it is available there) instead of the type.
    #[serde(default)]
    pub extension: Option<String>,
}

/// What kind of user-defined type a [`UserType`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserTypeKind {
    #[default]
    Enum,
    Domain,
    Composite,
    Range,
    /// Provided by an extension ([`UserType::extension`]).
    Extension,
}

impl UserType {
    /// An enum type with these labels.
    pub fn enumeration(name: TableName, labels: Vec<String>) -> UserType {
        UserType {
            name,
            enum_labels: labels,
            kind: UserTypeKind::Enum,
            definition: String::new(),
            base_type: None,
            extension: None,
        }
    }
}

/// A sequence and its current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    pub name: TableName,
    /// The type, start, increment, bounds, cache and cycle, in the source dialect
    /// (`AS bigint INCREMENT BY 1 MINVALUE 1 ...`).
    pub definition: String,
    /// The last value handed out, or `None` when `nextval` was never called.
    pub last_value: Option<i64>,
    /// The table column that owns the sequence (`serial`), if any.
    pub owned_by: Option<(TableName, String)>,
    /// True for an identity column's sequence, which the table creates itself.
    pub identity: bool,
}

/// Everything a migration moves from one source: tables, the user types they use, sequences.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub tables: Vec<TableSchema>,
    pub types: Vec<UserType>,
    pub sequences: Vec<Sequence>,
    /// Selected tables ferry cannot migrate, with the reason. A migration refuses to start while
    /// any is selected, so nothing is silently left behind.
    pub unsupported: Vec<(TableName, String)>,
}

/// `name` cut to at most `limit` bytes (PostgreSQL's identifier limit is 63) without two long
/// names ever becoming one: a name that does not fit keeps a prefix and ends in `_` and eight
/// hex digits of a hash of the whole name. Cut on a character boundary.
pub fn fit_identifier(name: &str, limit: usize) -> String {
    if name.len() <= limit {
        return name.to_string();
    }
    let mut hash: u32 = 2_166_136_261;
    for byte in name.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(16_777_619);
    }
    let suffix = format!("_{hash:08x}");
    let mut end = limit.saturating_sub(suffix.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &name[..end])
}

#[cfg(test)]
mod tests {
    use super::{fit_identifier, SecondaryKind, SecondaryObject};

    #[test]
    fn objects_that_refuse_rows_for_what_other_rows_hold_wait_for_the_catch_up() {
        let object = |kind, definition: &str| SecondaryObject {
            name: "x".into(),
            kind,
            definition: definition.into(),
        };
        let waiting = [
            object(
                SecondaryKind::Index,
                "CREATE UNIQUE INDEX x ON s.t USING btree (a)",
            ),
            object(SecondaryKind::Index, "CREATE UNIQUE INDEX `x` ON `t` (`a`)"),
            object(SecondaryKind::Constraint, "UNIQUE (a)"),
            object(SecondaryKind::Constraint, "UNIQUE NULLS NOT DISTINCT (a)"),
            object(SecondaryKind::Constraint, "EXCLUDE USING gist (r WITH &&)"),
            object(
                SecondaryKind::ForeignKey,
                "FOREIGN KEY (a) REFERENCES s.p(id)",
            ),
        ];
        let built_at_once = [
            object(
                SecondaryKind::Index,
                "CREATE INDEX x ON s.t USING btree (a)",
            ),
            object(
                SecondaryKind::Index,
                "CREATE FULLTEXT INDEX `x` ON `t` (`a`)",
            ),
            object(SecondaryKind::Inherit, "s.parent"),
        ];
        assert!(waiting.iter().all(SecondaryObject::waits_for_catch_up));
        assert!(!built_at_once
            .iter()
            .any(SecondaryObject::waits_for_catch_up));
    }

    #[test]
    fn long_names_stay_distinct_and_within_the_limit() {
        let long = "a_very_long_table_name_that_goes_on_and_on_and_on_for_ever_index";
        let first = fit_identifier(&format!("{long}_one"), 63);
        let second = fit_identifier(&format!("{long}_two"), 63);
        assert!(first.len() <= 63 && second.len() <= 63);
        assert_ne!(first, second);
        assert_eq!(fit_identifier("short", 63), "short");
        let accented = fit_identifier(&"é".repeat(40), 63);
        assert!(accented.len() <= 63);
    }
}
