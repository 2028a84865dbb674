//! SQLite's side of schema changes that its ALTER TABLE cannot express.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

/// Replaces `table` with a new definition, keeping every row: SQLite's twelve-step rebuild.
///
/// `create` is the new `CREATE TABLE "{table}_new" (...)` statement, `columns` the columns copied across and
/// `indexes` the `CREATE INDEX` statements to restore, since dropping the old table drops its indexes.
pub async fn rebuild_table(
    manager: &SchemaManager<'_>,
    table: &str,
    create: &str,
    columns: &str,
    indexes: &[&str],
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    db.execute_unprepared(create).await?;
    db.execute_unprepared(&format!(r#"INSERT INTO "{table}_new" ({columns}) SELECT {columns} FROM "{table}""#)).await?;
    db.execute_unprepared(&format!(r#"DROP TABLE "{table}""#)).await?;
    db.execute_unprepared(&format!(r#"ALTER TABLE "{table}_new" RENAME TO "{table}""#)).await?;
    for index in indexes {
        db.execute_unprepared(index).await?;
    }
    ensure_foreign_keys_hold(manager).await
}

/// Fails when any row breaks a foreign key: migrations run with enforcement off (see [`crate::connect`]).
pub async fn ensure_foreign_keys_hold(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let violations =
        db.query_all_raw(Statement::from_string(db.get_database_backend(), "PRAGMA foreign_key_check")).await?;
    if violations.is_empty() {
        return Ok(());
    }
    let tables: Vec<String> = violations.iter().filter_map(|row| row.try_get_by_index::<String>(0).ok()).collect();
    Err(DbErr::Migration(format!(
        "{} row(s) break a foreign key, in table(s): {}",
        violations.len(),
        tables.join(", ")
    )))
}
