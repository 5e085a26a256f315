//! Tables the Replication Service never publishes and the replica never creates.
//!
//! The list is SuperOffice's published blocked-table list (Travel, Audience, internal
//! configuration, search index, SAINT counters, private e-mail, credentials, high-churn
//! tables). The "dictionary information tables" group has no fixed names and is not listed.

/// Blocked table names (schema-independent, lower case), sorted for binary search.
pub const BLOCKED_TABLES: &[&str] = &[
    "activeuser",
    "area",
    "areauserassignment",
    "areauserinclusion",
    "audienceconfig",
    "audiencelayout",
    "audiencelayoutlink",
    "audiencevisibility",
    "batchtask",
    "batchtaskdefinition",
    "binaryobject",
    "cacheinvalidation",
    "cachetables",
    "cc_template",
    "config",
    "configurablescreendelta",
    "connectionconfigfield",
    "countervalue",
    "credentials",
    "cust_config",
    "dashboard",
    "dashboard_theme",
    "dashboard_tile",
    "dashboard_tile_definition",
    "dashboard_tile_field",
    "dbi_agent",
    "dbi_agent_field",
    "dbi_agent_schedule",
    "email_account",
    "email_attachment",
    "email_folder",
    "email_item",
    "erpsynclog",
    "foreignapp",
    "foreigndevice",
    "foreignkey",
    "form_keys",
    "freetextindex",
    "freetextstopwords",
    "freetextwords",
    "history",
    "importdefault",
    "importfield",
    "importobject",
    "importrelation",
    "inbox",
    "item_config",
    "kb_entry_words",
    "licenseassoclink",
    "licenssatllink",
    "locking",
    "log_events",
    "login",
    "login_customer",
    "mergemovelog",
    "message",
    "messagehandler",
    "modulelicense",
    "moduleowner",
    "notice_frame",
    "notify",
    "olefield",
    "olefieldtext",
    "olesubject",
    "olesubjecttext",
    "oleview",
    "oleviewtext",
    "outbox",
    "prefdesc",
    "prefdescline",
    "registry",
    "satellite",
    "script_trace_run",
    "searchcriteria",
    "searchcriteriagroup",
    "searchcriterion",
    "searchcriterionvalue",
    "sequence",
    "service_auth",
    "session_object",
    "sorcriteria",
    "sorfct",
    "sorfield",
    "sorlabellayout",
    "soroperators",
    "sorpublish",
    "sorpublishgrouplink",
    "sorsection",
    "sortemplate",
    "statusvalue",
    "superlistcolumnsize",
    "systemevent",
    "taborder",
    "timestamps",
    "travelcurrent",
    "travelgenerateddatabase",
    "travelgeneratedtransaction",
    "travelidmapping",
    "traveller",
    "traveltransactionlog",
    "trayapp",
    "udtemplarge",
    "udtempsmall",
    "usagestats",
    "user_attribute",
    "user_candidate",
    "userpreference",
    "webappusage",
    "webhook",
    "winpossize",
    "word_relations",
];

/// True if `table` (any case) is on the blocked list.
pub fn is_blocked(table: &str) -> bool {
    let lower = table.to_ascii_lowercase();
    BLOCKED_TABLES.binary_search(&lower.as_str()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_list_is_sorted_and_matches_any_case() {
        assert!(BLOCKED_TABLES.windows(2).all(|w| w[0] < w[1]));
        assert!(is_blocked("sequence"));
        assert!(is_blocked("Credentials"));
        assert!(is_blocked("binaryobject"));
        assert!(!is_blocked("person"));
        assert!(!is_blocked("contact"));
    }
}
