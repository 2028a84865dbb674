//! Hot standbys (PostgreSQL's streaming replicas): which of them a query's snapshot may open on, and what it must see.
//!
//! Each process watches its standbys ([`watch`]): every [`POLL`] it samples the primary's position in its
//! write-ahead log and asks each standby how far it has replayed. A standby that has replayed what the primary
//! had at some moment has everything committed by then, so its lag is the age of the newest such sample. A standby
//! further behind than the allowed lag, or that does not answer, is skipped until it answers in time again.
//!
//! Read your writes: after a mutation, and before it is answered, the process that ran it announces the primary's
//! position for the user it acted for, through the change feed, to every process ([`Positions`]). A query of that
//! user's first makes sure its process has heard everything announced before it arrived (a fence on the feed's
//! connection, [`crate::feed::Feed::fence`]), then opens only on a standby that has replayed that far, else on the
//! primary. A position is kept only as long as the allowed lag: after that, every standby still in use has replayed
//! past it anyway. While a process's feed does not hear (it just started, or its `LISTEN` connection dropped), it
//! cannot know anyone's positions, so its queries read on the primary until it has heard for that long.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;
use sea_orm::sqlx::postgres::PgPool;
use sea_orm::sqlx::{self, Row};
use serde::{Deserialize, Serialize};

/// How often each process samples the primary's position and its standbys' replay.
pub const POLL: Duration = Duration::from_millis(100);
/// A standby that has not answered within this is taken as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A position in the primary's write-ahead log (an LSN, written `16/B374D848`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position(u64);

impl FromStr for Position {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (high, low) = text.split_once('/').ok_or_else(|| format!("{text:?} is not a WAL position"))?;
        let part = |part: &str| u32::from_str_radix(part, 16).map_err(|_| format!("{text:?} is not a WAL position"));
        Ok(Self((u64::from(part(high)?) << 32) | u64::from(part(low)?)))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a query must see, and so where its snapshot may open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sees {
    /// Nothing in particular: any standby within the allowed lag.
    Anything,
    /// Everything up to this position (its caller's last write): a standby that replayed it.
    Position(Position),
    /// Everything committed: the primary.
    Everything,
}

/// The newest write position announced for each user lately, as this process heard them through the change feed.
pub struct Positions {
    /// How long a position matters: the standbys' allowed lag.
    window: Duration,
    state: Mutex<Heard>,
}

#[derive(Default)]
struct Heard {
    by_user: HashMap<Arc<str>, (Position, Instant)>,
    /// When each position was heard, oldest first, to forget them in order.
    order: VecDeque<(Instant, Arc<str>)>,
    /// Since when every announcement has been heard; `None` while the feed does not hear.
    hearing_since: Option<Instant>,
}

impl Positions {
    pub fn new(window: Duration) -> Self {
        Self { window, state: Mutex::default() }
    }

    /// What a query by `user` (`None`: an anonymous one) must see.
    pub fn must_see(&self, user: Option<&str>) -> Sees {
        let now = Instant::now();
        let state = self.lock(now);
        match state.hearing_since {
            Some(since) if now.duration_since(since) >= self.window => {}
            _ => return Sees::Everything,
        }
        match user.and_then(|user| state.by_user.get(user)) {
            Some(&(position, _)) => Sees::Position(position),
            None => Sees::Anything,
        }
    }

    /// An announcement heard: `user` wrote up to `position`.
    pub(crate) fn heard(&self, user: &str, position: Position) {
        let now = Instant::now();
        let mut state = self.lock(now);
        let user: Arc<str> = Arc::from(user);
        let newest = state.by_user.get(&user).map_or(position, |&(known, _)| known.max(position));
        state.by_user.insert(user.clone(), (newest, now));
        state.order.push_back((now, user));
    }

    /// The feed hears every announcement from now on.
    pub(crate) fn hearing(&self) {
        self.lock(Instant::now()).hearing_since = Some(Instant::now());
    }

    /// The feed no longer hears: announcements may be missed.
    pub(crate) fn deaf(&self) {
        self.lock(Instant::now()).hearing_since = None;
    }

    /// The state, without the positions heard longer than the window ago.
    fn lock(&self, now: Instant) -> MutexGuard<'_, Heard> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((at, _)) = state.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            let Some((at, user)) = state.order.pop_front() else { break };
            if state.by_user.get(&user).is_some_and(|&(_, newest)| newest == at) {
                state.by_user.remove(&user);
            }
        }
        state
    }
}

/// The standbys and how each is doing.
pub(crate) struct Replicas {
    list: Vec<Replica>,
    max_lag: Duration,
    /// Round robin among the usable ones.
    next: AtomicUsize,
    /// Query snapshots opened on a standby, and on the primary.
    on_standby: AtomicU64,
    on_primary: AtomicU64,
}

/// One standby: its pool of snapshot connections, and what the last probe found.
pub(crate) struct Replica {
    /// Its URL without the password, for logs.
    pub(crate) name: String,
    pub(crate) pool: DatabaseConnection,
    state: Mutex<Probed>,
}

#[derive(Default)]
struct Probed {
    /// What it has replayed.
    replay: Position,
    /// The latest moment of which it is known to have everything the primary had.
    caught_up_at: Option<Instant>,
    /// It failed to answer, or a snapshot on it failed.
    down: bool,
}

impl Replica {
    pub(crate) fn new(name: String, pool: DatabaseConnection) -> Self {
        Self { name, pool, state: Mutex::default() }
    }

    fn probed(&self) -> MutexGuard<'_, Probed> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether queries may read here: it answers, and lags at most `max_lag`. A monitor that stopped probing counts
    /// as lag too, since what was last found ages.
    fn usable(&self, now: Instant, max_lag: Duration) -> bool {
        let probed = self.probed();
        !probed.down && probed.caught_up_at.is_some_and(|at| now.duration_since(at) <= max_lag)
    }

    /// Its replay position, asked now.
    async fn replay(&self) -> Result<Position, String> {
        let pool = self.pool.get_postgres_connection_pool();
        let replay = tokio::time::timeout(PROBE_TIMEOUT, position(pool, "SELECT pg_last_wal_replay_lsn()::text"))
            .await
            .map_err(|_| "no answer within a second".to_owned())??;
        replay.ok_or_else(|| "it is not a standby (not in recovery)".to_owned())
    }
}

impl Replicas {
    pub(crate) fn new(list: Vec<Replica>, max_lag: Duration) -> Self {
        Self { list, max_lag, next: AtomicUsize::new(0), on_standby: AtomicU64::new(0), on_primary: AtomicU64::new(0) }
    }

    /// A standby where a snapshot that `sees` may open (its index and itself), if any.
    pub(crate) async fn choose(&self, sees: Sees) -> Option<(usize, &Replica)> {
        let now = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let usable = (0..self.list.len())
            .map(|i| (start + i) % self.list.len())
            .map(|i| (i, &self.list[i]))
            .filter(|(_, replica)| replica.usable(now, self.max_lag));
        let wanted = match sees {
            Sees::Everything => return None,
            Sees::Anything => return usable.into_iter().next(),
            Sees::Position(wanted) => wanted,
        };
        let usable: Vec<_> = usable.collect();
        if let Some(&found) = usable.iter().find(|(_, replica)| replica.probed().replay >= wanted) {
            return Some(found);
        }
        // The last probe may be older than the write: ask one standby now, once, before giving up on them all.
        let &(index, replica) = usable.first()?;
        let replay = replica.replay().await.ok()?;
        let mut probed = replica.probed();
        probed.replay = probed.replay.max(replay);
        (replay >= wanted).then_some((index, replica))
    }

    /// A snapshot or a query on this standby failed: skip it until it answers a probe again.
    pub(crate) fn failed(&self, index: usize, err: &dyn fmt::Display) {
        if let Some(replica) = self.list.get(index) {
            let was_down = std::mem::replace(&mut replica.probed().down, true);
            if !was_down {
                tracing::warn!(standby = %replica.name, %err, "a standby failed; reading from the others or the primary");
            }
        }
    }

    pub(crate) fn count(&self, on_standby: bool) {
        let counter = if on_standby { &self.on_standby } else { &self.on_primary };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// What `/metrics` shows: snapshots opened on standbys and on the primary, and each standby's state.
    pub(crate) fn report(&self) -> ReplicaReport {
        let now = Instant::now();
        ReplicaReport {
            on_standby: self.on_standby.load(Ordering::Relaxed),
            on_primary: self.on_primary.load(Ordering::Relaxed),
            standbys: self
                .list
                .iter()
                .map(|replica| {
                    let probed = replica.probed();
                    let lag = probed.caught_up_at.map(|at| now.duration_since(at));
                    drop(probed);
                    StandbyReport { name: replica.name.clone(), lag, usable: replica.usable(now, self.max_lag) }
                })
                .collect(),
        }
    }
}

/// Where query snapshots opened, and how each standby is doing.
pub struct ReplicaReport {
    pub on_standby: u64,
    pub on_primary: u64,
    pub standbys: Vec<StandbyReport>,
}

pub struct StandbyReport {
    pub name: String,
    /// How far behind it is known to be; `None` before it has ever caught up with a sample.
    pub lag: Option<Duration>,
    pub usable: bool,
}

/// Watches the standbys for as long as they are wanted: every [`POLL`], samples the primary's position (through
/// `primary`) and probes every standby.
pub(crate) async fn watch(primary: PgPool, replicas: Weak<Replicas>) {
    // The primary's positions lately, oldest first, each with the moment before it was asked (so a standby that has
    // replayed it had everything by then).
    let mut samples: VecDeque<(Instant, Position)> = VecDeque::new();
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(replicas) = replicas.upgrade() else { return };
        let asked = Instant::now();
        match tokio::time::timeout(PROBE_TIMEOUT, position(&primary, "SELECT pg_current_wal_lsn()::text")).await {
            Ok(Ok(Some(position))) => samples.push_back((asked, position)),
            Ok(Ok(None)) => tracing::warn!("the primary has no WAL position: is DATABASE_URL a standby?"),
            Ok(Err(err)) => tracing::debug!(%err, "cannot sample the primary's position"),
            Err(_) => tracing::debug!("the primary did not tell its position within a second"),
        }
        // The newest sample older than the allowed lag stays: a standby that replayed it is still within it.
        while samples.len() > 1 && samples.get(1).is_some_and(|(at, _)| asked.duration_since(*at) > replicas.max_lag) {
            samples.pop_front();
        }
        let probes = replicas.list.iter().map(|replica| async move { (replica, replica.replay().await) });
        for (replica, replay) in futures::future::join_all(probes).await {
            let mut probed = replica.probed();
            match replay {
                Ok(replay) => {
                    if std::mem::replace(&mut probed.down, false) {
                        tracing::info!(standby = %replica.name, "a standby answers again");
                    }
                    probed.replay = probed.replay.max(replay);
                    let caught_up = samples.iter().rev().find(|(_, position)| *position <= replay).map(|(at, _)| *at);
                    probed.caught_up_at = probed.caught_up_at.max(caught_up);
                }
                Err(err) => {
                    if !std::mem::replace(&mut probed.down, true) {
                        tracing::warn!(standby = %replica.name, %err, "a standby does not answer; skipping it");
                    }
                }
            }
        }
    }
}

/// A WAL position that `sql` selects as text (`NULL`: none). Sent as a simple query: no statement is prepared, so
/// it runs through a transaction-pooling pooler as it is.
async fn position(pool: &PgPool, sql: &'static str) -> Result<Option<Position>, String> {
    let row = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.map_err(|err| err.to_string())?;
    let text: Option<String> = row.try_get(0).map_err(|err| err.to_string())?;
    text.map(|text| text.parse()).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Position {
        text.parse().expect("a WAL position")
    }

    #[test]
    fn a_position_reads_and_writes_as_postgresql_writes_it() {
        let position = at("16/B374D848");
        assert_eq!(position, Position((0x16 << 32) | 0xB374_D848));
        assert_eq!(position.to_string(), "16/B374D848");
        assert!(at("0/1") < at("1/0"));
        assert!("16".parse::<Position>().is_err());
    }

    #[test]
    fn a_writer_must_see_its_position_until_the_window_passes_and_anyone_else_sees_anything() {
        let positions = Positions::new(Duration::from_millis(200));
        assert_eq!(positions.must_see(Some("alice")), Sees::Everything, "nothing is known before the feed hears");
        positions.hearing();
        assert_eq!(positions.must_see(Some("alice")), Sees::Everything, "what came before hearing may be missed");
        std::thread::sleep(Duration::from_millis(210));
        let wrote = at("0/3000");
        positions.heard("alice", wrote);
        positions.heard("alice", at("0/2000"));
        assert_eq!(positions.must_see(Some("alice")), Sees::Position(wrote), "the newest position counts");
        assert_eq!(positions.must_see(Some("bob")), Sees::Anything);
        assert_eq!(positions.must_see(None), Sees::Anything);
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(positions.must_see(Some("alice")), Sees::Anything, "past the window every usable standby has it");
        positions.deaf();
        assert_eq!(positions.must_see(None), Sees::Everything);
    }
}
