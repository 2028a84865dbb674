//! The GraphQL schema: one root per domain, merged; resolvers call services and never touch SQL.

pub mod cost;
mod error;
pub(crate) mod inputs;
mod ledger;
pub mod loaders;
pub mod subscriptions;
mod users;

use std::net::IpAddr;
use std::sync::Arc;

use std::future::Future;

use async_graphql::connection::{Connection, CursorType, Edge, OpaqueCursor};
use async_graphql::{Context, MergedObject, OutputType, Schema, SchemaBuilder};
use sea_orm::DatabaseConnection;
use service::Code;
use service::auth::{Caller, TokenConfig, VerifiedToken};
use service::db::Db;
use service::feed::Feed;
use service::sessions::Sessions;
use service::throttle::Throttle;
use tokio::sync::OnceCell;

pub use self::error::{ApiError, coded};
use self::loaders::Loaders;
pub use self::subscriptions::{Subscription, SubscriptionSlots};
use crate::Config;
use crate::metrics::Metrics;

#[derive(MergedObject, Default)]
pub struct Query(users::UserQuery, ledger::LedgerQuery);

#[derive(MergedObject, Default)]
pub struct Mutation(users::UserMutation, ledger::LedgerMutation);

pub type BankSchema = Schema<Query, Mutation, Subscription>;

/// Lists are paged; no page is larger than this.
pub const MAX_PAGE_SIZE: i32 = 100;
/// The page size when a query does not say.
pub const DEFAULT_PAGE_SIZE: i32 = 20;

fn schema_builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query::default(), Mutation::default(), Subscription)
}

/// The schema with what its resolvers need; each request adds its [`RequestAuth`] and [`request_data`].
pub fn build_schema(
    db: DatabaseConnection,
    feed: Feed,
    tokens: Arc<TokenConfig>,
    metrics: Arc<Metrics>,
    config: &Config,
) -> BankSchema {
    let mut builder = schema_builder()
        .data(db)
        .data(Arc::new(Sessions::new(feed.clone())))
        .data(feed)
        .data(tokens)
        .data(metrics)
        .data(Throttle::new(config.throttle_limits()))
        .limit_depth(config.max_query_depth);
    if !config.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The schema's shapes for demand control, read from its introspection (so also when the server answers none).
pub async fn cost_model() -> anyhow::Result<cost::Model> {
    cost::Model::of(&schema_builder().finish()).await
}

/// The schema's SDL, as checked in at `schema.graphql`.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}

/// One request's credentials: the bearer token it carried, checked at most once, when a field needs the caller;
/// and the client's address, which the throttles count.
pub struct RequestAuth {
    token: Option<String>,
    caller: OnceCell<Caller>,
    client: IpAddr,
}

impl RequestAuth {
    pub fn new(token: Option<String>, client: IpAddr) -> Self {
        Self { token, caller: OnceCell::new(), client }
    }
}

/// The authenticated caller of this request, or `UNAUTHENTICATED`.
pub(crate) async fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Caller, ApiError> {
    let auth = ctx.data_unchecked::<RequestAuth>();
    let caller =
        auth.caller.get_or_try_init(|| async { sessions(ctx).check(db(ctx), &verified_token(ctx)?).await }).await?;
    Ok(caller)
}

/// The request's access token, verified but with its session not yet checked: for a service that checks the
/// session in the same statement as its work (a transfer), which saves a round trip.
pub(crate) fn verified_token(ctx: &Context<'_>) -> Result<VerifiedToken, service::Error> {
    let token = ctx.data_unchecked::<RequestAuth>().token.as_deref().ok_or(service::Error::Unauthenticated)?;
    service::auth::verify(tokens(ctx), token)
}

/// What a request reads through: for a query, one snapshot shared by all its fields and loaders.
pub fn request_data(request: async_graphql::Request, db: &Db) -> async_graphql::Request {
    request.data(Loaders::new(db)).data(db.clone())
}

/// Where this request reads: its snapshot for a query, the pool for a mutation.
pub(crate) fn db<'a>(ctx: &Context<'a>) -> &'a Db {
    ctx.data_unchecked::<Db>()
}

/// The pool, for mutations: each service call runs its own transaction.
pub(crate) fn pool<'a>(ctx: &Context<'a>) -> &'a DatabaseConnection {
    ctx.data_unchecked::<DatabaseConnection>()
}

fn sessions<'a>(ctx: &Context<'a>) -> &'a Sessions {
    ctx.data_unchecked::<Arc<Sessions>>()
}

pub(crate) fn feed<'a>(ctx: &Context<'a>) -> &'a Feed {
    ctx.data_unchecked::<Feed>()
}

pub(crate) fn metrics<'a>(ctx: &Context<'a>) -> &'a Metrics {
    ctx.data_unchecked::<Arc<Metrics>>()
}

pub(crate) fn loaders<'a>(ctx: &Context<'a>) -> &'a Loaders {
    ctx.data_unchecked::<Loaders>()
}

/// Fails with `FORBIDDEN` unless the caller is `owner` or a banker.
pub(crate) async fn authorize_owner(ctx: &Context<'_>, owner: &str) -> Result<(), ApiError> {
    if caller(ctx).await?.may_act_for(owner) { Ok(()) } else { Err(service::Error::Forbidden.into()) }
}

/// One page of a list as a Relay connection. `fetch(first, after)` returns up to `first` rows after the row whose
/// cursor value is `after`, and whether more follow; `cursor` names a row's position, `node` makes its GraphQL type.
pub(crate) async fn paginate<C, M, N, Fut>(
    first: Option<i32>,
    after: Option<String>,
    fetch: impl FnOnce(u64, Option<C>) -> Fut,
    cursor: impl Fn(&M) -> C,
    node: impl Fn(M) -> N,
) -> Result<Connection<String, N>, ApiError>
where
    C: serde::Serialize + serde::de::DeserializeOwned + Send + Sync,
    N: OutputType,
    Fut: Future<Output = Result<(Vec<M>, bool), service::Error>>,
{
    let first = first.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(0..=MAX_PAGE_SIZE).contains(&first) {
        return Err(ApiError::invalid_argument("first", format!("first must be 0–{MAX_PAGE_SIZE}")));
    }
    let after = after
        .map(|after| OpaqueCursor::<C>::decode_cursor(&after).map(|c| c.0))
        .transpose()
        .map_err(|_| ApiError::invalid_argument("after", "not a cursor from this API"))?;
    let has_previous = after.is_some();
    let (rows, has_next) = fetch(first as u64, after).await?;
    let mut connection = Connection::new(has_previous, has_next);
    connection
        .edges
        .extend(rows.into_iter().map(|row| Edge::new(OpaqueCursor(cursor(&row)).encode_cursor(), node(row))));
    Ok(connection)
}

pub(crate) fn throttle<'a>(ctx: &Context<'a>) -> &'a Throttle {
    ctx.data_unchecked::<Throttle>()
}

pub(crate) fn client(ctx: &Context<'_>) -> IpAddr {
    ctx.data_unchecked::<RequestAuth>().client
}

pub(crate) fn tokens<'a>(ctx: &Context<'a>) -> &'a TokenConfig {
    ctx.data_unchecked::<Arc<TokenConfig>>()
}

/// Gives every error a `code`: ours carry one already; a document that does not parse never reaches the executor
/// (the HTTP layer answers it), so async-graphql's own are a document that does not fit the schema, found before
/// any field ran (`GRAPHQL_VALIDATION_FAILED`), or an argument that does not fit its type, found while resolving a
/// field (`BAD_USER_INPUT`, with the field's path).
pub fn default_error_codes(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let code = if error.path.is_empty() { Code::GraphqlValidationFailed } else { Code::BadUserInput };
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", code.as_str());
        }
    }
}
