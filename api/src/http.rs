//! HTTP routes: GraphQL, GraphiQL, and health probes.

use std::net::SocketAddr;
use std::time::Duration;

use async_graphql::ParseRequestError;
use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql_axum::GraphQLRequest;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use service::db::Db;

use crate::graphql::{self, RequestAuth};
use crate::{AppState, Config};

/// A request that is not a GraphQL request at all: answered as a GraphQL error with a code, not bare text.
pub struct BadRequest(ParseRequestError);

impl From<ParseRequestError> for BadRequest {
    fn from(err: ParseRequestError) -> Self {
        Self(err)
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            ParseRequestError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ParseRequestError::UnsupportedBatch => (StatusCode::BAD_REQUEST, "BATCH_NOT_SUPPORTED"),
            _ => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        };
        let body = serde_json::json!({ "errors": [{
            "message": format!("not a GraphQL request: {}", self.0),
            "extensions": { "code": code },
        }]});
        (status, axum::Json(body)).into_response()
    }
}

type Request = GraphQLRequest<BadRequest>;

/// Every route, with its middleware. Tests drive this directly or through a bound server.
pub fn router(state: AppState, config: &Config) -> Router {
    Router::new()
        .route("/", get(graphiql))
        .route("/graphql", get(graphql_get).post(graphql))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
        .layer(cors(&config.cors_allowed_origins))
        .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.request_timeout_secs),
        ))
        .layer(TraceLayer::new_for_http())
}

/// GET runs queries only: a mutation over GET could be triggered by a link (CSRF) and would put its arguments,
/// passwords included, into URLs and logs.
async fn graphql_get(
    state: State<AppState>,
    client: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    if is_mutation(&request.0) {
        let body = serde_json::json!({ "errors": [{
            "message": "mutations are accepted only over POST",
            "extensions": { "code": "METHOD_NOT_ALLOWED" },
        }]});
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")], axum::Json(body)).into_response();
    }
    execute(state.0, client.0, &headers, request.into_inner(), false).await
}

/// Whether the operation `request` selects is a mutation. A document that does not parse is left to the
/// executor, which reports the syntax error.
fn is_mutation(request: &async_graphql::Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let is_mutation = |ty: OperationType| ty == OperationType::Mutation;
    match &document.operations {
        DocumentOperations::Single(operation) => is_mutation(operation.node.ty),
        DocumentOperations::Multiple(operations) => match &request.operation_name {
            Some(name) => operations.get(name.as_str()).is_some_and(|op| is_mutation(op.node.ty)),
            None => operations.values().any(|op| is_mutation(op.node.ty)),
        },
    }
}

async fn graphql(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let request = request.into_inner();
    let mutation = is_mutation(&request);
    execute(state, client, &headers, request, mutation).await
}

/// Runs one operation: a query inside one read snapshot, a mutation on the pool (its services open their own
/// transactions).
async fn execute(
    state: AppState,
    client: SocketAddr,
    headers: &HeaderMap,
    request: async_graphql::Request,
    mutation: bool,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    let db = if mutation {
        Db::Pool(state.db.clone())
    } else {
        // Without a snapshot the fields still answer, each with its own error if the database is away.
        Db::snapshot(&state.db).await.unwrap_or_else(|err| {
            tracing::warn!(%err, "cannot open a read snapshot");
            Db::Pool(state.db.clone())
        })
    };
    let request = graphql::request_data(request.data(RequestAuth::new(token, Some(client.ip()))), &db);
    let mut response = state.schema.execute(request).await;
    db.finish().await;
    graphql::default_error_codes(&mut response);
    respond(response, negotiate(headers))
}

/// The media types a GraphQL response can be sent as (GraphQL over HTTP).
#[derive(Clone, Copy, PartialEq, Eq)]
enum MediaType {
    /// The legacy type every client understands: always status 200.
    Json,
    /// The spec's own type: a request that could not run (unparsable, invalid, bad variables) gets status 400.
    GraphqlResponse,
}

impl MediaType {
    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json; charset=utf-8",
            Self::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        }
    }
}

/// `application/graphql-response+json` when the client accepts it, else `application/json` (also for `*/*` or
/// no `Accept` at all, so that older clients keep working).
fn negotiate(headers: &HeaderMap) -> MediaType {
    let accepts_graphql_response = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| range.split(';').next().is_some_and(|t| t.trim() == "application/graphql-response+json"));
    if accepts_graphql_response { MediaType::GraphqlResponse } else { MediaType::Json }
}

fn respond(response: async_graphql::Response, media: MediaType) -> Response {
    // Nothing ran: the errors came before execution (parse, validation, variables), so no field has a path.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty());
    let mut body = serde_json::to_value(&response).unwrap_or_else(|err| {
        tracing::error!(%err, "serialising a response");
        serde_json::json!({ "errors": [{ "message": "internal server error",
                                          "extensions": { "code": "INTERNAL_SERVER_ERROR" } }] })
    });
    let status = if media == MediaType::GraphqlResponse && request_error {
        if let Some(body) = body.as_object_mut() {
            body.remove("data");
        }
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, [(header::CONTENT_TYPE, media.content_type())], axum::Json(body)).into_response()
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").title("simple-bank").finish())
}

/// Browsers may call the API only from the configured origins; with none, no CORS headers are sent, which
/// leaves same-origin pages (GraphiQL at `/`) working and every other origin refused by the browser.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|origin| origin.trim().parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Ready: the database answers too.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(err) => {
            tracing::warn!(%err, "not ready: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}
