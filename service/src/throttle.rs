//! Throttles on password guessing and sign-ups, counted in the database so that every server process on one
//! database enforces the same bounds.
//!
//! Each counter is a row of `login_throttle` (a key and the end of its window), bumped by one atomic
//! upsert-increment whose returned count is the admission decision: concurrent attempts each get their own count,
//! so no more than the limit of them are admitted, however many arrive at once. A login attempt is counted as a
//! failure *before* its password is checked, so a refused attempt costs no argon2 work; a success then takes its
//! count back.
//!
//! Login failures are bounded three ways, counted in this order:
//! - per client address, across usernames: one address cannot spray guesses over many accounts;
//! - per (username, address): one address cannot guess one password for long, while the owner, elsewhere, still
//!   logs in;
//! - per username, a higher ceiling: many addresses together cannot guess one password indefinitely.
//!
//! An attempt refused by one count does not reach the next, so one address's refused guesses do not use up the
//! username's ceiling and lock its owner out. Sign-ups are bounded per address, since each costs a
//! password hash. IPv6 addresses are counted by their /64 prefix, the block one subscriber is normally given.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, SubsecRound, Utc};
use entity::login_throttle::{self, Column};
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::Error;
use crate::db::Database;
use crate::domain::Username;
use crate::ledger::with_retry;

/// How many failures or sign-ups each key may have per window.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failed logins per (username, client address) per login window.
    pub login_per_username_and_address: u32,
    /// Failed logins per client address, whatever the username, per login window.
    pub login_per_address: u32,
    /// Failed logins per username, from anywhere, per login window: the ceiling many addresses share.
    pub login_per_username: u32,
    pub login_window: Duration,
    /// Sign-up attempts per client address per sign-up window.
    pub signups_per_address: u32,
    pub signup_window: Duration,
}

/// The throttle; cheap to share, its state is in the database.
pub struct Throttle {
    limits: Limits,
    /// When (seconds since the epoch) this process next deletes expired counters.
    next_sweep: AtomicI64,
}

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        Self { limits, next_sweep: AtomicI64::new(0) }
    }

    /// Counts a login attempt (or a password change's check of the current password) as a failure before its
    /// password is checked; `RATE_LIMITED`, with how long to wait, once any of its keys is over its limit.
    pub async fn admit_login(&self, db: &Database, username: &Username, address: IpAddr) -> Result<(), Error> {
        let now = now();
        let sweep = self.sweep_due(now);
        let limits = self.limits;
        let window = limits.login_window;
        let keys = LoginKeys::of(username, address);
        // One transaction for the three counts, so that a flood costs one commit (on SQLite, one sync to disk) per
        // attempt rather than one per count. A refusal still commits the counts made before it. Concurrent attempts
        // bump the same rows, which a SERIALIZABLE database may abort: then the whole attempt is counted again.
        with_retry(|| {
            let keys = keys.clone();
            db.write(move |db| {
                Box::pin(async move {
                    if sweep {
                        sweep_expired(&db, now).await;
                    }
                    let txn = db.begin().await?;
                    let counted = verdict(
                        async {
                            count(&txn, &keys.address, limits.login_per_address, window, now).await?;
                            count(&txn, &keys.pair, limits.login_per_username_and_address, window, now).await?;
                            count(&txn, &keys.username, limits.login_per_username, window, now).await
                        }
                        .await,
                    )?;
                    txn.commit().await?;
                    Ok(counted)
                })
            })
        })
        .await?
    }

    /// The password was right: the attempt [`admit_login`](Self::admit_login) counted was no failure. The
    /// (username, address) count starts over (the owner's typos are forgiven); the address and the username get
    /// back the one failure counted in advance.
    pub async fn login_succeeded(&self, db: &Database, username: &Username, address: IpAddr) -> Result<(), Error> {
        let keys = LoginKeys::of(username, address);
        with_retry(|| {
            let LoginKeys { address, pair, username } = keys.clone();
            db.write(move |db| {
                Box::pin(async move {
                    login_throttle::Entity::update_many()
                        .col_expr(
                            Column::Count,
                            Expr::case(Column::Key.eq(pair.clone()), 0).finally(Expr::col(Column::Count).sub(1)).into(),
                        )
                        .filter(Column::Key.is_in([address, username, pair]))
                        .filter(Column::Count.gt(0))
                        .exec(&db)
                        .await?;
                    Ok(())
                })
            })
        })
        .await
    }

    /// Counts a sign-up from `address` before its password is hashed; `RATE_LIMITED` past the limit.
    pub async fn admit_signup(&self, db: &Database, address: IpAddr) -> Result<(), Error> {
        let now = now();
        let sweep = self.sweep_due(now);
        let key = format!("signup/address/{}", address_key(address));
        let (limit, window) = (self.limits.signups_per_address, self.limits.signup_window);
        with_retry(|| {
            let key = key.clone();
            db.write(move |db| {
                Box::pin(async move {
                    if sweep {
                        sweep_expired(&db, now).await;
                    }
                    verdict(count(&db, &key, limit, window, now).await)
                })
            })
        })
        .await?
    }

    /// Whether this process is to delete the expired counters now: once a login window, so the table holds no
    /// more than the keys seen in the last window or so.
    fn sweep_due(&self, now: DateTime<Utc>) -> bool {
        let due = self.next_sweep.load(Ordering::Relaxed);
        let next = now.timestamp() + std::cmp::max(self.limits.login_window.num_seconds(), 1);
        now.timestamp() >= due
            && self.next_sweep.compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// Adds one to `key`'s count in its current window (a new window if the last one has ended), in one statement, and
/// refuses when the count it returns is over `limit`.
async fn count(
    db: &impl ConnectionTrait,
    key: &str,
    limit: u32,
    window: Duration,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let ends = now + window;
    let expired = || Expr::col((login_throttle::Entity, Column::WindowEndsAt)).lte(now);
    let counted = login_throttle::Entity::insert(login_throttle::ActiveModel {
        key: Set(key.to_owned()),
        count: Set(1),
        window_ends_at: Set(ends),
    })
    .on_conflict(
        OnConflict::column(Column::Key)
            .values([
                (
                    Column::Count,
                    Expr::case(expired(), 1).finally(Expr::col((login_throttle::Entity, Column::Count)).add(1)).into(),
                ),
                (
                    Column::WindowEndsAt,
                    Expr::case(expired(), ends)
                        .finally(Expr::col((login_throttle::Entity, Column::WindowEndsAt)))
                        .into(),
                ),
            ])
            .to_owned(),
    )
    .exec_with_returning(db)
    .await?;
    if u32::try_from(counted.count).unwrap_or(u32::MAX) > limit {
        let wait = std::cmp::max((counted.window_ends_at - now).num_seconds(), 1);
        return Err(Error::RateLimited { retry_after_secs: wait.unsigned_abs() });
    }
    Ok(())
}

/// A count's verdict as its write's value, so that a refusal keeps the counts made (a write's error undoes them);
/// a failure to count stays the write's error, which is retried when the database aborted it.
fn verdict(counted: Result<(), Error>) -> Result<Result<(), Error>, Error> {
    match counted {
        Ok(()) | Err(Error::RateLimited { .. }) => Ok(counted),
        Err(err) => Err(err),
    }
}

/// Deletes the counters whose window has ended.
async fn sweep_expired(db: &impl ConnectionTrait, now: DateTime<Utc>) {
    let swept = login_throttle::Entity::delete_many().filter(Column::WindowEndsAt.lte(now)).exec(db).await;
    // Counting matters more than tidying: a failed sweep is retried at the next one.
    if let Err(err) = swept {
        tracing::warn!(%err, "cannot sweep expired throttle counters");
    }
}

/// Now, in whole seconds: SQLite keeps timestamps as text, which compares in time order only when every value has
/// the same form.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// The three counters of a login: per address, per (username, address), per username.
#[derive(Clone)]
struct LoginKeys {
    address: String,
    pair: String,
    username: String,
}

impl LoginKeys {
    fn of(username: &Username, address: IpAddr) -> Self {
        let (username, address) = (username.as_str(), address_key(address));
        Self {
            pair: format!("login/username+address/{username}/{address}"),
            address: format!("login/address/{address}"),
            username: format!("login/username/{username}"),
        }
    }
}

/// The part of an address that identifies one client: an IPv4 address (also when written IPv4-mapped), or an
/// IPv6 /64, since one subscriber is normally given a whole /64 and could otherwise rotate through it.
fn address_key(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::MAX >> 64);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_prefix_and_a_mapped_ipv4_client_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("IPv6");
        let same_block: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("IPv6");
        let next_block: IpAddr = "2001:db8:1:3::1".parse().expect("IPv6");
        assert_eq!(address_key(one), "2001:db8:1:2::/64");
        assert_eq!(address_key(one), address_key(same_block));
        assert_ne!(address_key(one), address_key(next_block));
        assert_eq!(address_key("::ffff:192.0.2.7".parse().expect("mapped")), "192.0.2.7");
        assert_eq!(address_key(IpAddr::from([192, 0, 2, 7])), "192.0.2.7");
    }
}
