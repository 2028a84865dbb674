//! The seed lesson's migration story: reversible, and atomic when it fails.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::json;
use tests::{
    AliceAndBob, Backend, TRANSFER, TestDatabase, migrate, on_both_backends, schema_of, spawn_app, transfer_input,
};

async fn down_one_and_up_one_reproduce_the_schema_exactly(backend: Backend) {
    let db = TestDatabase::migrated(backend).await;
    let conn = db.migration_connection().await;
    let before = schema_of(&conn).await;

    for steps in 1..=<migration::Migrator as migration::MigratorTrait>::migrations().len() as u32 {
        migrate(&db, false, Some(steps)).await.expect("down");
        assert_ne!(schema_of(&conn).await, before, "down {steps} changed nothing");
        migrate(&db, true, Some(steps)).await.expect("up");
        assert_eq!(schema_of(&conn).await, before, "down {steps} + up {steps} differ");
    }
}

async fn down_all_and_up_reproduce_the_schema_exactly(backend: Backend) {
    let db = TestDatabase::migrated(backend).await;
    let conn = db.migration_connection().await;
    let before = schema_of(&conn).await;

    migrate(&db, false, None).await.expect("down all");
    let empty: Vec<String> = schema_of(&conn).await.into_iter().filter(|o| !o.contains("seaql_migrations")).collect();
    assert!(empty.is_empty(), "down all left {empty:#?}");
    migrate(&db, true, None).await.expect("up all");

    assert_eq!(schema_of(&conn).await, before);
}

async fn add_users_fails_naming_owners_that_are_not_users_and_changes_nothing(backend: Backend) {
    let db = TestDatabase::empty(backend).await;
    migrate(&db, true, Some(1)).await.expect("init_schema");
    let conn = db.migration_connection().await;
    conn.execute_unprepared(
        "INSERT INTO accounts (owner, balance, currency) VALUES ('ghost', 100, 'USD'), ('casper', 5, 'EUR')",
    )
    .await
    .expect("insert accounts");
    let before = schema_of(&conn).await;

    let err = migrate(&db, true, None).await.expect_err("add_users must fail");

    let message = err.to_string();
    assert!(message.contains("\"ghost\"") && message.contains("\"casper\""), "{message}");
    assert_eq!(schema_of(&conn).await, before, "a failed migration changed the schema");
    let applied = conn
        .query_all_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT version FROM seaql_migrations",
        ))
        .await
        .expect("read migrations");
    assert_eq!(applied.len(), 1, "only init_schema stays applied");
    let accounts = conn
        .query_all_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            "SELECT owner FROM accounts ORDER BY owner",
        ))
        .await
        .expect("the accounts are intact");
    let owners: Vec<String> = accounts.iter().map(|r| r.try_get_by_index(0).expect("owner")).collect();
    assert_eq!(owners, ["casper", "ghost"]);

    conn.execute_unprepared("DELETE FROM accounts").await.expect("delete");
    migrate(&db, true, None).await.expect("with the orphans gone, add_users applies");
}

async fn idempotency_keys_survive_moving_off_their_transfers_and_back(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let mut input = transfer_input(&alice.account, &bob.account, 100, "USD");
    input["input"]["idempotencyKey"] = json!("order-1");
    let first =
        app.graphql(TRANSFER, input.clone(), Some(&alice.token)).await.assert_ok().str("createTransfer/transfer/id");
    // The tables hold keys, not the API's global ids.
    let transfer = app.count("SELECT id FROM transfers").await;
    let from = app.count("SELECT id FROM accounts WHERE owner = 'alice'").await;
    let to = app.count("SELECT id FROM accounts WHERE owner = 'bob'").await;

    let steps = steps_to_undo("m20260101_000006_transfer_idempotency");
    migrate(&app.database, false, Some(steps)).await.expect("down to idempotency_keys");
    let conn = app.database.migration_connection().await;
    let moved = rows(&conn, "SELECT username || ' ' || key || ' ' || transfer_id FROM idempotency_keys").await;
    assert_eq!(moved, [format!("alice order-1 {transfer}")]);
    // Hashes made before `account_closing` spelt the currency as Rust's `Debug` did; its `down` restores that.
    let debug_spelling = hash(&format!("{from}|{to}|100|Usd"));
    assert_eq!(rows(&conn, "SELECT request_hash FROM idempotency_keys").await, [debug_spelling]);
    migrate(&app.database, true, Some(steps)).await.expect("up onto transfers");
    assert_eq!(rows(&conn, "SELECT idempotency_key FROM transfers").await, ["order-1"]);
    assert_eq!(rows(&conn, "SELECT request_hash FROM transfers").await, [hash(&format!("{from}|{to}|100|USD"))]);

    let retry =
        app.graphql(TRANSFER, input.clone(), Some(&alice.token)).await.assert_ok().str("createTransfer/transfer/id");
    assert_eq!(retry, first, "the retry replays the transfer made before the keys moved");
    input["input"]["amount"] = json!(101);
    let changed = app.graphql(TRANSFER, input, Some(&alice.token)).await;
    assert_eq!(changed.error_code(), Some("IDEMPOTENCY_KEY_REUSED"));
}

/// How many steps `down` takes, from the newest migration, to undo the migration `name`.
fn steps_to_undo(name: &str) -> u32 {
    let names: Vec<String> = Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
    let position = names.iter().position(|n| n == name).expect("a migration of that name");
    u32::try_from(names.len() - position).expect("a few migrations")
}

/// A request hash as transfers store it: URL-safe base64 of SHA-256.
fn hash(canonical: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// The first column of every row `sql` returns, as text.
async fn rows(conn: &DatabaseConnection, sql: &str) -> Vec<String> {
    let rows = conn.query_all_raw(Statement::from_string(conn.get_database_backend(), sql)).await.expect(sql);
    rows.iter().map(|row| row.try_get_by_index::<String>(0).expect("text")).collect()
}

on_both_backends!(
    down_one_and_up_one_reproduce_the_schema_exactly,
    down_all_and_up_reproduce_the_schema_exactly,
    add_users_fails_naming_owners_that_are_not_users_and_changes_nothing,
    idempotency_keys_survive_moving_off_their_transfers_and_back,
);
