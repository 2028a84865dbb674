//! PostgreSQL: the process's one announcing connection, which tells every process's listener of committed entries.
//!
//! Entries are announced just after their transaction commits, not by a `pg_notify` inside it: a notifying
//! transaction holds a database-wide lock from its commit until its commit record is flushed, so notifying
//! transactions commit one at a time, each waiting for its own flush, and the ledger's writes lose group commit
//! (measured with pgbench on stock PostgreSQL 15, 16 clients: the transfer statement with its `pg_notify` ran at a
//! quarter of its rate without). Announcing afterwards, from one task that gathers what every request committed
//! meanwhile into one notification, in a transaction of its own with `synchronous_commit` off (a notification is
//! delivered once that transaction commits; were PostgreSQL to crash before its flush, every listener's connection
//! drops with it and every subscriber re-reads), costs the ledger one small statement per batch instead.
//!
//! What this gives up: entries committed by a process that stops before announcing them (killed between its commit
//! and the notification) are not announced. Nothing is lost, since subscribers read from the database whenever the
//! feed skips an entry they have not had, which the account's next entry shows; and so that such entries do not
//! wait for it, every process announces [`Change::Resync`] when its announcing connection (re)connects, which
//! makes every listener's subscribers re-read from their cursors. An acknowledged entry has always been announced:
//! requests are answered only once their announcement was sent.

use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, ConnectOptions};
use tokio::sync::{mpsc, oneshot};

use super::{Announced, CHANNEL, Change};

/// Entries per notification: a payload must stay under PostgreSQL's 8,000 bytes, and an entry takes at most
/// about 140 (five 19-digit numbers and a timestamp).
const PER_NOTIFICATION: usize = 48;
/// Requests waiting to be announced; more wait for room.
const QUEUE: usize = 1024;
/// The longest pause between two attempts to reconnect.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Committed entries to announce, and who to tell once they were.
type Pending = (Vec<Announced>, oneshot::Sender<()>);

/// The sending side of the announcing task. Cheap to clone.
#[derive(Clone)]
pub(super) struct Notifier(mpsc::Sender<Pending>);

impl Notifier {
    /// Starts the announcing task, which connects with `options` and lives until every `Notifier` is dropped.
    pub(super) fn start(options: PgConnectOptions) -> Self {
        let (sender, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(options, queue));
        Self(sender)
    }

    /// Announces `entries`, returning once the notification was sent (or could not be: then it is logged, and the
    /// task announces a resync once it reconnects).
    pub(super) async fn announce(&self, entries: Vec<Announced>) {
        let (sent, sending) = oneshot::channel();
        if self.0.send((entries, sent)).await.is_ok() {
            let _ = sending.await;
        }
    }
}

async fn run(options: PgConnectOptions, mut queue: mpsc::Receiver<Pending>) {
    // Connected at once, so that a restarted process's resync goes out before anything else happens.
    let mut connection = connect(&options).await.ok();
    let mut backoff = Duration::from_millis(50);
    while let Some(first) = queue.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = queue.try_recv() {
            waiting.push(more);
        }
        if connection.is_none() {
            match connect(&options).await {
                Ok(connected) => {
                    connection = Some(connected);
                    backoff = Duration::from_millis(50);
                }
                Err(err) => {
                    tracing::warn!(%err, "change feed: cannot connect to announce; the next announcement retries");
                    tokio::time::sleep(backoff).await;
                    backoff = Ord::min(backoff * 2, MAX_BACKOFF);
                    continue;
                }
            }
        }
        let entries: Vec<Announced> = waiting.iter_mut().flat_map(|(entries, _)| std::mem::take(entries)).collect();
        if let Some(conn) = connection.as_mut()
            && let Err(err) = send(conn, &entries).await
        {
            tracing::warn!(%err, "change feed: announcing failed; reconnecting, then everyone re-reads");
            connection = None;
        }
        // Dropping the senders answers the requests: their entries are committed either way.
        drop(waiting);
    }
}

/// A connection that announces, which first tells everyone to re-read: whatever this process committed and could
/// not announce before (it was restarted, or the previous connection broke) is then found in the database.
async fn connect(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    let mut conn = options.connect().await?;
    sqlx::query("SET synchronous_commit = off").execute(&mut conn).await?;
    notify(&mut conn, &Change::Resync).await?;
    Ok(conn)
}

async fn send(conn: &mut PgConnection, entries: &[Announced]) -> Result<(), sqlx::Error> {
    for chunk in entries.chunks(PER_NOTIFICATION) {
        notify(conn, &Change::Entries(chunk.to_vec())).await?;
    }
    Ok(())
}

async fn notify(conn: &mut PgConnection, change: &Change) -> Result<(), sqlx::Error> {
    let payload = serde_json::to_string(change).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn a_full_notification_stays_under_postgres_payload_limit() {
        let late = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single().expect("a valid time")
            + chrono::Duration::nanoseconds(999_999_999);
        let widest = Announced(i64::MIN, i64::MIN, i64::MIN, Some(i64::MIN), i64::MIN, i64::MIN, late);
        let payload = serde_json::to_string(&Change::Entries(vec![widest; PER_NOTIFICATION])).expect("serialisable");
        assert!(payload.len() < 8000, "{} bytes", payload.len());
    }
}
