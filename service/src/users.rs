//! Users: sign-up, profile changes, roles, email addresses and soft deletion.

use std::net::IpAddr;

use chrono::{SubsecRound, Utc};
use entity::user::{self, Role};
use entity::{account, deleted_email, email};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, Order, PaginatorTrait, QueryFilter, QueryOrder,
    Select, Set,
};

use crate::auth::{self, Caller};
use crate::db::{self, Database};
use crate::domain::{Email, FullName, Password, Username};
use crate::feed::{Change, Feed};
use crate::slice::{self, Page, Slice};
use crate::throttle::Throttle;
use crate::{Error, Field, ResultExt, password};

/// What sign-up needs, already validated.
#[derive(Debug)]
pub struct NewUser {
    pub username: Username,
    pub password: Password,
    pub full_name: FullName,
    pub email: Email,
}

/// Creates a depositor whose primary email is `email`, counting the sign-up against `client`'s limit before the
/// password is hashed.
///
/// Uniqueness is left to the database (`users_pkey`, `emails_pkey`), so racing sign-ups get one success and
/// `USERNAME_TAKEN` or `EMAIL_TAKEN` for the rest, never a duplicate.
pub async fn create(db: &Database, throttle: &Throttle, client: IpAddr, new: NewUser) -> Result<user::Model, Error> {
    throttle.admit_signup(db, client).await?;
    let hashed_password = password::hash(&new.password).await?;
    db.write(move |db| {
        Box::pin(async move {
            let txn = db.begin().await?;
            // `password_changed_at` and `created_at` keep their column defaults: "never" and now.
            let user = user::ActiveModel {
                username: Set(new.username.as_str().to_owned()),
                hashed_password: Set(hashed_password),
                full_name: Set(new.full_name.as_str().to_owned()),
                email: Set(Some(new.email.as_str().to_owned())),
                role: Set(Role::Depositor),
                ..Default::default()
            }
            .insert(&txn)
            .await
            .on_constraint("users_pkey", || Error::UsernameTaken)?;
            insert_email(&txn, &user.username, &new.email).await?;
            txn.commit().await?;
            Ok(user)
        })
    })
    .await
}

/// An active (not deleted) user.
pub async fn find(db: &impl ConnectionTrait, username: &str) -> Result<Option<user::Model>, Error> {
    Ok(user::Entity::find_by_id(username.to_owned()).filter(user::Column::DeletedAt.is_null()).one(db).await?)
}

/// A slice of the active users, in username order (bankers only).
pub async fn list(
    db: &impl ConnectionTrait,
    caller: &Caller,
    slice: Slice<String>,
) -> Result<Page<user::Model>, Error> {
    if !caller.is_banker() {
        return Err(Error::Forbidden);
    }
    slice::read(db, active(), user::Column::Username, Order::Asc, slice).await
}

/// How many active users there are (bankers only).
pub async fn count(db: &impl ConnectionTrait, caller: &Caller) -> Result<u64, Error> {
    if !caller.is_banker() {
        return Err(Error::Forbidden);
    }
    slice::count(db, active()).await
}

fn active() -> Select<user::Entity> {
    user::Entity::find().filter(user::Column::DeletedAt.is_null())
}

/// The active addresses of these users, oldest first, in one statement (for batch loading).
pub async fn emails_of(db: &impl ConnectionTrait, usernames: &[String]) -> Result<Vec<email::Model>, Error> {
    Ok(email::Entity::find()
        .filter(db::one_of(db.get_database_backend(), email::Column::Username, usernames.iter().cloned()))
        .order_by_asc(email::Column::CreatedAt)
        .order_by_asc(email::Column::Email)
        .all(db)
        .await?)
}

/// Changes a user's role: the way to make the first banker (`simple-bank set-role`). The command is a process of
/// its own, beside the server or without one, so it writes through a connection of its own rather than a server's
/// writer: its one statement is one transaction, which the server's SQLite writer waits for like any other
/// process's.
pub async fn set_role(db: &impl ConnectionTrait, username: &Username, role: Role) -> Result<user::Model, Error> {
    let user = find(db, username.as_str()).await?.ok_or(Error::NotFound { what: "user" })?;
    let mut active: user::ActiveModel = user.into();
    active.role = Set(role);
    Ok(active.update(db).await?)
}

/// A change to a user; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserUpdate {
    /// Whom to change; the caller when `None`. Only a banker may name someone else.
    pub username: Option<Username>,
    pub full_name: Option<FullName>,
    /// Only the user themself may change their password, and only with their current one.
    pub password: Option<PasswordChange>,
    /// Only a banker may set a role.
    pub role: Option<Role>,
}

/// A new password and the current one it replaces, which is required (`BAD_USER_INPUT` on `currentPassword` when
/// absent) once the change is known to be the caller's own.
pub struct PasswordChange {
    pub current: Option<String>,
    pub new: Password,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange(***)")
    }
}

/// Applies `update`.
///
/// A password change needs the current password, checked like a login (counted against `throttle` for the caller
/// and `client`; wrong: `INVALID_CREDENTIALS`): a stolen access token alone must not become the account. Nobody
/// sets another user's password, bankers included, since that would let them log in as the user and spend their
/// money. A new password ends every other session of the user.
pub async fn update(
    db: &Database,
    feed: &Feed,
    throttle: &Throttle,
    client: IpAddr,
    caller: &Caller,
    update: UserUpdate,
) -> Result<user::Model, Error> {
    let username = update.username.as_ref().map_or(caller.username.as_str(), Username::as_str).to_owned();
    let own = username == caller.username;
    if !caller.may_act_for(&username)
        || (update.role.is_some() && !caller.is_banker())
        || (update.password.is_some() && !own)
    {
        return Err(Error::Forbidden);
    }
    let new_password = match &update.password {
        Some(change) => {
            let current = change
                .current
                .as_deref()
                .ok_or_else(|| Error::invalid(Field::CurrentPassword, "changing the password needs the current one"))?;
            let checked = auth::check_password(db, throttle, client, &Username::parse(&username)?, current).await?;
            Some((checked, password::hash(&change.new).await?))
        }
        None => None,
    };
    let (session_id, announcer) = (caller.session_id.clone(), feed.clone());
    let UserUpdate { full_name, role, .. } = update;
    let (user, ended) = db
        .write(move |db| {
            Box::pin(async move {
                let txn = db.begin().await?;
                let changed_password = new_password.is_some();
                if let Some((checked, hashed_password)) = new_password {
                    // Only over the hash just checked: of two changes racing with one current password, one wins and
                    // the other is answered as a wrong password. The row is written before other sessions are ended,
                    // so a login that opened one meanwhile has committed by then (see `auth::open_session`) and ends
                    // too.
                    let changed = user::Entity::update_many()
                        .col_expr(user::Column::HashedPassword, Expr::value(hashed_password))
                        // Whole seconds, because token `iat` is whole seconds: a token from this second stays valid
                        // for the caller, while the other sessions end below.
                        .col_expr(user::Column::PasswordChangedAt, Expr::value(Utc::now().trunc_subsecs(0)))
                        .filter(user::Column::Username.eq(&username))
                        .filter(user::Column::HashedPassword.eq(checked.user().hashed_password.clone()))
                        .filter(user::Column::DeletedAt.is_null())
                        .exec(&txn)
                        .await?;
                    if changed.rows_affected != 1 {
                        return Err(Error::InvalidCredentials);
                    }
                    auth::revoke_sessions_of(&txn, &username, Some(session_id.as_str())).await?;
                }
                let user = find(&txn, &username).await?.ok_or(Error::NotFound { what: "user" })?;
                let changed_role = role.is_some();
                let user = if full_name.is_some() || changed_role {
                    let mut active: user::ActiveModel = user.into();
                    if let Some(full_name) = full_name {
                        active.full_name = Set(full_name.as_str().to_owned());
                    }
                    if let Some(role) = role {
                        active.role = Set(role);
                    }
                    active.update(&txn).await?
                } else {
                    user
                };
                // Sockets of the user re-check their sessions: after a password change the others ended, and tokens
                // issued before it too; after a role change, a socket must not keep acting with the old role.
                let ended = (changed_password || changed_role).then(|| Change::SessionsEnded(user.username.clone()));
                if let Some(ended) = &ended {
                    announcer.announce(&txn, ended).await?;
                }
                txn.commit().await?;
                Ok((user, ended))
            })
        })
        .await?;
    if let Some(ended) = ended {
        feed.committed(ended).await;
    }
    Ok(user)
}

/// Adds a secondary address for the caller.
pub async fn add_email(db: &Database, caller: &Caller, address: &Email) -> Result<user::Model, Error> {
    let (username, address) = (caller.username.clone(), address.clone());
    db.write(move |db| {
        Box::pin(async move {
            insert_email(&db, &username, &address).await?;
            current(&db, &username).await
        })
    })
    .await
}

/// Removes one of the caller's secondary addresses, keeping it in `deleted_emails`.
pub async fn remove_email(db: &Database, caller: &Caller, address: &Email) -> Result<user::Model, Error> {
    let (username, address) = (caller.username.clone(), address.clone());
    db.write(move |db| {
        Box::pin(async move {
            let txn = db.begin().await?;
            let user = current(&txn, &username).await?;
            if user.email.as_deref() == Some(address.as_str()) {
                return Err(Error::invalid(
                    Field::Email,
                    "the primary email cannot be removed; make another one primary first",
                ));
            }
            let removed = email::Entity::delete_many()
                .filter(email::Column::Email.eq(address.as_str()))
                .filter(email::Column::Username.eq(&user.username))
                .exec(&txn)
                .await?;
            if removed.rows_affected == 0 {
                return Err(Error::NotFound { what: "email" });
            }
            deleted_email::ActiveModel {
                email: Set(address.as_str().to_owned()),
                username: Set(user.username.clone()),
                deleted_at: Set(Utc::now()),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
            txn.commit().await?;
            Ok(user)
        })
    })
    .await
}

/// Makes one of the caller's addresses the primary.
pub async fn set_primary_email(db: &Database, caller: &Caller, address: &Email) -> Result<user::Model, Error> {
    let (username, address) = (caller.username.clone(), address.clone());
    db.write(move |db| {
        Box::pin(async move {
            let owned = email::Entity::find_by_id(address.as_str().to_owned())
                .filter(email::Column::Username.eq(&username))
                .count(&db)
                .await?;
            if owned == 0 {
                return Err(Error::NotFound { what: "email" });
            }
            let mut active: user::ActiveModel = current(&db, &username).await?.into();
            active.email = Set(Some(address.as_str().to_owned()));
            active.update(&db).await.on_constraint("users_primary_email_fkey", || Error::NotFound { what: "email" })
        })
    })
    .await
}

/// Soft-deletes a user (the caller themself, or anyone for a banker): the row stays so the username is never
/// reused, their accounts close, their addresses move to `deleted_emails` so others may use them, and every session
/// ends. Refused with `ACCOUNT_NOT_EMPTY` while any of their accounts holds money, which must be moved out first.
pub async fn delete(db: &Database, feed: &Feed, caller: &Caller, username: &str) -> Result<(), Error> {
    if !caller.may_act_for(username) {
        return Err(Error::Forbidden);
    }
    let (username, announcer) = (username.to_owned(), feed.clone());
    let ended = db
        .write(move |db| {
            Box::pin(async move {
                let txn = db.begin().await?;
                let user = find(&txn, &username).await?.ok_or(Error::NotFound { what: "user" })?;
                let now = Utc::now();
                // Closing is the emptiness check: `accounts_closed_empty` refuses to close an account holding money.
                // The update holds the accounts' row locks until commit, so a deposit or transfer into one either
                // committed before (and the check sees its money) or waits and then finds the account closed.
                account::Entity::update_many()
                    .col_expr(account::Column::ClosedAt, Expr::value(now))
                    .filter(account::Column::Owner.eq(&username))
                    .filter(account::Column::ClosedAt.is_null())
                    .exec(&txn)
                    .await
                    .on_constraint("accounts_closed_empty", || Error::AccountNotEmpty)?;
                let addresses = email::Entity::find().filter(email::Column::Username.eq(&username)).all(&txn).await?;
                if !addresses.is_empty() {
                    deleted_email::Entity::insert_many(addresses.into_iter().map(|e| deleted_email::ActiveModel {
                        email: Set(e.email),
                        username: Set(e.username),
                        deleted_at: Set(now),
                        ..Default::default()
                    }))
                    .exec(&txn)
                    .await?;
                }
                // The primary email references `emails`: clear it first (the check is deferred to commit anyway).
                user::Entity::update_many()
                    .col_expr(user::Column::Email, Expr::value(Option::<String>::None))
                    .col_expr(user::Column::DeletedAt, Expr::value(now))
                    .filter(user::Column::Username.eq(&user.username))
                    .exec(&txn)
                    .await?;
                email::Entity::delete_many().filter(email::Column::Username.eq(&username)).exec(&txn).await?;
                auth::revoke_sessions_of(&txn, &username, None).await?;
                let ended = Change::SessionsEnded(user.username);
                announcer.announce(&txn, &ended).await?;
                txn.commit().await?;
                Ok(ended)
            })
        })
        .await?;
    feed.committed(ended).await;
    Ok(())
}

async fn insert_email(db: &impl ConnectionTrait, username: &str, address: &Email) -> Result<(), Error> {
    email::ActiveModel {
        email: Set(address.as_str().to_owned()),
        username: Set(username.to_owned()),
        ..Default::default()
    }
    .insert(db)
    .await
    .on_constraint("emails_pkey", || Error::EmailTaken)
    // SQLite reports this one first when a user re-adds an address they already have.
    .on_constraint("emails_username_email_key", || Error::EmailTaken)?;
    Ok(())
}

/// The caller as stored now (the request's copy may predate this request's changes).
async fn current(db: &impl ConnectionTrait, username: &str) -> Result<user::Model, Error> {
    find(db, username).await?.ok_or(Error::Unauthenticated)
}

/// These users, deleted or not, in one statement (for batch loading).
pub async fn by_usernames(db: &impl ConnectionTrait, usernames: &[String]) -> Result<Vec<user::Model>, Error> {
    Ok(user::Entity::find()
        .filter(db::one_of(db.get_database_backend(), user::Column::Username, usernames.iter().cloned()))
        .all(db)
        .await?)
}
