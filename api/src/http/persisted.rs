//! Persisted documents: a client sends a document's hash instead of its text.
//!
//! - Trusted documents (`TRUSTED_DOCUMENTS=<manifest.json>`, hash → document, as `@graphql-codegen/client-preset`'s
//!   persisted documents emit it): the server runs only the manifest's documents, named by `documentId` or by
//!   Apollo's `extensions.persistedQuery.sha256Hash`; any other request is refused before anything is parsed.
//! - Otherwise, automatic persisted queries (Apollo's protocol): a hash alone runs the document registered under it,
//!   or is answered `PersistedQueryNotFound` (`PERSISTED_QUERY_NOT_FOUND`), whereupon the client sends the hash with
//!   its document, which registers it. The register is bounded and starts over when full, like the parse cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use async_graphql::{Request, ServerError, Value};
use service::Code;
use sha2::{Digest, Sha256};

/// How many documents automatic persisted queries keep.
const CAPACITY: usize = 1024;

pub enum Persisted {
    Trusted(HashMap<String, String>),
    Automatic(Mutex<HashMap<String, String>>),
}

impl Persisted {
    /// Trusted documents from the manifest at `path`, or automatic persisted queries without one.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::Automatic(Mutex::default()));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|err| anyhow::anyhow!("TRUSTED_DOCUMENTS: cannot read {}: {err}", path.display()))?;
        let manifest: HashMap<String, String> = serde_json::from_str(&text).map_err(|err| {
            anyhow::anyhow!("TRUSTED_DOCUMENTS: {} is not a JSON object of hash → document: {err}", path.display())
        })?;
        Ok(Self::Trusted(manifest))
    }

    /// Puts the document a hash names into `request.query`, or registers the query under its hash; `document_id` is
    /// the request's `documentId`. The error is the request's answer.
    pub fn resolve(&self, request: &mut Request, document_id: Option<String>) -> Result<(), ServerError> {
        let hash = document_id.or_else(|| apollo_hash(request));
        match self {
            Self::Trusted(manifest) => {
                let document = hash.and_then(|hash| manifest.get(&hash)).ok_or_else(|| {
                    refusal(
                        "only trusted documents run here: send a documentId from the manifest",
                        Code::DocumentNotTrusted,
                    )
                })?;
                request.query = document.clone();
                Ok(())
            }
            Self::Automatic(kept) => {
                let Some(hash) = hash else { return Ok(()) };
                let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if request.query.is_empty() {
                    let document = kept.get(&hash).ok_or_else(|| {
                        // The message is what Apollo Client looks for before it sends the document.
                        refusal("PersistedQueryNotFound", Code::PersistedQueryNotFound)
                    })?;
                    request.query = document.clone();
                    return Ok(());
                }
                if hex(&Sha256::digest(request.query.as_bytes())) != hash.to_ascii_lowercase() {
                    return Err(refusal("provided sha256Hash does not match the query", Code::BadRequest));
                }
                if kept.len() >= CAPACITY {
                    kept.clear();
                }
                kept.insert(hash, request.query.clone());
                Ok(())
            }
        }
    }
}

/// `extensions.persistedQuery.sha256Hash`, if sent.
fn apollo_hash(request: &Request) -> Option<String> {
    let Some(Value::Object(persisted)) = request.extensions.get("persistedQuery") else {
        return None;
    };
    match persisted.get("sha256Hash") {
        Some(Value::String(hash)) => Some(hash.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn refusal(message: &str, code: Code) -> ServerError {
    let mut error = ServerError::new(message, None);
    error.extensions.get_or_insert_with(Default::default).set("code", code.as_str());
    error
}
