//! Accounts, entries and transfers over GraphQL.

// `fromAccount` and `fromEntry` are field names of the public schema, not conversions.
#![allow(clippy::wrong_self_convention)]

use async_graphql::connection::Connection;
use async_graphql::{
    Context, Enum, ID, InputObject, InputValueError, InputValueResult, Object, Scalar, ScalarType, Value,
};
use chrono::{DateTime, Utc};
use service::auth::Caller;
use service::domain::{Amount, IdempotencyKey, Period};
use service::entity::{account, entry, transfer};
use service::ledger::{self, TransferOutcome, TransferRequest};

use super::node::{Kind, global_id, parse_id};
use super::users::User;
use super::{
    ApiError, PageArgs, TotalCount, authorize_owner, caller, database, db, feed, loaders, metrics, paginate,
    verified_token,
};

/// An amount of money in minor units (cents), as a signed 64-bit integer. Serialized as a string ("1250") because
/// JavaScript numbers lose precision past 2^53; accepted as a string or an integer.
#[derive(Clone, Copy, Debug)]
pub struct Money(pub i64);

#[Scalar(name = "Money")]
impl ScalarType for Money {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => text
                .parse::<i64>()
                .map(Money)
                .map_err(|_| InputValueError::custom("Money is a whole number of minor units within 64 bits")),
            Value::Number(number) => number
                .as_i64()
                .map(Money)
                .ok_or_else(|| InputValueError::custom("Money is a whole number of minor units within 64 bits")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// A currency the bank runs (ISO 4217).
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
#[graphql(name = "Currency")]
pub enum CurrencyCode {
    Usd,
    Eur,
    Cad,
}

impl From<account::Currency> for CurrencyCode {
    fn from(currency: account::Currency) -> Self {
        match currency {
            account::Currency::Usd => Self::Usd,
            account::Currency::Eur => Self::Eur,
            account::Currency::Cad => Self::Cad,
        }
    }
}

impl From<CurrencyCode> for account::Currency {
    fn from(currency: CurrencyCode) -> Self {
        match currency {
            CurrencyCode::Usd => Self::Usd,
            CurrencyCode::Eur => Self::Eur,
            CurrencyCode::Cad => Self::Cad,
        }
    }
}

/// An account: one per owner and currency.
pub struct Account(pub account::Model);

impl Account {
    /// The account `id`, as `account(id:)` and `node` answer it: the caller's own, or any for a banker; `FORBIDDEN`
    /// for another's, `None` when there is none.
    pub(crate) async fn find(ctx: &Context<'_>, caller: &Caller, id: i64) -> Result<Option<Self>, ApiError> {
        let Some(account) = loaders(ctx).account.load_one(id).await? else { return Ok(None) };
        if !caller.may_act_for(&account.owner) {
            return Err(service::Error::Forbidden.into());
        }
        Ok(Some(Self(account)))
    }
}

/// An account: one per owner and currency. Of someone else's account (the receiving end of your transfer), a
/// depositor reads what paying it needs: its id, currency and owner's username; the rest answers `FORBIDDEN` and is
/// nullable for that reason.
#[Object]
impl Account {
    /// Global and opaque (see `Node`).
    pub(crate) async fn id(&self) -> ID {
        global_id(Kind::Account, self.0.id)
    }

    async fn owner(&self, ctx: &Context<'_>) -> Result<User, ApiError> {
        let owner = loaders(ctx).user.load_one(self.0.owner.clone()).await?;
        owner.map(User::reached).ok_or_else(|| service::Error::NotFound { what: "user" }.into())
    }

    /// The owner or a banker only.
    async fn balance(&self, ctx: &Context<'_>) -> Result<Option<Money>, ApiError> {
        authorize_owner(ctx, &self.0.owner).await?;
        Ok(Some(Money(self.0.balance)))
    }

    async fn currency(&self) -> CurrencyCode {
        self.0.currency.into()
    }

    /// The owner or a banker only.
    async fn created_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>, ApiError> {
        authorize_owner(ctx, &self.0.owner).await?;
        Ok(Some(self.0.created_at))
    }

    /// When the account closed (its owner was deleted); money no longer moves into or out of it. Null while open.
    /// The owner or a banker only: it would tell anyone else that the owner was deleted.
    async fn closed_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>, ApiError> {
        authorize_owner(ctx, &self.0.owner).await?;
        Ok(self.0.closed_at)
    }

    /// The account's ledger, newest first (the owner or a banker only), in `[since, until)` when given. Its cursors
    /// are those of `Subscription.entryAdded`.
    #[allow(clippy::too_many_arguments)]
    async fn entries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size from the start (after `after`), 0–100; default 20.")] first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Page size from the end (before `before`), 0–100.")] last: Option<i32>,
        before: Option<String>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<Connection<String, Entry, TotalCount>>, ApiError> {
        authorize_owner(ctx, &self.0.owner).await?;
        let args = PageArgs { first, after, last, before };
        entries_page(ctx, self.0.id, Period::parse(since, until)?, args).await.map(Some)
    }

    /// Transfers into and out of the account, newest first (the owner or a banker only), in `[since, until)` when
    /// given.
    #[allow(clippy::too_many_arguments)]
    async fn transfers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size from the start (after `after`), 0–100; default 20.")] first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Page size from the end (before `before`), 0–100.")] last: Option<i32>,
        before: Option<String>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<Connection<String, Transfer, TotalCount>>, ApiError> {
        authorize_owner(ctx, &self.0.owner).await?;
        let (account_id, period, reads) = (self.0.id, Period::parse(since, until)?, db(ctx).clone());
        let fetch = |slice| ledger::transfers_of(db(ctx), account_id, period, slice);
        let total = TotalCount::new(move || {
            let reads = reads.clone();
            async move { ledger::count_transfers(&reads, account_id, period).await }
        });
        let args = PageArgs { first, after, last, before };
        paginate(args, fetch, |transfer: &transfer::Model| transfer.id, Transfer, total).await.map(Some)
    }

    /// The account's statement for `[since, until)`: balances, totals and entries all from one snapshot, so that
    /// `closingBalance = openingBalance + totalIn − totalOut`. The owner or a banker only; anyone else's `FORBIDDEN`
    /// makes the account null.
    async fn statement(
        &self,
        ctx: &Context<'_>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Statement, ApiError> {
        authorize_owner(ctx, &self.0.owner).await?;
        let period = Period::parse(Some(since), Some(until))?;
        let totals = ledger::statement(db(ctx), self.0.id, period).await?;
        Ok(Statement { account_id: self.0.id, period, totals })
    }
}

async fn entries_page(
    ctx: &Context<'_>,
    account_id: i64,
    period: Period,
    args: PageArgs,
) -> Result<Connection<String, Entry, TotalCount>, ApiError> {
    let reads = db(ctx).clone();
    let fetch = |slice| ledger::entries_of(db(ctx), account_id, period, slice);
    let total = TotalCount::new(move || {
        let reads = reads.clone();
        async move { ledger::count_entries(&reads, account_id, period).await }
    });
    paginate(args, fetch, |entry: &entry::Model| entry.account_seq, Entry, total).await
}

/// An account's ledger over a period.
pub struct Statement {
    account_id: i64,
    period: Period,
    totals: ledger::Statement,
}

/// An account's ledger over a period `[since, until)`.
#[Object]
impl Statement {
    /// The balance at `since`.
    async fn opening_balance(&self) -> Money {
        Money(self.totals.opening_balance)
    }

    /// The balance at `until`.
    async fn closing_balance(&self) -> Money {
        Money(self.totals.closing_balance)
    }

    /// The money that came in, a positive sum.
    async fn total_in(&self) -> Money {
        Money(self.totals.total_in)
    }

    /// The money that went out, a positive sum.
    async fn total_out(&self) -> Money {
        Money(self.totals.total_out)
    }

    async fn entry_count(&self) -> i64 {
        self.totals.entry_count
    }

    /// The period's entries, newest first.
    async fn entries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size from the start (after `after`), 0–100; default 20.")] first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Page size from the end (before `before`), 0–100.")] last: Option<i32>,
        before: Option<String>,
    ) -> Result<Connection<String, Entry, TotalCount>, ApiError> {
        entries_page(ctx, self.account_id, self.period, PageArgs { first, after, last, before }).await
    }
}

/// One change to one account's balance.
pub struct Entry(pub entry::Model);

impl Entry {
    /// The entry `id`, as `node` answers it: it belongs to its account, so the account's owner or a banker reads
    /// it; `FORBIDDEN` for anyone else, `None` when there is none.
    pub(crate) async fn find(ctx: &Context<'_>, caller: &Caller, id: i64) -> Result<Option<Self>, ApiError> {
        let Some(entry) = loaders(ctx).entry.load_one(id).await? else { return Ok(None) };
        if !caller.may_act_for(&load_account(ctx, entry.account_id).await?.0.owner) {
            return Err(service::Error::Forbidden.into());
        }
        Ok(Some(Self(entry)))
    }
}

#[Object]
impl Entry {
    /// Global and opaque (see `Node`).
    pub(crate) async fn id(&self) -> ID {
        global_id(Kind::Entry, self.0.id)
    }

    async fn account(&self, ctx: &Context<'_>) -> Result<Account, ApiError> {
        load_account(ctx, self.0.account_id).await
    }

    /// Negative when money left the account.
    async fn amount(&self) -> Money {
        Money(self.0.amount)
    }

    async fn kind(&self) -> EntryKind {
        match self.0.kind() {
            entry::Kind::Deposit => EntryKind::Deposit,
            entry::Kind::Withdrawal => EntryKind::Withdrawal,
            entry::Kind::TransferIn => EntryKind::TransferIn,
            entry::Kind::TransferOut => EntryKind::TransferOut,
        }
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The account's balance right after this entry.
    async fn balance_after(&self) -> Money {
        Money(self.0.balance_after)
    }

    /// The transfer this entry is half of; null for a deposit or a withdrawal.
    async fn transfer(&self, ctx: &Context<'_>) -> Result<Option<Transfer>, ApiError> {
        let Some(id) = self.0.transfer_id else {
            return Ok(None);
        };
        Ok(loaders(ctx).transfer.load_one(id).await?.map(Transfer))
    }
}

/// What an entry records.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum EntryKind {
    /// Money a banker put in.
    Deposit,
    /// Money taken out of the bank.
    Withdrawal,
    /// The receiving half of a transfer.
    TransferIn,
    /// The paying half of a transfer.
    TransferOut,
}

/// Money moved from one account to another.
pub struct Transfer(pub transfer::Model);

impl Transfer {
    /// The transfer `id`, as `transfer(id:)` and `node` answer it: one touching the caller's accounts, or any for
    /// a banker; `FORBIDDEN` for another, `None` when there is none.
    pub(crate) async fn find(ctx: &Context<'_>, caller: &Caller, id: i64) -> Result<Option<Self>, ApiError> {
        let Some(transfer) = loaders(ctx).transfer.load_one(id).await? else { return Ok(None) };
        if !caller.is_banker() {
            let accounts = loaders(ctx).account.load_many([transfer.from_account_id, transfer.to_account_id]).await?;
            if !accounts.values().any(|account| caller.may_act_for(&account.owner)) {
                return Err(service::Error::Forbidden.into());
            }
        }
        Ok(Some(Self(transfer)))
    }
}

#[Object]
impl Transfer {
    /// Global and opaque (see `Node`).
    pub(crate) async fn id(&self) -> ID {
        global_id(Kind::Transfer, self.0.id)
    }

    async fn from_account(&self, ctx: &Context<'_>) -> Result<Account, ApiError> {
        load_account(ctx, self.0.from_account_id).await
    }

    async fn to_account(&self, ctx: &Context<'_>) -> Result<Account, ApiError> {
        load_account(ctx, self.0.to_account_id).await
    }

    async fn amount(&self) -> Money {
        Money(self.0.amount)
    }

    /// The currency of both accounts.
    async fn currency(&self, ctx: &Context<'_>) -> Result<CurrencyCode, ApiError> {
        Ok(load_account(ctx, self.0.from_account_id).await?.0.currency.into())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A transfer and everything it wrote.
pub struct TransferResult(TransferOutcome);

#[Object]
impl TransferResult {
    async fn transfer(&self) -> Transfer {
        Transfer(self.0.transfer.clone())
    }

    async fn from_account(&self) -> Account {
        Account(self.0.from_account.clone())
    }

    /// The receiving account: of someone else's, you read what paying it needs (see `Account`).
    async fn to_account(&self) -> Account {
        Account(self.0.to_account.clone())
    }

    async fn from_entry(&self) -> Entry {
        Entry(self.0.from_entry.clone())
    }

    /// The receiving account's entry (its owner or a banker only): its `balanceAfter` is that account's balance.
    async fn to_entry(&self, ctx: &Context<'_>) -> Result<Option<Entry>, ApiError> {
        authorize_owner(ctx, &self.0.to_account.owner).await?;
        Ok(Some(Entry(self.0.to_entry.clone())))
    }
}

#[derive(InputObject)]
pub struct DepositInput {
    /// The account's `id`.
    account_id: ID,
    /// Greater than zero.
    amount: Money,
}

#[derive(InputObject)]
pub struct WithdrawInput {
    /// The account's `id`: yours, or any for a banker.
    account_id: ID,
    /// Greater than zero, at most the balance.
    amount: Money,
    /// 1–255 characters, no control characters. A retry with the same key and amount returns the first entry and
    /// takes no money; keys are per account.
    idempotency_key: Option<String>,
}

/// The receiver is named by exactly one of `toAccountId` and `toUsername`.
#[derive(InputObject)]
pub struct CreateTransferInput {
    /// The `id` of one of your accounts.
    from_account_id: ID,
    /// The receiving account's `id`.
    to_account_id: Option<ID>,
    /// Pay this user, into their account in `currency`. No such user, or none open in that currency: `NOT_FOUND`.
    to_username: Option<String>,
    /// Greater than zero.
    amount: Money,
    /// Both accounts must hold this currency.
    currency: CurrencyCode,
    /// 1–255 characters, no control characters. A retry with the same key and input returns the first result and
    /// moves no money; keys are per debited account.
    idempotency_key: Option<String>,
}

#[derive(Default)]
pub struct LedgerQuery;

#[Object]
impl LedgerQuery {
    /// An account: yours, or any for a banker.
    async fn account(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Account>, ApiError> {
        let caller = caller(ctx).await?;
        Account::find(ctx, caller, parse_id(&id, Kind::Account, "id")?).await
    }

    /// A transfer touching one of your accounts, or any for a banker.
    async fn transfer(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Transfer>, ApiError> {
        let caller = caller(ctx).await?;
        Transfer::find(ctx, caller, parse_id(&id, Kind::Transfer, "id")?).await
    }
}

#[derive(Default)]
pub struct LedgerMutation;

#[Object]
impl LedgerMutation {
    /// Opens an account for you in `currency`, with a zero balance; one per currency.
    async fn create_account(&self, ctx: &Context<'_>, currency: CurrencyCode) -> Result<Account, ApiError> {
        let caller = caller(ctx).await?;
        Ok(Account(ledger::create_account(database(ctx), caller, currency.into()).await?))
    }

    /// Puts money into an account (bankers only): the one way money enters the bank.
    async fn deposit(&self, ctx: &Context<'_>, input: DepositInput) -> Result<Entry, ApiError> {
        let caller = caller(ctx).await?;
        let account_id = parse_id(&input.account_id, Kind::Account, "accountId")?;
        let amount = Amount::parse(input.amount.0)?;
        Ok(Entry(ledger::deposit(database(ctx), feed(ctx), caller, account_id, amount).await?))
    }

    /// Takes money out of an account (yours, or any for a banker): the one way money leaves the bank.
    async fn withdraw(&self, ctx: &Context<'_>, input: WithdrawInput) -> Result<Entry, ApiError> {
        let caller = caller(ctx).await?;
        let account_id = parse_id(&input.account_id, Kind::Account, "accountId")?;
        let amount = Amount::parse(input.amount.0)?;
        let key = input.idempotency_key.as_deref().map(IdempotencyKey::parse).transpose()?;
        Ok(Entry(ledger::withdraw(database(ctx), feed(ctx), caller, account_id, amount, key.as_ref()).await?))
    }

    /// Moves money from one of your accounts to another account in the same currency: one named by its id, or
    /// the account of a user named by their username.
    async fn create_transfer(&self, ctx: &Context<'_>, input: CreateTransferInput) -> Result<TransferResult, ApiError> {
        let token = verified_token(ctx)?;
        let currency = input.currency.into();
        let to_account_id = match (&input.to_account_id, &input.to_username) {
            (Some(id), None) => parse_id(id, Kind::Account, "toAccountId")?,
            (None, Some(username)) => ledger::receiving_account(database(ctx).reads(), username, currency).await?,
            _ => {
                return Err(ApiError::invalid_argument(
                    "toAccountId",
                    "give exactly one of toAccountId and toUsername",
                ));
            }
        };
        let request = TransferRequest {
            from_account_id: parse_id(&input.from_account_id, Kind::Account, "fromAccountId")?,
            to_account_id,
            amount: Amount::parse(input.amount.0)?,
            currency,
            idempotency_key: input.idempotency_key.as_deref().map(IdempotencyKey::parse).transpose()?,
        };
        let outcome = ledger::transfer(database(ctx), feed(ctx), &token, &request).await;
        let outcome = match outcome {
            // A receiver closed since it was looked up is as absent as one that never was.
            Err(service::Error::AccountClosed) if input.to_username.is_some() => {
                Err(service::Error::NotFound { what: "account" })
            }
            outcome => outcome,
        }?;
        metrics(ctx).count_transfer();
        Ok(TransferResult(outcome))
    }
}

async fn load_account(ctx: &Context<'_>, id: i64) -> Result<Account, ApiError> {
    let account = loaders(ctx).account.load_one(id).await?;
    account.map(Account).ok_or_else(|| service::Error::NotFound { what: "account" }.into())
}

#[cfg(test)]
mod tests {
    use async_graphql::{InputType, Name, Number};
    use proptest::prelude::*;

    use super::*;

    fn money(value: Value) -> InputValueResult<Money> {
        <Money as ScalarType>::parse(value)
    }

    proptest! {
        #[test]
        fn every_i64_round_trips_as_a_string_or_an_integer(n in any::<i64>()) {
            prop_assert_eq!(money(Value::String(n.to_string())).map(|m| m.0).ok(), Some(n));
            prop_assert_eq!(money(Value::Number(Number::from(n))).map(|m| m.0).ok(), Some(n));
            prop_assert_eq!(ScalarType::to_value(&Money(n)), Value::String(n.to_string()));
        }

        #[test]
        fn fractions_and_text_are_not_money(x in any::<f64>().prop_filter("fractional", |x| x.fract() != 0.0), text in "[^0-9-]*[a-z.][^0-9]*") {
            let fraction = Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null);
            prop_assert!(money(fraction).is_err());
            prop_assert!(money(Value::String(x.to_string())).is_err());
            prop_assert!(money(Value::String(text)).is_err());
        }

        #[test]
        fn only_the_three_currency_codes_are_currencies(code in "[A-Z]{1,5}") {
            let parsed = <CurrencyCode as InputType>::parse(Some(Value::Enum(Name::new(&code))));
            prop_assert_eq!(parsed.is_ok(), ["USD", "EUR", "CAD"].contains(&code.as_str()));
        }
    }

    #[test]
    fn integers_beyond_64_bits_are_not_money() {
        assert!(money(Value::String("9223372036854775808".into())).is_err());
        assert!(money(Value::String("-9223372036854775809".into())).is_err());
    }
}
