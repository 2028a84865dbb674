//! `entries`: the ledger; one row per change of an account's balance, never updated or deleted.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "entries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub account_id: i64,
    /// Minor units; negative for money leaving the account.
    pub amount: i64,
    pub created_at: DateTimeUtc,
    /// The transfer this entry is half of; `None` for a deposit or a withdrawal.
    pub transfer_id: Option<i64>,
    /// The account's balance right after this entry.
    pub balance_after: i64,
    /// The entry's place in its account's ledger (1, 2, 3, …, in commit order): what cursors name.
    pub account_seq: i64,
}

/// What an entry records, from its transfer and the sign of its amount.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Deposit,
    Withdrawal,
    TransferIn,
    TransferOut,
}

impl Model {
    pub fn kind(&self) -> Kind {
        match (self.transfer_id, self.amount > 0) {
            (None, true) => Kind::Deposit,
            (None, false) => Kind::Withdrawal,
            (Some(_), true) => Kind::TransferIn,
            (Some(_), false) => Kind::TransferOut,
        }
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
