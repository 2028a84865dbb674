//! Every rule the schema enforces refuses a violating row, and the error names the rule.

use sea_orm::{ConnectionTrait, DatabaseConnection};
use service::constraint;
use tests::{Backend, TestDatabase, on_both_backends};

// One transaction: the user and their primary email reference each other, checked at commit.
const SETUP: &str = "
    BEGIN;
    INSERT INTO users (username, hashed_password, full_name, email) VALUES ('alice', 'x', 'Alice', 'alice@example.com');
    INSERT INTO emails (email, username) VALUES ('alice@example.com', 'alice');
    INSERT INTO users (username, hashed_password, full_name, email) VALUES ('bob', 'x', 'Bob', NULL);
    INSERT INTO accounts (owner, balance, currency) VALUES ('alice', 100, 'USD'), ('alice', 0, 'EUR');
    COMMIT;
";

async fn violated(db: &DatabaseConnection, sql: &str) -> Option<String> {
    let err = db.execute_unprepared(sql).await.expect_err(&format!("refused: {sql}"));
    constraint::violated(&err)
}

async fn each_named_constraint_refuses_a_violating_row_and_names_itself(backend: Backend) {
    let database = TestDatabase::migrated(backend).await;
    let db = database.connection().await;
    db.execute_unprepared(SETUP).await.expect("setup");

    let cases = [
        ("owner_currency_key", "INSERT INTO accounts (owner, balance, currency) VALUES ('alice', 0, 'USD')"),
        ("accounts_balance_nonnegative", "UPDATE accounts SET balance = -1 WHERE id = 1"),
        ("accounts_currency_supported", "INSERT INTO accounts (owner, balance, currency) VALUES ('alice', 0, 'XYZ')"),
        (
            "entries_amount_nonzero",
            "INSERT INTO entries (account_id, amount, balance_after, account_seq) VALUES (1, 0, 0, 1)",
        ),
        (
            "transfers_amount_positive",
            "INSERT INTO transfers (from_account_id, to_account_id, amount) VALUES (1, 2, 0)",
        ),
        (
            "transfers_distinct_accounts",
            "INSERT INTO transfers (from_account_id, to_account_id, amount) VALUES (1, 1, 5)",
        ),
        (
            "users_pkey",
            "INSERT INTO users (username, hashed_password, full_name, email) VALUES ('alice', 'x', 'A', NULL)",
        ),
        ("emails_pkey", "INSERT INTO emails (email, username) VALUES ('alice@example.com', 'bob')"),
        ("users_role_known", "UPDATE users SET role = 'king' WHERE username = 'alice'"),
    ];
    for (name, sql) in cases {
        assert_eq!(violated(&db, sql).await.as_deref(), Some(name), "{sql}");
    }
}

async fn foreign_keys_refuse_orphans_and_deletes_that_would_orphan(backend: Backend) {
    let database = TestDatabase::migrated(backend).await;
    let db = database.connection().await;
    db.execute_unprepared(SETUP).await.expect("setup");
    db.execute_unprepared(
        "INSERT INTO entries (account_id, amount, balance_after, account_seq) VALUES (1, 100, 100, 1)",
    )
    .await
    .expect("an entry");

    // SQLite reports foreign-key failures without a name; PostgreSQL names them.
    let named = |name: &'static str| (backend == Backend::Postgres).then(|| name.to_owned());
    assert_eq!(
        violated(&db, "INSERT INTO accounts (owner, balance, currency) VALUES ('ghost', 0, 'CAD')").await,
        named("accounts_owner_fkey")
    );
    assert_eq!(
        violated(&db, "INSERT INTO entries (account_id, amount, balance_after, account_seq) VALUES (999, 5, 5, 1)")
            .await,
        named("entries_account_id_fkey")
    );
    assert_eq!(violated(&db, "DELETE FROM accounts WHERE id = 1").await, named("entries_account_id_fkey"));
    assert_eq!(
        violated(&db, "UPDATE users SET email = 'nobody@example.com' WHERE username = 'alice'").await,
        named("users_primary_email_fkey")
    );
}

on_both_backends!(
    each_named_constraint_refuses_a_violating_row_and_names_itself,
    foreign_keys_refuse_orphans_and_deletes_that_would_orphan,
);
