//! Parsed GraphQL documents, kept by their text with their demand-control plans.
//!
//! Clients send the same few documents over and over, and parsing one is about a tenth of a small request's CPU
//! time; a kept parse costs a copy instead. So does a kept plan: an operation's cost is worked out once per document,
//! and again per request only where a variable decides it (`first: $n`). The cache is bounded in entries and in document size, and starts over
//! when full, so clients sending endless new documents cost parsing, not memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{ExecutableDocument, OperationDefinition};
use async_graphql::{Name, Variables};

use crate::graphql::cost::{Demand, Model, Plan};

/// How many documents are kept.
const CAPACITY: usize = 256;
/// Larger documents are parsed every time.
const MAX_KEPT_LEN: usize = 8 * 1024;

pub struct Documents {
    model: Arc<Model>,
    /// `MAX_QUERY_COST`: counting stops past it.
    max_cost: u64,
    kept: Mutex<HashMap<String, Arc<Prepared>>>,
}

/// A parsed document, with what demand control could judge of each operation without its variables.
pub struct Prepared {
    pub document: ExecutableDocument,
    plans: HashMap<Option<Name>, Plan>,
}

impl Documents {
    pub fn new(model: Arc<Model>, max_cost: u64) -> Self {
        Self { model, max_cost, kept: Mutex::default() }
    }

    /// The prepared document, or why it does not parse.
    pub fn parse(&self, query: &str) -> Result<Arc<Prepared>, async_graphql::parser::Error> {
        if let Some(prepared) = self.lock().get(query) {
            return Ok(prepared.clone());
        }
        let document = async_graphql::parser::parse_query(query)?;
        let plans = document
            .operations
            .iter()
            .map(|(name, operation)| (name.cloned(), self.model.plan(&document, &operation.node, self.max_cost)))
            .collect();
        let prepared = Arc::new(Prepared { document, plans });
        if query.len() <= MAX_KEPT_LEN {
            let mut kept = self.lock();
            if kept.len() >= CAPACITY {
                kept.clear();
            }
            kept.insert(query.to_owned(), prepared.clone());
        }
        Ok(prepared)
    }

    /// What the operation called `name` (`None`: the anonymous one) asks of the server with these variables.
    pub fn demand(
        &self,
        prepared: &Prepared,
        name: Option<&Name>,
        operation: &OperationDefinition,
        variables: &Variables,
    ) -> Demand {
        let plan = prepared.plans.get(&name.cloned()).copied();
        let plan = plan.unwrap_or_else(|| self.model.plan(&prepared.document, operation, self.max_cost));
        self.model.demand(&plan, &prepared.document, operation, variables, self.max_cost)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Prepared>>> {
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn documents() -> Documents {
        Documents::new(Arc::new(crate::graphql::cost_model().await.expect("the schema's shapes")), 1000)
    }

    #[tokio::test]
    async fn a_document_parses_the_same_whether_kept_or_not() {
        let documents = documents().await;
        let query = "query Q($id: ID!) { account(id: $id) { balance } }";
        let first = documents.parse(query).expect("parses");
        let kept = documents.parse(query).expect("parses");
        assert_eq!(format!("{:?}", first.document), format!("{:?}", kept.document));
        assert!(documents.parse("{ unclosed").is_err());
    }

    #[tokio::test]
    async fn the_cache_never_holds_more_than_its_capacity() {
        let documents = documents().await;
        for i in 0..CAPACITY * 3 {
            documents.parse(&format!("{{ f{i} }}")).expect("parses");
        }
        assert!(documents.lock().len() <= CAPACITY);
    }
}
