//! The sessions this process found live, kept until the change feed says one may have ended.
//!
//! Checking a session in the database is a round trip on every authenticated request, most of them reads of a
//! session that is as live as it was a moment ago. So a session found live is kept, and forgotten as soon as the
//! change feed tells of anything that could end it or change what its user may do: logout, a password change, the
//! user's deletion or a new role all announce `SessionsEnded` in the transaction that does them, and that reaches
//! this process directly when it did the change, and through the feed when another process did. Whatever the feed
//! may have missed (its `LISTEN` connection dropped, or this cache fell behind its messages) forgets every session,
//! and while the feed cannot hear, nothing is kept. What nobody announces (a role set with the `set-role` command
//! from a process of its own, a row edited by hand) is seen within [`MAX_AGE`].

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;

use crate::Error;
use crate::auth::{self, Caller, VerifiedToken};
use crate::feed::{Feed, SessionChange};

/// How many sessions are kept; when full, the cache starts over.
const CAPACITY: usize = 10_000;
/// A kept session is checked in the database again after this long.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// The process's live sessions. One per process, shared by its requests.
pub struct Sessions {
    feed: Feed,
    state: Mutex<State>,
}

struct State {
    changes: Receiver<SessionChange>,
    /// Counts the changes heard: a session checked in the database is kept only if nothing was heard meanwhile,
    /// since what was heard may be the end of that very session, committed after the check read it.
    heard: u64,
    live: HashMap<String, Live>,
}

/// A session found live, with what a token needs to be checked against it.
struct Live {
    caller: Caller,
    /// Tokens issued before this (seconds since the epoch) are void.
    password_changed_at: i64,
    checked: Instant,
}

impl Sessions {
    pub fn new(feed: Feed) -> Self {
        let changes = feed.sessions();
        Self { feed, state: Mutex::new(State { changes, heard: 0, live: HashMap::new() }) }
    }

    /// The caller behind a verified token, as [`auth::check_session`] finds it, from memory when the session was
    /// found live before and nothing has been heard since that could have ended it.
    pub async fn check(&self, db: &impl ConnectionTrait, token: &VerifiedToken) -> Result<Caller, Error> {
        let heard = {
            let state = self.lock();
            if let Some(live) = state.live.get(&token.session_id)
                && live.checked.elapsed() < MAX_AGE
            {
                return live.admits(token).then(|| live.caller.clone()).ok_or(Error::Unauthenticated);
            }
            state.heard
        };
        let checked = Instant::now();
        let (caller, password_changed_at) = auth::live_session(db, token).await?;
        let mut state = self.lock();
        if state.heard == heard {
            if state.live.len() >= CAPACITY {
                state.live.clear();
            }
            state.live.insert(caller.session_id.clone(), Live { caller: caller.clone(), password_changed_at, checked });
        }
        Ok(caller)
    }

    /// The state, with every change heard so far applied.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Read before the changes are, so that a feed hearing again has its wake-up (`Anyone`) waiting already.
        let hearing = self.feed.hearing();
        state.hear();
        if !hearing {
            state.heard += 1;
            state.live.clear();
        }
        state
    }
}

impl State {
    fn hear(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(SessionChange::Of(username)) => {
                    self.heard += 1;
                    self.live.retain(|_, live| *live.caller.username != *username);
                }
                Ok(SessionChange::Anyone) | Err(TryRecvError::Lagged(_)) => {
                    self.heard += 1;
                    self.live.clear();
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }
}

impl Live {
    /// Whether `token` may act in this session, as [`auth::check_session`] judges it.
    fn admits(&self, token: &VerifiedToken) -> bool {
        self.caller.username == token.username && token.issued_at >= self.password_changed_at
    }
}
