//! A bank under load: funded holders sending money around, and a banker watching the total.

use serde_json::json;

use crate::TestApp;

/// A depositor with one funded USD account.
pub struct Holder {
    pub token: String,
    pub account: String,
}

pub struct Bank {
    pub banker: String,
    pub holders: Vec<Holder>,
    /// All the money deposited: what the accounts must always add up to.
    pub total: i64,
}

const TRANSFER: &str = "mutation($input: CreateTransferInput!) { createTransfer(input: $input) { transfer { id } } }";

impl Bank {
    /// Signs up a banker and `holders` depositors, each with a USD account holding `each`.
    pub async fn open(app: &TestApp, holders: usize, each: i64) -> Self {
        let banker = app.banker("banker").await;
        let mut list = Vec::new();
        for i in 0..holders {
            let token = app.user(&format!("holder_{i}")).await;
            let account = app.open_account(&token, "USD").await;
            app.deposit(&banker, &account, each).await;
            list.push(Holder { token, account });
        }
        Self { banker, holders: list, total: holders as i64 * each }
    }

    /// Two clients per holder send `rounds` transfers each around a ring, one clockwise and one counter-clockwise,
    /// so every pair of neighbours moves money both ways at once. Client `c` talks to `apps[c % apps.len()]`.
    /// Returns the error code of every refused transfer.
    pub async fn run_transfers(&self, apps: &[&TestApp], rounds: usize) -> Vec<String> {
        let n = self.holders.len();
        let clients = (0..n * 2).map(|c| async move {
            let app = apps[c % apps.len()];
            let from = c % n;
            let to = if c < n { (from + 1) % n } else { (from + n - 1) % n };
            let mut codes = Vec::new();
            for round in 0..rounds {
                let input = json!({ "input": {
                    "fromAccountId": self.holders[from].account, "toAccountId": self.holders[to].account,
                    "amount": 50 + (round as i64 * 37) % 400, "currency": "USD",
                }});
                let response = app.graphql(TRANSFER, input, Some(&self.holders[from].token)).await;
                codes.extend(response.error_code().map(str::to_owned));
            }
            codes
        });
        futures::future::join_all(clients).await.into_iter().flatten().collect()
    }

    /// The total as the banker reads it, `times` times in a row (run it beside a load).
    pub async fn watch_total(&self, app: &TestApp, times: usize) -> Vec<i64> {
        let mut totals = Vec::with_capacity(times);
        for _ in 0..times {
            totals.push(self.total_seen(app).await);
        }
        totals
    }

    /// The sum of every balance, as the banker reads it in one request.
    pub async fn total_seen(&self, app: &TestApp) -> i64 {
        let response = app
            .graphql("{ users(first: 100) { edges { node { accounts { balance } } } } }", json!({}), Some(&self.banker))
            .await;
        response
            .data("users/edges")
            .as_array()
            .expect("edges")
            .iter()
            .flat_map(|edge| edge["node"]["accounts"].as_array().cloned().unwrap_or_default())
            .map(|account| account["balance"].as_str().expect("a balance").parse::<i64>().expect("money"))
            .sum()
    }
}
