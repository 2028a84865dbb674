//! Batch loaders: nested fields of many parents cost one statement per kind, not one per parent.
//!
//! Each request gets its own loaders over the request's [`Db`], so batched reads see the same snapshot as the
//! rest of the request.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use service::db::Db;
use service::entity::{account, entry, transfer, user};
use service::{ledger, users};

type Shared = Arc<service::Error>;

/// All loaders of one request.
pub struct Loaders {
    pub accounts_by_owner: DataLoader<AccountsByOwner>,
    pub account: DataLoader<AccountById>,
    pub user: DataLoader<UserByName>,
    pub transfer: DataLoader<TransferById>,
    pub entry: DataLoader<EntryById>,
    pub emails: DataLoader<EmailsByUser>,
}

impl Loaders {
    pub fn new(db: &Db) -> Self {
        Self {
            accounts_by_owner: loader(AccountsByOwner(db.clone())),
            account: loader(AccountById(db.clone())),
            user: loader(UserByName(db.clone())),
            transfer: loader(TransferById(db.clone())),
            entry: loader(EntryById(db.clone())),
            emails: loader(EmailsByUser(db.clone())),
        }
    }
}

/// A loader that loads as soon as its first key's resolver yields, not after async-graphql's default 1 ms: a
/// request's loaders serve that request alone, whose sibling fields all ask for their keys in the same pass over a
/// list before anything yields, so waiting gathers nothing more. It only held the request's snapshot (on SQLite,
/// one of a few read connections) idle for a millisecond per level of nesting.
fn loader<T: Loader<K>, K: Send + Sync + std::hash::Hash + Eq + Clone + 'static>(inner: T) -> DataLoader<T> {
    DataLoader::new(inner, tokio::spawn).delay(std::time::Duration::ZERO)
}

pub struct AccountsByOwner(Db);

impl Loader<String> for AccountsByOwner {
    type Value = Vec<account::Model>;
    type Error = Shared;

    async fn load(&self, owners: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let mut by_owner: HashMap<String, Self::Value> = HashMap::new();
        for account in ledger::accounts_of_owners(&self.0, owners).await? {
            by_owner.entry(account.owner.clone()).or_default().push(account);
        }
        Ok(by_owner)
    }
}

pub struct AccountById(Db);

impl Loader<i64> for AccountById {
    type Value = account::Model;
    type Error = Shared;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        Ok(ledger::accounts_by_ids(&self.0, ids).await?.into_iter().map(|a| (a.id, a)).collect())
    }
}

pub struct UserByName(Db);

impl Loader<String> for UserByName {
    type Value = user::Model;
    type Error = Shared;

    async fn load(&self, names: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        Ok(users::by_usernames(&self.0, names).await?.into_iter().map(|u| (u.username.clone(), u)).collect())
    }
}

pub struct TransferById(Db);

impl Loader<i64> for TransferById {
    type Value = transfer::Model;
    type Error = Shared;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        Ok(ledger::transfers_by_ids(&self.0, ids).await?.into_iter().map(|t| (t.id, t)).collect())
    }
}

pub struct EntryById(Db);

impl Loader<i64> for EntryById {
    type Value = entry::Model;
    type Error = Shared;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Self::Value>, Self::Error> {
        Ok(ledger::entries_by_ids(&self.0, ids).await?.into_iter().map(|e| (e.id, e)).collect())
    }
}

pub struct EmailsByUser(Db);

impl Loader<String> for EmailsByUser {
    type Value = Vec<String>;
    type Error = Shared;

    async fn load(&self, names: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let mut by_user: HashMap<String, Self::Value> = HashMap::new();
        for email in users::emails_of(&self.0, names).await? {
            by_user.entry(email.username).or_default().push(email.email);
        }
        Ok(by_user)
    }
}
