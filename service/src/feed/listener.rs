//! PostgreSQL: the process's one `LISTEN` connection, reconnecting whenever it drops.

use std::sync::Weak;
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgListener, PgPool};

use super::{CHANNEL, Change, Inner};

/// The longest pause between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Listens on [`CHANNEL`] and publishes what it hears, until the feed is dropped or the pool closed. After every
/// (re)connection, once `LISTEN` holds, everyone re-reads: notifications sent while no connection listened are lost.
pub(super) async fn run(pool: PgPool, feed: Weak<Inner>) {
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
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    let Some(inner) = feed.upgrade() else { return };
                    match serde_json::from_str::<Change>(notification.payload()) {
                        Ok(change) => inner.publish(change),
                        Err(err) => {
                            tracing::error!(%err, payload = notification.payload(), "change feed: bad notification")
                        }
                    }
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
