//! Users and sessions over GraphQL.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use service::auth::{Caller, Tokens};
use service::domain::{Email, FullName, Password, Username};
use service::entity::user;
use service::users::{self, NewUser, PasswordChange, UserUpdate};

use super::ledger::Account;
use super::node::{Kind, global_id};
use super::{
    ApiError, PageArgs, TotalCount, authorize_owner, caller, client, database, db, feed, loaders, paginate, throttle,
    tokens,
};

/// What a user may do.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum Role {
    /// Holds accounts and moves their own money; sees only themself.
    Depositor,
    /// Staff: reads every user, deposits money, sets roles.
    Banker,
}

impl From<user::Role> for Role {
    fn from(role: user::Role) -> Self {
        match role {
            user::Role::Depositor => Role::Depositor,
            user::Role::Banker => Role::Banker,
        }
    }
}

impl From<Role> for user::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Depositor => user::Role::Depositor,
            Role::Banker => user::Role::Banker,
        }
    }
}

/// A person who signs in; see the `#[Object]` impl for who reads what.
pub struct User {
    model: user::Model,
    /// The request has proved to be this user without a token yet: it signed them up, logged in or refreshed.
    proven: bool,
}

impl User {
    /// A user as a request reaches them: beyond the username, readable by themself and bankers only.
    pub fn reached(model: user::Model) -> Self {
        Self { model, proven: false }
    }

    /// The user this request has just proved to be (sign-up, login, refresh): readable in full.
    pub fn proven(model: user::Model) -> Self {
        Self { model, proven: true }
    }

    /// The active user `username`, as `user(username:)` and `node` answer it: the caller, or anyone for a banker;
    /// `FORBIDDEN` for anyone else, whether or not they exist; `None` when no active user has the name.
    pub(crate) async fn find(ctx: &Context<'_>, caller: &Caller, username: String) -> Result<Option<Self>, ApiError> {
        if !caller.may_act_for(&username) {
            return Err(service::Error::Forbidden.into());
        }
        let user = loaders(ctx).user.load_one(username).await?;
        // The loader reads deleted users too (an account's owner may be one); a deleted user is no longer found.
        Ok(user.filter(|user| user.deleted_at.is_none()).map(Self::reached))
    }

    /// The one guard of every field but `id` and `username`: `FORBIDDEN` unless the caller is this user or a banker.
    async fn authorize(&self, ctx: &Context<'_>) -> Result<(), ApiError> {
        if self.proven { Ok(()) } else { authorize_owner(ctx, &self.model.username).await }
    }
}

/// A person who signs in. Of a user other than themself, a depositor reads the `id` and `username` only (what
/// paying them needs); every other field answers `FORBIDDEN` and is nullable for that reason, so that one refused field does not
/// wipe out the rest of the response (a transfer's result, say). Bankers read every field of every user.
#[Object]
impl User {
    /// Global and opaque (see `Node`).
    pub(crate) async fn id(&self) -> ID {
        global_id(Kind::User, &self.model.username)
    }

    async fn username(&self) -> &str {
        &self.model.username
    }

    async fn full_name(&self, ctx: &Context<'_>) -> Result<Option<&str>, ApiError> {
        self.authorize(ctx).await?;
        Ok(Some(&self.model.full_name))
    }

    /// The primary email address.
    async fn email(&self, ctx: &Context<'_>) -> Result<Option<&str>, ApiError> {
        self.authorize(ctx).await?;
        Ok(self.model.email.as_deref())
    }

    /// Every active address, primary first.
    async fn emails(&self, ctx: &Context<'_>) -> Result<Option<Vec<String>>, ApiError> {
        self.authorize(ctx).await?;
        let mut emails = loaders(ctx).emails.load_one(self.model.username.clone()).await?.unwrap_or_default();
        if let Some(primary) = &self.model.email
            && let Some(at) = emails.iter().position(|e| e == primary)
        {
            let primary = emails.remove(at);
            emails.insert(0, primary);
        }
        Ok(Some(emails))
    }

    /// The user's accounts, one per currency.
    async fn accounts(&self, ctx: &Context<'_>) -> Result<Option<Vec<Account>>, ApiError> {
        self.authorize(ctx).await?;
        let accounts = loaders(ctx).accounts_by_owner.load_one(self.model.username.clone()).await?;
        Ok(Some(accounts.unwrap_or_default().into_iter().map(Account).collect()))
    }

    async fn role(&self, ctx: &Context<'_>) -> Result<Option<Role>, ApiError> {
        self.authorize(ctx).await?;
        Ok(Some(self.model.role.into()))
    }

    /// Access tokens issued before this instant are refused.
    async fn password_changed_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.authorize(ctx).await?;
        Ok(Some(self.model.password_changed_at))
    }

    async fn created_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.authorize(ctx).await?;
        Ok(Some(self.model.created_at))
    }
}

/// A login: tokens for the API and the user they belong to.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <accessToken>`.
    access_token: String,
    access_token_expires_at: DateTime<Utc>,
    /// Exchange for new tokens with `refreshAccessToken`; each refresh token works once.
    refresh_token: String,
    refresh_token_expires_at: DateTime<Utc>,
    user: User,
}

impl From<Tokens> for AuthPayload {
    fn from(tokens: Tokens) -> Self {
        Self {
            access_token: tokens.access_token,
            access_token_expires_at: tokens.access_token_expires_at,
            refresh_token: tokens.refresh_token,
            refresh_token_expires_at: tokens.refresh_token_expires_at,
            user: User::proven(tokens.user),
        }
    }
}

#[derive(InputObject)]
pub struct CreateUserInput {
    /// 3–32 lower-case letters, digits and underscores.
    username: String,
    /// 12–128 characters.
    password: String,
    full_name: String,
    email: String,
}

#[derive(InputObject)]
pub struct LoginInput {
    username: String,
    password: String,
}

#[derive(InputObject)]
pub struct UpdateUserInput {
    /// Whom to change: yourself when absent; only a banker may name someone else.
    username: Option<String>,
    full_name: Option<String>,
    /// A new password for yourself (nobody sets another user's); needs `currentPassword`. It ends every other
    /// session of yours.
    password: Option<String>,
    /// Your current password, required with `password`; a wrong one counts as a failed login.
    current_password: Option<String>,
    /// Only a banker may set a role.
    role: Option<Role>,
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> Result<User, ApiError> {
        let caller = caller(ctx).await?;
        let me = users::find(db(ctx), &caller.username).await?.ok_or(service::Error::Unauthenticated)?;
        Ok(User::reached(me))
    }

    /// One user: yourself, or anyone for a banker.
    async fn user(&self, ctx: &Context<'_>, username: String) -> Result<Option<User>, ApiError> {
        User::find(ctx, caller(ctx).await?, username).await
    }

    /// Every active user in username order (bankers only).
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size from the start (after `after`), 0–100; default 20.")] first: Option<i32>,
        after: Option<String>,
        #[graphql(desc = "Page size from the end (before `before`), 0–100.")] last: Option<i32>,
        before: Option<String>,
    ) -> Result<Connection<String, User, TotalCount>, ApiError> {
        let caller = caller(ctx).await?;
        let fetch = |slice| users::list(db(ctx), caller, slice);
        let (reads, counter) = (db(ctx).clone(), caller.clone());
        let total = TotalCount::new(move || {
            let (reads, counter) = (reads.clone(), counter.clone());
            async move { users::count(&reads, &counter).await }
        });
        let args = PageArgs { first, after, last, before };
        paginate(args, fetch, |user: &user::Model| user.username.clone(), User::reached, total).await
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Signs up a new depositor. Sign-ups per client address are limited (`RATE_LIMITED` with `retryAfter`).
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUserInput) -> Result<User, ApiError> {
        let new = NewUser {
            username: Username::parse(&input.username)?,
            password: Password::parse(&input.password)?,
            full_name: FullName::parse(&input.full_name)?,
            email: Email::parse(&input.email)?,
        };
        Ok(User::proven(users::create(database(ctx), throttle(ctx), client(ctx), new).await?))
    }

    /// Opens a session. Failed logins are limited per username and client address, per address, and per username
    /// (`RATE_LIMITED` with `retryAfter`).
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> Result<AuthPayload, ApiError> {
        // A name no user can have is refused as any wrong login is, before it reaches a throttle's counters.
        let username = Username::parse(&input.username).map_err(|_| service::Error::InvalidCredentials)?;
        let tokens =
            service::auth::login(database(ctx), tokens(ctx), throttle(ctx), client(ctx), &username, &input.password)
                .await?;
        super::SignedIn::note(ctx, username.as_str());
        Ok(tokens.into())
    }

    /// New tokens for a refresh token, which stops working.
    async fn refresh_access_token(&self, ctx: &Context<'_>, refresh_token: String) -> Result<AuthPayload, ApiError> {
        Ok(service::auth::refresh(database(ctx), feed(ctx), tokens(ctx), &refresh_token).await?.into())
    }

    /// Ends the session of a refresh token. True if a live session ended.
    async fn logout(&self, ctx: &Context<'_>, refresh_token: String) -> Result<bool, ApiError> {
        Ok(service::auth::logout(database(ctx), feed(ctx), &refresh_token).await?)
    }

    async fn update_user(&self, ctx: &Context<'_>, input: UpdateUserInput) -> Result<User, ApiError> {
        let caller = caller(ctx).await?;
        if input.current_password.is_some() && input.password.is_none() {
            return Err(ApiError::invalid_argument("currentPassword", "given without a new password"));
        }
        let password = match input.password {
            Some(new) => Some(PasswordChange { current: input.current_password, new: Password::parse(&new)? }),
            None => None,
        };
        let update = UserUpdate {
            username: input.username.as_deref().map(Username::parse).transpose()?,
            full_name: input.full_name.as_deref().map(FullName::parse).transpose()?,
            password,
            role: input.role.map(Into::into),
        };
        Ok(User::reached(users::update(database(ctx), feed(ctx), throttle(ctx), client(ctx), caller, update).await?))
    }

    /// Adds a secondary email address for the caller.
    async fn add_email(&self, ctx: &Context<'_>, email: String) -> Result<User, ApiError> {
        let caller = caller(ctx).await?;
        Ok(User::reached(users::add_email(database(ctx), caller, &Email::parse(&email)?).await?))
    }

    /// Removes one of the caller's secondary addresses; the primary cannot be removed.
    async fn remove_email(&self, ctx: &Context<'_>, email: String) -> Result<User, ApiError> {
        let caller = caller(ctx).await?;
        Ok(User::reached(users::remove_email(database(ctx), caller, &Email::parse(&email)?).await?))
    }

    /// Makes one of the caller's addresses the primary.
    async fn set_primary_email(&self, ctx: &Context<'_>, email: String) -> Result<User, ApiError> {
        let caller = caller(ctx).await?;
        Ok(User::reached(users::set_primary_email(database(ctx), caller, &Email::parse(&email)?).await?))
    }

    /// Deletes a user (yourself, or anyone for a banker): they can no longer log in, their addresses become free,
    /// their username stays taken.
    async fn delete_user(&self, ctx: &Context<'_>, username: String) -> Result<bool, ApiError> {
        let caller = caller(ctx).await?;
        users::delete(database(ctx), feed(ctx), caller, &username).await?;
        Ok(true)
    }
}
