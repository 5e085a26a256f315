//! The owner's column rules against the in-process cloud, on SQLite and PostgreSQL: excluded
//! columns never reach the replica (nor do source columns added later under an exclusion),
//! hashed keys still join exactly as the plain values do, fixed values replace the data,
//! restarts decode with the source's layout, and changed rules re-create and reload a table.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dbmirror::clock::now_ms;
use dbmirror::cloud::journal::TenantOp;
use dbmirror::owner::OwnerRules;
use dbmirror::owner::columns::{self, ColumnRules};
use dbmirror::sink::{SinkOptions, TargetKind};
use dbmirror::verify::Verdict;

use crate::support::targets::{TestDb, fresh_databases};
use crate::support::world::{World, key, world};

fn local_databases() -> Vec<TestDb> {
    fresh_databases().into_iter().filter(|db| db.kind != TargetKind::SqlServer).collect()
}

fn rules(json: serde_json::Value) -> Arc<OwnerRules> {
    let env = |_: &str| None;
    let columns: ColumnRules = columns::parse(Some(&json), std::path::Path::new("."), &env).unwrap();
    Arc::new(OwnerRules { columns, ..OwnerRules::default() })
}

fn shaped(owner: &Arc<OwnerRules>) -> SinkOptions {
    SinkOptions { owner: owner.clone(), ..SinkOptions::default() }
}

fn sync(w: &World, db: &TestDb, key: &dbmirror::secrets::SecretKey, columns: &Arc<OwnerRules>) {
    let options = dbmirror::pipeline::SyncOptions { owner: columns.clone(), ..World::options() };
    w.sync_shaped(db, key, &options, &shaped(columns), Arc::new(AtomicBool::new(false)))
        .unwrap_or_else(|e| panic!("{:?}: {e}", db.kind));
}

/// `verify` through the rules: ruled tables must have the source's row count, the others be
/// equal.
fn verify(w: &World, db: &TestDb, columns: &Arc<OwnerRules>, phase: &str) -> Vec<(String, Verdict)> {
    let mut replica = db.open(shaped(columns));
    let truth = || w.cloud.with(|s| s.ground_truth("e2e1")).map_err(|e| format!("{e:?}"));
    let checks =
        dbmirror::verify::verify_live(replica.as_mut(), truth, &shaped(columns), Duration::from_secs(5)).unwrap();
    let bad: Vec<_> = checks.iter().filter(|c| !c.equal).collect();
    assert!(bad.is_empty(), "{:?} {phase}: {bad:?}", db.kind);
    checks.into_iter().map(|c| (c.table, c.verdict)).collect()
}

fn has_column(db: &TestDb, table: &str, column: &str) -> bool {
    db.scalar(
        &format!("SELECT count(*) FROM pragma_table_info('crm7_{table}') WHERE name = '{column}'"),
        &format!(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'crm7' AND table_name = '{table}' \
             AND column_name = '{column}'"
        ),
    ) == 1
}

/// Joins on hashed columns: across tables (both key sequences start at 1, so person ids and
/// contact ids overlap) and within one (people sharing a contact).
fn join_counts(db: &TestDb) -> (i64, i64) {
    let across = db.scalar(
        "SELECT count(*) FROM crm7_person p JOIN crm7_contact c ON c.contact_id = p.person_id",
        "SELECT count(*) FROM crm7.person p JOIN crm7.contact c ON c.contact_id::text = p.person_id::text",
    );
    let within = db.scalar(
        "SELECT count(*) FROM crm7_person p JOIN crm7_person q ON p.contact_id = q.contact_id",
        "SELECT count(*) FROM crm7.person p JOIN crm7.person q ON p.contact_id = q.contact_id",
    );
    (across, within)
}

#[test]
fn excluded_hashed_and_fixed_columns_stay_out_of_the_replica_and_joins_still_work() {
    let hidden = rules(serde_json::json!({
        "HashKey": "a test key of more than sixteen bytes",
        "*": { "Exclude": ["secret_note"] },
        "crm7.person": { "Exclude": ["birthdate"], "Hash": ["person_id", "contact_id"], "Fixed": { "firstname": "x" } },
        "contact": { "Hash": ["contact_id"] }
    }));
    for (db, plain) in local_databases().into_iter().zip(local_databases()) {
        let w = world(false);
        let key = key(&db);
        w.provision(&db, &key, "ruled");
        w.provision(&plain, &key, "plain");
        sync(&w, &db, &key, &hidden);
        w.changes(200);
        // A source column added later under an exclusion, then more changes and a restart
        // (payload-only events decode with the source's layout, stored in the replica).
        let add = TenantOp::AddColumn { table: "crm7.person".into(), column: "secret_note".into() };
        w.cloud.with(|s| s.run("e2e1", &add, now_ms())).unwrap();
        w.changes(200);
        sync(&w, &db, &key, &hidden);
        sync(&w, &plain, &key, &Arc::default());
        w.verify(&plain, "the plain replica");

        let verdicts = verify(&w, &db, &hidden, "with the rules");
        for (table, verdict) in &verdicts {
            let ruled = table == "crm7.person" || table == "crm7.contact";
            assert_eq!(*verdict == Verdict::Masked, ruled, "{:?} {table}: {verdict:?}", db.kind);
        }
        assert!(!has_column(&db, "person", "birthdate") && !has_column(&db, "person", "secret_note"), "{:?}", db.kind);
        assert!(has_column(&plain, "person", "secret_note"));
        let lengths = db.scalar(
            "SELECT count(*) FROM crm7_person WHERE length(person_id) <> 64 OR firstname <> 'x'",
            "SELECT count(*) FROM crm7.person WHERE length(person_id) <> 64 OR firstname <> 'x'",
        );
        assert_eq!(lengths, 0, "{:?}: keys hashed, first names fixed", db.kind);
        let plain_joins = join_counts(&plain);
        assert!(plain_joins.0 > 0 && plain_joins.1 > 0, "{plain_joins:?}");
        assert_eq!(join_counts(&db), plain_joins, "{:?}: hashed keys join as the plain ones", db.kind);
        let person = db.open(shaped(&hidden)).tables().into_iter().find(|r| r.schema.id.table == "person").unwrap();
        assert_eq!(person.state, dbmirror::state::TableState::Ready, "an excluded column's change re-creates nothing");
    }
}

#[test]
fn changed_rules_recreate_and_reload_the_table() {
    let before = rules(serde_json::json!({ "crm7.person": { "Exclude": ["birthdate"] } }));
    let after = rules(serde_json::json!({ "crm7.person": { "Exclude": ["title"] } }));
    for db in local_databases() {
        let w = world(false);
        let key = key(&db);
        w.provision(&db, &key, "rerule");
        sync(&w, &db, &key, &before);
        w.changes(100);
        sync(&w, &db, &key, &after);
        assert!(has_column(&db, "person", "birthdate") && !has_column(&db, "person", "title"), "{:?}", db.kind);
        verify(&w, &db, &after, "after the rules changed");
        let person = db.open(shaped(&after)).tables().into_iter().find(|r| r.schema.id.table == "person").unwrap();
        assert_eq!(person.state, dbmirror::state::TableState::Ready, "{:?}: reloaded", db.kind);
    }
}
