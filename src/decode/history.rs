//! Schema-history / schema-change records: `tableChanges` into [`TableChange`]s.
//!
//! Both the public schema-change topic (`{"schema":…,"payload":{…,"tableChanges":[…]}}`) and
//! the connector's internal history records (`{"source":…,"position":…,"tableChanges":[…]}`)
//! carry the same `tableChanges` array, so one reader serves both.

use super::json::Json;
use super::{DecodeErrorKind, need};
use crate::schema::{ColumnSchema, SchemaChangeKind, SqlType, TableChange, TableId, TableSchema};

/// Reads a table definition a replica stored with [`TableSchema::to_history_json`] (a
/// one-change schema-history record): the last change's table.
pub fn read_definition(text: &str) -> Result<TableSchema, DecodeErrorKind> {
    let mut bytes = text.as_bytes().to_vec();
    let tape = simd_json::to_tape(&mut bytes).map_err(|e| DecodeErrorKind::Json(e.to_string()))?;
    let root = Json::root(&tape.0).ok_or(DecodeErrorKind::Missing("tableChanges"))?;
    read_table_changes(root)?.pop().map(|c| c.table).ok_or(DecodeErrorKind::Missing("tableChanges[0]"))
}

/// Reads every entry of `payload.tableChanges`.
pub(crate) fn read_table_changes(payload: Json<'_, '_>) -> Result<Vec<TableChange>, DecodeErrorKind> {
    let changes = need(payload, "tableChanges")?;
    if !matches!(changes.node(), simd_json::Node::Array { .. }) {
        return Err(DecodeErrorKind::field("tableChanges", "array", changes.kind()));
    }
    let default_schema = payload.get("schemaName").and_then(Json::as_str);
    changes.elements().map(|change| read_change(change, default_schema)).collect()
}

fn read_change(change: Json<'_, '_>, default_schema: Option<&str>) -> Result<TableChange, DecodeErrorKind> {
    let kind = match need_str(change, "type")? {
        "CREATE" => SchemaChangeKind::Create,
        "ALTER" => SchemaChangeKind::Alter,
        "DROP" => SchemaChangeKind::Drop,
        other => {
            return Err(DecodeErrorKind::Invalid {
                field: "tableChanges.type",
                reason: format!("unknown change type `{other}`"),
            });
        }
    };
    let id = parse_table_id(need_str(change, "id")?, default_schema)?;
    let table = change.get("table").filter(|t| t.is_object());
    let (columns, primary_key) = match table {
        Some(table) => (read_columns(table)?, read_primary_key(table)?),
        None if kind == SchemaChangeKind::Drop => (Vec::new(), Vec::new()),
        None => return Err(DecodeErrorKind::Missing("tableChanges.table")),
    };
    Ok(TableChange { kind, table: TableSchema { id, columns, primary_key } })
}

fn read_primary_key(table: Json<'_, '_>) -> Result<Vec<String>, DecodeErrorKind> {
    let Some(pk) = table.get("primaryKeyColumnNames").filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    pk.elements()
        .map(|name| {
            name.as_str()
                .map(str::to_owned)
                .ok_or_else(|| DecodeErrorKind::field("primaryKeyColumnNames[]", "string", name.kind()))
        })
        .collect()
}

fn read_columns(table: Json<'_, '_>) -> Result<Vec<ColumnSchema>, DecodeErrorKind> {
    let mut columns = Vec::new();
    for (index, column) in need(table, "columns")?.elements().enumerate() {
        let name = need_str(column, "name")?.to_owned();
        let type_name = need_str(column, "typeName")?;
        let expression = column.get("typeExpression").and_then(Json::as_str);
        let length = column.get("length").and_then(Json::as_i64);
        let scale = column.get("scale").and_then(Json::as_i64);
        // A full expression such as `nvarchar(50)` carries its own parameters.
        let spelled = expression.filter(|e| e.contains('(')).unwrap_or(type_name);
        let sql_type = SqlType::from_parts(spelled, length, scale);
        let position = column.get("position").and_then(Json::as_i64).unwrap_or(index as i64 + 1);
        columns.push(ColumnSchema {
            name,
            sql_type,
            type_name: type_name.to_owned(),
            position: u32::try_from(position).unwrap_or(u32::MAX),
            nullable: column.get("optional").and_then(Json::as_bool).unwrap_or(true),
            identity: column.get("autoIncremented").and_then(Json::as_bool).unwrap_or(false)
                || type_name.to_ascii_lowercase().contains("identity"),
            default_expression: column.get("defaultValueExpression").and_then(Json::as_str).map(str::to_owned),
        });
    }
    columns.sort_by_key(|c| c.position);
    Ok(columns)
}

fn need_str<'a>(obj: Json<'_, 'a>, field: &'static str) -> Result<&'a str, DecodeErrorKind> {
    let v = need(obj, field)?;
    v.as_str().ok_or_else(|| DecodeErrorKind::field(field, "string", v.kind()))
}

/// Splits Debezium's table id: `"testDB"."dbo"."customers"` or `testDB.dbo.customers`
/// (database optional). Quoted parts may contain dots; `""` inside quotes is a quote.
pub(crate) fn parse_table_id(id: &str, default_schema: Option<&str>) -> Result<TableId, DecodeErrorKind> {
    let mut parts: Vec<String> = Vec::new();
    let mut chars = id.chars().peekable();
    let bad = || DecodeErrorKind::Invalid { field: "tableChanges.id", reason: format!("cannot read table id `{id}`") };
    while chars.peek().is_some() {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(bad()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        parts.push(part);
        match chars.next() {
            Some('.') | None => {}
            Some(_) => return Err(bad()),
        }
    }
    match parts.as_slice() {
        [.., schema, table] if !table.is_empty() => Ok(TableId::new(schema.clone(), table.clone())),
        [table] if !table.is_empty() => match default_schema {
            Some(schema) => Ok(TableId::new(schema, table.clone())),
            None => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids() {
        assert_eq!(parse_table_id("\"testDB\".\"dbo\".\"customers\"", None).unwrap(), TableId::new("dbo", "customers"));
        assert_eq!(parse_table_id("crm.crm7.person", None).unwrap(), TableId::new("crm7", "person"));
        assert_eq!(parse_table_id("\"db\".\"s.x\".\"a\"\"b\"", None).unwrap(), TableId::new("s.x", "a\"b"));
        assert_eq!(parse_table_id("person", Some("crm7")).unwrap(), TableId::new("crm7", "person"));
        assert!(parse_table_id("", None).is_err());
        assert!(parse_table_id("\"unterminated", None).is_err());
        assert!(parse_table_id("\"a\"x.\"b\"", None).is_err());
    }
}
