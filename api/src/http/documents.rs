//! Parsed GraphQL documents, kept by their text with what the hardening judged of them.
//!
//! Clients send the same few documents over and over, and parsing one is about a tenth of a small request's CPU
//! time; a kept parse costs a copy instead. So does what the hardening works out from a document, kept with its
//! parse: an operation's cost and its password-hashing fields are worked out once per document, and again per
//! request only where a variable decides them (`first: $n`); the input rule's literal arguments are checked once,
//! leaving a request only the variables they use. The cache is bounded in entries and in document size, and starts
//! over when full, so clients sending endless new documents cost parsing, not memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{ExecutableDocument, OperationDefinition};
use async_graphql::{Name, Variables};

use crate::graphql::cost::{Demand, Model, Plan};
use crate::graphql::inputs::InputPlan;

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

/// A parsed document, with what demand control and the input rule could judge of it without its variables.
pub struct Prepared {
    pub document: ExecutableDocument,
    plans: HashMap<Option<Name>, Plan>,
    inputs: InputPlan,
}

impl Prepared {
    /// `BAD_USER_INPUT` if an argument, written into the document or sent as a variable it uses, carries a control
    /// character (see [`crate::graphql::inputs`]).
    pub fn check_inputs(&self, variables: &Variables) -> async_graphql::ServerResult<()> {
        self.inputs.check(variables)
    }
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
        let inputs = InputPlan::of(&document);
        let prepared = Arc::new(Prepared { document, plans, inputs });
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

    /// The benchmark's two loads (benches/README.md): nothing of their demand is left to work out per request.
    #[tokio::test]
    async fn the_transfer_and_the_users_page_are_judged_once_per_document() {
        let documents = documents().await;
        let transfer = "mutation($input: CreateTransferInput!) { createTransfer(input: $input) { transfer { id } } }";
        let page =
            "{ users(first: 20) { edges { node { username fullName email accounts { id balance currency } } } } }";
        for query in [transfer, page] {
            let prepared = documents.parse(query).expect("parses");
            let plan = prepared.plans.get(&None).expect("the anonymous operation's plan");
            assert!(plan.settled(), "{query}: {plan:?}");
        }
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
