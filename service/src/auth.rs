//! Login sessions and tokens.
//!
//! A login opens a session row and returns two tokens: a short-lived JWT access token (HS256, pinned) naming the
//! session, and a refresh token `<session id>.<secret>` whose SHA-256 hash the session keeps. Refreshing rotates
//! the secret with a compare-and-swap, so of two uses of one refresh token only the first succeeds; presenting an
//! already-rotated token means it was copied, and revokes the session. Every authenticated request re-checks the
//! session and the user, so logout, deletion and password changes take effect at once.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use entity::{session, user};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::feed::{Change, Feed};
use crate::throttle::LoginThrottle;
use crate::{Error, password};

/// How tokens are signed and how long they live.
#[derive(Clone)]
pub struct TokenConfig {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl TokenConfig {
    pub const DEFAULT_ISSUER: &str = "simple-bank";
    pub const DEFAULT_AUDIENCE: &str = "simple-bank-api";

    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: Self::DEFAULT_ISSUER.to_owned(),
            audience: Self::DEFAULT_AUDIENCE.to_owned(),
            access_ttl,
            refresh_ttl,
        }
    }

    fn validation(&self) -> Validation {
        // Pinned to HS256: `alg: none` and algorithm-confusion tokens fail here.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        validation
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

/// An authenticated request's user and session.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: user::Model,
    pub session_id: String,
}

impl Caller {
    pub fn is_banker(&self) -> bool {
        self.user.role == user::Role::Banker
    }

    /// Whether the caller may act for `username`: themself, or anyone for a banker.
    pub fn may_act_for(&self, username: &str) -> bool {
        self.user.username == username || self.is_banker()
    }
}

/// Checks a password and opens a session. Unknown users and wrong passwords are indistinguishable, and every
/// attempt counts against `throttle` before any work is spent on it.
pub async fn login(
    db: &impl ConnectionTrait,
    config: &TokenConfig,
    throttle: &LoginThrottle,
    client: Option<IpAddr>,
    username: &str,
    password: &str,
) -> Result<Tokens, Error> {
    throttle.attempt(username, client)?;
    let user = user::Entity::find_by_id(username.to_owned()).filter(user::Column::DeletedAt.is_null()).one(db).await?;
    let hash = user.as_ref().map(|u| u.hashed_password.clone());
    if !password::verify(password, hash).await? {
        throttle.failed(client);
        return Err(Error::InvalidCredentials);
    }
    let user = user.ok_or(Error::InvalidCredentials)?;
    throttle.succeeded(&user.username);

    let session_id = random_token(16);
    let secret = random_token(32);
    let now = Utc::now();
    let refresh_expires_at = now + config.refresh_ttl;
    session::ActiveModel {
        id: Set(session_id.clone()),
        username: Set(user.username.clone()),
        refresh_token_hash: Set(sha256(&secret)),
        expires_at: Set(refresh_expires_at),
        ..Default::default()
    }
    .insert(db)
    .await?;
    issue(config, user, &session_id, &secret, refresh_expires_at)
}

/// Exchanges a refresh token for new tokens, rotating it: the presented one stops working.
pub async fn refresh(
    db: &impl ConnectionTrait,
    feed: &Feed,
    config: &TokenConfig,
    refresh_token: &str,
) -> Result<Tokens, Error> {
    let (session_id, secret) = refresh_token.split_once('.').ok_or(Error::Unauthenticated)?;
    let session = session::Entity::find_by_id(session_id.to_owned()).one(db).await?.ok_or(Error::Unauthenticated)?;
    let now = Utc::now();
    if session.revoked_at.is_some() || session.expires_at <= now {
        return Err(Error::Unauthenticated);
    }
    let new_secret = random_token(32);
    let rotated = session::Entity::update_many()
        .col_expr(session::Column::RefreshTokenHash, Expr::value(sha256(&new_secret)))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RefreshTokenHash.eq(sha256(secret)))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    if rotated.rows_affected != 1 {
        // A valid session but a stale secret: this token was already used once, so it has been copied.
        revoke_session(db, session_id).await?;
        ended(db, feed, session.username).await?;
        return Err(Error::Unauthenticated);
    }
    let user = user::Entity::find_by_id(session.username.clone())
        .filter(user::Column::DeletedAt.is_null())
        .one(db)
        .await?
        .ok_or(Error::Unauthenticated)?;
    issue(config, user, session_id, &new_secret, session.expires_at)
}

/// Ends the session a refresh token belongs to. Answers whether a live session was ended.
pub async fn logout(db: &impl ConnectionTrait, feed: &Feed, refresh_token: &str) -> Result<bool, Error> {
    let (session_id, secret) = refresh_token.split_once('.').ok_or(Error::Unauthenticated)?;
    let revoked = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RefreshTokenHash.eq(sha256(secret)))
        .filter(session::Column::RevokedAt.is_null())
        .exec_with_returning(db)
        .await?;
    let Some(session) = revoked.into_iter().next() else {
        return Ok(false);
    };
    ended(db, feed, session.username).await?;
    Ok(true)
}

/// Tells the change feed that a session of `username` ended, once its one-statement revocation committed, so
/// that the user's sockets re-check their sessions.
async fn ended(db: &impl ConnectionTrait, feed: &Feed, username: String) -> Result<(), Error> {
    let change = Change::SessionsEnded(username);
    feed.announce(db, &change).await?;
    feed.committed(change);
    Ok(())
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
    let claims = jsonwebtoken::decode::<Claims>(access_token, &config.decoding, &config.validation())
        .map_err(|_| Error::Unauthenticated)?
        .claims;
    Ok(VerifiedToken { username: claims.sub, session_id: claims.sid, issued_at: claims.iat, expires_at: claims.exp })
}

/// The caller behind a verified token, if its session is live and its user is neither deleted nor has changed
/// their password since the token was issued.
pub async fn check_session(db: &impl ConnectionTrait, token: &VerifiedToken) -> Result<Caller, Error> {
    let (session, user) = session::Entity::find_by_id(token.session_id.clone())
        .find_also_related(user::Entity)
        .one(db)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let user = user.ok_or(Error::Unauthenticated)?;
    let valid = session.username == token.username
        && session.revoked_at.is_none()
        && user.deleted_at.is_none()
        && token.issued_at >= user.password_changed_at.timestamp();
    if !valid {
        return Err(Error::Unauthenticated);
    }
    Ok(Caller { user, session_id: session.id })
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

async fn revoke_session(db: &impl ConnectionTrait, session_id: &str) -> Result<(), Error> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
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
        .map_err(|err| Error::Internal(format!("signing a token: {err}")))?;
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
