//! PostgreSQL: the process's one `LISTEN` connection, reconnecting whenever it drops.

use std::sync::Weak;
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgListener, PgNotification, PgPool};
use sea_orm::sqlx::{self, Executor};
use tokio::sync::{mpsc, oneshot};

use super::{CHANNEL, Change, Inner};

/// A caller waiting to know that everything committed before it asked has been heard.
pub(super) type Fence = oneshot::Sender<()>;

/// The longest pause between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Listens on [`CHANNEL`] and publishes what it hears, until the feed is dropped or the pool closed. After every
/// (re)connection, once `LISTEN` holds, everyone re-reads: notifications sent while no connection listened are lost.
///
/// Between notifications it answers `fences`: a round trip on the listening connection itself, after which every
/// notification committed before the fences were asked for has been published. PostgreSQL sends a listening session
/// the notifications pending for it before it runs the next statement it reads, so they come ahead of the answer.
/// Fences that queue while one is on its way share the next.
pub(super) async fn run(pool: PgPool, feed: Weak<Inner>, mut fences: mpsc::Receiver<Fence>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if pool.is_closed() {
            return;
        }
        let mut listener = match connect(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(%err, "change feed: cannot listen; retrying");
                tokio::time::sleep(backoff).await;
                backoff = Ord::min(backoff * 2, MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let Some(inner) = feed.upgrade() else { return };
        inner.resync();
        drop(inner);
        loop {
            let received = tokio::select! {
                // Cancel-safe: sqlx keeps a message it has not read whole in its buffer.
                received = listener.try_recv() => received,
                Some(fence) = fences.recv() => {
                    let mut waiting = vec![fence];
                    while let Ok(fence) = fences.try_recv() {
                        waiting.push(fence);
                    }
                    if let Err(err) = (&mut listener).execute(sqlx::raw_sql("SELECT 1")).await {
                        deaf(&feed);
                        tracing::warn!(%err, "change feed: a fence failed; reconnecting");
                        break;
                    }
                    while let Some(notification) = listener.next_buffered() {
                        let Some(inner) = feed.upgrade() else { return };
                        publish(&inner, &notification);
                    }
                    for fence in waiting {
                        let _ = fence.send(());
                    }
                    continue;
                }
            };
            match received {
                Ok(Some(notification)) => {
                    let Some(inner) = feed.upgrade() else { return };
                    publish(&inner, &notification);
                }
                Ok(None) => {
                    deaf(&feed);
                    tracing::warn!("change feed: the listening connection dropped; reconnecting");
                    break;
                }
                Err(err) => {
                    deaf(&feed);
                    tracing::warn!(%err, "change feed: listening failed; reconnecting");
                    break;
                }
            }
        }
    }
}

fn publish(inner: &Inner, notification: &PgNotification) {
    match serde_json::from_str::<Change>(notification.payload()) {
        Ok(change) => inner.publish(change),
        Err(err) => tracing::error!(%err, payload = notification.payload(), "change feed: bad notification"),
    }
}

fn deaf(feed: &Weak<Inner>) {
    if let Some(inner) = feed.upgrade() {
        inner.deaf();
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnection is ours, so that everyone re-reads only once `LISTEN` holds again.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
