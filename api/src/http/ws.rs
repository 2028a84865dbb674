//! The subscription socket: `graphql-transport-ws` (the `graphql-ws` library's protocol) on `/graphql`.
//!
//! A thin layer around async-graphql's protocol engine, for what it leaves out: the access token travels in
//! `connection_init`'s payload (`{"authorization": "Bearer <accessToken>"}`, the key in any case) and a missing, bad, expired or
//! revoked one closes the socket with 4403 before anything runs; no `connection_init` within
//! `WS_INIT_TIMEOUT_SECS` closes with 4408; the server pings every `WS_PING_INTERVAL_SECS`; and the socket closes
//! with 4403 when its session ends (logout, password change, the user deleted: the change feed says so and the
//! session is re-checked) or its token expires. A user holds at most `MAX_SOCKETS_PER_USER` sockets (one more is
//! closed with 4429), each at most `MAX_SUBSCRIPTIONS_PER_SOCKET` subscriptions. Each operation's demand is judged
//! as over HTTP before it runs.

use std::collections::HashMap;
use std::future::{Future, ready};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_graphql::http::{ClientMessage, WebSocket as Engine, WebSocketProtocols as Protocols, WsMessage};
use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::stream::{self, BoxStream};
use futures::{SinkExt, StreamExt};
use service::auth::{Caller, VerifiedToken};
use service::db::Db;
use service::feed::SessionChange;
use tokio::sync::broadcast::error::RecvError;

use super::Operation;
use crate::AppState;
use crate::graphql::loaders::Loaders;
use crate::graphql::{self, RequestAuth, SubscriptionSlots};

/// The subprotocol spoken.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// Close codes (graphql-ws's own where it has one).
const UNAUTHORIZED: u16 = 4401;
const FORBIDDEN: u16 = 4403;
const INIT_TIMEOUT: u16 = 4408;
const TOO_MANY_SOCKETS: u16 = 4429;

/// How many sockets each user holds.
#[derive(Default)]
pub struct Sockets(Mutex<HashMap<String, usize>>);

/// One socket's place in [`Sockets`], given back when the socket ends.
struct SocketSlot {
    sockets: Arc<Sockets>,
    username: String,
}

impl Sockets {
    fn take(self: &Arc<Self>, username: &str, limit: usize) -> Option<SocketSlot> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(username.to_owned()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(SocketSlot { sockets: self.clone(), username: username.to_owned() })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut held = self.sockets.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.username) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.username);
            }
        }
    }
}

/// Each socket's read buffer and write buffer.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;

/// Upgrades a GET on `/graphql` to a subscription socket.
pub fn upgrade(state: AppState, client: IpAddr, upgrade: WebSocketUpgrade) -> Response {
    let limit = state.ws.max_message_bytes;
    // The socket's buffers default to 128 KiB each, most of an idle socket's memory; its messages are a few hundred
    // bytes (a bigger one only takes more reads), so 4 KiB each.
    let upgrade = upgrade
        .protocols([PROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES);
    if upgrade.selected_protocol().is_none() {
        return (StatusCode::BAD_REQUEST, format!("a GraphQL socket speaks the subprotocol {PROTOCOL}"))
            .into_response();
    }
    upgrade.on_upgrade(move |socket| serve(state, client, socket))
}

/// The schema, with each operation's demand judged first and every error given a code. Each operation carries the
/// socket's token and checks its session afresh when a field needs the caller, as an HTTP request does: a socket
/// does not keep acting with a role or session it had at `connection_init`.
#[derive(Clone)]
struct Judged {
    state: AppState,
    token: Arc<str>,
    client: IpAddr,
}

impl Executor for Judged {
    fn execute(&self, request: async_graphql::Request) -> impl Future<Output = async_graphql::Response> + Send {
        let mut responses = self.execute_stream(request, None);
        async move { responses.next().await.unwrap_or_else(|| async_graphql::Response::new(async_graphql::Value::Null)) }
    }

    fn execute_stream(
        &self,
        mut request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, async_graphql::Response> {
        // As over HTTP: with TRUSTED_DOCUMENTS only the manifest's documents run, here named by Apollo's hash.
        let refusals = match self.state.persisted.resolve(&mut request, None) {
            Ok(()) => Operation::of(&mut request, &self.state.documents, self.state.hardening)
                .refusals(self.state.max_query_cost),
            Err(refusal) => vec![refusal],
        };
        let responses = if refusals.is_empty() {
            let request = request.data(RequestAuth::new(Some(self.token.clone()), self.client, self.state.hardening));
            Executor::execute_stream(&self.state.schema, request, session_data)
        } else {
            let refused = async_graphql::Response::from_errors(refusals);
            stream::once(ready(refused)).boxed()
        };
        responses
            .map(|mut response| {
                graphql::default_error_codes(&mut response);
                response
            })
            .boxed()
    }
}

async fn serve(state: AppState, client: IpAddr, socket: WebSocket) {
    let (mut sink, mut incoming) = socket.split();
    let close = |code: u16, reason: &'static str| Message::Close(Some(CloseFrame { code, reason: reason.into() }));

    let init_timeout = Duration::from_secs(state.ws.init_timeout_secs);
    let first = match tokio::time::timeout(init_timeout, next_text(&mut incoming)).await {
        Err(_) => {
            let _ = sink.send(close(INIT_TIMEOUT, "Connection initialisation timeout")).await;
            return;
        }
        Ok(None) => return,
        Ok(Some(first)) => first,
    };
    let Ok(ClientMessage::ConnectionInit { payload }) = ClientMessage::from_bytes(first.as_bytes()) else {
        let _ = sink.send(close(UNAUTHORIZED, "Unauthorized: send connection_init first")).await;
        return;
    };
    // Listening before the session is checked, so that a session ending in between is still heard.
    let sessions = state.feed.sessions();
    let Some((token, verified, caller)) = authenticate(&state, payload.as_ref()).await else {
        let _ = sink.send(close(FORBIDDEN, "Forbidden: a valid access token is required")).await;
        return;
    };
    let Some(_slot) = state.ws.sockets.take(&caller.username, state.ws.max_sockets_per_user) else {
        let _ = sink.send(close(TOO_MANY_SOCKETS, "Too many sockets for this user")).await;
        return;
    };
    let (username, role) = (caller.username.clone(), caller.role);

    // One lasting receive, rather than a fresh `recv()` in every turn of the loop below: a pending `recv()` queues
    // itself on the channel, which all sockets share, under its lock, and dropping it takes the lock again; the loop
    // turns once for every message the socket sends.
    let sessions = stream::unfold(sessions, |mut sessions| async move { Some((sessions.recv().await, sessions)) });
    let mut sessions = std::pin::pin!(sessions);

    let db = Db::Pool(state.db.reads().clone());
    let loaders = Loaders::new(&db);
    let mut data = Data::default();
    data.insert(loaders.clone());
    data.insert(db);
    data.insert(SubscriptionSlots::new(state.ws.max_subscriptions_per_socket));
    // The engine sees `connection_init` again and acknowledges it; the credentials were checked above.
    let input = stream::once(ready(first)).chain(stream::unfold(incoming, |mut incoming| async move {
        next_text(&mut incoming).await.map(|text| (text, incoming))
    }));
    let ping_interval = Duration::from_secs(state.ws.ping_interval_secs.max(1));
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::channel(1);
    let judged = Judged { state: state.clone(), token: token.into(), client };
    let engine =
        Engine::new(judged, input, Protocols::GraphQLWS).connection_data(data).keepalive_timeout(ping_interval * 3);
    let mut engine = std::pin::pin!(loaders.drive_stream(engine));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    let expiry = tokio::time::sleep_until(until(verified.expires_at));
    let mut expiry = std::pin::pin!(expiry);

    loop {
        let outgoing = tokio::select! {
            message = engine.next() => match message {
                Some(WsMessage::Text(text)) => Message::Text(text.into()),
                Some(WsMessage::Close(code, reason)) => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    return;
                }
                None => return,
            },
            _ = ping.tick() => Message::Text(r#"{"type":"ping"}"#.into()),
            Some(change) = sessions.next() => {
                let concerned = match change {
                    Ok(SessionChange::Of(user)) => *user == *username,
                    Ok(SessionChange::Anyone) | Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                };
                if concerned {
                    // Checked beside the engine, not in this loop: the engine must go on being polled, or a
                    // subscription's read in flight keeps a connection the check may wait for (pools are small).
                    let (db, verified, ended) = (state.db.reads().clone(), verified.clone(), ended_tx.clone());
                    tokio::spawn(async move {
                        // Only a verdict ends the socket: a database that is briefly away (many sockets re-check
                        // at once after the listener reconnects) is no reason to drop valid users.
                        let over = match service::auth::check_session(&db, &verified).await {
                            Err(service::Error::Unauthenticated) => true,
                            Ok(now) => now.role != role,
                            Err(err) => {
                                tracing::warn!(%err, "re-checking a socket's session");
                                false
                            }
                        };
                        if over {
                            let _ = ended.send(()).await;
                        }
                    });
                }
                continue;
            }
            Some(()) = ended_rx.recv() => close(FORBIDDEN, "Forbidden: the session ended or changed"),
            () = &mut expiry => close(FORBIDDEN, "Forbidden: the access token expired"),
        };
        let closing = matches!(outgoing, Message::Close(_));
        if sink.send(outgoing).await.is_err() || closing {
            return;
        }
    }
}

/// The token in `connection_init`'s payload, checked: signature and claims, then the session in the database.
async fn authenticate(
    state: &AppState,
    payload: Option<&serde_json::Value>,
) -> Option<(String, VerifiedToken, Caller)> {
    // Any case, as an HTTP header name: GraphiQL's fetcher sends its Headers tab as the payload, `Authorization`.
    let header = payload?.as_object()?.iter().find(|(key, _)| key.eq_ignore_ascii_case("authorization"))?.1.as_str()?;
    let token = header.strip_prefix("Bearer ")?.trim().to_owned();
    let verified = service::auth::verify(&state.tokens, &token).ok()?;
    let caller = service::auth::check_session(state.db.reads(), &verified).await.ok()?;
    Some((token, verified, caller))
}

/// The next text (or binary) message from the client; `None` once it closed or failed.
async fn next_text(incoming: &mut futures::stream::SplitStream<WebSocket>) -> Option<String> {
    while let Some(message) = incoming.next().await {
        match message.ok()? {
            Message::Text(text) => return Some(text.to_string()),
            Message::Binary(bytes) => return Some(String::from_utf8_lossy(&bytes).into_owned()),
            Message::Close(_) => return None,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    None
}

/// The instant of a token's `exp` (seconds since the epoch).
fn until(expires_at: i64) -> tokio::time::Instant {
    let left = expires_at.saturating_sub(chrono::Utc::now().timestamp());
    tokio::time::Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0))
}
