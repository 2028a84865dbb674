//! How errors reach clients: a message and a stable `extensions.code` from [`Code`], the one list of codes.

use std::sync::Arc;

use async_graphql::{ErrorExtensions, ServerError};
use service::{Code, Field};

/// A resolver's error: the service's, or one about an argument only the API knows (a page size, a cursor, an id's
/// form). It deliberately has no `Display`: the only way to a GraphQL error is the `From` below, which sets the
/// code and masks unexpected errors, so no error can reach a client without one.
/// Shared (`Arc`) because batch loaders hand one error to every field that waited on the batch.
#[derive(Clone, Debug)]
pub struct ApiError(Inner);

#[derive(Clone, Debug)]
enum Inner {
    Service(Arc<service::Error>),
    /// `BAD_USER_INPUT` for an argument the service never sees, named as the schema names it.
    Argument {
        name: &'static str,
        message: String,
    },
}

impl ApiError {
    /// `BAD_USER_INPUT` for the schema's argument or input field `name`.
    pub fn invalid_argument(name: &'static str, message: impl Into<String>) -> Self {
        Self(Inner::Argument { name, message: message.into() })
    }
}

impl From<service::Error> for ApiError {
    fn from(err: service::Error) -> Self {
        Self(Inner::Service(Arc::new(err)))
    }
}

impl From<Arc<service::Error>> for ApiError {
    fn from(err: Arc<service::Error>) -> Self {
        Self(Inner::Service(err))
    }
}

/// The schema's name for a domain value the service refused: the one place service fields meet schema names.
fn schema_name(field: Field) -> &'static str {
    match field {
        Field::Username => "username",
        Field::Password => "password",
        Field::CurrentPassword => "currentPassword",
        Field::FullName => "fullName",
        Field::Email => "email",
        Field::Amount => "amount",
        Field::IdempotencyKey => "idempotencyKey",
        Field::Until => "until",
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(ApiError(err): ApiError) -> Self {
        let err = match err {
            Inner::Argument { name, message } => {
                return async_graphql::Error::new(message).extend_with(|_, ext| {
                    ext.set("code", Code::BadUserInput.as_str());
                    ext.set("field", name);
                });
            }
            Inner::Service(err) => err,
        };
        let code = err.code();
        let message = if err.is_expected() {
            err.to_string()
        } else {
            tracing::error!(code = code.as_str(), error = %error_chain(&*err), "request failed");
            unexpected_message(code).to_owned()
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code.as_str());
            match &*err {
                service::Error::InvalidInput { field, .. } => ext.set("field", schema_name(*field)),
                service::Error::RateLimited { retry_after_secs } => ext.set("retryAfter", *retry_after_secs),
                _ => {}
            }
        })
    }
}

/// What a client is told of an unexpected failure: whether to try again, and nothing of the cause.
fn unexpected_message(code: Code) -> &'static str {
    match code {
        Code::ServiceUnavailable => "the service is unavailable; try again shortly",
        _ => "internal server error",
    }
}

/// An error the API raises outside any resolver (a request refused before execution), with its code.
pub fn coded(code: Code, message: impl Into<String>) -> ServerError {
    let mut error = ServerError::new(message, None);
    error.extensions.get_or_insert_with(Default::default).set("code", code.as_str());
    error
}

/// `err` and each of its causes, for the log.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_keeps_its_cause_for_the_log_and_tells_the_client_nothing_of_it() {
        let cause = std::io::Error::other("disk on fire");
        let err = service::Error::internal_from("writing the ledger", cause);
        assert_eq!(error_chain(&err), "internal error: writing the ledger: disk on fire");
        let client = async_graphql::Error::from(ApiError::from(err));
        assert_eq!(client.message, "internal server error");
    }

    #[test]
    fn a_service_field_reaches_the_client_by_its_schema_name() {
        let err = service::Error::invalid(Field::FullName, "too long");
        let client = async_graphql::Error::from(ApiError::from(err)).into_server_error(Default::default());
        let extensions = client.extensions.expect("extensions");
        assert_eq!(extensions.get("field"), Some(&async_graphql::Value::from("fullName")));
        assert_eq!(extensions.get("code"), Some(&async_graphql::Value::from("BAD_USER_INPUT")));
    }
}
