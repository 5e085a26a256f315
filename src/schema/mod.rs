//! Table schemas as the source database defines them.
//!
//! Debezium's SQL Server connector publishes every table's structure on the schema-history
//! topic. We keep the *exact* SQL Server column type (`nvarchar(50)`, `datetime2(7)`,
//! `decimal(18,2)`) because both decoding payload-only events and creating replica tables
//! with no loss of precision depend on it.

mod blocked;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use blocked::{BLOCKED_TABLES, is_blocked};

/// Identifies a source table by schema and name (`crm7.person`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    /// The source schema, e.g. `crm7` or `dbo`.
    pub schema: String,
    /// The table name within the schema.
    pub table: String,
}

impl TableId {
    /// Builds an id from its two parts.
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        Self { schema: schema.into(), table: table.into() }
    }

    /// Reads `schema.table` (the form [`fmt::Display`] writes); `None` without a dot.
    pub fn parse(text: &str) -> Option<Self> {
        let (schema, table) = text.split_once('.')?;
        Some(Self::new(schema, table))
    }

    /// The table a resync loads in the background (`<table>__resync`, see
    /// `sink::shadow`): named here, beside the id, because the owner's rules, the state and
    /// the data path all need to tell a shadow from its live table.
    pub fn shadow(&self) -> TableId {
        TableId::new(self.schema.clone(), format!("{}{SHADOW_SUFFIX}", self.table))
    }

    /// The live table this id is the shadow of; `None` for a live table.
    pub fn live(&self) -> Option<TableId> {
        self.table.strip_suffix(SHADOW_SUFFIX).map(|t| TableId::new(self.schema.clone(), t))
    }

    /// Whether this is a resync's shadow table.
    pub fn is_shadow(&self) -> bool {
        self.table.ends_with(SHADOW_SUFFIX)
    }

    /// The live table this id stands for: itself, or the table it is the shadow of. A
    /// shadow follows its live table's rules.
    pub fn live_or_self(&self) -> TableId {
        self.live().unwrap_or_else(|| self.clone())
    }
}

/// The suffix of resync shadow tables' names.
pub const SHADOW_SUFFIX: &str = "__resync";

/// A table as the owner names it in `appsettings.json` or on the command line:
/// `schema.table`, a bare `table` (in any schema) or `*` (every table), in any case. The one
/// place that decides whether a configured name means a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern(String);

/// How closely a [`TablePattern`] names a table: a rule for `schema.table` wins over one for
/// `table`, which wins over `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Closeness {
    /// `*`.
    Any,
    /// The bare table name.
    Name,
    /// `schema.table`.
    Qualified,
}

impl TablePattern {
    /// A pattern as written (trimmed).
    pub fn new(text: &str) -> Self {
        TablePattern(text.trim().to_owned())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `*`.
    pub fn is_any(&self) -> bool {
        self.0 == "*"
    }

    /// How closely this pattern names `id`; `None` when it does not.
    pub fn closeness(&self, id: &TableId) -> Option<Closeness> {
        if self.is_any() {
            Some(Closeness::Any)
        } else if self.0.contains('.') {
            let (schema, table) = self.0.split_once('.').unwrap_or_default();
            (schema.eq_ignore_ascii_case(&id.schema) && table.eq_ignore_ascii_case(&id.table))
                .then_some(Closeness::Qualified)
        } else {
            self.0.eq_ignore_ascii_case(&id.table).then_some(Closeness::Name)
        }
    }

    /// Whether this pattern names `id`.
    pub fn matches(&self, id: &TableId) -> bool {
        self.closeness(id).is_some()
    }
}

impl From<&str> for TablePattern {
    fn from(text: &str) -> Self {
        TablePattern::new(text)
    }
}

impl fmt::Display for TablePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// A SQL Server column type with the parameters that matter for exact storage.
///
/// Lengths follow SQL Server's declaration syntax: `NVarChar(Some(50))` is `nvarchar(50)`
/// (50 characters), `None` is `(max)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum SqlType {
    Bit,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Real,
    /// `float(n)`; SQL Server stores n <= 24 as `real` and the rest as `float(53)`.
    Float,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Numeric {
        precision: u8,
        scale: u8,
    },
    Money,
    SmallMoney,
    Char(Option<u32>),
    VarChar(Option<u32>),
    NChar(Option<u32>),
    NVarChar(Option<u32>),
    Text,
    NText,
    Xml,
    Binary(Option<u32>),
    VarBinary(Option<u32>),
    Image,
    /// `rowversion` / `timestamp`: an 8-byte binary counter.
    RowVersion,
    UniqueIdentifier,
    Date,
    Time {
        scale: u8,
    },
    DateTime,
    SmallDateTime,
    DateTime2 {
        scale: u8,
    },
    DateTimeOffset {
        scale: u8,
    },
    /// A type this client does not know (e.g. `geography`, `hierarchyid`, `sql_variant`):
    /// its values pass through as the connector sent them.
    Other,
}

impl SqlType {
    /// Decimal scale for exact numeric types, used to render and store values with the
    /// column's own number of fraction digits.
    pub fn decimal_scale(self) -> Option<u8> {
        match self {
            SqlType::Decimal { scale, .. } | SqlType::Numeric { scale, .. } => Some(scale),
            SqlType::Money | SqlType::SmallMoney => Some(4),
            _ => None,
        }
    }

    /// Precision and scale of exact numeric types: what every value of the column must fit
    /// (`money` is SQL Server's `decimal(19,4)`, `smallmoney` its `decimal(10,4)`).
    pub fn decimal_shape(self) -> Option<crate::value::Shape> {
        use crate::value::Shape;
        match self {
            SqlType::Decimal { precision, scale } | SqlType::Numeric { precision, scale } => {
                Some(Shape { precision, scale })
            }
            SqlType::Money => Some(Shape { precision: 19, scale: 4 }),
            SqlType::SmallMoney => Some(Shape { precision: 10, scale: 4 }),
            _ => None,
        }
    }

    /// True for the exact numeric types whose values must never pass through a float.
    pub fn is_exact_numeric(self) -> bool {
        self.decimal_scale().is_some()
    }

    /// Builds the type from the connector's `typeName`, `length` and `scale`.
    ///
    /// `typeName` may carry a suffix (`int identity`) or already a full expression
    /// (`nvarchar(50)`); parameters in the expression win over `length`/`scale`.
    pub fn from_parts(type_name: &str, length: Option<i64>, scale: Option<i64>) -> SqlType {
        let lower = type_name.trim().to_ascii_lowercase();
        let (base, args) = match lower.find('(') {
            Some(open) => {
                let inner = lower[open + 1..].trim_end_matches(|c: char| c == ')' || c.is_whitespace());
                (lower[..open].trim().to_string(), Some(inner.to_string()))
            }
            None => (lower.clone(), None),
        };
        // `int identity`, `bigint identity(1,1)` and the like.
        let base = base.split_whitespace().next().unwrap_or("").to_string();
        let (arg1, arg2) = parse_args(args.as_deref());
        let length = arg1.or(length);
        let scale = arg2.or(scale);
        let time_scale = || clamp_u8(if args.is_some() { arg1 } else { scale }.unwrap_or(7), 7);
        match base.as_str() {
            "bit" => SqlType::Bit,
            "tinyint" => SqlType::TinyInt,
            "smallint" => SqlType::SmallInt,
            "int" | "integer" => SqlType::Int,
            "bigint" => SqlType::BigInt,
            "real" => SqlType::Real,
            "float" => match length {
                Some(n) if (1..=24).contains(&n) => SqlType::Real,
                _ => SqlType::Float,
            },
            "decimal" | "numeric" | "dec" => {
                let precision = clamp_u8(length.unwrap_or(18), 38).max(1);
                let scale = clamp_u8(scale.unwrap_or(0), precision);
                if base == "numeric" {
                    SqlType::Numeric { precision, scale }
                } else {
                    SqlType::Decimal { precision, scale }
                }
            }
            "money" => SqlType::Money,
            "smallmoney" => SqlType::SmallMoney,
            "char" | "character" => SqlType::Char(char_len(length, 8000)),
            "varchar" => SqlType::VarChar(char_len(length, 8000)),
            "nchar" => SqlType::NChar(char_len(length, 4000)),
            "nvarchar" | "sysname" => {
                if base == "sysname" {
                    SqlType::NVarChar(Some(128))
                } else {
                    SqlType::NVarChar(char_len(length, 4000))
                }
            }
            "text" => SqlType::Text,
            "ntext" => SqlType::NText,
            "xml" => SqlType::Xml,
            "binary" => SqlType::Binary(char_len(length, 8000)),
            "varbinary" => SqlType::VarBinary(char_len(length, 8000)),
            "image" => SqlType::Image,
            "timestamp" | "rowversion" => SqlType::RowVersion,
            "uniqueidentifier" => SqlType::UniqueIdentifier,
            "date" => SqlType::Date,
            "time" => SqlType::Time { scale: time_scale() },
            "datetime" => SqlType::DateTime,
            "smalldatetime" => SqlType::SmallDateTime,
            "datetime2" => SqlType::DateTime2 { scale: time_scale() },
            "datetimeoffset" => SqlType::DateTimeOffset { scale: time_scale() },
            _ => SqlType::Other,
        }
    }
}

fn parse_args(args: Option<&str>) -> (Option<i64>, Option<i64>) {
    let Some(args) = args else { return (None, None) };
    let mut parts = args.split(',').map(str::trim);
    let first = parts.next().map(|p| if p == "max" { -1 } else { p.parse().unwrap_or(-2) });
    let second = parts.next().and_then(|p| p.parse().ok());
    match first {
        Some(-2) => (None, second),
        other => (other, second),
    }
}

fn clamp_u8(v: i64, max: u8) -> u8 {
    v.clamp(0, i64::from(max)) as u8
}

/// `None` means `(max)`: JDBC reports max types with huge lengths (2^30-1 or 2^31-1), and
/// `-1` is how `(max)` reads in an expression.
fn char_len(length: Option<i64>, max_inline: i64) -> Option<u32> {
    match length {
        Some(n) if (1..=max_inline).contains(&n) => Some(n as u32),
        Some(n) if n < 0 || n > max_inline => None,
        _ => Some(1),
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn len(f: &mut fmt::Formatter<'_>, name: &str, n: Option<u32>) -> fmt::Result {
            match n {
                Some(n) => write!(f, "{name}({n})"),
                None => write!(f, "{name}(max)"),
            }
        }
        match *self {
            SqlType::Bit => f.write_str("bit"),
            SqlType::TinyInt => f.write_str("tinyint"),
            SqlType::SmallInt => f.write_str("smallint"),
            SqlType::Int => f.write_str("int"),
            SqlType::BigInt => f.write_str("bigint"),
            SqlType::Real => f.write_str("real"),
            SqlType::Float => f.write_str("float"),
            SqlType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            SqlType::Numeric { precision, scale } => write!(f, "numeric({precision},{scale})"),
            SqlType::Money => f.write_str("money"),
            SqlType::SmallMoney => f.write_str("smallmoney"),
            SqlType::Char(n) => len(f, "char", n),
            SqlType::VarChar(n) => len(f, "varchar", n),
            SqlType::NChar(n) => len(f, "nchar", n),
            SqlType::NVarChar(n) => len(f, "nvarchar", n),
            SqlType::Text => f.write_str("text"),
            SqlType::NText => f.write_str("ntext"),
            SqlType::Xml => f.write_str("xml"),
            SqlType::Binary(n) => len(f, "binary", n),
            SqlType::VarBinary(n) => len(f, "varbinary", n),
            SqlType::Image => f.write_str("image"),
            SqlType::RowVersion => f.write_str("rowversion"),
            SqlType::UniqueIdentifier => f.write_str("uniqueidentifier"),
            SqlType::Date => f.write_str("date"),
            SqlType::Time { scale } => write!(f, "time({scale})"),
            SqlType::DateTime => f.write_str("datetime"),
            SqlType::SmallDateTime => f.write_str("smalldatetime"),
            SqlType::DateTime2 { scale } => write!(f, "datetime2({scale})"),
            SqlType::DateTimeOffset { scale } => write!(f, "datetimeoffset({scale})"),
            SqlType::Other => f.write_str("sql_variant"),
        }
    }
}

/// One column as the schema history describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    /// Column name, exactly as in the source.
    pub name: String,
    /// The exact SQL Server type.
    pub sql_type: SqlType,
    /// The type name as the connector sent it, kept for types we map to [`SqlType::Other`].
    pub type_name: String,
    /// 1-based position in the table.
    pub position: u32,
    /// `NULL` allowed.
    pub nullable: bool,
    /// Identity column at the source (the replica stores plain values).
    pub identity: bool,
    /// The default as a SQL expression, e.g. `((0))` or `(getdate())`.
    pub default_expression: Option<String>,
}

/// The kind of change a schema-history record describes for one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChangeKind {
    /// The table appeared (or a snapshot re-announced it).
    Create,
    /// The table's structure changed.
    Alter,
    /// The table is gone.
    Drop,
}

impl SchemaChangeKind {
    /// The connector's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaChangeKind::Create => "CREATE",
            SchemaChangeKind::Alter => "ALTER",
            SchemaChangeKind::Drop => "DROP",
        }
    }
}

/// A table's full structure after a schema change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// Which table.
    pub id: TableId,
    /// Columns in position order.
    pub columns: Vec<ColumnSchema>,
    /// Primary key column names in key order.
    pub primary_key: Vec<String>,
}

impl TableSchema {
    /// Finds a column by name; tables are small, and the decoder tries the positional
    /// match first, so a linear scan is the cheap fallback.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// How a table's new schema relates to the one the replica has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaDiff {
    /// Nothing the replica depends on changed.
    Same,
    /// Only nullable columns were appended: `ALTER TABLE … ADD` keeps the data.
    AddColumns(Vec<ColumnSchema>),
    /// Anything else (a type, nullability, order or key change, a dropped column): the table
    /// is dropped, re-created and re-snapshotted.
    Incompatible,
}

impl TableSchema {
    /// A stable fingerprint of what the replica table depends on: column names, exact types,
    /// nullability and order, and the primary key. Defaults are not part of it (they do not
    /// change replicated data). FNV-1a over a canonical text, as 16 hex digits.
    pub fn fingerprint(&self) -> String {
        let mut canonical = String::new();
        for c in &self.columns {
            canonical.push_str(&format!("{}\u{1f}{}\u{1f}{}\u{1e}", c.name, column_type_text(c), c.nullable));
        }
        canonical.push('\u{1d}');
        canonical.push_str(&self.primary_key.join("\u{1f}"));
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in canonical.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// Compares the schema the replica has (`self`) with a new one.
    pub fn diff(&self, new: &TableSchema) -> SchemaDiff {
        let same_column = |a: &ColumnSchema, b: &ColumnSchema| {
            a.name == b.name && column_type_text(a) == column_type_text(b) && a.nullable == b.nullable
        };
        if self.primary_key != new.primary_key || new.columns.len() < self.columns.len() {
            return SchemaDiff::Incompatible;
        }
        if !self.columns.iter().zip(&new.columns).all(|(a, b)| same_column(a, b)) {
            return SchemaDiff::Incompatible;
        }
        let added = &new.columns[self.columns.len()..];
        if added.is_empty() {
            SchemaDiff::Same
        } else if added.iter().all(|c| c.nullable) {
            SchemaDiff::AddColumns(added.to_vec())
        } else {
            SchemaDiff::Incompatible
        }
    }
}

impl TableSchema {
    /// This schema as a schema-history record (`{"tableChanges":[…]}`), the same format the
    /// decoder reads, so a replica can store the definition its tables were created from.
    pub fn to_history_json(&self) -> String {
        use crate::value::write_json_string as q;
        let mut out = String::from("{\"tableChanges\":[{\"type\":\"CREATE\",\"id\":");
        let id = format!("\"{}\".\"{}\"", self.id.schema.replace('"', "\"\""), self.id.table.replace('"', "\"\""));
        q(&mut out, &id);
        out.push_str(",\"table\":{\"primaryKeyColumnNames\":");
        crate::value::write_json_string_array(&mut out, self.primary_key.iter().map(String::as_str));
        out.push_str(",\"columns\":[");
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            q(&mut out, &c.name);
            out.push_str(",\"typeName\":");
            q(&mut out, &c.type_name);
            out.push_str(",\"typeExpression\":");
            q(&mut out, &column_type_text(c));
            out.push_str(&format!(
                ",\"position\":{},\"optional\":{},\"autoIncremented\":{}",
                c.position, c.nullable, c.identity
            ));
            if let Some(d) = &c.default_expression {
                out.push_str(",\"defaultValueExpression\":");
                q(&mut out, d);
            }
            out.push('}');
        }
        out.push_str("]}}]}");
        out
    }
}

/// The exact type as text; unknown types keep the connector's name.
pub fn column_type_text(column: &ColumnSchema) -> String {
    match column.sql_type {
        SqlType::Other => column.type_name.clone(),
        t => t.to_string(),
    }
}

/// One entry of a schema-history record's `tableChanges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChange {
    /// CREATE, ALTER or DROP.
    pub kind: SchemaChangeKind,
    /// The table after the change (for DROP: as last known, possibly without columns).
    pub table: TableSchema,
}

/// The latest known schema of every table, in the order schema history delivered them.
///
/// Lookups take `&str` pairs so the hot path never builds a key string.
#[derive(Debug, Default, Clone)]
pub struct SchemaRegistry {
    tables: HashMap<String, HashMap<String, Arc<TableSchema>>>,
}

impl SchemaRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current schema of `schema.table`, if known.
    pub fn get(&self, schema: &str, table: &str) -> Option<&Arc<TableSchema>> {
        self.tables.get(schema)?.get(table)
    }

    /// Applies one change: CREATE and ALTER replace the table's schema, DROP forgets it.
    pub fn apply(&mut self, change: &TableChange) {
        let id = &change.table.id;
        match change.kind {
            SchemaChangeKind::Drop => {
                if let Some(tables) = self.tables.get_mut(&id.schema) {
                    tables.remove(&id.table);
                }
            }
            SchemaChangeKind::Create | SchemaChangeKind::Alter => {
                self.tables
                    .entry(id.schema.clone())
                    .or_default()
                    .insert(id.table.clone(), Arc::new(change.table.clone()));
            }
        }
    }

    /// Every known table (in no particular order).
    pub fn tables(&self) -> impl Iterator<Item = &Arc<TableSchema>> {
        self.tables.values().flat_map(HashMap::values)
    }

    /// Number of known tables.
    pub fn len(&self) -> usize {
        self.tables.values().map(HashMap::len).sum()
    }

    /// True when no table is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_from_connector_parts() {
        let cases: &[(&str, Option<i64>, Option<i64>, &str)] = &[
            ("int identity", Some(10), Some(0), "int"),
            ("nvarchar", Some(50), None, "nvarchar(50)"),
            ("nvarchar", Some(1073741823), None, "nvarchar(max)"),
            ("varchar", Some(2147483647), None, "varchar(max)"),
            ("varbinary", Some(2147483647), None, "varbinary(max)"),
            ("datetime2", Some(27), Some(7), "datetime2(7)"),
            ("datetime2", Some(23), Some(3), "datetime2(3)"),
            ("time", Some(16), Some(7), "time(7)"),
            ("datetimeoffset", Some(34), Some(7), "datetimeoffset(7)"),
            ("decimal", Some(18), Some(2), "decimal(18,2)"),
            ("numeric", Some(38), Some(18), "numeric(38,18)"),
            ("money", Some(19), Some(4), "money"),
            ("float", Some(53), None, "float"),
            ("float", Some(24), None, "real"),
            ("nvarchar(50)", None, None, "nvarchar(50)"),
            ("NVARCHAR(MAX)", None, None, "nvarchar(max)"),
            ("decimal(18, 2)", None, None, "decimal(18,2)"),
            ("datetime2(7)", Some(27), Some(7), "datetime2(7)"),
            ("datetime2(0)", None, None, "datetime2(0)"),
            ("uniqueidentifier", Some(36), None, "uniqueidentifier"),
            ("bigint identity(1,1)", None, None, "bigint"),
        ];
        for (name, len, scale, want) in cases {
            assert_eq!(SqlType::from_parts(name, *len, *scale).to_string(), *want, "{name}");
        }
    }

    fn col(name: &str, sql_type: SqlType, nullable: bool) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            sql_type,
            type_name: sql_type.to_string(),
            position: 0,
            nullable,
            identity: false,
            default_expression: None,
        }
    }

    #[test]
    fn diff_tells_compatible_from_incompatible_changes() {
        let base = TableSchema {
            id: TableId::new("crm7", "t"),
            columns: vec![col("id", SqlType::Int, false), col("name", SqlType::NVarChar(Some(50)), true)],
            primary_key: vec!["id".into()],
        };
        let mut same = base.clone();
        same.columns[1].default_expression = Some("('')".into());
        assert_eq!(base.diff(&same), SchemaDiff::Same);
        assert_eq!(base.fingerprint(), same.fingerprint());

        let mut added = base.clone();
        added.columns.push(col("extra", SqlType::Date, true));
        assert_eq!(base.diff(&added), SchemaDiff::AddColumns(vec![col("extra", SqlType::Date, true)]));
        assert_ne!(base.fingerprint(), added.fingerprint());

        let mut not_null = base.clone();
        not_null.columns.push(col("extra", SqlType::Date, false));
        assert_eq!(base.diff(&not_null), SchemaDiff::Incompatible);
        let mut retyped = base.clone();
        retyped.columns[1].sql_type = SqlType::DateTime;
        assert_eq!(base.diff(&retyped), SchemaDiff::Incompatible);
        let mut dropped = base.clone();
        dropped.columns.pop();
        assert_eq!(base.diff(&dropped), SchemaDiff::Incompatible);
        let mut rekeyed = base.clone();
        rekeyed.primary_key = vec!["name".into()];
        assert_eq!(base.diff(&rekeyed), SchemaDiff::Incompatible);
    }

    #[test]
    fn registry_applies_changes_in_order() {
        let mut reg = SchemaRegistry::new();
        let table = TableSchema { id: TableId::new("crm7", "person"), columns: vec![], primary_key: vec![] };
        reg.apply(&TableChange { kind: SchemaChangeKind::Create, table: table.clone() });
        assert!(reg.get("crm7", "person").is_some());
        reg.apply(&TableChange { kind: SchemaChangeKind::Drop, table });
        assert!(reg.get("crm7", "person").is_none());
        assert!(reg.is_empty());
    }

    #[test]
    fn a_pattern_names_a_table_qualified_by_name_or_all() {
        let person = TableId::new("crm7", "Person");
        let closeness = |p: &str| TablePattern::new(p).closeness(&person);
        assert_eq!(closeness("CRM7.person"), Some(Closeness::Qualified));
        assert_eq!(closeness("person"), Some(Closeness::Name));
        assert_eq!(closeness(" * "), Some(Closeness::Any));
        assert_eq!(closeness("dbo.person"), None);
        assert_eq!(closeness("persons"), None);
        assert!(Closeness::Qualified > Closeness::Name && Closeness::Name > Closeness::Any);
        assert_eq!(person.shadow().live(), Some(person.clone()));
        assert!(person.shadow().is_shadow() && !person.is_shadow());
        assert_eq!(person.shadow().live_or_self(), person);
    }
}
