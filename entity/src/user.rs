//! `users`: people who sign in. Never deleted, only marked `deleted_at`, so usernames are never reused.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub username: String,
    pub hashed_password: String,
    pub full_name: String,
    /// The primary email, one of the user's rows in `emails`; `None` once the user is deleted.
    pub email: Option<String>,
    pub password_changed_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub role: Role,
    pub deleted_at: Option<DateTimeUtc>,
}

/// What a user may do; stored as text and checked by `users_role_known`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum Role {
    #[sea_orm(string_value = "depositor")]
    Depositor,
    #[sea_orm(string_value = "banker")]
    Banker,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
