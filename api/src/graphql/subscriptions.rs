//! The subscription root: an account's ledger as it grows, over the change feed.
//!
//! The schema's `Subscription` type is declared by [`Fields`], as async-graphql's macro reads it; [`Subscription`]
//! runs its fields. What a running subscription holds lives as long as the subscription, idle or not, so it holds
//! as little as it can: its start (arguments, access check) and each event's execution are boxed and freed once done.
//! The macro's field stream keeps room for both in place for the subscription's whole life, beside a copy of the
//! field: about 1 KiB of every idle subscription's resident memory (benches/README.md, the subscription notes).

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context as Task, Poll, ready};

use async_graphql::connection::{CursorType, Edge, EmptyFields, OpaqueCursor};
use async_graphql::extensions::ResolveInfo;
use async_graphql::registry::Registry;
use async_graphql::{
    Context, ID, OutputType, QueryPathNode, QueryPathSegment, Response, ServerError, Subscription, SubscriptionType,
    Value,
};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use service::feed::Feed;
use tokio::sync::Semaphore;

use super::ledger::{Account, Entry};
use super::node::{Kind, parse_id};
use super::{ApiError, caller, database};

/// The subscriptions a socket may still start: each holds a permit while it runs.
#[derive(Clone)]
pub struct SubscriptionSlots {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl SubscriptionSlots {
    pub fn new(limit: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(limit)), limit }
    }
}

/// One event of `entryAdded`.
type EntryEvent = Result<Edge<String, Entry, EmptyFields>, ApiError>;

/// The subscription root's fields, as the schema declares them.
struct Fields;

#[Subscription(name = "Subscription")]
impl Fields {
    /// Entries of an account (yours, or any for a banker) as they commit, oldest first, each exactly once. With
    /// `after` (a cursor from `Account.entries` or an earlier event), first every entry after it; without, only
    /// entries committed after the subscription began.
    async fn entry_added(
        &self,
        ctx: &Context<'_>,
        account_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = EntryEvent> + use<>, ApiError> {
        let caller = caller(ctx).await?;
        let account_id = parse_id(&account_id, Kind::Account, "accountId")?;
        Account::find(ctx, caller, account_id).await?.ok_or(service::Error::NotFound { what: "account" })?;
        let after = after
            .map(|after| OpaqueCursor::<i64>::decode_cursor(&after).map(|c| c.0))
            .transpose()
            .map_err(|_| ApiError::invalid_argument("after", "not a cursor from this API"))?;
        let slots = ctx.data_unchecked::<SubscriptionSlots>();
        let permit = slots
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| service::Error::TooManySubscriptions { limit: slots.limit })?;
        let entries = ctx.data_unchecked::<Feed>().entries(database(ctx).reads().clone(), account_id, after);
        Ok(entries.map(move |entry| {
            // The slot is free again when the stream ends (the client completes it or the socket closes).
            let _running = &permit;
            let entry = entry?;
            Ok(Edge::new(OpaqueCursor(entry.account_seq).encode_cursor(), Entry(entry)))
        }))
    }
}

/// Runs the fields [`Fields`] declares.
#[derive(Default)]
pub struct Subscription;

impl SubscriptionType for Subscription {
    fn type_name() -> Cow<'static, str> {
        Fields::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        Fields::create_type_info(registry)
    }

    fn create_field_stream<'a>(
        &'a self,
        ctx: &'a Context<'_>,
    ) -> Option<Pin<Box<dyn Stream<Item = Response> + Send + 'a>>> {
        (ctx.item.node.name.node == "entryAdded").then(|| {
            let starting = start_entry_added(ctx).boxed();
            Box::pin(Responses { ctx, starting: Some(starting), events: None, responding: None }) as Pin<Box<_>>
        })
    }
}

/// `entryAdded` started: its arguments read and its stream made, or why not (as the macro would report it).
async fn start_entry_added(ctx: &Context<'_>) -> Result<BoxStream<'static, EntryEvent>, ServerError> {
    let (_, account_id) = ctx.param_value::<ID>("accountId", None).map_err(|err| ctx.set_error_path(err))?;
    let (_, after) = ctx.param_value::<Option<String>>("after", None).map_err(|err| ctx.set_error_path(err))?;
    match Fields.entry_added(ctx, account_id, after).await {
        Ok(events) => Ok(events.boxed()),
        Err(err) => Err(ctx.set_error_path(async_graphql::Error::from(err).into_server_error(ctx.item.pos))),
    }
}

/// A field's responses: an error if it could not start, else one response per event of its stream.
struct Responses<'a, E> {
    ctx: &'a Context<'a>,
    starting: Option<BoxFuture<'a, Result<BoxStream<'static, E>, ServerError>>>,
    events: Option<BoxStream<'static, E>>,
    responding: Option<BoxFuture<'a, Response>>,
}

impl<'a, E: OutputType + 'a> Stream for Responses<'a, E> {
    type Item = Response;

    fn poll_next(self: Pin<&mut Self>, task: &mut Task<'_>) -> Poll<Option<Response>> {
        let this = self.get_mut();
        loop {
            if let Some(responding) = &mut this.responding {
                let response = ready!(responding.poll_unpin(task));
                this.responding = None;
                return Poll::Ready(Some(response));
            }
            if let Some(starting) = &mut this.starting {
                let started = ready!(starting.poll_unpin(task));
                this.starting = None;
                match started {
                    Ok(events) => this.events = Some(events),
                    Err(err) => return Poll::Ready(Some(Response::from_errors(vec![err]))),
                }
            }
            let Some(events) = &mut this.events else { return Poll::Ready(None) };
            match ready!(events.poll_next_unpin(task)) {
                Some(event) => this.responding = Some(respond(this.ctx, event).boxed()),
                None => {
                    this.events = None;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// One event's response: the field's selection executed on it, as async-graphql's macro does.
async fn respond<E: OutputType>(ctx: &Context<'_>, event: E) -> Response {
    let (env, field) = (ctx.query_env, ctx.item);
    let name = &field.node.response_key().node;
    let execute = |data: Option<async_graphql::Data>| async move {
        let path = QueryPathNode { parent: None, segment: QueryPathSegment::Name(name) };
        let selection = env.create_context(ctx.schema_env, Some(path), &field.node.selection_set, data.as_ref());
        let return_type = E::qualified_type_name();
        let info = ResolveInfo {
            path_node: &path,
            parent_type: &Subscription::type_name(),
            return_type: &return_type,
            name: field.node.name.node.as_str(),
            alias: field.node.alias.as_ref().map(|alias| alias.node.as_str()),
            is_for_introspection: false,
            field: &field.node,
        };
        let resolve = async { event.resolve(&selection, field).await.map(Some) };
        futures::pin_mut!(resolve);
        let mut response = match env.extensions.resolve(info, &mut resolve).await {
            Ok(value) => {
                Response::new(Value::Object([(name.clone(), value.unwrap_or_default())].into_iter().collect()))
            }
            Err(err) => Response::from_errors(vec![err]),
        };
        response.errors.extend(std::mem::take(&mut *env.errors.lock().unwrap_or_else(PoisonError::into_inner)));
        response
    };
    env.extensions.execute(env.operation_name.as_deref(), execute).await
}
