//! The service layer's one error type.

use sea_orm::{DbErr, RuntimeErr};

use crate::constraint;

/// Everything a service call can fail with. Each variant documents the stable `code` clients see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `BAD_USER_INPUT`: a value failed validation; `field` names the input field it came from.
    #[error("{message}")]
    InvalidInput { field: &'static str, message: String },
    /// `USERNAME_TAKEN`: from the `users_pkey` constraint; usernames are never reused, even after deletion.
    #[error("that username is taken")]
    UsernameTaken,
    /// `EMAIL_TAKEN`: from the `emails_pkey` constraint; an address is active for at most one user.
    #[error("that email address is in use")]
    EmailTaken,
    /// `INVALID_CREDENTIALS`: the same for an unknown user and a wrong password.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// `UNAUTHENTICATED`: no token, or a bad, expired or revoked one.
    #[error("authentication required: the token is missing, invalid, expired or revoked")]
    Unauthenticated,
    /// `FORBIDDEN`: authenticated, but not allowed to do this.
    #[error("you are not allowed to do this")]
    Forbidden,
    /// `NOT_FOUND`: the named thing does not exist (or is not visible to the caller).
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// `ACCOUNT_EXISTS`: from `owner_currency_key`; one account per owner and currency.
    #[error("you already have an account in that currency")]
    AccountExists,
    /// `CURRENCY_MISMATCH`: a transfer's accounts must both hold the transfer's currency.
    #[error("both accounts must hold the transfer's currency")]
    CurrencyMismatch,
    /// `SAME_ACCOUNT`: a transfer moves money between two different accounts.
    #[error("a transfer needs two different accounts")]
    SameAccount,
    /// `INSUFFICIENT_FUNDS`: the balance may not go below zero (also refused by `accounts_balance_nonnegative`).
    #[error("insufficient funds")]
    InsufficientFunds,
    /// `IDEMPOTENCY_KEY_REUSED`: the key was used before with a different request.
    #[error("this idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// `ACCOUNT_CLOSED`: the account was closed (its owner was deleted); money no longer moves into or out of it.
    #[error("the account is closed")]
    AccountClosed,
    /// `ACCOUNT_NOT_EMPTY`: a user whose accounts still hold money cannot be deleted; move the money out first.
    #[error("the user's accounts still hold money")]
    AccountNotEmpty,
    /// `BALANCE_OUT_OF_RANGE`: the balance would leave the range of `Money` (a signed 64-bit count of minor units).
    #[error("the balance would leave the range of Money")]
    BalanceOutOfRange,
    /// `RATE_LIMITED`: too many failed logins or sign-ups (see `throttle`); `retryAfter` says how many seconds to wait.
    #[error("too many attempts; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// `TOO_MANY_SUBSCRIPTIONS`: a socket may run at most `limit` subscriptions at once; end one first.
    #[error("this socket already runs {limit} subscriptions, the most it may")]
    TooManySubscriptions { limit: usize },
    /// `SERVICE_UNAVAILABLE` when the database cannot be reached, else `INTERNAL_SERVER_ERROR`.
    #[error("database error")]
    Database(#[source] DbErr),
    /// `INTERNAL_SERVER_ERROR`: a bug or an unexpected failure outside the database.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable code clients receive in `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "BAD_USER_INPUT",
            Error::UsernameTaken => "USERNAME_TAKEN",
            Error::EmailTaken => "EMAIL_TAKEN",
            Error::InvalidCredentials => "INVALID_CREDENTIALS",
            Error::Unauthenticated => "UNAUTHENTICATED",
            Error::Forbidden => "FORBIDDEN",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::AccountExists => "ACCOUNT_EXISTS",
            Error::CurrencyMismatch => "CURRENCY_MISMATCH",
            Error::SameAccount => "SAME_ACCOUNT",
            Error::InsufficientFunds => "INSUFFICIENT_FUNDS",
            Error::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Error::AccountClosed => "ACCOUNT_CLOSED",
            Error::AccountNotEmpty => "ACCOUNT_NOT_EMPTY",
            Error::BalanceOutOfRange => "BALANCE_OUT_OF_RANGE",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::TooManySubscriptions { .. } => "TOO_MANY_SUBSCRIPTIONS",
            Error::Database(err) if is_unavailable(err) => "SERVICE_UNAVAILABLE",
            Error::Database(_) | Error::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    /// Whether clients may see this error's message; other errors are logged and reach them masked.
    pub fn is_expected(&self) -> bool {
        !matches!(self, Error::Database(_) | Error::Internal(_))
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidInput { field, message: message.into() }
    }
}

impl From<DbErr> for Error {
    fn from(err: DbErr) -> Self {
        Error::Database(err)
    }
}

/// Whether the database could not be reached (as opposed to refusing a statement): down, restarting, out of
/// connections, or the connection broke mid-statement.
fn is_unavailable(err: &DbErr) -> bool {
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
