//! Login throttling: a bound on password guesses per username and per client address.
//!
//! Every attempt on a username is counted before its password is checked, so a flood of guesses (or one request
//! carrying hundreds of `login` aliases) is refused cheaply, without spending argon2 work on it; a success clears
//! the username's count. A client address is bounded by its failures, so many people behind one address can
//! still log in. Counts live in this process: each replica enforces its own bound, which still holds an
//! attacker to (replicas × limit) guesses a minute.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Error;

/// Attempts allowed per window per username, and failures per window per client address.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub per_username: u32,
    pub per_address: u32,
    pub window: Duration,
}

/// Entries kept before expired windows are swept, so memory stays bounded under a flood of made-up usernames.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, PartialEq, Eq, Hash)]
enum Key {
    Username(String),
    Address(IpAddr),
}

pub struct LoginThrottle {
    limits: Limits,
    windows: Mutex<HashMap<Key, (Instant, u32)>>,
}

impl LoginThrottle {
    pub fn new(limits: Limits) -> Self {
        Self { limits, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one attempt on `username`, or refuses it with `RATE_LIMITED` and how long to wait.
    pub fn attempt(&self, username: &str, address: Option<IpAddr>) -> Result<(), Error> {
        let now = Instant::now();
        let mut windows = self.lock();
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, (start, _)| now.duration_since(*start) < self.limits.window);
        }
        let username = Key::Username(username.to_owned());
        let mut checks = vec![(&username, self.limits.per_username)];
        let address = address.map(Key::Address);
        if let Some(address) = &address {
            checks.push((address, self.limits.per_address));
        }
        for (key, limit) in checks {
            if let Some((start, count)) = windows.get(key)
                && now.duration_since(*start) < self.limits.window
                && *count >= limit
            {
                let wait = self.limits.window.saturating_sub(now.duration_since(*start));
                return Err(Error::RateLimited { retry_after_secs: wait.as_secs().max(1) });
            }
        }
        self.count(&mut windows, username, now);
        Ok(())
    }

    /// A wrong password or unknown user from `address`.
    pub fn failed(&self, address: Option<IpAddr>) {
        if let Some(address) = address {
            let mut windows = self.lock();
            self.count(&mut windows, Key::Address(address), Instant::now());
        }
    }

    /// A successful login: the username's attempts start over.
    pub fn succeeded(&self, username: &str) {
        self.lock().remove(&Key::Username(username.to_owned()));
    }

    fn count(&self, windows: &mut HashMap<Key, (Instant, u32)>, key: Key, now: Instant) {
        let window = windows.entry(key).or_insert((now, 0));
        if now.duration_since(window.0) >= self.limits.window {
            *window = (now, 0);
        }
        window.1 += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, u32)>> {
        // The map holds counters only; one left mid-update by a panic is still usable.
        self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(Limits { per_username: 3, per_address: 5, window: Duration::from_secs(60) })
    }

    #[test]
    fn refuses_the_attempt_after_the_limit_with_a_wait() {
        let throttle = throttle();
        for _ in 0..3 {
            assert!(throttle.attempt("alice", None).is_ok());
        }
        assert!(matches!(
            throttle.attempt("alice", None),
            Err(Error::RateLimited { retry_after_secs }) if (1..=60).contains(&retry_after_secs)
        ));
        assert!(throttle.attempt("bob", None).is_ok(), "other usernames are not affected");
    }

    #[test]
    fn bounds_the_failures_of_one_address_across_usernames() {
        let throttle = throttle();
        let address = Some(IpAddr::from([192, 0, 2, 1]));
        for name in ["a", "b", "c", "d", "e"] {
            assert!(throttle.attempt(name, address).is_ok());
            throttle.failed(address);
        }
        assert!(throttle.attempt("f", address).is_err());
    }

    #[test]
    fn many_successful_logins_from_one_address_are_not_limited() {
        let throttle = throttle();
        let address = Some(IpAddr::from([192, 0, 2, 1]));
        for n in 0..50 {
            let name = format!("user{n}");
            assert!(throttle.attempt(&name, address).is_ok());
            throttle.succeeded(&name);
        }
    }

    #[test]
    fn a_success_clears_the_username() {
        let throttle = throttle();
        for _ in 0..3 {
            assert!(throttle.attempt("alice", None).is_ok());
        }
        throttle.succeeded("alice");
        assert!(throttle.attempt("alice", None).is_ok());
    }
}
