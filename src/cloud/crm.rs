//! The simulated tenant's schema: a SuperOffice-like `crm7` with realistic column types.
//!
//! Column types follow the kinds a CRM database really has: int and bigint keys, bounded and
//! `max` Unicode text, legacy `datetime` next to `datetime2(7)`, `date`, exact decimals and
//! `money`, `bit`, `float`, `varbinary(max)` and `uniqueidentifier`, with defaults and
//! NULL / NOT NULL. A few tables from the blocked list exist at the source too; the service
//! never publishes them.

use crate::schema::{ColumnSchema, SqlType, TableId, TableSchema, is_blocked};

/// `(name, type, nullable, default)` for one column.
type Col = (&'static str, &'static str, bool, Option<&'static str>);

const TABLES: &[(&str, &[Col])] = &[
    (
        "contact",
        &[
            ("contact_id", "int", false, None),
            ("name", "nvarchar(80)", false, Some("('')")),
            ("department", "nvarchar(60)", true, None),
            ("orgnr", "nvarchar(20)", true, None),
            ("number1", "nvarchar(20)", true, None),
            ("business_idx", "int", true, Some("((0))")),
            ("category_idx", "int", true, Some("((0))")),
            ("registered", "datetime", false, Some("(getdate())")),
            ("updated", "datetime2(7)", true, None),
            ("deleted", "bit", false, Some("((0))")),
            ("text_id", "int", true, None),
        ],
    ),
    (
        "person",
        &[
            ("person_id", "int", false, None),
            ("contact_id", "int", false, None),
            ("firstname", "nvarchar(50)", false, Some("('')")),
            ("middlename", "nvarchar(50)", true, None),
            ("lastname", "nvarchar(50)", false, Some("('')")),
            ("title", "nvarchar(80)", true, None),
            ("birthdate", "date", true, None),
            ("registered", "datetime", false, Some("(getdate())")),
            ("updated", "datetime2(7)", true, None),
            ("retired", "bit", false, Some("((0))")),
        ],
    ),
    (
        "sale",
        &[
            ("sale_id", "int", false, None),
            ("contact_id", "int", true, None),
            ("person_id", "int", true, None),
            ("heading", "nvarchar(255)", true, None),
            ("amount", "money", true, Some("((0))")),
            ("probability", "smallint", true, None),
            ("saledate", "datetime", true, None),
            ("status", "tinyint", false, Some("((1))")),
            ("earning", "decimal(19,4)", true, None),
            ("updated", "datetime2(7)", true, None),
        ],
    ),
    (
        "appointment",
        &[
            ("appointment_id", "int", false, None),
            ("contact_id", "int", true, None),
            ("person_id", "int", true, None),
            ("do_by", "datetime", true, None),
            ("end_date", "datetime2(7)", true, None),
            ("location", "nvarchar(254)", true, None),
            ("alarm_lead_time", "int", true, None),
            ("done", "bit", false, Some("((0))")),
            ("text_id", "int", true, None),
        ],
    ),
    (
        "project",
        &[
            ("project_id", "int", false, None),
            ("name", "nvarchar(80)", false, Some("('')")),
            ("project_number", "nvarchar(30)", true, None),
            ("done", "bit", false, Some("((0))")),
            ("end_date", "date", true, None),
            ("budget", "decimal(18,2)", true, None),
            ("registered", "datetime2(7)", true, None),
        ],
    ),
    (
        "document",
        &[
            ("document_id", "int", false, None),
            ("header", "nvarchar(255)", true, None),
            ("name", "nvarchar(254)", true, None),
            ("our_ref", "nvarchar(80)", true, None),
            ("your_ref", "nvarchar(80)", true, None),
            ("doc_date", "date", true, None),
            ("registered", "datetime", true, None),
        ],
    ),
    (
        "ticket",
        &[
            ("id", "int", false, None),
            ("title", "nvarchar(255)", true, None),
            ("created_at", "datetime2(7)", false, Some("(sysutcdatetime())")),
            ("status", "int", false, Some("((1))")),
            ("priority", "int", true, None),
            ("time_to_reply", "float", true, None),
            ("read_status", "smallint", true, None),
        ],
    ),
    (
        "ticket_message",
        &[
            ("id", "bigint", false, None),
            ("ticket_id", "int", false, None),
            ("created_at", "datetime2(7)", false, None),
            ("body", "nvarchar(max)", true, None),
            ("author", "nvarchar(255)", true, None),
            ("important", "bit", false, Some("((0))")),
        ],
    ),
    (
        "associate",
        &[
            ("associate_id", "int", false, None),
            ("name", "nvarchar(20)", false, None),
            ("person_id", "int", true, None),
            ("type", "smallint", false, Some("((0))")),
            ("deleted", "bit", false, Some("((0))")),
            ("last_login", "datetime2(7)", true, None),
        ],
    ),
    ("text", &[("text_id", "int", false, None), ("text", "nvarchar(max)", true, None)]),
    (
        "udcontactsmall",
        &[
            ("udcontactSmall_id", "int", false, None),
            ("long01", "int", true, None),
            ("long02", "int", true, None),
            ("double01", "float", true, None),
            ("string01", "nvarchar(40)", true, None),
            ("string02", "nvarchar(40)", true, None),
            ("date01", "datetime", true, None),
            ("bool01", "bit", true, None),
        ],
    ),
    (
        "email",
        &[
            ("email_id", "int", false, None),
            ("contact_id", "int", true, None),
            ("person_id", "int", true, None),
            ("email_address", "nvarchar(255)", false, None),
            ("rank", "smallint", true, None),
            ("last_sent", "datetime2(7)", true, None),
        ],
    ),
    (
        "phone",
        &[
            ("phone_id", "int", false, None),
            ("owner_id", "int", false, None),
            ("type_idx", "smallint", false, None),
            ("phone", "nvarchar(40)", true, None),
            ("search_phone", "nvarchar(40)", true, None),
        ],
    ),
    (
        "address",
        &[
            ("address_id", "int", false, None),
            ("owner_id", "int", false, None),
            ("address1", "nvarchar(254)", true, None),
            ("zipcode", "nvarchar(20)", true, None),
            ("city", "nvarchar(40)", true, None),
            ("latitude", "decimal(9,6)", true, None),
            ("longitude", "decimal(9,6)", true, None),
        ],
    ),
    (
        "quote",
        &[
            ("quote_id", "int", false, None),
            ("sale_id", "int", false, None),
            ("total", "decimal(38,10)", true, None),
            ("discount", "decimal(5,2)", true, None),
            ("valid_until", "date", true, None),
            ("accepted", "datetimeoffset(7)", true, None),
        ],
    ),
    (
        "product",
        &[
            ("product_id", "int", false, None),
            ("code", "nvarchar(50)", false, None),
            ("name", "nvarchar(255)", true, None),
            ("price", "decimal(18,2)", true, None),
            ("cost", "smallmoney", true, None),
            ("guid", "uniqueidentifier", false, Some("(newid())")),
        ],
    ),
    (
        "relations",
        &[
            ("source_record", "int", false, None),
            ("destination_record", "int", false, None),
            ("reldef_id", "int", false, None),
            ("comment", "nvarchar(255)", true, None),
        ],
    ),
    (
        "selection",
        &[
            ("selection_id", "int", false, None),
            ("name", "nvarchar(254)", false, None),
            ("description", "nvarchar(max)", true, None),
            ("updated", "datetime", true, None),
            ("member_count", "bigint", true, None),
        ],
    ),
    (
        "attachment",
        &[
            ("attachment_id", "int", false, None),
            ("name", "nvarchar(255)", true, None),
            ("content_type", "nvarchar(255)", true, None),
            ("size", "bigint", true, None),
            ("content", "varbinary(max)", true, None),
        ],
    ),
    (
        "chat_session",
        &[
            ("chat_session_id", "bigint", false, None),
            ("customer_name", "nvarchar(255)", true, None),
            ("first_message", "datetimeoffset(7)", true, None),
            ("rating", "real", true, None),
        ],
    ),
    // At the source, never published: blocked tables.
    ("sequence", &[("name", "nvarchar(40)", false, None), ("value", "bigint", false, None)]),
    ("credentials", &[("credentials_id", "int", false, None), ("secret", "nvarchar(max)", true, None)]),
    ("userpreference", &[("userpreference_id", "int", false, None), ("prefkey", "nvarchar(255)", true, None)]),
];

/// Primary keys: the first column, except `relations` (composite).
fn primary_key(table: &str, columns: &[Col]) -> Vec<String> {
    match table {
        "relations" => vec!["source_record".into(), "destination_record".into(), "reldef_id".into()],
        "sequence" => vec!["name".into()],
        _ => vec![columns[0].0.into()],
    }
}

/// Every table of the simulated source, blocked ones included.
pub fn source_tables() -> Vec<TableSchema> {
    TABLES
        .iter()
        .map(|(name, cols)| TableSchema {
            id: TableId::new("crm7", *name),
            columns: cols
                .iter()
                .enumerate()
                .map(|(i, (col, ty, nullable, default))| ColumnSchema {
                    name: (*col).into(),
                    sql_type: SqlType::from_parts(ty, None, None),
                    type_name: (*ty).into(),
                    position: i as u32 + 1,
                    nullable: *nullable,
                    identity: i == 0 && *name != "relations" && *name != "sequence",
                    default_expression: default.map(str::to_owned),
                })
                .collect(),
            primary_key: primary_key(name, cols),
        })
        .collect()
}

/// The tables the Replication Service publishes (blocked ones left out).
pub fn published_tables() -> Vec<TableSchema> {
    source_tables().into_iter().filter(|t| !is_blocked(&t.id.table)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_realistic_and_blocked_tables_stay_unpublished() {
        let all = source_tables();
        let published = published_tables();
        assert_eq!(all.len() - published.len(), 3);
        assert!(published.len() >= 20);
        assert!(published.iter().all(|t| !t.primary_key.is_empty()));
        let types: std::collections::HashSet<String> =
            published.iter().flat_map(|t| t.columns.iter().map(|c| c.sql_type.to_string())).collect();
        for needed in [
            "int",
            "bigint",
            "nvarchar(max)",
            "datetime",
            "datetime2(7)",
            "date",
            "money",
            "bit",
            "float",
            "varbinary(max)",
            "uniqueidentifier",
            "decimal(38,10)",
            "datetimeoffset(7)",
        ] {
            assert!(types.contains(needed), "{needed} missing");
        }
        assert!(!types.contains("sql_variant"), "every type must be known");
    }
}
