//! Login sessions and tokens.
//!
//! A login opens a session row and returns two tokens: a short-lived JWT access token (HS256, pinned) naming the
//! session, and a refresh token `<session id>.<secret>` whose SHA-256 hash the session keeps. Refreshing rotates
//! the secret with a compare-and-swap, so of two uses of one refresh token only the first succeeds; presenting the
//! token it rotated away from means it was copied, and revokes the session, while a wrong secret ends nothing. Every authenticated request re-checks the
//! session and the user (from memory while the change feed has heard nothing that could end it: see
//! [`crate::sessions`]), so logout, deletion and password changes take effect at once.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use entity::{session, user};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::Database;
use crate::domain::Username;
use crate::feed::{Change, Feed};
use crate::throttle::Throttle;
use crate::{Error, password};

/// How tokens are signed and how long they live, and the access tokens verified lately.
pub struct TokenConfig {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Pinned to HS256: `alg: none` and algorithm-confusion tokens fail here.
    validation: Validation,
    verified: Verified,
}

impl TokenConfig {
    pub const DEFAULT_ISSUER: &str = "simple-bank";
    pub const DEFAULT_AUDIENCE: &str = "simple-bank-api";

    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let (issuer, audience) = (Self::DEFAULT_ISSUER.to_owned(), Self::DEFAULT_AUDIENCE.to_owned());
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer,
            audience,
            access_ttl,
            refresh_ttl,
            validation,
            verified: Verified::default(),
        }
    }
}

/// How far past its `exp` an access token is still taken: clocks of the processes behind one balancer differ.
const LEEWAY_SECS: u64 = 5;

/// Access tokens verified lately, with what they say. Every authenticated request verifies its token, and
/// verifying costs about 12 µs (two JSON parses and an HMAC; the benchmark's profile of a transfer), a twentieth of
/// the server's own work on a transfer. A token is signed text: once its signature and claims held, they hold for
/// as long as its `exp` does, which is checked again on every use. Only tokens signed with this server's key are
/// kept, so their number is bounded by the logins; past [`Verified::CAPACITY`] the memory starts over.
#[derive(Default)]
struct Verified(std::sync::Mutex<std::collections::HashMap<Box<str>, VerifiedToken>>);

impl Verified {
    const CAPACITY: usize = 4096;

    /// The token's claims if it was verified before: `Some(Err)` if it has expired since, `None` if it was not.
    fn get(&self, access_token: &str, now: i64) -> Option<Result<VerifiedToken, Error>> {
        let token = self.lock().get(access_token).cloned()?;
        Some(if token.expires_at < now - LEEWAY_SECS as i64 { Err(Error::Unauthenticated) } else { Ok(token) })
    }

    fn remember(&self, access_token: &str, token: &VerifiedToken) {
        let mut verified = self.lock();
        if verified.len() >= Self::CAPACITY {
            verified.clear();
        }
        verified.insert(access_token.into(), token.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Box<str>, VerifiedToken>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// The session the token belongs to; revoking the session revokes the token.
    pub sid: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// The tokens a login or refresh hands out.
#[derive(Debug)]
pub struct Tokens {
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_token_expires_at: DateTime<Utc>,
    pub user: user::Model,
}

/// Who an authenticated request acts as: the user and their role, and the session. Only who they are, not the
/// rest of their profile, so that it stays true for as long as the session does (see [`crate::sessions`]).
#[derive(Clone, Debug)]
pub struct Caller {
    pub username: String,
    pub role: user::Role,
    pub session_id: String,
}

impl Caller {
    pub fn is_banker(&self) -> bool {
        self.role == user::Role::Banker
    }

    /// Whether the caller may act for `username`: themself, or anyone for a banker.
    pub fn may_act_for(&self, username: &str) -> bool {
        self.username == username || self.is_banker()
    }
}

/// A password found right for a user, with the stored hash it was checked against: what
/// [`open_session`] needs. Only [`check_password`] makes one.
#[derive(Debug)]
pub struct CheckedPassword {
    user: user::Model,
}

impl CheckedPassword {
    pub fn user(&self) -> &user::Model {
        &self.user
    }
}

/// Checks a password and opens a session: [`check_password`], then [`open_session`].
pub async fn login(
    db: &Database,
    config: &TokenConfig,
    throttle: &Throttle,
    client: IpAddr,
    username: &Username,
    password: &str,
) -> Result<Tokens, Error> {
    let checked = check_password(db, throttle, client, username, password).await?;
    open_session(db, config, checked).await
}

/// Checks `username`'s password, a guess counted against `throttle` before any work is spent on it. Unknown users
/// and wrong passwords are indistinguishable, in answer and in time.
pub async fn check_password(
    db: &Database,
    throttle: &Throttle,
    client: IpAddr,
    username: &Username,
    password: &str,
) -> Result<CheckedPassword, Error> {
    throttle.admit_login(db, username, client).await?;
    let user = user::Entity::find_by_id(username.as_str().to_owned())
        .filter(user::Column::DeletedAt.is_null())
        .one(db.reads())
        .await?;
    let hash = user.as_ref().map(|u| u.hashed_password.clone());
    if !password::verify(password, hash).await? {
        return Err(Error::InvalidCredentials);
    }
    let user = user.ok_or(Error::InvalidCredentials)?;
    throttle.login_succeeded(db, username, client).await?;
    Ok(CheckedPassword { user })
}

/// Opens a session for a checked password, provided the password is still the one checked: the insert reads the
/// user's stored hash in the same statement (on PostgreSQL locking the row, so a password change either commits
/// first and no session opens, or waits and then ends this session with the others). A password changed while
/// it was being checked opens nothing (`INVALID_CREDENTIALS`).
pub async fn open_session(db: &Database, config: &TokenConfig, checked: CheckedPassword) -> Result<Tokens, Error> {
    let user = checked.user;
    let session_id = random_token(16);
    let secret = random_token(32);
    let refresh_expires_at = Utc::now() + config.refresh_ttl;
    let still_current = Query::select()
        .exprs([
            Expr::val(session_id.clone()),
            Expr::val(user.username.clone()),
            Expr::val(sha256(&secret)),
            Expr::val(refresh_expires_at),
        ])
        .from(user::Entity)
        .and_where(user::Column::Username.eq(user.username.clone()))
        .and_where(user::Column::HashedPassword.eq(user.hashed_password.clone()))
        .and_where(user::Column::DeletedAt.is_null())
        // SQLite has no row locks (its query builder leaves this out) and needs none: it runs one writer at a time.
        .lock_shared()
        .to_owned();
    let insert = Query::insert()
        .into_table(session::Entity)
        .columns([
            session::Column::Id,
            session::Column::Username,
            session::Column::RefreshTokenHash,
            session::Column::ExpiresAt,
        ])
        .select_from(still_current)
        .map_err(|err| Error::internal_from("building the session insert", err))?
        .to_owned();
    let opened = db.write(move |db| Box::pin(async move { Ok(db.execute(&insert).await?.rows_affected()) })).await?;
    if opened != 1 {
        return Err(Error::InvalidCredentials);
    }
    issue(config, user, &session_id, &secret, refresh_expires_at)
}

/// Exchanges a refresh token for new tokens, rotating it: the presented one stops working.
///
/// Presenting the secret the session last rotated away from means the token was copied (one of its two holders
/// already used it), so the session ends for both. Any other wrong secret is a guess, and ends nothing: knowing a
/// session's id (it is in every access token) must not let anyone log its owner out.
pub async fn refresh(db: &Database, feed: &Feed, config: &TokenConfig, refresh_token: &str) -> Result<Tokens, Error> {
    let (session_id, secret) = refresh_token.split_once('.').ok_or(Error::Unauthenticated)?;
    let (session_id, presented) = (session_id.to_owned(), sha256(secret));
    let new_secret = random_token(32);
    let new_hash = sha256(&new_secret);
    let (id, announcer) = (session_id.clone(), feed.clone());
    let rotation = db
        .write(move |db| {
            Box::pin(async move {
                let Some(session) = session::Entity::find_by_id(id.clone()).one(&db).await? else {
                    return Ok(Rotation::Refused { ended: None });
                };
                let now = Utc::now();
                if session.revoked_at.is_some() || session.expires_at <= now {
                    return Ok(Rotation::Refused { ended: None });
                }
                let rotated = session::Entity::update_many()
                    .col_expr(session::Column::RefreshTokenHash, Expr::value(new_hash))
                    .col_expr(session::Column::PreviousRefreshTokenHash, Expr::value(presented.clone()))
                    .filter(session::Column::Id.eq(id.clone()))
                    .filter(session::Column::RefreshTokenHash.eq(presented.clone()))
                    .filter(session::Column::RevokedAt.is_null())
                    .exec(&db)
                    .await?;
                if rotated.rows_affected != 1 {
                    let revoked = session::Entity::update_many()
                        .col_expr(session::Column::RevokedAt, Expr::value(now))
                        .filter(session::Column::Id.eq(id))
                        .filter(session::Column::PreviousRefreshTokenHash.eq(presented))
                        .filter(session::Column::RevokedAt.is_null())
                        .exec(&db)
                        .await?;
                    let ended = (revoked.rows_affected == 1).then_some(Change::SessionsEnded(session.username));
                    if let Some(ended) = &ended {
                        announcer.announce(&db, ended).await?;
                    }
                    return Ok(Rotation::Refused { ended });
                }
                let user = user::Entity::find_by_id(session.username.clone())
                    .filter(user::Column::DeletedAt.is_null())
                    .one(&db)
                    .await?
                    .ok_or(Error::Unauthenticated)?;
                Ok(Rotation::Rotated { user, expires_at: session.expires_at })
            })
        })
        .await?;
    match rotation {
        Rotation::Rotated { user, expires_at } => issue(config, user, &session_id, &new_secret, expires_at),
        Rotation::Refused { ended } => {
            if let Some(ended) = ended {
                feed.committed(ended).await;
            }
            Err(Error::Unauthenticated)
        }
    }
}

/// What a refresh did. A refusal is the write's value rather than its error, since a revoked session must stay
/// revoked.
enum Rotation {
    Rotated {
        user: user::Model,
        expires_at: DateTime<Utc>,
    },
    /// `ended` when a copied token's session was revoked, for the change feed once that committed.
    Refused {
        ended: Option<Change>,
    },
}

/// Ends the session a refresh token belongs to. Answers whether a live session was ended.
pub async fn logout(db: &Database, feed: &Feed, refresh_token: &str) -> Result<bool, Error> {
    let (session_id, secret) = refresh_token.split_once('.').ok_or(Error::Unauthenticated)?;
    let (session_id, presented, announcer) = (session_id.to_owned(), sha256(secret), feed.clone());
    let ended = db
        .write(move |db| {
            Box::pin(async move {
                let revoked = session::Entity::update_many()
                    .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
                    .filter(session::Column::Id.eq(session_id))
                    .filter(session::Column::RefreshTokenHash.eq(presented))
                    .filter(session::Column::RevokedAt.is_null())
                    .exec_with_returning(&db)
                    .await?;
                let Some(session) = revoked.into_iter().next() else {
                    return Ok(None);
                };
                // The user's sockets re-check their sessions.
                let ended = Change::SessionsEnded(session.username);
                announcer.announce(&db, &ended).await?;
                Ok(Some(ended))
            })
        })
        .await?;
    let Some(ended) = ended else {
        return Ok(false);
    };
    feed.committed(ended).await;
    Ok(true)
}

/// An access token whose signature, issuer, audience and lifetime hold. Whether its session is still live is for
/// the database to say: [`check_session`], or the statement that acts for it (a transfer checks it in passing).
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    pub username: String,
    pub session_id: String,
    /// When the token was issued (seconds since the epoch): a password changed later voids it.
    pub issued_at: i64,
    /// When the token expires (seconds since the epoch): a socket it opened closes then.
    pub expires_at: i64,
}

/// Checks an access token's signature and claims, without the database.
pub fn verify(config: &TokenConfig, access_token: &str) -> Result<VerifiedToken, Error> {
    if let Some(verified) = config.verified.get(access_token, Utc::now().timestamp()) {
        return verified;
    }
    let claims = jsonwebtoken::decode::<Claims>(access_token, &config.decoding, &config.validation)
        .map_err(|_| Error::Unauthenticated)?
        .claims;
    let token =
        VerifiedToken { username: claims.sub, session_id: claims.sid, issued_at: claims.iat, expires_at: claims.exp };
    config.verified.remember(access_token, &token);
    Ok(token)
}

/// The caller behind a verified token, if its session is live and its user is neither deleted nor has changed
/// their password since the token was issued. Requests ask [`crate::sessions::Sessions`], which asks this only
/// about sessions it does not know live.
pub async fn check_session(db: &impl ConnectionTrait, token: &VerifiedToken) -> Result<Caller, Error> {
    Ok(live_session(db, token).await?.0)
}

/// [`check_session`], with when the user's password last changed (seconds since the epoch).
pub(crate) async fn live_session(db: &impl ConnectionTrait, token: &VerifiedToken) -> Result<(Caller, i64), Error> {
    let (session, user) = session::Entity::find_by_id(token.session_id.clone())
        .find_also_related(user::Entity)
        .one(db)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let user = user.ok_or(Error::Unauthenticated)?;
    let password_changed_at = user.password_changed_at.timestamp();
    let valid = session.username == token.username
        && session.revoked_at.is_none()
        && user.deleted_at.is_none()
        && token.issued_at >= password_changed_at;
    if !valid {
        return Err(Error::Unauthenticated);
    }
    Ok((Caller { username: user.username, role: user.role, session_id: session.id }, password_changed_at))
}

/// Revokes every live session of `username` except `keep`.
pub(crate) async fn revoke_sessions_of(
    db: &impl ConnectionTrait,
    username: &str,
    keep: Option<&str>,
) -> Result<(), Error> {
    let mut update = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(session::Column::Username.eq(username))
        .filter(session::Column::RevokedAt.is_null());
    if let Some(keep) = keep {
        update = update.filter(session::Column::Id.ne(keep));
    }
    update.exec(db).await?;
    Ok(())
}

fn issue(
    config: &TokenConfig,
    user: user::Model,
    session_id: &str,
    secret: &str,
    refresh_token_expires_at: DateTime<Utc>,
) -> Result<Tokens, Error> {
    let now = Utc::now();
    let access_token_expires_at = now + config.access_ttl;
    let claims = Claims {
        sub: user.username.clone(),
        sid: session_id.to_owned(),
        iss: config.issuer.clone(),
        aud: config.audience.clone(),
        iat: now.timestamp(),
        exp: access_token_expires_at.timestamp(),
    };
    let access_token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &config.encoding)
        .map_err(|err| Error::internal_from("signing a token", err))?;
    Ok(Tokens {
        access_token,
        access_token_expires_at,
        refresh_token: format!("{session_id}.{secret}"),
        refresh_token_expires_at,
        user,
    })
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Refresh secrets are 256 random bits, so a fast hash suffices: there is nothing to brute-force.
fn sha256(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(access_ttl: Duration) -> TokenConfig {
        TokenConfig::new(b"a secret of thirty-two bytes or more", access_ttl, Duration::days(1))
    }

    fn token(config: &TokenConfig) -> String {
        let now = Utc::now();
        let user = user::Model {
            username: "alice".into(),
            hashed_password: String::new(),
            full_name: "Alice".into(),
            email: Some("alice@example.com".into()),
            password_changed_at: now,
            created_at: now,
            role: user::Role::Depositor,
            deleted_at: None,
        };
        issue(config, user, "session", "secret", now).expect("a token").access_token
    }

    #[test]
    fn a_token_verified_before_says_the_same_and_still_expires() {
        let config = tokens(Duration::minutes(15));
        let access_token = token(&config);
        let first = verify(&config, &access_token).expect("verified");
        let again = verify(&config, &access_token).expect("verified again, from memory");
        assert_eq!(
            (&again.username, &again.session_id, again.expires_at),
            (&first.username, &first.session_id, first.expires_at)
        );
        let later = |seconds| config.verified.get(&access_token, first.expires_at + seconds).expect("remembered");
        assert!(later(LEEWAY_SECS as i64).is_ok(), "within the leeway");
        assert!(matches!(later(LEEWAY_SECS as i64 + 1), Err(Error::Unauthenticated)), "expired since");
    }

    #[test]
    fn a_refused_token_is_not_remembered() {
        let config = tokens(Duration::minutes(15));
        let mut forged = token(&config);
        forged.pop();
        assert!(matches!(verify(&config, &forged), Err(Error::Unauthenticated)));
        assert!(config.verified.get(&forged, 0).is_none());
        let expired = tokens(Duration::minutes(-1));
        let access_token = token(&expired);
        assert!(matches!(verify(&expired, &access_token), Err(Error::Unauthenticated)));
        assert!(expired.verified.get(&access_token, 0).is_none());
    }
}
