//! Parsed GraphQL documents, kept by their text.
//!
//! Clients send the same few documents over and over, and parsing one is about a tenth of a small request's CPU
//! time; a kept parse costs a copy instead. The cache is bounded in entries and in document size, and starts over
//! when full, so clients sending endless new documents cost parsing, not memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::parser::types::ExecutableDocument;

/// How many documents are kept.
const CAPACITY: usize = 256;
/// Larger documents are parsed every time.
const MAX_KEPT_LEN: usize = 8 * 1024;

#[derive(Default)]
pub struct Documents(Mutex<HashMap<String, ExecutableDocument>>);

impl Documents {
    /// The parsed document, or `None` when it does not parse (the executor parses it again to report why).
    pub fn parse(&self, query: &str) -> Option<ExecutableDocument> {
        if let Some(document) = self.lock().get(query) {
            return Some(document.clone());
        }
        let document = async_graphql::parser::parse_query(query).ok()?;
        if query.len() <= MAX_KEPT_LEN {
            let mut kept = self.lock();
            if kept.len() >= CAPACITY {
                kept.clear();
            }
            kept.insert(query.to_owned(), document.clone());
        }
        Some(document)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecutableDocument>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_parses_the_same_whether_kept_or_not() {
        let documents = Documents::default();
        let query = "query Q($id: ID!) { account(id: $id) { balance } }";
        let first = documents.parse(query).expect("parses");
        let kept = documents.parse(query).expect("parses");
        assert_eq!(format!("{first:?}"), format!("{kept:?}"));
        assert!(documents.parse("{ unclosed").is_none());
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let documents = Documents::default();
        for i in 0..CAPACITY * 3 {
            documents.parse(&format!("{{ f{i} }}"));
        }
        assert!(documents.lock().len() <= CAPACITY);
    }
}
