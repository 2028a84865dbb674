//! The stable codes clients see in `extensions.code`: the only place their spellings exist.
//!
//! The list lives in the service, the lowest layer the API sees, so that the service's errors and the API's own
//! refusals (parse, validation, demand control, HTTP) take their codes from one enum while dependencies keep
//! pointing api → service. The service itself produces only some of them ([`crate::Error::code`]).

/// Declares [`Code`] with each variant's spelling, and [`Code::ALL`].
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// A stable error code; README.md's "Errors" table documents each.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in the order of the README's table.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            /// The code as clients see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }
        }
    };
}

codes! {
    /// A value failed validation; `extensions.field` names it.
    BadUserInput = "BAD_USER_INPUT",
    UsernameTaken = "USERNAME_TAKEN",
    EmailTaken = "EMAIL_TAKEN",
    InvalidCredentials = "INVALID_CREDENTIALS",
    Unauthenticated = "UNAUTHENTICATED",
    Forbidden = "FORBIDDEN",
    NotFound = "NOT_FOUND",
    AccountExists = "ACCOUNT_EXISTS",
    CurrencyMismatch = "CURRENCY_MISMATCH",
    SameAccount = "SAME_ACCOUNT",
    InsufficientFunds = "INSUFFICIENT_FUNDS",
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED",
    AccountClosed = "ACCOUNT_CLOSED",
    AccountNotEmpty = "ACCOUNT_NOT_EMPTY",
    BalanceOutOfRange = "BALANCE_OUT_OF_RANGE",
    /// Too many failed logins or sign-ups; `extensions.retryAfter` says how many seconds to wait.
    RateLimited = "RATE_LIMITED",
    /// Demand control: the worst-case node count is over the limit.
    QueryCostExceeded = "QUERY_COST_EXCEEDED",
    /// Demand control: more than one password-hashing field in one operation.
    TooManyPasswordFields = "TOO_MANY_PASSWORD_FIELDS",
    /// A socket already runs as many subscriptions as it may.
    TooManySubscriptions = "TOO_MANY_SUBSCRIPTIONS",
    /// A mutation sent over GET.
    MethodNotAllowed = "METHOD_NOT_ALLOWED",
    /// The document is not GraphQL.
    GraphqlParseFailed = "GRAPHQL_PARSE_FAILED",
    /// The document does not fit the schema.
    GraphqlValidationFailed = "GRAPHQL_VALIDATION_FAILED",
    /// The body is not a GraphQL request.
    BadRequest = "BAD_REQUEST",
    /// Automatic persisted queries: no document is registered under the hash; send it with the hash.
    PersistedQueryNotFound = "PERSISTED_QUERY_NOT_FOUND",
    /// `TRUSTED_DOCUMENTS` is set and the request names no document of its manifest.
    DocumentNotTrusted = "DOCUMENT_NOT_TRUSTED",
    /// A JSON array of requests.
    BatchNotSupported = "BATCH_NOT_SUPPORTED",
    /// The body is over `BODY_LIMIT_BYTES`.
    PayloadTooLarge = "PAYLOAD_TOO_LARGE",
    /// The database cannot be reached.
    ServiceUnavailable = "SERVICE_UNAVAILABLE",
    /// Anything unexpected; the cause is in the log only.
    InternalServerError = "INTERNAL_SERVER_ERROR",
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The codes in the tables of README.md's "## Errors" section: every backticked word in a row's first cell.
    fn documented() -> BTreeSet<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md beside the workspace's Cargo.toml");
        let section = readme.split("\n## Errors\n").nth(1).expect("README.md has an \"## Errors\" section");
        let section = section.split("\n## ").next().unwrap_or(section);
        section
            .lines()
            .filter_map(|line| line.strip_prefix('|'))
            .filter_map(|row| row.split('|').next())
            .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn every_code_in_the_readme_exists_and_every_code_is_in_the_readme() {
        let documented = documented();
        let ours: BTreeSet<String> = Code::ALL.iter().map(|code| code.as_str().to_owned()).collect();
        assert!(documented.len() > 10, "the README's table was not found: {documented:?}");
        let undocumented: Vec<_> = ours.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&ours).collect();
        assert!(undocumented.is_empty(), "codes missing from README.md's error table: {undocumented:?}");
        assert!(unknown.is_empty(), "README.md documents codes that do not exist: {unknown:?}");
    }

    #[test]
    fn every_code_is_spelled_once() {
        let spellings: BTreeSet<&str> = Code::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(spellings.len(), Code::ALL.len());
    }
}
