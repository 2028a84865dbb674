//! The GraphQL schema: one root per domain, merged; resolvers call services and never touch SQL.

mod error;
mod users;

use std::sync::Arc;

use async_graphql::{Context, EmptySubscription, MergedObject, Schema, SchemaBuilder};
use sea_orm::DatabaseConnection;
use service::auth::{Caller, TokenConfig};
use tokio::sync::OnceCell;

pub use self::error::ApiError;

#[derive(MergedObject, Default)]
pub struct Query(users::UserQuery);

#[derive(MergedObject, Default)]
pub struct Mutation(users::UserMutation);

pub type BankSchema = Schema<Query, Mutation, EmptySubscription>;

/// Lists are paged; no page is larger than this.
pub const MAX_PAGE_SIZE: i32 = 100;
/// The page size when a query does not say.
pub const DEFAULT_PAGE_SIZE: i32 = 20;

fn schema_builder() -> SchemaBuilder<Query, Mutation, EmptySubscription> {
    Schema::build(Query::default(), Mutation::default(), EmptySubscription)
}

/// The schema with what its resolvers need.
pub fn build_schema(db: DatabaseConnection, tokens: Arc<TokenConfig>) -> BankSchema {
    schema_builder().data(db).data(tokens).finish()
}

/// The schema's SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}

/// One request's credentials: the bearer token it carried, checked at most once, when a field needs the caller.
#[derive(Default)]
pub struct RequestAuth {
    token: Option<String>,
    caller: OnceCell<Caller>,
}

impl RequestAuth {
    pub fn new(token: Option<String>) -> Self {
        Self {
            token,
            caller: OnceCell::new(),
        }
    }
}

/// The authenticated caller of this request, or `UNAUTHENTICATED`.
pub(crate) async fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Caller, ApiError> {
    let auth = ctx.data_unchecked::<RequestAuth>();
    let token = auth
        .token
        .as_deref()
        .ok_or(service::Error::Unauthenticated)?;
    let caller = auth
        .caller
        .get_or_try_init(|| service::auth::authenticate(db(ctx), tokens(ctx), token))
        .await?;
    Ok(caller)
}

pub(crate) fn db<'a>(ctx: &Context<'a>) -> &'a DatabaseConnection {
    ctx.data_unchecked::<DatabaseConnection>()
}

pub(crate) fn tokens<'a>(ctx: &Context<'a>) -> &'a TokenConfig {
    ctx.data_unchecked::<Arc<TokenConfig>>()
}
