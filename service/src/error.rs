//! The service layer's one error type.

use sea_orm::{DbErr, RuntimeErr};

use crate::{Code, constraint};

/// Everything a service call can fail with. Each variant documents the stable `code` clients see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// [`Code::BadUserInput`]: a value failed validation; `field` names the domain value it was meant to be.
    #[error("{message}")]
    InvalidInput { field: Field, message: String },
    /// [`Code::UsernameTaken`]: from the `users_pkey` constraint; usernames are never reused, even after deletion.
    #[error("that username is taken")]
    UsernameTaken,
    /// [`Code::EmailTaken`]: from the `emails_pkey` constraint; an address is active for at most one user.
    #[error("that email address is in use")]
    EmailTaken,
    /// [`Code::InvalidCredentials`]: the same for an unknown user and a wrong password.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// [`Code::Unauthenticated`]: no token, or a bad, expired or revoked one.
    #[error("authentication required: the token is missing, invalid, expired or revoked")]
    Unauthenticated,
    /// [`Code::Forbidden`]: authenticated, but not allowed to do this.
    #[error("you are not allowed to do this")]
    Forbidden,
    /// [`Code::NotFound`]: the named thing does not exist (or is not visible to the caller).
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// [`Code::AccountExists`]: from `owner_currency_key`; one account per owner and currency.
    #[error("you already have an account in that currency")]
    AccountExists,
    /// [`Code::CurrencyMismatch`]: a transfer's accounts must both hold the transfer's currency.
    #[error("both accounts must hold the transfer's currency")]
    CurrencyMismatch,
    /// [`Code::SameAccount`]: a transfer moves money between two different accounts.
    #[error("a transfer needs two different accounts")]
    SameAccount,
    /// [`Code::InsufficientFunds`]: the balance may not go below zero (also refused by `accounts_balance_nonnegative`).
    #[error("insufficient funds")]
    InsufficientFunds,
    /// [`Code::IdempotencyKeyReused`]: the key was used before with a different request.
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// [`Code::AccountClosed`]: the account was closed (its owner was deleted); money no longer moves into or out of it.
    #[error("the account is closed")]
    AccountClosed,
    /// [`Code::AccountNotEmpty`]: a user whose accounts still hold money cannot be deleted; move the money out first.
    #[error("the user's accounts still hold money")]
    AccountNotEmpty,
    /// [`Code::BalanceOutOfRange`]: the balance would leave the range of `Money` (a signed 64-bit count of minor units).
    #[error("the balance would leave the range of Money")]
    BalanceOutOfRange,
    /// [`Code::RateLimited`]: too many failed logins or sign-ups (see `throttle`); `retryAfter` says how many seconds to wait.
    #[error("too many attempts; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// [`Code::TooManySubscriptions`]: a socket may run at most `limit` subscriptions at once; end one first.
    #[error("this socket already runs {limit} subscriptions, the most it may")]
    TooManySubscriptions { limit: usize },
    /// [`Code::ServiceUnavailable`] when the database cannot be reached, else [`Code::InternalServerError`].
    #[error("database error")]
    Database(#[source] DbErr),
    /// [`Code::InternalServerError`]: a bug or an unexpected failure outside the database.
    #[error("internal error: {context}")]
    Internal {
        context: String,
        /// What failed, if something did, for the log's error chain.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// The domain value an input error is about. The service names no API's fields: each API maps these to the names
/// its clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Username,
    Password,
    /// The password a password change proves first.
    CurrentPassword,
    FullName,
    Email,
    Amount,
    IdempotencyKey,
    /// The end of a period.
    Until,
}

impl Error {
    /// The stable code clients receive in `extensions.code`.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidInput { .. } => Code::BadUserInput,
            Error::UsernameTaken => Code::UsernameTaken,
            Error::EmailTaken => Code::EmailTaken,
            Error::InvalidCredentials => Code::InvalidCredentials,
            Error::Unauthenticated => Code::Unauthenticated,
            Error::Forbidden => Code::Forbidden,
            Error::NotFound { .. } => Code::NotFound,
            Error::AccountExists => Code::AccountExists,
            Error::CurrencyMismatch => Code::CurrencyMismatch,
            Error::SameAccount => Code::SameAccount,
            Error::InsufficientFunds => Code::InsufficientFunds,
            Error::IdempotencyKeyReused => Code::IdempotencyKeyReused,
            Error::AccountClosed => Code::AccountClosed,
            Error::AccountNotEmpty => Code::AccountNotEmpty,
            Error::BalanceOutOfRange => Code::BalanceOutOfRange,
            Error::RateLimited { .. } => Code::RateLimited,
            Error::TooManySubscriptions { .. } => Code::TooManySubscriptions,
            Error::Database(err) if is_unavailable(err) => Code::ServiceUnavailable,
            Error::Database(_) | Error::Internal { .. } => Code::InternalServerError,
        }
    }

    /// Whether clients may see this error's message; other errors are logged and reach them masked.
    pub fn is_expected(&self) -> bool {
        !matches!(self, Error::Database(_) | Error::Internal { .. })
    }

    pub fn invalid(field: Field, message: impl Into<String>) -> Self {
        Error::InvalidInput { field, message: message.into() }
    }

    /// An unexpected state with nothing that failed to blame.
    pub fn internal(context: impl Into<String>) -> Self {
        Error::Internal { context: context.into(), source: None }
    }

    /// An unexpected failure of `source` while doing `context`.
    pub fn internal_from(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Internal { context: context.into(), source: Some(Box::new(source)) }
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        Error::Database(err)
    }
}

/// Whether the database could not be reached (as opposed to refusing a statement): down, restarting, out of
/// connections, or the connection broke mid-statement.
pub(crate) fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx)) => match &**sqlx {
            Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::WorkerCrashed | Sqlx::Tls(_) => true,
            // Class 08: connection exceptions; 57P01–57P03: the server is shutting down or starting.
            Sqlx::Database(db) => {
                db.code().is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
            }
            _ => false,
        },
        _ => false,
    }
}

/// Turns a named constraint's violation into the domain error it means, at the call that can cause it.
pub trait ResultExt<T> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> Error) -> Result<T, Error>;
}

impl<T, E: Into<Error>> ResultExt<T> for Result<T, E> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> Error) -> Result<T, Error> {
        self.map_err(|err| match err.into() {
            Error::Database(db) if constraint::violated(&db).as_deref() == Some(name) => map(),
            other => other,
        })
    }
}
