//! The bank as tests (and the benchmark) set it up: funded holders, the transfer document, a workload sending money
//! around while a banker watches the total, and the ledger's invariants checked in the database itself.

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::TestApp;

/// `createTransfer`, answering the transfer's id: the one document every test and the benchmark send.
pub const TRANSFER: &str =
    "mutation($input: CreateTransferInput!) { createTransfer(input: $input) { transfer { id } } }";

/// The variables of a transfer of `amount` (a number or a decimal string) from one account to another.
pub fn transfer_input(from: &str, to: &str, amount: impl Into<Value>, currency: &str) -> Value {
    json!({ "input": { "fromAccountId": from, "toAccountId": to, "amount": amount.into(), "currency": currency } })
}

/// A depositor with one funded USD account.
#[derive(Clone, Debug)]
pub struct Holder {
    pub username: String,
    pub token: String,
    pub account: String,
}

impl Holder {
    /// Signs up `username`, opens a USD account and has `banker` deposit `amount` into it (nothing if 0).
    pub async fn open(app: &TestApp, banker: &str, username: &str, amount: i64) -> Self {
        let token = app.user(username).await;
        let account = app.open_account(&token, "USD").await;
        if amount > 0 {
            app.deposit(banker, &account, amount).await;
        }
        Self { username: username.to_owned(), token, account }
    }
}

/// A banker and two depositors: alice with 10 000 and bob with 5 000 on their USD accounts.
pub struct AliceAndBob {
    pub banker: String,
    pub alice: Holder,
    pub bob: Holder,
}

impl AliceAndBob {
    /// All the money deposited.
    pub const TOTAL: i64 = 15_000;

    pub async fn open(app: &TestApp) -> Self {
        Self::holding(app, 10_000, 5_000).await
    }

    /// The banker, and alice and bob with these amounts on their USD accounts (0: nothing deposited).
    pub async fn holding(app: &TestApp, alice: i64, bob: i64) -> Self {
        let banker = app.banker("banker").await;
        let alice = Holder::open(app, &banker, "alice", alice).await;
        let bob = Holder::open(app, &banker, "bob", bob).await;
        Self { banker, alice, bob }
    }
}

/// A bank for load: a banker and `holders` funded depositors.
pub struct Bank {
    pub banker: String,
    pub holders: Vec<Holder>,
    /// All the money deposited: what the accounts must always add up to.
    pub total: i64,
}

/// What a workload's transfers got.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Transfers that moved money.
    pub succeeded: usize,
    /// The error code of every refused transfer.
    pub refused: Vec<String>,
}

impl Outcomes {
    /// Asserts that most transfers moved money and that the rest were refused only for lack of funds: a server that
    /// refuses everything, or lets a serialization failure through to a client, fails it.
    pub fn assert_mostly_succeeded(&self) {
        let unexpected: Vec<_> = self.refused.iter().filter(|code| *code != "INSUFFICIENT_FUNDS").collect();
        assert!(unexpected.is_empty(), "errors other than INSUFFICIENT_FUNDS: {unexpected:?}");
        // The workload keeps balances well above its amounts, so at least half must go through.
        assert!(
            self.succeeded >= self.refused.len(),
            "{} transfers moved money, {} were refused",
            self.succeeded,
            self.refused.len()
        );
    }
}

impl Bank {
    /// Signs up a banker and `holders` depositors (`holder_0`, `holder_1`, …), each with a USD account holding
    /// `each`. A few are opened at once (each sign-up hashes a password), in order.
    pub async fn open(app: &TestApp, holders: usize, each: i64) -> Self {
        use futures::StreamExt;
        let banker = app.banker("banker").await;
        let opening = (0..holders).map(|i| {
            let banker = &banker;
            async move { Holder::open(app, banker, &format!("holder_{i}"), each).await }
        });
        let list: Vec<Holder> = futures::stream::iter(opening).buffered(8).collect().await;
        Self { banker, holders: list, total: holders as i64 * each }
    }

    /// Two clients per holder send `rounds` transfers each around a ring, one clockwise and one counter-clockwise,
    /// so every pair of neighbours moves money both ways at once. Client `c` talks to `apps[c % apps.len()]`.
    pub async fn run_transfers(&self, apps: &[&TestApp], rounds: usize) -> Outcomes {
        let n = self.holders.len();
        let clients = (0..n * 2).map(|c| async move {
            let app = apps[c % apps.len()];
            let from = c % n;
            let to = if c < n { (from + 1) % n } else { (from + n - 1) % n };
            let mut outcomes = Outcomes::default();
            for round in 0..rounds {
                let amount = 50 + (round as i64 * 37) % 400;
                let input = transfer_input(&self.holders[from].account, &self.holders[to].account, amount, "USD");
                let response = app.graphql(TRANSFER, input, Some(&self.holders[from].token)).await;
                match response.error_code() {
                    None => outcomes.succeeded += 1,
                    Some(code) => outcomes.refused.push(code.to_owned()),
                }
            }
            outcomes
        });
        let mut all = Outcomes::default();
        for outcomes in futures::future::join_all(clients).await {
            all.succeeded += outcomes.succeeded;
            all.refused.extend(outcomes.refused);
        }
        all
    }

    /// The total as the banker reads it, `times` times in a row (run it beside a load).
    pub async fn watch_total(&self, app: &TestApp, times: usize) -> Vec<i64> {
        let mut totals = Vec::with_capacity(times);
        for _ in 0..times {
            totals.push(self.total_seen(app).await);
        }
        totals
    }

    /// The sum of every balance, as the banker reads it in one request: each account through its own
    /// `account(id:)` field, so each balance is its own SQL statement and only the request's snapshot makes
    /// their sum consistent.
    pub async fn total_seen(&self, app: &TestApp) -> i64 {
        let fields: String = self
            .holders
            .iter()
            .enumerate()
            .map(|(i, holder)| format!("a{i}: account(id: \"{}\") {{ balance }} ", holder.account))
            .collect();
        let response = app.graphql(&format!("{{ {fields} }}"), json!({}), Some(&self.banker)).await;
        response.assert_ok();
        (0..self.holders.len()).map(|i| response.str(&format!("a{i}/balance")).parse::<i64>().expect("money")).sum()
    }
}

/// The ledger's invariants, each a query counting what breaks it (a 64-bit integer on both backends): zero means it
/// holds.
pub const LEDGER_INVARIANTS: [(&str, &str); 7] = [
    (
        "every balance is the sum of its account's entries",
        "SELECT count(*) FROM accounts a WHERE a.balance <> \
         (SELECT coalesce(sum(e.amount), 0) FROM entries e WHERE e.account_id = a.id)",
    ),
    ("no balance is negative", "SELECT count(*) FROM accounts WHERE balance < 0"),
    (
        "each transfer has exactly its two entries",
        // One join on the entries' transfer: correlated counts by transfer and account let SQLite's planner pick the
        // account's index, every entry of the account for each transfer, 95 s after a benchmark run.
        "SELECT count(*) FROM (SELECT count(e.id) AS entries, \
         sum(CASE WHEN e.account_id = t.from_account_id AND e.amount = -t.amount THEN 1 ELSE 0 END) AS debits, \
         sum(CASE WHEN e.account_id = t.to_account_id AND e.amount = t.amount THEN 1 ELSE 0 END) AS credits \
         FROM transfers t LEFT JOIN entries e ON e.transfer_id = t.id GROUP BY t.id) c \
         WHERE c.entries <> 2 OR c.debits <> 1 OR c.credits <> 1",
    ),
    (
        "all the money in the bank is what deposits brought in less what withdrawals took out",
        "SELECT CAST((SELECT coalesce(sum(balance), 0) FROM accounts) \
         - (SELECT coalesce(sum(amount), 0) FROM entries WHERE transfer_id IS NULL) AS BIGINT)",
    ),
    (
        "each withdrawal key names a withdrawal of its amount from its account",
        "SELECT count(*) FROM withdrawal_keys k JOIN entries e ON e.id = k.entry_id \
         WHERE e.account_id <> k.account_id OR e.amount <> -k.amount OR e.transfer_id IS NOT NULL",
    ),
    (
        "each account's entries are numbered 1, 2, 3, … without a gap",
        "SELECT count(*) FROM accounts a WHERE a.entry_count <> \
         (SELECT count(*) FROM entries e WHERE e.account_id = a.id) \
         OR a.entry_count <> (SELECT coalesce(max(e.account_seq), 0) FROM entries e WHERE e.account_id = a.id)",
    ),
    (
        "each entry's balance_after is the running sum of its account's ledger",
        // One pass over each account's ledger in order: a correlated sum per entry was quadratic in the ledger's
        // length, minutes after a benchmark run.
        "SELECT count(*) FROM (SELECT balance_after, sum(amount) OVER (PARTITION BY account_id ORDER BY account_seq \
         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running FROM entries) e WHERE e.balance_after <> e.running",
    ),
];

/// All the money in the bank.
pub const TOTAL_MONEY: &str = "SELECT CAST(coalesce(sum(balance), 0) AS BIGINT) FROM accounts";

async fn one_number(db: &DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("a ledger query")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .expect("an integer")
}

/// The invariants of [`LEDGER_INVARIANTS`] that do not hold, and all the money in the bank.
pub async fn ledger_check(db: &DatabaseConnection) -> (Vec<&'static str>, i64) {
    let mut broken = Vec::new();
    for (what, sql) in LEDGER_INVARIANTS {
        if one_number(db, sql).await != 0 {
            broken.push(what);
        }
    }
    (broken, one_number(db, TOTAL_MONEY).await)
}

/// Asserts the ledger's invariants ([`LEDGER_INVARIANTS`]) directly in the database. Returns all the money in the
/// bank.
pub async fn assert_ledger_consistent(db: &DatabaseConnection) -> i64 {
    let (broken, total) = ledger_check(db).await;
    assert!(broken.is_empty(), "ledger invariants broken: {broken:?}");
    total
}
