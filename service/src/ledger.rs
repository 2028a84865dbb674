//! Accounts, deposits and transfers: the ledger.
//!
//! Money enters the bank only by a banker's deposit and moves only by transfers. A transfer is one transaction:
//! two balance updates, two entries (−amount, +amount) and the transfer row, or nothing. Both accounts are locked in
//! id order, so two opposite transfers (A→B and B→A) queue instead of deadlocking; should the database still report
//! a serialization failure or deadlock (as CockroachDB-style SERIALIZABLE databases do), the whole transaction is
//! retried a few times before anyone sees it. Entries and transfers are never updated or deleted, and every balance
//! equals the sum of its account's entries.

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entity::account::{self, Currency};
use entity::{entry, idempotency_key, transfer};
use rand::Rng;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, RuntimeErr, Set, TransactionTrait,
};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::domain::Amount;
use crate::{Error, ResultExt, constraint};

/// How many times a transaction the database aborted for concurrency (40001, 40P01) is tried in all. Under
/// SERIALIZABLE a transfer that had to wait for another one's row lock is aborted, so a hot account can cost several
/// tries; the pauses between them are random so that colliding transfers stop retrying in step.
const MAX_ATTEMPTS: u32 = 20;
/// The longest pause between two tries.
const MAX_PAUSE_MS: u64 = 50;
/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Opens an account in `currency` for the caller, with a zero balance.
pub async fn create_account(
    db: &impl ConnectionTrait,
    caller: &Caller,
    currency: Currency,
) -> Result<account::Model, Error> {
    account::ActiveModel {
        owner: Set(caller.user.username.clone()),
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
        if !owners.iter().any(|a| a.owner == caller.user.username) {
            return Err(Error::Forbidden);
        }
    }
    Ok(Some(transfer))
}

/// Puts money into an account (bankers only): the one way money enters the bank, recorded as an entry.
pub async fn deposit(
    db: &DatabaseConnection,
    caller: &Caller,
    account_id: i64,
    amount: Amount,
) -> Result<entry::Model, Error> {
    if !caller.is_banker() {
        return Err(Error::Forbidden);
    }
    with_retry(|| async {
        let txn = db.begin().await?;
        let updated = account::Entity::update_many()
            .col_expr(account::Column::Balance, Expr::col(account::Column::Balance).add(amount.minor_units()))
            .filter(account::Column::Id.eq(account_id))
            .exec_with_returning(&txn)
            .await?;
        if updated.is_empty() {
            return Err(Error::NotFound { what: "account" });
        }
        let entry = entry::ActiveModel {
            account_id: Set(account_id),
            amount: Set(amount.minor_units()),
            transfer_id: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(entry)
    })
    .await
}

/// A transfer as a client asks for it.
#[derive(Debug)]
pub struct TransferRequest {
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: Amount,
    pub currency: Currency,
    /// The same key with the same request returns the first result and moves no money.
    pub idempotency_key: Option<String>,
}

/// A transfer and everything it wrote.
#[derive(Debug)]
pub struct TransferOutcome {
    pub transfer: transfer::Model,
    pub from_account: account::Model,
    pub to_account: account::Model,
    pub from_entry: entry::Model,
    pub to_entry: entry::Model,
}

/// Moves money from one of the caller's accounts to another account in the same currency.
pub async fn transfer(
    db: &DatabaseConnection,
    caller: &Caller,
    request: &TransferRequest,
) -> Result<TransferOutcome, Error> {
    if request.from_account_id == request.to_account_id {
        return Err(Error::SameAccount);
    }
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN)
    {
        return Err(Error::invalid(
            "idempotencyKey",
            format!("an idempotency key has 1–{MAX_IDEMPOTENCY_KEY_LEN} characters"),
        ));
    }
    with_retry(|| transfer_once(db, caller, request)).await
}

async fn transfer_once(
    db: &DatabaseConnection,
    caller: &Caller,
    request: &TransferRequest,
) -> Result<TransferOutcome, Error> {
    let txn = db.begin().await?;
    let request_hash = request_hash(request);
    if let Some(key) = &request.idempotency_key {
        // First, so that a concurrent request with this key waits here until this one commits or rolls back.
        let claimed = idempotency_key::ActiveModel {
            username: Set(caller.user.username.clone()),
            key: Set(key.clone()),
            request_hash: Set(request_hash.clone()),
            transfer_id: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await;
        match claimed {
            Ok(_) => {}
            Err(err) if constraint::violated(&err).as_deref() == Some("idempotency_keys_pkey") => {
                txn.rollback().await?;
                return replay(db, caller, key, &request_hash).await;
            }
            Err(err) => return Err(err.into()),
        }
    }

    let amount = request.amount.minor_units();
    let locked = account::Entity::find()
        .filter(account::Column::Id.is_in([request.from_account_id, request.to_account_id]))
        .order_by_asc(account::Column::Id)
        .lock_exclusive()
        .all(&txn)
        .await?;
    let find = |id: i64| locked.iter().find(|a| a.id == id).ok_or(Error::NotFound { what: "account" });
    let from = find(request.from_account_id)?;
    if from.owner != caller.user.username {
        return Err(Error::Forbidden);
    }
    let to = find(request.to_account_id)?;
    if from.currency != request.currency || to.currency != request.currency {
        return Err(Error::CurrencyMismatch);
    }
    if from.balance < amount {
        return Err(Error::InsufficientFunds);
    }

    let transfer = transfer::ActiveModel {
        from_account_id: Set(from.id),
        to_account_id: Set(to.id),
        amount: Set(amount),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    // Both balances in one statement and both entries in another: round trips are what a transfer waits on.
    let debit_or_credit =
        Expr::case(Expr::col(account::Column::Id).eq(from.id), Expr::col(account::Column::Balance).sub(amount))
            .finally(Expr::col(account::Column::Balance).add(amount));
    let moved = account::Entity::update_many()
        .col_expr(account::Column::Balance, debit_or_credit.into())
        .filter(account::Column::Id.is_in([from.id, to.id]))
        .exec_with_returning(&txn)
        .await
        .on_constraint("accounts_balance_nonnegative", || Error::InsufficientFunds)?;
    let entry = |account_id: i64, amount: i64| entry::ActiveModel {
        account_id: Set(account_id),
        amount: Set(amount),
        transfer_id: Set(Some(transfer.id)),
        ..Default::default()
    };
    let entries =
        entry::Entity::insert_many([entry(from.id, -amount), entry(to.id, amount)]).exec_with_returning(&txn).await?;
    let missing = || Error::Internal(format!("transfer {} wrote less than it should", transfer.id));
    let from_account = moved.iter().find(|a| a.id == from.id).cloned().ok_or_else(missing)?;
    let to_account = moved.iter().find(|a| a.id == to.id).cloned().ok_or_else(missing)?;
    let from_entry = entries.iter().find(|e| e.account_id == from.id).cloned().ok_or_else(missing)?;
    let to_entry = entries.iter().find(|e| e.account_id == to.id).cloned().ok_or_else(missing)?;
    if let Some(key) = &request.idempotency_key {
        idempotency_key::Entity::update_many()
            .col_expr(idempotency_key::Column::TransferId, Expr::value(transfer.id))
            .filter(idempotency_key::Column::Username.eq(&caller.user.username))
            .filter(idempotency_key::Column::Key.eq(key))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(TransferOutcome { transfer, from_account, to_account, from_entry, to_entry })
}

/// The first result for a key already used: the same transfer, no money moved.
async fn replay(
    db: &DatabaseConnection,
    caller: &Caller,
    key: &str,
    request_hash: &str,
) -> Result<TransferOutcome, Error> {
    let stored = idempotency_key::Entity::find_by_id((caller.user.username.clone(), key.to_owned()))
        .one(db)
        .await?
        .ok_or_else(|| Error::Internal("an idempotency key vanished".to_owned()))?;
    if stored.request_hash != request_hash {
        return Err(Error::IdempotencyKeyReused);
    }
    let transfer_id = stored
        .transfer_id
        .ok_or_else(|| Error::Internal("a committed idempotency key without its transfer".to_owned()))?;
    let transfer =
        transfer::Entity::find_by_id(transfer_id).one(db).await?.ok_or(Error::NotFound { what: "transfer" })?;
    let entries = entry::Entity::find().filter(entry::Column::TransferId.eq(transfer_id)).all(db).await?;
    let accounts = accounts_by_ids(db, &[transfer.from_account_id, transfer.to_account_id]).await?;
    let missing = || Error::Internal(format!("transfer {transfer_id} is incomplete"));
    let account = |id| accounts.iter().find(|a| a.id == id).cloned().ok_or_else(missing);
    let entry = |id| entries.iter().find(|e| e.account_id == id).cloned().ok_or_else(missing);
    Ok(TransferOutcome {
        from_account: account(transfer.from_account_id)?,
        to_account: account(transfer.to_account_id)?,
        from_entry: entry(transfer.from_account_id)?,
        to_entry: entry(transfer.to_account_id)?,
        transfer,
    })
}

fn request_hash(request: &TransferRequest) -> String {
    let canonical = format!(
        "{}|{}|{}|{:?}",
        request.from_account_id,
        request.to_account_id,
        request.amount.minor_units(),
        request.currency
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Runs `attempt` again when the database aborted it for concurrency, after a random pause that grows with the
/// tries (full jitter).
async fn with_retry<T, F, Fut>(mut attempt: F) -> Result<T, Error>
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

/// An account's entries, newest first, after the entry `after`.
pub async fn entries_of(
    db: &impl ConnectionTrait,
    account_id: i64,
    first: u64,
    after: Option<i64>,
) -> Result<(Vec<entry::Model>, bool), Error> {
    let mut query = entry::Entity::find().filter(entry::Column::AccountId.eq(account_id));
    if let Some(after) = after {
        query = query.filter(entry::Column::Id.lt(after));
    }
    Ok(crate::page(query.order_by_desc(entry::Column::Id).limit(first + 1).all(db).await?, first))
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
