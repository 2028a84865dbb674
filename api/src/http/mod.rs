//! HTTP routes: GraphQL, GraphiQL and health probes on the API's address; metrics on an address of their own.

mod client;
mod documents;
pub mod graphiql;
mod persisted;
pub mod ws;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition, OperationType};
use async_graphql::{Name, ParseRequestError, ServerError};
use async_graphql_axum::GraphQLRequest;
use axum::Extension;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequest, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use service::Code;
use service::db::Db;

pub use self::documents::Documents;
pub use self::persisted::Persisted;
use crate::graphql::cost::Demand;
use crate::graphql::{self, RequestAuth};
use crate::{AppState, Config, Hardening};

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
            ParseRequestError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, Code::PayloadTooLarge),
            ParseRequestError::UnsupportedBatch => (StatusCode::BAD_REQUEST, Code::BatchNotSupported),
            _ => (StatusCode::BAD_REQUEST, Code::BadRequest),
        };
        refused(status, code, format!("not a GraphQL request: {}", self.0)).into_response()
    }
}

/// `PAYLOAD_TOO_LARGE` with status 413.
fn payload_too_large() -> impl IntoResponse {
    refused(StatusCode::PAYLOAD_TOO_LARGE, Code::PayloadTooLarge, "the body is larger than the server accepts")
}

/// Whether reading a body failed on `BODY_LIMIT_BYTES` (the limit layer's `LengthLimitError`).
fn is_over_the_limit(err: &axum::Error) -> bool {
    let mut cause = std::error::Error::source(err);
    while let Some(err) = cause {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Every 413 carries `PAYLOAD_TOO_LARGE`, also the one the limit layer sends from the announced length alone.
/// A plain function, not axum's middleware: that boxes a future and clones the services inside it per request.
fn coded_payload_too_large<B>(response: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        payload_too_large().into_response()
    } else {
        response.map(axum::body::Body::new)
    }
}

/// A request answered without running it, in the shape of every GraphQL answer: one error, with its code.
fn refused(status: StatusCode, code: Code, message: impl Into<String>) -> impl IntoResponse {
    (status, axum::Json(async_graphql::Response::from_errors(vec![graphql::coded(code, message)])))
}

type Request = GraphQLRequest<BadRequest>;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest request id kept from a caller (a UUID is 36 characters); a longer one is replaced.
const MAX_REQUEST_ID_LEN: usize = 64;
/// Caller-chosen strings are cut to this many characters in log lines, so a caller cannot make them large.
const MAX_LOGGED_CHARS: usize = 64;

/// Every API route, with its middleware. `api/tests/router.rs` drives it in-process (`tower::ServiceExt::oneshot`);
/// the integration tests drive it through a bound server.
///
/// The middleware is one stack, applied once: each `Router::layer` call wraps every route in a boxed service of
/// its own, which is cloned, and its future boxed, on every request (about a microsecond a layer, the benchmark's
/// hardening measure found). Outermost first: every request gets an id (or keeps the caller's if it is short and
/// printable), its log lines carry it, and so does the answer; then the request limits; then the routes.
pub fn router(state: AppState, config: &Config) -> Router {
    let hardening = state.hardening;
    let router = Router::new()
        .route("/", get(graphiql::page))
        .route("/graphiql/{name}", get(graphiql::asset))
        .route("/graphql", get(graphql).post(graphql))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    let proxies = Extension(TrustedProxies(config.trusted_proxies.iter().copied().collect()));
    let trace = TraceLayer::new_for_http().make_span_with(request_span as fn(&axum::extract::Request) -> _);
    match hardening {
        Hardening::On => router.layer(
            ServiceBuilder::new()
                .map_request(drop_unusable_request_id::<axum::body::Body>)
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(trace)
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_secs(config.request_timeout_secs),
                ))
                // The limit's own answer to an announced length over it is bare text; clients get the coded one.
                .map_response(coded_payload_too_large)
                .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
                .layer(cors(&config.cors_allowed_origins))
                .layer(proxies),
        ),
        Hardening::Off => router.layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(trace)
                .layer(proxies),
        ),
    }
}

/// The span of one request's log lines.
fn request_span(request: &axum::extract::Request) -> tracing::Span {
    let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let path = cut(request.uri().path(), MAX_LOGGED_CHARS);
    tracing::info_span!("request", request_id = %cut(id, MAX_LOGGED_CHARS), method = %request.method(), path)
}

/// The Prometheus scrape endpoint, served on `METRICS_ADDR` only: it tells who uses the API how, which is for
/// operators, not for the API's callers.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// Removes a caller's request id that is too long or not printable ASCII, so that a fresh one replaces it: it is
/// echoed in the answer and written in every log line of the request.
fn drop_unusable_request_id<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let usable = |id: &HeaderValue| {
        let id = id.as_bytes();
        !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(u8::is_ascii_graphic)
    };
    if request.headers().get_all(REQUEST_ID).iter().any(|id| !usable(id)) {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// The first `max` characters of `text`.
fn cut(text: &str, max: usize) -> &str {
    text.char_indices().nth(max).map_or(text, |(end, _)| &text[..end])
}

/// `TRUSTED_PROXIES`, for [`client::client_address`].
#[derive(Clone)]
struct TrustedProxies(Arc<[ipnet::IpNet]>);

impl TrustedProxies {
    fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        client::client_address(peer.ip(), headers, &self.0)
    }
}

/// A GraphQL request over GET or POST. GET runs queries only: a mutation over GET could be triggered by a link
/// (CSRF) and would put its arguments, passwords included, into URLs and logs. A GET with `Upgrade: websocket`
/// opens a subscription socket instead (see [`ws`]).
async fn graphql(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(proxies): Extension<TrustedProxies>,
    request: axum::extract::Request,
) -> Response {
    let hardened = state.hardening == Hardening::On;
    let client = if hardened { proxies.client(peer, request.headers()) } else { peer.ip() };
    let method = request.method().clone();
    let upgrading =
        request.headers().get(header::UPGRADE).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if upgrading {
        return match WebSocketUpgrade::from_request(request, &state).await {
            Ok(upgrade) => ws::upgrade(state, client, upgrade),
            Err(rejection) => rejection.into_response(),
        };
    }
    let headers = request.headers().clone();
    // The body is read here rather than by the GraphQL extractor, which keeps only the text of a read's failure:
    // here a body over `BODY_LIMIT_BYTES` (sent without announcing its length) is told from a broken one.
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) if is_over_the_limit(&err) => return payload_too_large().into_response(),
        Err(_) => {
            return refused(StatusCode::BAD_REQUEST, Code::BadRequest, "the body could not be read").into_response();
        }
    };
    let document_id = if hardened { document_id(&parts.uri, &body) } else { None };
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(body));
    let request = match Request::from_request(request, &state).await {
        Ok(request) => request,
        Err(rejection) => return rejection.into_response(),
    };
    let mut request = request.into_inner();
    if hardened && let Err(refusal) = state.persisted.resolve(&mut request, document_id) {
        return respond(async_graphql::Response::from_errors(vec![refusal]), negotiate(&headers));
    }
    let operation = Operation::of(&mut request, &state.documents, state.hardening);
    if operation.mutation && method != Method::POST {
        let refusal =
            refused(StatusCode::METHOD_NOT_ALLOWED, Code::MethodNotAllowed, "mutations are accepted only over POST");
        return ([(header::ALLOW, "POST")], refusal).into_response();
    }
    execute(state, client, &headers, request, operation).await
}

/// The request's `documentId` (trusted documents name theirs so), from a GET's query string or a POST's JSON body.
fn document_id(uri: &axum::http::Uri, body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "documentId")]
        document_id: Option<String>,
    }
    if uri.query().is_some() {
        let named = axum::extract::Query::<Named>::try_from_uri(uri).ok();
        return named.and_then(|named| named.0.document_id);
    }
    // Most bodies name none; only those that mention it are read twice.
    if !body.windows(b"documentId".len()).any(|window| window == b"documentId") {
        return None;
    }
    serde_json::from_slice::<Named>(body).ok().and_then(|named| named.document_id)
}

/// The operation a request selects: its name (if any), whether it is a mutation, and what it asks of the server.
/// A document that does not parse selects nothing, and is answered with why.
struct Operation {
    name: Option<String>,
    mutation: bool,
    /// `None` when no operation is selected (execution says why, or `refused` does), or without hardening.
    demand: Option<Demand>,
    /// Why the request is answered without reaching the executor: the document is not GraphQL
    /// (`GRAPHQL_PARSE_FAILED`), or an argument carries a control character (`BAD_USER_INPUT`, see
    /// [`graphql::inputs`]). Checked here rather than by a schema extension, which would put every field of every
    /// request through the extension chain.
    refused: Option<ServerError>,
}

impl Operation {
    /// Parses the request's document, or finds it parsed already, and judges its demand; the parse is handed to the
    /// request for the executor to use.
    fn of(request: &mut async_graphql::Request, documents: &Documents, hardening: Hardening) -> Self {
        let requested = request.operation_name.clone();
        let prepared = match documents.parse(&request.query) {
            Ok(prepared) => prepared,
            Err(err) => {
                let mut error = ServerError::from(err);
                error.extensions.get_or_insert_with(Default::default).set("code", Code::GraphqlParseFailed.as_str());
                return Self { name: requested, mutation: false, demand: None, refused: Some(error) };
            }
        };
        let document = &prepared.document;
        let hardened = hardening == Hardening::On;
        let refused = if hardened { prepared.check_inputs(&request.variables).err() } else { None };
        let is_mutation = |op: &OperationDefinition| op.ty == OperationType::Mutation;
        let operation = match Self::selected(document, requested.as_deref()) {
            Some((name, op)) => Self {
                name: name.map(Name::to_string),
                mutation: is_mutation(op),
                demand: hardened.then(|| documents.demand(&prepared, name, op, &request.variables)),
                refused,
            },
            // No operation selected: execution will say so; over GET, refuse if any could mutate.
            None => Self {
                name: requested,
                mutation: document.operations.iter().any(|(_, op)| is_mutation(&op.node)),
                demand: None,
                refused,
            },
        };
        request.set_parsed_query(document.clone());
        operation
    }

    /// The operation `name` selects, and its name in the document.
    fn selected<'d>(
        document: &'d ExecutableDocument,
        name: Option<&str>,
    ) -> Option<(Option<&'d Name>, &'d OperationDefinition)> {
        // The parser keeps an anonymous operation as `Single`, named ones by name.
        match &document.operations {
            DocumentOperations::Single(op) => Some((None, &op.node)),
            DocumentOperations::Multiple(ops) => {
                let selected = match name {
                    Some(name) => ops.get_key_value(name),
                    None if ops.len() == 1 => ops.iter().next(),
                    None => None,
                };
                selected.map(|(name, op)| (Some(name), &op.node))
            }
        }
    }

    /// Why the operation is answered without running: [`Operation::refused`], else what it asks beyond
    /// `max_cost`. Empty when it may run.
    fn refusals(&mut self, max_cost: u64) -> Vec<ServerError> {
        match (self.refused.take(), self.demand) {
            (Some(refused), _) => vec![refused],
            (None, Some(demand)) => demand.refusals(max_cost).into_iter().map(Into::into).collect(),
            (None, None) => Vec::new(),
        }
    }

    fn kind(&self) -> &'static str {
        if self.mutation { "mutation" } else { "query" }
    }
}

/// Answers one operation: refused unexecuted when it asks too much, else run.
async fn execute(
    state: AppState,
    client: IpAddr,
    headers: &HeaderMap,
    request: async_graphql::Request,
    mut operation: Operation,
) -> Response {
    let started = Instant::now();
    let refusals = operation.refusals(state.max_query_cost);
    let mut response = if refusals.is_empty() {
        run(&state, client, headers, request, operation.mutation).await
    } else {
        async_graphql::Response::from_errors(refusals)
    };
    graphql::default_error_codes(&mut response);

    let elapsed = started.elapsed();
    let codes: Vec<&str> = response
        .errors
        .iter()
        .filter_map(|e| {
            e.extensions.as_ref()?.get("code").and_then(|c| match c {
                async_graphql::Value::String(code) => Some(code.as_str()),
                _ => None,
            })
        })
        .collect();
    for code in &codes {
        state.metrics.count_error(code);
    }
    state.metrics.observe_request(operation.name.as_deref(), operation.kind(), elapsed.as_secs_f64());
    tracing::info!(
        operation = cut(operation.name.as_deref().unwrap_or("anonymous"), MAX_LOGGED_CHARS),
        kind = operation.kind(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        errors = ?codes,
        "graphql request"
    );
    respond(response, negotiate(headers))
}

/// Executes one operation: a query inside one read snapshot (on a standby when one has what the caller must see),
/// a mutation on the primary's pool (its services open their own transactions).
async fn run(
    state: &AppState,
    client: IpAddr,
    headers: &HeaderMap,
    request: async_graphql::Request,
    mutation: bool,
) -> async_graphql::Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| Arc::from(token.trim()));
    // Whom the request acts for, as far as where it reads goes: the token's user, checked for its signature only
    // (a forged token reads nothing; the session is checked where a field needs the caller).
    let user = state
        .db
        .has_replicas()
        .then(|| token.as_deref().and_then(|token| service::auth::verify(&state.tokens, token).ok()))
        .flatten()
        .map(|token| token.username);
    if mutation {
        let signed_in = graphql::SignedIn::default();
        let request = request.data(signed_in.clone());
        let response = execute_on(state, client, token, request, Db::Pool(state.db.reads().clone())).await;
        if state.db.has_replicas()
            && let Some(user) = user.or_else(|| signed_in.user())
        {
            tell_position(state, &user).await;
        }
        return response;
    }
    let sees = match user.as_deref() {
        // What the caller wrote was announced before it was answered, so once this process has heard everything
        // announced before now, it knows what the caller must see.
        Some(user) if state.feed.fence().await => state.db.must_see(Some(user)),
        Some(_) => service::replicas::Sees::Everything,
        None => state.db.must_see(None),
    };
    let db = snapshot(state, sees).await;
    let Some(standby) = db.standby() else {
        return execute_on(state, client, token, request, db).await;
    };
    // A query only reads, so one that a standby failed (it went down, or cancelled the query to replay) runs again
    // on the primary: a standby's trouble costs the caller nothing but time.
    let again = copy(&request);
    let response = execute_on(state, client, token.clone(), request, db).await;
    let failure = response.errors.iter().find_map(|error| {
        let code = error.extensions.as_ref()?.get("code")?;
        let unavailable = [Code::ServiceUnavailable, Code::InternalServerError]
            .iter()
            .any(|failed| *code == async_graphql::Value::String(failed.as_str().to_owned()));
        unavailable.then(|| error.message.clone())
    });
    let Some(failure) = failure else { return response };
    state.db.standby_failed(standby, &failure);
    let db = snapshot(state, service::replicas::Sees::Everything).await;
    execute_on(state, client, token, again, db).await
}

/// A snapshot where a query that `sees` may read; without one, the fields still answer, each with its own error if
/// the database is away.
async fn snapshot(state: &AppState, sees: service::replicas::Sees) -> Db {
    state.db.snapshot(sees).await.unwrap_or_else(|err| {
        tracing::warn!(%err, "cannot open a read snapshot");
        Db::Pool(state.db.reads().clone())
    })
}

async fn execute_on(
    state: &AppState,
    client: IpAddr,
    token: Option<Arc<str>>,
    request: async_graphql::Request,
    db: Db,
) -> async_graphql::Response {
    let request = request.data(RequestAuth::new(token, client, state.hardening));
    // The snapshot ends in the background when `db` is dropped on return: it only read.
    graphql::execute(&state.schema, request, &db).await
}

/// The request as it came, to run once more.
fn copy(request: &async_graphql::Request) -> async_graphql::Request {
    let mut copy = async_graphql::Request::new(request.query.clone()).variables(request.variables.clone());
    copy.operation_name.clone_from(&request.operation_name);
    copy.extensions.clone_from(&request.extensions);
    copy.introspection_mode = request.introspection_mode;
    copy
}

/// After a mutation acting for `user`, before it is answered: every process learns the primary's position, which
/// the user's queries must see.
async fn tell_position(state: &AppState, user: &str) {
    if let Err(err) = state.feed.announce_position(state.db.reads(), user).await {
        // The write stands; the user's next queries may miss it only if a standby lags and serves them.
        tracing::warn!(%err, "cannot announce a write's position");
    }
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
    let (status, body) = if media == MediaType::GraphqlResponse && request_error {
        // The spec's type has no `data` at all for a request that could not run.
        (StatusCode::BAD_REQUEST, serde_json::to_vec(&serde_json::json!({ "errors": response.errors })))
    } else {
        (StatusCode::OK, serde_json::to_vec(&response))
    };
    match body {
        Ok(body) => (status, [(header::CONTENT_TYPE, media.content_type())], body).into_response(),
        Err(err) => {
            tracing::error!(%err, "serialising a response");
            refused(StatusCode::INTERNAL_SERVER_ERROR, Code::InternalServerError, "internal server error")
                .into_response()
        }
    }
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

/// The Prometheus scrape endpoint.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&state.db))
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Ready: the database answers too.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.db.reads().ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(err) => {
            tracing::warn!(%err, "not ready: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}
