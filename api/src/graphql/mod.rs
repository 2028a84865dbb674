//! The GraphQL schema: one root per domain, merged; resolvers call services and never touch SQL.

pub mod cost;
mod error;
pub(crate) mod inputs;
mod ledger;
pub mod loaders;
mod node;
pub mod subscriptions;
mod users;

use std::net::IpAddr;
use std::sync::Arc;

use std::future::Future;

use async_graphql::connection::{Connection, CursorType, Edge, OpaqueCursor};
use async_graphql::{Context, MergedObject, OutputType, Schema, SchemaBuilder};
use futures::future::BoxFuture;
use service::auth::{Caller, TokenConfig, VerifiedToken};
use service::db::{Database, Db};
use service::feed::Feed;
use service::sessions::Sessions;
use service::throttle::Throttle;
use service::{Code, Page, Slice, Take};
use tokio::sync::OnceCell;

pub use self::error::{ApiError, coded};
use self::loaders::Loaders;
pub use self::subscriptions::{Subscription, SubscriptionSlots};
use crate::metrics::Metrics;
use crate::{Config, Hardening};

#[derive(MergedObject, Default)]
pub struct Query(users::UserQuery, ledger::LedgerQuery, node::NodeQuery);

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

/// The schema with what its resolvers need; each request adds its [`RequestAuth`] and runs in [`execute`].
pub fn build_schema(
    db: Database,
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
/// the client's address, which the throttles count; and whether fields are guarded (always, but on the benchmark's
/// server without hardening, see [`crate::Hardening`]).
pub struct RequestAuth {
    /// Shared: a socket's subscriptions each carry its one token.
    token: Option<Arc<str>>,
    caller: OnceCell<Caller>,
    client: IpAddr,
    guarded: bool,
}

impl RequestAuth {
    pub fn new(token: Option<Arc<str>>, client: IpAddr, hardening: Hardening) -> Self {
        Self { token, caller: OnceCell::new(), client, guarded: hardening == Hardening::On }
    }
}

/// The authenticated caller of this request, or `UNAUTHENTICATED`.
pub(crate) async fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Caller, ApiError> {
    caller_of(ctx, ctx.data_unchecked::<RequestAuth>()).await
}

/// The caller, checked once per request: every later field finds it without awaiting anything. The check's
/// future is boxed, so that this one stays small: a field guard builds it on every guarded field (80 on a page of
/// 20 users with their accounts), and built inline, the session check's kilobytes of state were copied each time
/// (about 40 µs of such a page's CPU time, the benchmark's hardening measure found).
async fn caller_of<'a>(ctx: &Context<'a>, auth: &'a RequestAuth) -> Result<&'a Caller, ApiError> {
    if let Some(caller) = auth.caller.get() {
        return Ok(caller);
    }
    let caller = auth
        .caller
        .get_or_try_init(|| {
            Box::pin(async {
                let token = verified_token(ctx)?;
                // A standby may not have replayed a session's end yet: sessions are checked on the primary.
                match db(ctx) {
                    db if db.standby().is_some() => sessions(ctx).check(database(ctx).reads(), &token).await,
                    db => sessions(ctx).check(db, &token).await,
                }
            })
        })
        .await?;
    Ok(caller)
}

/// The user a mutation signed in (a login), whose next queries must see what it wrote as the caller's would.
#[derive(Clone, Default)]
pub struct SignedIn(Arc<std::sync::Mutex<Option<String>>>);

impl SignedIn {
    pub fn user(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Notes `username` for the request, if the request asked to know (HTTP mutations do).
    pub(crate) fn note(ctx: &Context<'_>, username: &str) {
        if let Some(signed_in) = ctx.data_opt::<SignedIn>() {
            *signed_in.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(username.to_owned());
        }
    }
}

/// The request's access token, verified but with its session not yet checked: for a service that checks the
/// session in the same statement as its work (a transfer), which saves a round trip.
pub(crate) fn verified_token(ctx: &Context<'_>) -> Result<VerifiedToken, service::Error> {
    let token = ctx.data_unchecked::<RequestAuth>().token.as_deref().ok_or(service::Error::Unauthenticated)?;
    service::auth::verify(tokens(ctx), token)
}

/// Executes `request` reading through `db`: for a query, one snapshot shared by all its fields and loaders.
pub async fn execute(schema: &BankSchema, request: async_graphql::Request, db: &Db) -> async_graphql::Response {
    let loaders = Loaders::new(db);
    loaders.drive(schema.execute(request.data(loaders.clone()).data(db.clone()))).await
}

/// Where this request reads: its snapshot for a query, the read pool for a mutation.
pub(crate) fn db<'a>(ctx: &Context<'a>) -> &'a Db {
    ctx.data_unchecked::<Db>()
}

/// The database, for mutations: each service call makes its own writes.
pub(crate) fn database<'a>(ctx: &Context<'a>) -> &'a Database {
    ctx.data_unchecked::<Database>()
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

/// Fails with `FORBIDDEN` unless the caller is `owner` or a banker: the field guard of a user's and an account's
/// fields.
pub(crate) async fn authorize_owner(ctx: &Context<'_>, owner: &str) -> Result<(), ApiError> {
    let auth = ctx.data_unchecked::<RequestAuth>();
    if !auth.guarded {
        return Ok(());
    }
    if caller_of(ctx, auth).await?.may_act_for(owner) { Ok(()) } else { Err(service::Error::Forbidden.into()) }
}

/// Relay's paging arguments, as every connection field takes them: `first` items after the cursor `after`, or
/// `last` items before the cursor `before`.
pub(crate) struct PageArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    pub last: Option<i32>,
    pub before: Option<String>,
}

impl PageArgs {
    /// The slice of the list these arguments ask for, the cursors decoded: 20 from the start when neither `first`
    /// nor `last` is given, and never both.
    fn slice<C: serde::de::DeserializeOwned + serde::Serialize + Send + Sync>(self) -> Result<Slice<C>, ApiError> {
        let size = |name: &'static str, n: i32| {
            if (0..=MAX_PAGE_SIZE).contains(&n) {
                Ok(n as u64)
            } else {
                Err(ApiError::invalid_argument(name, format!("{name} must be 0–{MAX_PAGE_SIZE}")))
            }
        };
        let take = match (self.first, self.last) {
            (Some(_), Some(_)) => return Err(ApiError::invalid_argument("last", "give first or last, not both")),
            (first, None) => Take::First(size("first", first.unwrap_or(DEFAULT_PAGE_SIZE))?),
            (None, Some(last)) => Take::Last(size("last", last)?),
        };
        let decode = |name: &'static str, cursor: Option<String>| {
            cursor
                .map(|cursor| OpaqueCursor::<C>::decode_cursor(&cursor).map(|c| c.0))
                .transpose()
                .map_err(|_| ApiError::invalid_argument(name, "not a cursor from this API"))
        };
        Ok(Slice { after: decode("after", self.after)?, before: decode("before", self.before)?, take })
    }
}

/// A connection's `totalCount`: counted only when asked for, since it reads the whole list.
pub struct TotalCount(Box<dyn Fn() -> BoxFuture<'static, Result<u64, service::Error>> + Send + Sync>);

impl TotalCount {
    pub(crate) fn new<Fut>(count: impl Fn() -> Fut + Send + Sync + 'static) -> Self
    where
        Fut: Future<Output = Result<u64, service::Error>> + Send + 'static,
    {
        Self(Box::new(move || Box::pin(count())))
    }
}

#[async_graphql::Object]
impl TotalCount {
    /// How many items the whole list has, whichever page this is.
    async fn total_count(&self) -> Result<i64, ApiError> {
        Ok((self.0)().await? as i64)
    }
}

/// A Relay connection over one part of a list. `fetch` reads the slice `args` ask for; `cursor` names a row's
/// position, `node` makes its GraphQL type, and `total` counts the whole list when asked.
pub(crate) async fn paginate<C, M, N, Fut>(
    args: PageArgs,
    fetch: impl FnOnce(Slice<C>) -> Fut,
    cursor: impl Fn(&M) -> C,
    node: impl Fn(M) -> N,
    total: TotalCount,
) -> Result<Connection<String, N, TotalCount>, ApiError>
where
    C: serde::Serialize + serde::de::DeserializeOwned + Send + Sync,
    N: OutputType,
    Fut: Future<Output = Result<Page<M>, service::Error>>,
{
    let page = fetch(args.slice()?).await?;
    let mut connection = Connection::with_additional_fields(page.has_previous, page.has_next, total);
    connection
        .edges
        .extend(page.rows.into_iter().map(|row| Edge::new(OpaqueCursor(cursor(&row)).encode_cursor(), node(row))));
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
