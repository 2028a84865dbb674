//! `transfers`: money moved from one account to another, never updated or deleted, with the idempotency key of the
//! request that made it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "transfers")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub from_account_id: i64,
    pub to_account_id: i64,
    /// Minor units; always positive.
    pub amount: i64,
    pub created_at: DateTimeUtc,
    /// The client's key for the request that made this transfer; unique per debited account.
    pub idempotency_key: Option<String>,
    /// SHA-256 of that request: the same key with another request is refused. Set exactly when the key is.
    pub request_hash: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
