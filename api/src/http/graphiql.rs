//! GraphiQL at `/`, working offline: its browser builds come from the npm registry by a build step
//! (`web/graphiql`: `npm ci && npm run build`) and are served by this server. Without them, the page falls back to
//! async-graphql's GraphiQL, which loads the same builds from a CDN.

use std::path::{Path, PathBuf};

use async_graphql::http::GraphiQLSource;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::AppState;

/// The files the page needs, with their content types: nothing else is served from the directory.
const ASSETS: [(&str, &str); 4] = [
    ("graphiql.min.js", "text/javascript; charset=utf-8"),
    ("graphiql.min.css", "text/css; charset=utf-8"),
    ("react.production.min.js", "text/javascript; charset=utf-8"),
    ("react-dom.production.min.js", "text/javascript; charset=utf-8"),
];

/// What GraphiQL opens with: how to get a token, and where to put it.
const DEFAULT_QUERY: &str = r#"# Welcome to simple-bank.
#
# 1. Run SignUp once, then Login (choose the operation with the run button).
# 2. Copy "accessToken" from the result, open the Headers tab below and set:
#      { "Authorization": "Bearer <accessToken>" }
# 3. Run Me.
# 4. Subscriptions (entryAdded) run over a socket on /graphql with the same header.
# 5. Anything with an id (an account of Me's, say) comes back by that id alone:
#      { node(id: "<id>") { __typename ... on Account { balance } } }

mutation SignUp {
  createUser(input: {username: "alice", password: "correct horse battery", fullName: "Alice Liddell", email: "alice@example.com"}) {
    username
  }
}

mutation Login {
  login(input: {username: "alice", password: "correct horse battery"}) {
    accessToken
    refreshToken
  }
}

query Me {
  me {
    username
    email
    accounts { id currency balance }
  }
}
"#;

pub fn assets_present(dir: &Path) -> bool {
    ASSETS.iter().all(|(name, _)| dir.join(name).is_file())
}

pub async fn page(State(state): State<AppState>) -> Html<String> {
    if state.graphiql_assets.is_some() {
        return Html(offline_page());
    }
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql").title("simple-bank").finish())
}

pub async fn asset(State(state): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    let (Some(dir), Some((_, content_type))) =
        (&state.graphiql_assets, ASSETS.iter().find(|(asset, _)| *asset == name))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match tokio::fs::read(PathBuf::from(dir.as_ref()).join(&name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "public, max-age=3600")], bytes)
            .into_response(),
        Err(err) => {
            tracing::warn!(%err, name, "a GraphiQL asset went missing");
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

fn offline_page() -> String {
    let default_query = serde_json::to_string(DEFAULT_QUERY).unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>simple-bank · GraphiQL</title>
  <link rel="stylesheet" href="/graphiql/graphiql.min.css">
  <style>body {{ margin: 0; height: 100vh; }} #graphiql {{ height: 100vh; }}</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="/graphiql/react.production.min.js"></script>
  <script src="/graphiql/react-dom.production.min.js"></script>
  <script src="/graphiql/graphiql.min.js"></script>
  <script>
    // `?query=…` opens with that document instead of the walk-through, for links and tests.
    const query = new URLSearchParams(location.search).get('query') ?? undefined;
    // The fetcher sends the headers set in the Headers tab (the Authorization header) with every request; for a
    // subscription it opens a graphql-transport-ws socket on the same path (graphql-ws is in GraphiQL's build) and
    // sends those headers as connection_init's payload, which is where the server looks for the token.
    const subscriptionUrl = `${{location.protocol === 'https:' ? 'wss' : 'ws'}}://${{location.host}}/graphql`;
    const fetcher = GraphiQL.createFetcher({{ url: '/graphql', subscriptionUrl }});
    ReactDOM.createRoot(document.getElementById('graphiql')).render(
      React.createElement(GraphiQL, {{
        fetcher,
        query,
        defaultQuery: {default_query},
        isHeadersEditorEnabled: true,
        shouldPersistHeaders: true,
        defaultEditorToolsVisibility: 'headers',
      }}),
    );
  </script>
</body>
</html>
"#
    )
}
