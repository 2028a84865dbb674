//! Accounts, deposits, withdrawals and transfers: the ledger.
//!
//! Money enters the bank only by a banker's deposit, leaves it only by a withdrawal and moves only by transfers
//! ([`transfer`]). Entries and transfers are never updated or deleted, and every balance equals the sum of its
//! account's entries. Should the
//! database report a serialization failure or deadlock (as SERIALIZABLE databases do under contention), a write is
//! retried a few times before anyone sees it.

mod transfers;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::account::{self, Currency};
use entity::{entry, transfer, withdrawal_key};
use rand::Rng;
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, Order, QueryFilter,
    QueryOrder, QuerySelect, RuntimeErr, Select, Set,
};

pub use self::transfers::{TransferOutcome, TransferRequest, transfer};
use crate::auth::Caller;
use crate::db::{self, Database};
use crate::domain::{Amount, IdempotencyKey, Period, Username};
use crate::feed::{Change, Feed};
use crate::slice::{self, Page, Slice};
use crate::{Error, ResultExt};

/// How many times a transaction the database aborted for concurrency (40001, 40P01) is tried in all. Under
/// SERIALIZABLE a transfer that had to wait for another one's row lock is aborted, so a hot account can cost several
/// tries; the pauses between them are random so that colliding transfers stop retrying in step.
const MAX_ATTEMPTS: u32 = 20;
/// The longest pause between two tries.
const MAX_PAUSE_MS: u64 = 50;

/// Opens an account in `currency` for the caller, with a zero balance.
pub async fn create_account(db: &Database, caller: &Caller, currency: Currency) -> Result<account::Model, Error> {
    let owner = caller.username.clone();
    db.write(move |db| {
        Box::pin(async move {
            account::ActiveModel { owner: Set(owner), balance: Set(0), currency: Set(currency), ..Default::default() }
                .insert(&db)
                .await
                .on_constraint("owner_currency_key", || Error::AccountExists)
        })
    })
    .await
}

/// Puts money into an account (bankers only): the one way money enters the bank, recorded as an entry.
///
/// Refused, in this order, when the account does not exist (`NOT_FOUND`), is closed (`ACCOUNT_CLOSED`) or would
/// hold more than `Money` can count (`BALANCE_OUT_OF_RANGE`). The update itself carries the rules, so it holds them
/// under the account's row lock; why it matched nothing is looked up only then. The same update counts the entry,
/// and the entry takes the new balance and count as its `balance_after` and `account_seq`, so both are decided
/// under the lock.
pub async fn deposit(
    db: &Database,
    feed: &Feed,
    caller: &Caller,
    account_id: i64,
    amount: Amount,
) -> Result<entry::Model, Error> {
    if !caller.is_banker() {
        return Err(Error::Forbidden);
    }
    let amount = amount.minor_units();
    let entry = with_retry(|| {
        db.write(move |db| {
            Box::pin(async move {
                let txn = db.begin().await?;
                let updated = account::Entity::update_many()
                    .col_expr(account::Column::Balance, Expr::col(account::Column::Balance).add(amount))
                    .col_expr(account::Column::EntryCount, Expr::col(account::Column::EntryCount).add(1))
                    .filter(account::Column::Id.eq(account_id))
                    .filter(account::Column::ClosedAt.is_null())
                    // Cannot overflow, as the amount is positive; the sum then cannot either.
                    .filter(account::Column::Balance.lte(i64::MAX - amount))
                    .exec_with_returning(&txn)
                    .await?;
                let Some(account) = updated.into_iter().next() else {
                    return Err(match account::Entity::find_by_id(account_id).one(&txn).await? {
                        None => Error::NotFound { what: "account" },
                        Some(account) if account.closed_at.is_some() => Error::AccountClosed,
                        Some(_) => Error::BalanceOutOfRange,
                    });
                };
                let entry = entry::ActiveModel {
                    account_id: Set(account_id),
                    amount: Set(amount),
                    transfer_id: Set(None),
                    balance_after: Set(account.balance),
                    account_seq: Set(account.entry_count),
                    ..Default::default()
                }
                .insert(&txn)
                .await?;
                txn.commit().await?;
                Ok(entry)
            })
        })
    })
    .await?;
    feed.committed(Change::entries([&entry])).await;
    Ok(entry)
}

/// The account `username` is paid into in `currency`: their open account in it. No such user, a deleted one (whose
/// accounts are closed) and no open account in that currency are all `NOT_FOUND`, so a payer learns only that
/// the payment cannot go there.
pub async fn receiving_account(db: &impl ConnectionTrait, username: &str, currency: Currency) -> Result<i64, Error> {
    let not_found = || Error::NotFound { what: "account" };
    let Ok(username) = Username::parse(username) else {
        return Err(not_found());
    };
    let id: Option<i64> = account::Entity::find()
        .select_only()
        .column(account::Column::Id)
        .filter(account::Column::Owner.eq(username.as_str()))
        .filter(account::Column::Currency.eq(currency))
        .filter(account::Column::ClosedAt.is_null())
        .into_tuple()
        .one(db)
        .await?;
    id.ok_or_else(not_found)
}

/// Takes money out of an account (its owner's or, for a banker, anyone's): the one way money leaves the bank. The
/// account's row is locked first, so a retry with the same key waits for the first request and then finds its key:
/// it answers with the first request's entry and moves nothing (or `IDEMPOTENCY_KEY_REUSED` for another amount).
pub async fn withdraw(
    db: &Database,
    feed: &Feed,
    caller: &Caller,
    account_id: i64,
    amount: Amount,
    idempotency_key: Option<&IdempotencyKey>,
) -> Result<entry::Model, Error> {
    let amount = amount.minor_units();
    let (entry, written) = with_retry(|| {
        let (caller, key) = (caller.clone(), idempotency_key.map(|key| key.as_str().to_owned()));
        db.write(move |db| {
            Box::pin(async move {
                let txn = db.begin().await?;
                let account = account::Entity::find_by_id(account_id)
                    .lock_exclusive()
                    .one(&txn)
                    .await?
                    .ok_or(Error::NotFound { what: "account" })?;
                if !caller.may_act_for(&account.owner) {
                    return Err(Error::Forbidden);
                }
                if let Some(key) = &key
                    && let Some(used) = withdrawal_key::Entity::find_by_id((account_id, key.clone())).one(&txn).await?
                {
                    if used.amount != amount {
                        return Err(Error::IdempotencyKeyReused);
                    }
                    let entry = entry::Entity::find_by_id(used.entry_id).one(&txn).await?;
                    return Ok((entry.ok_or_else(|| Error::internal("a withdrawal key lost its entry"))?, false));
                }
                if account.closed_at.is_some() {
                    return Err(Error::AccountClosed);
                }
                if account.balance < amount {
                    return Err(Error::InsufficientFunds);
                }
                let moved = account::Entity::update_many()
                    .col_expr(account::Column::Balance, Expr::col(account::Column::Balance).sub(amount))
                    .col_expr(account::Column::EntryCount, Expr::col(account::Column::EntryCount).add(1))
                    .filter(account::Column::Id.eq(account_id))
                    .exec_with_returning(&txn)
                    .await
                    .on_constraint("accounts_balance_nonnegative", || Error::InsufficientFunds)?;
                let account = moved.into_iter().next().ok_or_else(|| Error::internal("a locked account vanished"))?;
                let entry = entry::ActiveModel {
                    account_id: Set(account_id),
                    amount: Set(-amount),
                    transfer_id: Set(None),
                    balance_after: Set(account.balance),
                    account_seq: Set(account.entry_count),
                    ..Default::default()
                }
                .insert(&txn)
                .await?;
                if let Some(key) = key {
                    withdrawal_key::ActiveModel {
                        account_id: Set(account_id),
                        idempotency_key: Set(key),
                        amount: Set(amount),
                        entry_id: Set(entry.id),
                        ..Default::default()
                    }
                    .insert(&txn)
                    .await?;
                }
                txn.commit().await?;
                Ok((entry, true))
            })
        })
    })
    .await?;
    if written {
        feed.committed(Change::entries([&entry])).await;
    }
    Ok(entry)
}

/// Runs `attempt` again when the database aborted it for concurrency, after a random pause that grows with the
/// tries (full jitter).
pub(crate) async fn with_retry<T, F, Fut>(mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(Error::Database(err)) if tries < MAX_ATTEMPTS && is_transient(&err) => {
                tracing::debug!(%err, tries, "retrying a transaction the database aborted");
                let ceiling = Ord::min(1u64 << Ord::min(tries, 6), MAX_PAUSE_MS);
                let pause = Duration::from_millis(rand::rng().random_range(1..=ceiling));
                tokio::time::sleep(pause).await;
                tries += 1;
            }
            result => return result,
        }
    }
}

/// Serialization failure or deadlock (PostgreSQL), or a busy database (SQLite): the transaction did nothing and
/// may simply run again.
fn is_transient(err: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx))) = err else {
        return false;
    };
    let code = sqlx.as_database_error().and_then(|e| e.code());
    matches!(code.as_deref(), Some("40001" | "40P01" | "5" | "6"))
}

/// An account's entries in `period`, newest first; cursors are `account_seq`.
pub async fn entries_of(
    db: &impl ConnectionTrait,
    account_id: i64,
    period: Period,
    slice: Slice<i64>,
) -> Result<Page<entry::Model>, Error> {
    slice::read(db, entries_in(db, account_id, period), entry::Column::AccountSeq, Order::Desc, slice).await
}

/// How many entries an account has in `period`.
pub async fn count_entries(db: &impl ConnectionTrait, account_id: i64, period: Period) -> Result<u64, Error> {
    slice::count(db, entries_in(db, account_id, period)).await
}

fn entries_in(db: &impl ConnectionTrait, account_id: i64, period: Period) -> Select<entry::Entity> {
    entry::Entity::find().filter(entry::Column::AccountId.eq(account_id)).filter(within(
        db,
        entry::Column::CreatedAt,
        period,
    ))
}

/// Transfers into and out of an account in `period`, newest first; cursors are transfer ids.
pub async fn transfers_of(
    db: &impl ConnectionTrait,
    account_id: i64,
    period: Period,
    slice: Slice<i64>,
) -> Result<Page<transfer::Model>, Error> {
    slice::read(db, transfers_in(db, account_id, period), transfer::Column::Id, Order::Desc, slice).await
}

/// How many transfers into and out of an account there were in `period`.
pub async fn count_transfers(db: &impl ConnectionTrait, account_id: i64, period: Period) -> Result<u64, Error> {
    slice::count(db, transfers_in(db, account_id, period)).await
}

fn transfers_in(db: &impl ConnectionTrait, account_id: i64, period: Period) -> Select<transfer::Entity> {
    transfer::Entity::find()
        .filter(
            Condition::any()
                .add(transfer::Column::FromAccountId.eq(account_id))
                .add(transfer::Column::ToAccountId.eq(account_id)),
        )
        .filter(within(db, transfer::Column::CreatedAt, period))
}

/// An account's statement for a period: its balance before and after, and the money in and out (both positive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statement {
    pub opening_balance: i64,
    pub closing_balance: i64,
    pub total_in: i64,
    pub total_out: i64,
    pub entry_count: i64,
}

/// The statement of an account for `period`, in one statement, so that its figures agree with each other (and, in
/// a query's snapshot, with the period's entries). The opening balance is the sum of the entries before the
/// period rather than the last one's `balance_after`: entries are numbered in commit order but stamped when their
/// transaction began, so the two orders can differ, and only sums make closing = opening + in − out exact.
pub async fn statement(db: &impl ConnectionTrait, account_id: i64, period: Period) -> Result<Statement, Error> {
    let backend = db.get_database_backend();
    let created = || Expr::col(entry::Column::CreatedAt);
    let amount = || Expr::col(entry::Column::Amount);
    let before = |end: Option<DateTime<Utc>>| match end {
        Some(end) => created().lt(instant(backend, end)),
        None => Expr::val(true),
    };
    let since = match period.since() {
        Some(since) => created().gte(instant(backend, since)),
        None => Expr::val(true),
    };
    let in_period = since.and(before(period.until()));
    // CAST(coalesce(sum(CASE WHEN condition THEN value ELSE 0 END), 0) AS BIGINT): PostgreSQL sums bigints as
    // numeric, and an account without entries sums to NULL.
    let sum = |condition: Expr, value: Expr| {
        let summed = Func::sum(Expr::case(condition, value).finally(0));
        Expr::from(Func::cast_as(Func::coalesce([Expr::from(summed), Expr::val(0)]), "BIGINT"))
    };
    let row: Option<(i64, i64, i64, i64, i64)> = entry::Entity::find()
        .select_only()
        .column_as(sum(before(period.since()), amount()), "opening_balance")
        .column_as(sum(before(period.until()), amount()), "closing_balance")
        .column_as(sum(in_period.clone().and(amount().gt(0)), amount()), "total_in")
        .column_as(sum(in_period.clone().and(amount().lt(0)), amount().mul(-1)), "total_out")
        .column_as(sum(in_period, Expr::val(1)), "entry_count")
        .filter(entry::Column::AccountId.eq(account_id))
        .into_tuple()
        .one(db)
        .await?;
    let (opening_balance, closing_balance, total_in, total_out, entry_count) = row.unwrap_or_default();
    Ok(Statement { opening_balance, closing_balance, total_in, total_out, entry_count })
}

/// The condition that `column` (a creation time) falls in `period`.
fn within(db: &impl ConnectionTrait, column: impl ColumnTrait, period: Period) -> Condition {
    let backend = db.get_database_backend();
    let mut condition = Condition::all();
    if let Some(since) = period.since() {
        condition = condition.add(column.gte(instant(backend, since)));
    }
    if let Some(until) = period.until() {
        condition = condition.add(column.lt(instant(backend, until)));
    }
    condition
}

/// A time as the backend compares it with stored creation times: on SQLite those are text in one fixed form (the
/// schema's default, to the millisecond), so a bound in any other form would compare as text, wrongly.
fn instant(backend: DbBackend, time: DateTime<Utc>) -> sea_orm::Value {
    match backend {
        DbBackend::Sqlite => time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string().into(),
        _ => time.into(),
    }
}

/// Every account of these owners, in one statement (for batch loading).
pub async fn accounts_of_owners(db: &impl ConnectionTrait, owners: &[String]) -> Result<Vec<account::Model>, Error> {
    Ok(account::Entity::find()
        .filter(db::one_of(db.get_database_backend(), account::Column::Owner, owners.iter().cloned()))
        .order_by_asc(account::Column::Id)
        .all(db)
        .await?)
}

/// These accounts, in one statement (for batch loading).
pub async fn accounts_by_ids(db: &impl ConnectionTrait, ids: &[i64]) -> Result<Vec<account::Model>, Error> {
    Ok(account::Entity::find()
        .filter(db::one_of(db.get_database_backend(), account::Column::Id, ids.iter().copied()))
        .all(db)
        .await?)
}

/// These entries, in one statement (for batch loading).
pub async fn entries_by_ids(db: &impl ConnectionTrait, ids: &[i64]) -> Result<Vec<entry::Model>, Error> {
    Ok(entry::Entity::find()
        .filter(db::one_of(db.get_database_backend(), entry::Column::Id, ids.iter().copied()))
        .all(db)
        .await?)
}

/// These transfers, in one statement (for batch loading).
pub async fn transfers_by_ids(db: &impl ConnectionTrait, ids: &[i64]) -> Result<Vec<transfer::Model>, Error> {
    Ok(transfer::Entity::find()
        .filter(db::one_of(db.get_database_backend(), transfer::Column::Id, ids.iter().copied()))
        .all(db)
        .await?)
}

#[cfg(test)]
mod tests {
    //! The retry of transactions the database aborted for concurrency: what counts as transient, and that
    //! `with_retry` runs such a transaction again, and nothing else.

    use std::borrow::Cow;
    use std::sync::Arc;

    use sea_orm::sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// A database error with a given SQLSTATE (PostgreSQL) or extended result code (SQLite).
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl DatabaseError for Coded {
        fn message(&self) -> &str {
            "aborted"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn database_error(code: &'static str) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sea_orm::sqlx::Error::Database(Box::new(Coded(code))))))
    }

    #[test]
    fn serialization_failures_deadlocks_and_a_busy_sqlite_are_transient_and_nothing_else_is() {
        for code in ["40001", "40P01", "5", "6"] {
            assert!(is_transient(&database_error(code)), "{code}");
        }
        for code in ["23505", "23514", "42P01", "1"] {
            assert!(!is_transient(&database_error(code)), "{code}");
        }
        assert!(!is_transient(&DbErr::Custom("not from the database".into())));
    }

    #[tokio::test]
    async fn a_transaction_aborted_for_serialization_is_run_again_until_it_commits() {
        let mut tries = 0;

        let result = with_retry(|| {
            tries += 1;
            let outcome = if tries < 4 { Err(Error::Database(database_error("40001"))) } else { Ok(tries) };
            async move { outcome }
        })
        .await;

        assert_eq!(result.ok(), Some(4), "three serialization failures retried, the fourth try committed");
    }

    #[tokio::test]
    async fn a_transaction_that_keeps_being_aborted_gives_up_after_the_last_attempt() {
        let mut tries = 0;

        let result: Result<(), Error> = with_retry(|| {
            tries += 1;
            async { Err(Error::Database(database_error("40P01"))) }
        })
        .await;

        assert!(matches!(result, Err(Error::Database(_))));
        assert_eq!(tries, MAX_ATTEMPTS);
    }

    #[tokio::test]
    async fn any_other_error_is_answered_at_once() {
        let mut tries = 0;

        let result: Result<(), Error> = with_retry(|| {
            tries += 1;
            async { Err(Error::Database(database_error("23505"))) }
        })
        .await;

        assert!(result.is_err());
        assert_eq!(tries, 1);
    }
}
