//! How service errors reach clients: a message and a stable `extensions.code`.

use std::sync::Arc;

use async_graphql::ErrorExtensions;

/// A resolver's error. It deliberately has no `Display`: the only way to a GraphQL error is the `From` below,
/// which sets the code and masks unexpected errors, so no error can reach a client without one.
/// Shared (`Arc`) because batch loaders hand one error to every field that waited on the batch.
#[derive(Clone, Debug)]
pub struct ApiError(Arc<service::Error>);

impl From<service::Error> for ApiError {
    fn from(err: service::Error) -> Self {
        Self(Arc::new(err))
    }
}

impl From<Arc<service::Error>> for ApiError {
    fn from(err: Arc<service::Error>) -> Self {
        Self(err)
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(ApiError(err): ApiError) -> Self {
        let code = err.code();
        let message = if err.is_expected() {
            err.to_string()
        } else {
            tracing::error!(code, error = %error_chain(&*err), "request failed");
            match code {
                "SERVICE_UNAVAILABLE" => "the service is unavailable; try again shortly".to_owned(),
                _ => "internal server error".to_owned(),
            }
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            match &*err {
                service::Error::InvalidInput { field, .. } => ext.set("field", *field),
                service::Error::RateLimited { retry_after_secs } => ext.set("retryAfter", *retry_after_secs),
                _ => {}
            }
        })
    }
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
