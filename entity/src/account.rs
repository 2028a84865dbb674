//! `accounts`: one per owner and currency (`owner_currency_key`); the balance never goes below zero. An account
//! closes when its owner is deleted, and only an empty one can (`accounts_closed_empty`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub owner: String,
    /// Minor units (cents).
    pub balance: i64,
    pub currency: Currency,
    pub created_at: DateTimeUtc,
    /// When the owner's deletion closed the account; money no longer moves into or out of it.
    pub closed_at: Option<DateTimeUtc>,
    /// How many entries the account has: the `account_seq` of its newest one.
    pub entry_count: i64,
}

/// The currencies the bank runs; stored as ISO 4217 codes and checked by `accounts_currency_supported`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum Currency {
    #[sea_orm(string_value = "USD")]
    Usd,
    #[sea_orm(string_value = "EUR")]
    Eur,
    #[sea_orm(string_value = "CAD")]
    Cad,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
