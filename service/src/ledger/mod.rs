//! Accounts, deposits and transfers: the ledger.
//!
//! Money enters the bank only by a banker's deposit and moves only by transfers ([`transfer`]). Entries and
//! transfers are never updated or deleted, and every balance equals the sum of its account's entries. Should the
//! database report a serialization failure or deadlock (as SERIALIZABLE databases do under contention), a write is
//! retried a few times before anyone sees it.

mod transfers;

use std::future::Future;
use std::time::Duration;

use entity::account::{self, Currency};
use entity::{entry, transfer};
use rand::Rng;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, RuntimeErr, Set, TransactionTrait,
};

pub use self::transfers::{TransferOutcome, TransferRequest, transfer};
use crate::auth::Caller;
use crate::domain::Amount;
use crate::feed::{Change, Feed};
use crate::{Error, ResultExt};

/// How many times a transaction the database aborted for concurrency (40001, 40P01) is tried in all. Under
/// SERIALIZABLE a transfer that had to wait for another one's row lock is aborted, so a hot account can cost several
/// tries; the pauses between them are random so that colliding transfers stop retrying in step.
const MAX_ATTEMPTS: u32 = 20;
/// The longest pause between two tries.
const MAX_PAUSE_MS: u64 = 50;

/// Opens an account in `currency` for the caller, with a zero balance.
pub async fn create_account(
    db: &impl ConnectionTrait,
    caller: &Caller,
    currency: Currency,
) -> Result<account::Model, Error> {
    account::ActiveModel {
        owner: Set(caller.username.clone()),
        balance: Set(0),
        currency: Set(currency),
        ..Default::default()
    }
    .insert(db)
    .await
    .on_constraint("owner_currency_key", || Error::AccountExists)
}

/// An account the caller may see: their own, or any for a banker. `None` when it does not exist.
pub async fn account(db: &impl ConnectionTrait, caller: &Caller, id: i64) -> Result<Option<account::Model>, Error> {
    let Some(account) = account::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    if !caller.may_act_for(&account.owner) {
        return Err(Error::Forbidden);
    }
    Ok(Some(account))
}

/// A transfer the caller may see: one touching their accounts, or any for a banker.
pub async fn transfer_by_id(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: i64,
) -> Result<Option<transfer::Model>, Error> {
    let Some(transfer) = transfer::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    if !caller.is_banker() {
        let owners = accounts_by_ids(db, &[transfer.from_account_id, transfer.to_account_id]).await?;
        if !owners.iter().any(|a| a.owner == caller.username) {
            return Err(Error::Forbidden);
        }
    }
    Ok(Some(transfer))
}

/// Puts money into an account (bankers only): the one way money enters the bank, recorded as an entry.
///
/// Refused, in this order, when the account does not exist (`NOT_FOUND`), is closed (`ACCOUNT_CLOSED`) or would
/// hold more than `Money` can count (`BALANCE_OUT_OF_RANGE`). The update itself carries the rules, so it holds them
/// under the account's row lock; why it matched nothing is looked up only then. The same update counts the entry,
/// and the entry takes the new balance and count as its `balance_after` and `account_seq`, so both are decided
/// under the lock.
pub async fn deposit(
    db: &DatabaseConnection,
    feed: &Feed,
    caller: &Caller,
    account_id: i64,
    amount: Amount,
) -> Result<entry::Model, Error> {
    if !caller.is_banker() {
        return Err(Error::Forbidden);
    }
    let amount = amount.minor_units();
    let entry = with_retry(|| async {
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
        feed.announce(&txn, &Change::Entries(vec![(account_id, entry.account_seq)])).await?;
        txn.commit().await?;
        Ok(entry)
    })
    .await?;
    feed.committed(Change::Entries(vec![(account_id, entry.account_seq)]));
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

/// An account's entries, newest first, after the entry whose `account_seq` is `after`.
pub async fn entries_of(
    db: &impl ConnectionTrait,
    account_id: i64,
    first: u64,
    after: Option<i64>,
) -> Result<(Vec<entry::Model>, bool), Error> {
    let mut query = entry::Entity::find().filter(entry::Column::AccountId.eq(account_id));
    if let Some(after) = after {
        query = query.filter(entry::Column::AccountSeq.lt(after));
    }
    Ok(crate::page(query.order_by_desc(entry::Column::AccountSeq).limit(first + 1).all(db).await?, first))
}

/// Transfers into and out of an account, newest first, after the transfer `after`.
pub async fn transfers_of(
    db: &impl ConnectionTrait,
    account_id: i64,
    first: u64,
    after: Option<i64>,
) -> Result<(Vec<transfer::Model>, bool), Error> {
    let mut query = transfer::Entity::find().filter(
        Condition::any()
            .add(transfer::Column::FromAccountId.eq(account_id))
            .add(transfer::Column::ToAccountId.eq(account_id)),
    );
    if let Some(after) = after {
        query = query.filter(transfer::Column::Id.lt(after));
    }
    Ok(crate::page(query.order_by_desc(transfer::Column::Id).limit(first + 1).all(db).await?, first))
}

/// Every account of these owners, in one statement (for batch loading).
pub async fn accounts_of_owners(db: &impl ConnectionTrait, owners: &[String]) -> Result<Vec<account::Model>, Error> {
    Ok(account::Entity::find()
        .filter(account::Column::Owner.is_in(owners.iter().cloned()))
        .order_by_asc(account::Column::Id)
        .all(db)
        .await?)
}

/// These accounts, in one statement (for batch loading).
pub async fn accounts_by_ids(db: &impl ConnectionTrait, ids: &[i64]) -> Result<Vec<account::Model>, Error> {
    Ok(account::Entity::find().filter(account::Column::Id.is_in(ids.iter().copied())).all(db).await?)
}

/// These transfers, in one statement (for batch loading).
pub async fn transfers_by_ids(db: &impl ConnectionTrait, ids: &[i64]) -> Result<Vec<transfer::Model>, Error> {
    Ok(transfer::Entity::find().filter(transfer::Column::Id.is_in(ids.iter().copied())).all(db).await?)
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
