//! The subscription root: an account's ledger as it grows, over the change feed.

use std::sync::Arc;

use async_graphql::connection::{CursorType, Edge, EmptyFields, OpaqueCursor};
use async_graphql::{Context, ID, Subscription};
use futures::{Stream, StreamExt};
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

#[derive(Default)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// Entries of an account (yours, or any for a banker) as they commit, oldest first, each exactly once. With
    /// `after` (a cursor from `Account.entries` or an earlier event), first every entry after it; without, only
    /// entries committed after the subscription began.
    async fn entry_added(
        &self,
        ctx: &Context<'_>,
        account_id: ID,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<Edge<String, Entry, EmptyFields>, ApiError>> + use<>, ApiError> {
        // This future stays inside the subscription's stream, by value, for as long as the subscription runs
        // (async-graphql keeps it in an enum beside the stream it returns), so its size is part of every idle
        // subscription's memory: the reads it awaits, large futures, are boxed and freed once done.
        let caller = Box::pin(caller(ctx)).await?;
        let account_id = parse_id(&account_id, Kind::Account, "accountId")?;
        Box::pin(Account::find(ctx, caller, account_id)).await?.ok_or(service::Error::NotFound { what: "account" })?;
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
