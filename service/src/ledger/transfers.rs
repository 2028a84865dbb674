//! Transfers: two balance updates, two entries (−amount, +amount) and the transfer row with its idempotency key, or
//! nothing.
//!
//! Both accounts are locked in id order, so two opposite transfers (A→B and B→A) queue instead of deadlocking.
//! Both backends gather the same [`Facts`] and one function, [`judge`], decides; they differ only in how they read
//! and write.
//! On PostgreSQL the whole transfer is one statement: a transfer waits on round trips far more than on work, and
//! one statement is also one atomic transaction. SQLite has no data-modifying `WITH`, so there the same steps are
//! four statements sent as one command, in the savepoint the writer gives each write (see
//! `db::Database::write`): each command is a hand-off to the connection's thread, which every other write waits
//! behind. Both are held to the same tests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use entity::account::{self, Currency};
use entity::{entry, transfer};
use sea_orm::{ActiveEnum, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryResult, Statement};
use sha2::{Digest, Sha256};

use super::{accounts_by_ids, with_retry};
use crate::auth::VerifiedToken;
use crate::db::Database;
use crate::domain::{Amount, IdempotencyKey};
use crate::feed::{Change, Feed};
use crate::{Error, ResultExt, constraint};

/// A transfer as a client asks for it.
#[derive(Clone, Debug)]
pub struct TransferRequest {
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: Amount,
    pub currency: Currency,
    /// The same key with the same request returns the first result and moves no money.
    pub idempotency_key: Option<IdempotencyKey>,
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

/// Moves money from one of the caller's accounts to another account in the same currency. The token's session is
/// checked in the same transaction as the transfer: a logged-out, deleted or re-passworded caller moves nothing.
pub async fn transfer(
    db: &Database,
    feed: &Feed,
    caller: &VerifiedToken,
    request: &TransferRequest,
) -> Result<TransferOutcome, Error> {
    if request.from_account_id == request.to_account_id {
        return Err(Error::SameAccount);
    }
    let request_hash = request_hash(request);
    let attempt = with_retry(|| {
        let (caller, request, request_hash) = (caller.clone(), request.clone(), request_hash.clone());
        db.write(move |db| Box::pin(async move { send(&db, &caller, &request, request_hash.as_deref()).await }))
    })
    .await
    .and_then(|sent| match sent {
        Sent::KeyUsed => Ok(Attempt::KeyUsed),
        Sent::Row(row) => decided(&row, &caller.username, request, request_hash.as_deref()),
    });
    let outcome = match attempt {
        // A keyed request that raced one with the same key waited on the first's row locks and then found the
        // accounts as the first left them (its balance spent, say), while on PostgreSQL the rest of its statement
        // still saw the snapshot from before the first committed, without the key. So a refusal may be the first
        // request's doing: the key, looked up anew, decides. A committed key answers as it was answered; the first
        // request has ended by now, since its row locks were released, so there is no request still in flight
        // to wait for.
        Err(refused) if is_refusal(&refused) && request.idempotency_key.is_some() => {
            if key_committed(db.reads(), request).await? {
                Attempt::KeyUsed
            } else {
                return Err(refused);
            }
        }
        attempt => attempt?,
    };
    match outcome {
        Attempt::Done(outcome) => {
            feed.committed(Change::entries([&outcome.from_entry, &outcome.to_entry])).await;
            Ok(*outcome)
        }
        // Committed by an earlier request with this key (or one racing this one, which the key's unique constraint
        // made wait): answer as it was answered.
        Attempt::KeyUsed => replay(db.reads(), caller, request, request_hash.as_deref()).await,
    }
}

/// What a write of a transfer answers: the statement's row, which [`decided`] reads once the write is answered (on
/// SQLite, off the writer that every write waits on), or a key committed by a racing request.
enum Sent {
    Row(QueryResult),
    KeyUsed,
}

/// What one try of a transfer came to.
enum Attempt {
    Done(Box<TransferOutcome>),
    KeyUsed,
}

/// Everything a transfer found, under its row locks, that decides it; both backends gather these and [`judge`]
/// decides.
struct Facts<'a> {
    /// The token's session is live, as `auth::check_session` asks.
    authenticated: bool,
    /// A transfer with the request's key from its account was committed before.
    key_used: bool,
    from: Option<Found<'a>>,
    to: Option<Found<'a>>,
}

/// What [`judge`] decides of a transfer it does not refuse.
enum Verdict {
    /// Answer as the earlier request with this key was answered.
    KeyUsed,
    Allowed,
}

/// The one judge of a transfer: the session first, then a key used before, then the rules of [`refusal`]; a
/// refusal is the error to answer with.
fn judge(caller: &str, request: &TransferRequest, facts: Facts) -> Result<Verdict, Error> {
    if !facts.authenticated {
        return Err(Error::Unauthenticated);
    }
    if facts.key_used {
        return Ok(Verdict::KeyUsed);
    }
    match refusal(caller, request, facts.from, facts.to) {
        Some(refused) => Err(refused),
        None => Ok(Verdict::Allowed),
    }
}

/// What a transfer found of one of its accounts, under its row lock.
struct Found<'a> {
    owner: &'a str,
    currency: Currency,
    balance: i64,
    closed: bool,
}

impl<'a> From<&'a account::Model> for Found<'a> {
    fn from(account: &'a account::Model) -> Self {
        Found {
            owner: &account.owner,
            currency: account.currency,
            balance: account.balance,
            closed: account.closed_at.is_some(),
        }
    }
}

/// The first rule a transfer breaks, in the order both backends answer in: the debited account exists
/// (`NOT_FOUND`) and is the caller's (`FORBIDDEN`); the credited one exists (`NOT_FOUND`); both hold the transfer's
/// currency (`CURRENCY_MISMATCH`) and are open (`ACCOUNT_CLOSED`); then the money: the debited balance covers the
/// amount (`INSUFFICIENT_FUNDS`) and the credited one stays within `Money` (`BALANCE_OUT_OF_RANGE`). What an
/// account is comes before how much it holds, so a refusal does not depend on balances that change meanwhile
/// unless nothing else is wrong.
fn refusal(caller: &str, request: &TransferRequest, from: Option<Found>, to: Option<Found>) -> Option<Error> {
    let amount = request.amount.minor_units();
    let Some(from) = from else {
        return Some(Error::NotFound { what: "account" });
    };
    if from.owner != caller {
        return Some(Error::Forbidden);
    }
    let Some(to) = to else {
        return Some(Error::NotFound { what: "account" });
    };
    if from.currency != request.currency || to.currency != request.currency {
        return Some(Error::CurrencyMismatch);
    }
    if from.closed || to.closed {
        return Some(Error::AccountClosed);
    }
    if from.balance < amount {
        return Some(Error::InsufficientFunds);
    }
    if to.balance > i64::MAX - amount {
        return Some(Error::BalanceOutOfRange);
    }
    None
}

/// The refusals of [`refusal`]: answers a committed key takes precedence over.
fn is_refusal(err: &Error) -> bool {
    matches!(
        err,
        Error::NotFound { .. }
            | Error::Forbidden
            | Error::CurrencyMismatch
            | Error::AccountClosed
            | Error::InsufficientFunds
            | Error::BalanceOutOfRange
    )
}

/// Whether a transfer with the request's key from its account has been committed.
async fn key_committed(db: &impl ConnectionTrait, request: &TransferRequest) -> Result<bool, Error> {
    let Some(key) = request.idempotency_key.as_ref().map(IdempotencyKey::as_str) else {
        return Ok(false);
    };
    Ok(transfer::Entity::find()
        .filter(transfer::Column::FromAccountId.eq(request.from_account_id))
        .filter(transfer::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?
        .is_some())
}

/// The transfer as one PostgreSQL statement. `caller` is the session check (as in `auth::check_session`: live
/// session, user not deleted, no password change since the token was issued); `prior` finds a key committed
/// earlier; `locked` locks both accounts in id order and reads their newest versions; `allowed` has a row only when
/// every rule holds, and each write happens only then. Each entry takes its account's new balance and entry count
/// from `moved`, the update under the row lock. The final row reports what was found and what was written,
/// so that a refusal can say why. A key committed by a racing request makes the transfer's insert wait for it and
/// then fail on `transfers_idempotency_key_key`, which undoes the whole statement; a racing request that spent the
/// balance first makes it refuse instead, which [`transfer`] resolves by looking the key up afterwards. The credited
/// balance is held below the top of the bigint range by the rule itself (`9223372036854775807 - $3` cannot
/// overflow, as the amount is positive), so an overflow is refused like any other broken rule rather than
/// raised as an error.
const TRANSFER_SQL: &str = r#"
WITH caller AS (
    SELECT 1 FROM sessions s JOIN users u ON u.username = s.username
    WHERE s.id = $8 AND s.username = $5 AND s.revoked_at IS NULL AND u.deleted_at IS NULL
      AND u.password_changed_at < to_timestamp($9 + 1)
),
prior AS (
    SELECT 1 FROM transfers WHERE from_account_id = $1 AND idempotency_key = $6
),
locked AS (
    SELECT id, owner, balance, currency, created_at, closed_at FROM accounts
    WHERE id IN ($1, $2) ORDER BY id FOR UPDATE
),
allowed AS (
    SELECT 1 FROM locked f JOIN locked t ON f.id = $1 AND t.id = $2
    WHERE f.owner = $5 AND f.currency = $4 AND t.currency = $4 AND f.closed_at IS NULL AND t.closed_at IS NULL
      AND f.balance >= $3 AND t.balance <= 9223372036854775807 - $3
      AND EXISTS (SELECT 1 FROM caller) AND NOT EXISTS (SELECT 1 FROM prior)
),
moved AS (
    UPDATE accounts SET balance = CASE WHEN id = $1 THEN balance - $3 ELSE balance + $3 END,
        entry_count = entry_count + 1
    WHERE id IN ($1, $2) AND EXISTS (SELECT 1 FROM allowed)
    RETURNING id, balance, entry_count
),
written AS (
    INSERT INTO transfers (from_account_id, to_account_id, amount, idempotency_key, request_hash)
    SELECT $1, $2, $3, $6, $7 WHERE EXISTS (SELECT 1 FROM allowed)
    RETURNING id, created_at
),
entered AS (
    INSERT INTO entries (account_id, amount, transfer_id, balance_after, account_seq)
    SELECT side.account_id, side.amount, written.id, moved.balance, moved.entry_count
    FROM written, (VALUES ($1::bigint, -$3::bigint), ($2::bigint, $3::bigint)) AS side (account_id, amount)
    JOIN moved ON moved.id = side.account_id
    RETURNING id, account_id, amount, transfer_id, balance_after, account_seq, created_at
)
SELECT
    EXISTS (SELECT 1 FROM caller) AS authenticated,
    EXISTS (SELECT 1 FROM prior) AS key_used,
    f.owner AS from_owner, f.currency AS from_currency, f.balance AS from_balance, f.created_at AS from_created_at,
    f.closed_at IS NOT NULL AS from_closed,
    t.owner AS to_owner, t.currency AS to_currency, t.balance AS to_balance, t.created_at AS to_created_at,
    t.closed_at IS NOT NULL AS to_closed,
    w.id AS transfer_id, w.created_at AS transfer_created_at,
    mf.balance AS from_balance_after, mt.balance AS to_balance_after,
    mf.entry_count AS from_entry_count, mt.entry_count AS to_entry_count,
    ef.id AS from_entry_id, ef.created_at AS from_entry_created_at,
    et.id AS to_entry_id, et.created_at AS to_entry_created_at
FROM (VALUES (1)) AS one (x)
LEFT JOIN locked f ON f.id = $1
LEFT JOIN locked t ON t.id = $2
LEFT JOIN written w ON true
LEFT JOIN moved mf ON mf.id = $1
LEFT JOIN moved mt ON mt.id = $2
LEFT JOIN entered ef ON ef.account_id = $1
LEFT JOIN entered et ON et.account_id = $2
"#;

/// Sends the transfer as one statement (PostgreSQL) or one command (SQLite), whose one row tells what it found
/// and what it wrote.
async fn send(
    db: &impl ConnectionTrait,
    caller: &VerifiedToken,
    request: &TransferRequest,
    request_hash: Option<&str>,
) -> Result<Sent, Error> {
    let backend = db.get_database_backend();
    let sql = if backend == DbBackend::Postgres { TRANSFER_SQL } else { SQLITE_TRANSFER_SQL };
    let statement = Statement::from_sql_and_values(backend, sql, transfer_values(caller, request, request_hash));
    match db.query_one_raw(statement).await {
        Ok(row) => row.map(Sent::Row).ok_or_else(|| Error::internal("a transfer statement returned no row")),
        Err(err) if constraint::violated(&err).as_deref() == Some(KEY_CONSTRAINT) => Ok(Sent::KeyUsed),
        Err(err) => Err(Error::from(err)).on_constraint("accounts_balance_nonnegative", || Error::InsufficientFunds),
    }
}

/// What the transfer's row says: the transfer and what it wrote, or the facts it found, judged.
fn decided(
    row: &QueryResult,
    caller: &str,
    request: &TransferRequest,
    request_hash: Option<&str>,
) -> Result<Attempt, Error> {
    let amount = request.amount.minor_units();
    let get = Columns(row);
    // A written transfer is committed: the statement's own rules allowed it, so it is answered as done.
    let Some(transfer_id) = get.value::<Option<i64>>("transfer_id")? else {
        return get.judged(caller, request);
    };
    let from_owner: Option<String> = get.value("from_owner")?;
    let to_owner: Option<String> = get.value("to_owner")?;
    let missing = || Error::internal(format!("transfer {transfer_id} found no account"));
    let (from_owner, to_owner) = (from_owner.ok_or_else(missing)?, to_owner.ok_or_else(missing)?);

    let time = |column| get.value::<DateTime<Utc>>(column);
    let account = |id, owner, (balance, entry_count), created_at| account::Model {
        id,
        owner,
        balance,
        currency: request.currency,
        created_at,
        closed_at: None,
        entry_count,
    };
    // Each entry left its account as the statement's update did.
    let entry = |id, account: &account::Model, amount, created_at| entry::Model {
        id,
        account_id: account.id,
        amount,
        created_at,
        transfer_id: Some(transfer_id),
        balance_after: account.balance,
        account_seq: account.entry_count,
    };
    let from_account = account(
        request.from_account_id,
        from_owner,
        (get.value("from_balance_after")?, get.value("from_entry_count")?),
        time("from_created_at")?,
    );
    let to_account = account(
        request.to_account_id,
        to_owner,
        (get.value("to_balance_after")?, get.value("to_entry_count")?),
        time("to_created_at")?,
    );
    Ok(Attempt::Done(Box::new(TransferOutcome {
        transfer: transfer::Model {
            id: transfer_id,
            from_account_id: request.from_account_id,
            to_account_id: request.to_account_id,
            amount,
            created_at: time("transfer_created_at")?,
            idempotency_key: request.idempotency_key.as_ref().map(|key| key.as_str().to_owned()),
            request_hash: request_hash.map(str::to_owned),
        },
        from_entry: entry(get.value("from_entry_id")?, &from_account, -amount, time("from_entry_created_at")?),
        to_entry: entry(get.value("to_entry_id")?, &to_account, amount, time("to_entry_created_at")?),
        from_account,
        to_account,
    })))
}

/// The columns of the transfer statement's row, read by name.
struct Columns<'a>(&'a QueryResult);

impl Columns<'_> {
    fn value<T: sea_orm::TryGetable>(&self, column: &str) -> Result<T, Error> {
        self.0.try_get("", column).map_err(|err| Error::internal_from(format!("reading {column}"), err))
    }

    /// What a transfer that wrote nothing comes to: the facts its statement reported, judged.
    fn judged(&self, caller: &str, request: &TransferRequest) -> Result<Attempt, Error> {
        let from_owner: Option<String> = self.value("from_owner")?;
        let to_owner: Option<String> = self.value("to_owner")?;
        let facts = Facts {
            authenticated: self.value("authenticated")?,
            key_used: self.value("key_used")?,
            from: self.found("from", from_owner.as_deref())?,
            to: self.found("to", to_owner.as_deref())?,
        };
        match judge(caller, request, facts)? {
            Verdict::KeyUsed => Ok(Attempt::KeyUsed),
            Verdict::Allowed => Err(Error::internal("a transfer that broke no rule wrote nothing")),
        }
    }

    /// The account on one `side` ("from" or "to"), if the statement found it.
    fn found<'a>(&self, side: &str, owner: Option<&'a str>) -> Result<Option<Found<'a>>, Error> {
        let Some(owner) = owner else {
            return Ok(None);
        };
        let code: String = self.value(&format!("{side}_currency"))?;
        Ok(Some(Found {
            owner,
            currency: Currency::try_from_value(&code).map_err(|err| Error::internal_from("reading a currency", err))?,
            balance: self.value(&format!("{side}_balance"))?,
            closed: self.value(&format!("{side}_closed"))?,
        }))
    }
}

/// The transfer as SQLite runs it: the same steps as [`TRANSFER_SQL`], as four statements sent as one command, in
/// the savepoint the writer gave this write (see `db::Database::write`), ending in a row with the same columns as
/// [`TRANSFER_SQL`]'s. SQLite has no data-modifying `WITH`, but sqlx runs every statement of one command on its
/// connection's thread in one go, and the writer's requests wait on each other, so one command instead of one per
/// statement takes the hand-offs between threads off the path every write waits on; and so do rows not sent: each
/// row, and each statement's end, is a hand-off back to the writer. The transfer row is written only when every
/// rule holds; each later statement acts only when the one before it wrote (`changes()`: the rows the last
/// completed insert or update wrote), and the transfer is the newest (this is the only writer). The last statement
/// reads the accounts after the update: what was found, when nothing was written, and what was written otherwise.
/// Parameters as in [`TRANSFER_SQL`]. A password change in the token's second still counts as before it, as in
/// `auth::check_session`.
const SQLITE_TRANSFER_SQL: &str = r#"
INSERT INTO transfers (from_account_id, to_account_id, amount, idempotency_key, request_hash)
SELECT $1, $2, $3, $6, $7 FROM accounts f JOIN accounts t ON f.id = $1 AND t.id = $2
WHERE f.owner = $5 AND f.currency = $4 AND t.currency = $4 AND f.closed_at IS NULL AND t.closed_at IS NULL
  AND f.balance >= $3 AND t.balance <= 9223372036854775807 - $3
  AND EXISTS (
        SELECT 1 FROM sessions s JOIN users u ON u.username = s.username
        WHERE s.id = $8 AND s.username = $5 AND s.revoked_at IS NULL AND u.deleted_at IS NULL
          AND unixepoch(u.password_changed_at) <= $9
  )
  AND NOT EXISTS (SELECT 1 FROM transfers WHERE from_account_id = $1 AND idempotency_key = $6);

UPDATE accounts SET balance = CASE WHEN id = $1 THEN balance - $3 ELSE balance + $3 END,
    entry_count = entry_count + 1
WHERE id IN ($1, $2) AND changes() = 1;

INSERT INTO entries (account_id, amount, transfer_id, balance_after, account_seq)
SELECT id, CASE WHEN id = $1 THEN -$3 ELSE $3 END, (SELECT max(id) FROM transfers), balance, entry_count
FROM accounts WHERE id IN ($1, $2) AND changes() = 2;

SELECT
    EXISTS (
        SELECT 1 FROM sessions s JOIN users u ON u.username = s.username
        WHERE s.id = $8 AND s.username = $5 AND s.revoked_at IS NULL AND u.deleted_at IS NULL
          AND unixepoch(u.password_changed_at) <= $9
    ) AS authenticated,
    EXISTS (SELECT 1 FROM transfers WHERE from_account_id = $1 AND idempotency_key = $6) AS key_used,
    f.owner AS from_owner, f.currency AS from_currency, f.balance AS from_balance, f.created_at AS from_created_at,
    f.closed_at IS NOT NULL AS from_closed,
    t.owner AS to_owner, t.currency AS to_currency, t.balance AS to_balance, t.created_at AS to_created_at,
    t.closed_at IS NOT NULL AS to_closed,
    w.id AS transfer_id, w.created_at AS transfer_created_at,
    f.balance AS from_balance_after, t.balance AS to_balance_after,
    f.entry_count AS from_entry_count, t.entry_count AS to_entry_count,
    ef.id AS from_entry_id, ef.created_at AS from_entry_created_at,
    et.id AS to_entry_id, et.created_at AS to_entry_created_at
FROM (SELECT 1) AS one
LEFT JOIN accounts f ON f.id = $1
LEFT JOIN accounts t ON t.id = $2
LEFT JOIN transfers w ON changes() = 2 AND w.id = (SELECT max(id) FROM transfers)
LEFT JOIN entries ef ON w.id IS NOT NULL AND ef.account_id = $1 AND ef.account_seq = f.entry_count
LEFT JOIN entries et ON w.id IS NOT NULL AND et.account_id = $2 AND et.account_seq = t.entry_count;
"#;

/// The statements' parameters, in the order both transfer statements number them.
fn transfer_values(
    caller: &VerifiedToken,
    request: &TransferRequest,
    request_hash: Option<&str>,
) -> Vec<sea_orm::Value> {
    vec![
        request.from_account_id.into(),
        request.to_account_id.into(),
        request.amount.minor_units().into(),
        request.currency.to_value().into(),
        caller.username.clone().into(),
        request.idempotency_key.as_ref().map(|key| key.as_str().to_owned()).into(),
        request_hash.map(str::to_owned).into(),
        caller.session_id.clone().into(),
        caller.issued_at.into(),
    ]
}

/// The first result for a key already used: the same transfer, no money moved; or `IDEMPOTENCY_KEY_REUSED` when
/// the key came with a different request.
async fn replay(
    db: &impl ConnectionTrait,
    caller: &VerifiedToken,
    request: &TransferRequest,
    request_hash: Option<&str>,
) -> Result<TransferOutcome, Error> {
    let transfer = transfer::Entity::find()
        .filter(transfer::Column::FromAccountId.eq(request.from_account_id))
        .filter(transfer::Column::IdempotencyKey.eq(request.idempotency_key.as_ref().map(IdempotencyKey::as_str)))
        .one(db)
        .await?
        .ok_or_else(|| Error::internal("an idempotency key vanished"))?;
    let accounts = accounts_by_ids(db, &[transfer.from_account_id, transfer.to_account_id]).await?;
    let missing = || Error::internal(format!("transfer {} is incomplete", transfer.id));
    let account = |id| accounts.iter().find(|a| a.id == id).cloned().ok_or_else(missing);
    let from_account = account(transfer.from_account_id)?;
    // The key belongs to whoever may debit the account; anyone else learns nothing about its transfer.
    if from_account.owner != caller.username {
        return Err(Error::Forbidden);
    }
    if transfer.request_hash.as_deref() != request_hash {
        return Err(Error::IdempotencyKeyReused);
    }
    let entries = entry::Entity::find().filter(entry::Column::TransferId.eq(transfer.id)).all(db).await?;
    let entry = |id| entries.iter().find(|e| e.account_id == id).cloned().ok_or_else(missing);
    Ok(TransferOutcome {
        from_account,
        to_account: account(transfer.to_account_id)?,
        from_entry: entry(transfer.from_account_id)?,
        to_entry: entry(transfer.to_account_id)?,
        transfer,
    })
}

/// What a unique key in `transfers` breaks when a racing request committed the same key first.
const KEY_CONSTRAINT: &str = "transfers_idempotency_key_key";

/// A digest of what a keyed request asks for, kept with its transfer; `None` without a key. The currency is its
/// stored code, a spelling the schema fixes (migration `account_closing` rewrote hashes made before).
fn request_hash(request: &TransferRequest) -> Option<String> {
    request.idempotency_key.as_ref()?;
    let canonical = format!(
        "{}|{}|{}|{}",
        request.from_account_id,
        request.to_account_id,
        request.amount.minor_units(),
        request.currency.to_value()
    );
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}
