//! The one rule every string input obeys, whatever its type: no control characters.
//!
//! Domain types (username, full name, email, password) refuse them when they parse; this guard covers every other
//! string argument (login credentials, refresh tokens, ids, cursors, idempotency keys, any added later) before the
//! operation is validated or run, so none reaches the database. PostgreSQL refuses a NUL in text, which would
//! otherwise surface as an internal error. It reads the literal arguments of the document once per parsed document
//! ([`InputPlan::of`], kept with the parse), and per request the values of the variables those arguments use
//! ([`InputPlan::check`]); it names the input field (the argument, or the key inside an input object) in
//! `extensions.field`.

use std::collections::HashMap;

use async_graphql::parser::types::{Directive, ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Name, Pos, Positioned, ServerError, ServerResult, Value, Variables};
/// A value as the document writes it: a variable, or a literal that may hold variables.
use async_graphql_value::Value as Written;

/// What the rule needs of one document, worked out once per parsed document (the HTTP layer keeps it with the
/// parse): its literal arguments are checked here, so a request checks only the values of the variables the
/// document uses where an argument takes them.
pub(crate) struct InputPlan {
    /// In document order, up to the first literal with a control character (after which nothing else is reached).
    checks: Vec<InputCheck>,
}

enum InputCheck {
    /// A variable reaches an argument: its value, else its default, is checked as the input field `field` (an
    /// object key inside the value names its own).
    Variable { name: Name, field: Name, default: Option<Value>, pos: Pos },
    /// A literal argument with a control character: the document's refusal, unless a variable before it refuses.
    Refused(ServerError),
}

impl InputPlan {
    /// Every argument in every operation and fragment of `document`.
    pub(crate) fn of(document: &ExecutableDocument) -> Self {
        let mut defaults = HashMap::new();
        for (_, operation) in document.operations.iter() {
            for definition in &operation.node.variable_definitions {
                if let Some(default) = &definition.node.default_value {
                    defaults.insert(definition.node.name.node.clone(), &default.node);
                }
            }
        }
        let mut plan = Plan { defaults, checks: Vec::new() };
        let walked = document
            .operations
            .iter()
            .map(|(_, operation)| (&operation.node.directives, &operation.node.selection_set.node))
            .chain(document.fragments.values().map(|f| (&f.node.directives, &f.node.selection_set.node)))
            .try_for_each(|(directives, selection_set)| {
                plan.directives(directives)?;
                plan.selection_set(selection_set)
            });
        if let Err(refused) = walked {
            plan.checks.push(InputCheck::Refused(refused));
        }
        Self { checks: plan.checks }
    }

    /// Refuses, with `BAD_USER_INPUT`, a request whose arguments carry a control character, written into the
    /// document or sent as the variables it uses.
    pub(crate) fn check(&self, variables: &Variables) -> ServerResult<()> {
        self.checks.iter().try_for_each(|check| match check {
            InputCheck::Variable { name, field, default, pos } => match variables.get(name).or(default.as_ref()) {
                Some(value) => check_value(field, value, *pos),
                None => Ok(()),
            },
            InputCheck::Refused(refused) => Err(refused.clone()),
        })
    }
}

/// The walk that makes an [`InputPlan`]; it stops at the first refused literal.
struct Plan<'a> {
    defaults: HashMap<Name, &'a Value>,
    checks: Vec<InputCheck>,
}

impl Plan<'_> {
    fn selection_set(&mut self, set: &SelectionSet) -> ServerResult<()> {
        for selection in &set.items {
            self.directives(selection.node.directives())?;
            match &selection.node {
                Selection::Field(field) => {
                    self.arguments(&field.node)?;
                    self.selection_set(&field.node.selection_set.node)?;
                }
                Selection::InlineFragment(fragment) => self.selection_set(&fragment.node.selection_set.node)?,
                Selection::FragmentSpread(_) => {}
            }
        }
        Ok(())
    }

    fn directives(&mut self, directives: &[Positioned<Directive>]) -> ServerResult<()> {
        directives.iter().try_for_each(|directive| {
            directive.node.arguments.iter().try_for_each(|(name, value)| self.value(&name.node, &value.node, value.pos))
        })
    }

    fn arguments(&mut self, field: &Field) -> ServerResult<()> {
        field.arguments.iter().try_for_each(|(name, value)| self.value(&name.node, &value.node, value.pos))
    }

    /// An argument's value as written: literals checked now, each variable planned for its request.
    fn value(&mut self, field: &Name, value: &Written, pos: Pos) -> ServerResult<()> {
        match value {
            Written::Variable(name) => {
                let default = self.defaults.get(name).map(|default| (*default).clone());
                self.checks.push(InputCheck::Variable { name: name.clone(), field: field.clone(), default, pos });
                Ok(())
            }
            Written::String(text) => check_text(field, text, pos),
            Written::List(items) => items.iter().try_for_each(|item| self.value(field, item, pos)),
            Written::Object(fields) => fields.iter().try_for_each(|(name, value)| self.value(name, value, pos)),
            _ => Ok(()),
        }
    }
}

/// An argument's value: the input field is the innermost object key, or else the argument.
fn check_value(field: &str, value: &Value, pos: Pos) -> ServerResult<()> {
    match value {
        Value::String(text) => check_text(field, text, pos),
        Value::List(items) => items.iter().try_for_each(|item| check_value(field, item, pos)),
        Value::Object(fields) => fields.iter().try_for_each(|(name, value)| check_value(name, value, pos)),
        _ => Ok(()),
    }
}

fn check_text(field: &str, text: &str, pos: Pos) -> ServerResult<()> {
    if !text.chars().any(char::is_control) {
        return Ok(());
    }
    let mut error = ServerError::new(format!("{field} must not contain control characters"), Some(pos));
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", service::Code::BadUserInput.as_str());
    extensions.set("field", field);
    error.extensions = Some(extensions);
    Err(error)
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use serde_json::json;

    use super::*;

    fn refused_field(query: &str, variables: serde_json::Value) -> Option<String> {
        let document = parse_query(query).expect("a document");
        let error = InputPlan::of(&document).check(&Variables::from_json(variables)).err()?;
        let field = error.extensions.as_ref().and_then(|e| e.get("field")).cloned();
        Some(field.map_or_else(String::new, |f| f.to_string().trim_matches('"').to_owned()))
    }

    #[test]
    fn names_the_argument_or_input_field_that_carries_the_character() {
        assert_eq!(
            refused_field("mutation { addEmail(email: \"a\\u0000@b.c\") { username } }", json!({})).as_deref(),
            Some("email")
        );
        assert_eq!(
            refused_field(
                "mutation { login(input: {username: \"al\\tice\", password: \"x\"}) { accessToken } }",
                json!({})
            )
            .as_deref(),
            Some("username")
        );
        assert_eq!(
            refused_field(
                "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
                json!({ "i": { "username": "alice", "password": "p\u{0}" } })
            )
            .as_deref(),
            Some("password")
        );
        assert_eq!(
            refused_field("query($id: ID!) { account(id: $id) { id } }", json!({ "id": "1\u{7f}" })).as_deref(),
            Some("id")
        );
        assert_eq!(
            refused_field(
                "query Q($id: ID = \"1\\u0000\") { ...F } fragment F on Query { account(id: $id) { id } }",
                json!({})
            )
            .as_deref(),
            Some("id")
        );
    }

    #[test]
    fn a_literal_is_judged_once_per_document_and_a_variable_before_it_still_refuses_first() {
        let query = "query($a: ID!) { account(id: $a) { id } transfer(id: \"t\\u0000\") { id } }";
        let plan = InputPlan::of(&parse_query(query).expect("a document"));
        assert_eq!(plan.checks.len(), 2, "the variable, then the refused literal; nothing after it");
        let field = |variables| {
            let error = plan.check(&Variables::from_json(variables)).expect_err("refused");
            error.extensions.and_then(|e| e.get("field").cloned()).map(|f| f.to_string())
        };
        assert_eq!(field(json!({ "a": "1" })).as_deref(), Some("\"id\""));
        assert_eq!(field(json!({ "a": "1\u{7}" })).as_deref(), Some("\"id\""));
        let plain = InputPlan::of(&parse_query("{ users(first: 20) { nodes { username } } }").expect("a document"));
        assert!(plain.checks.is_empty(), "nothing left for a request to check");
    }

    #[test]
    fn leaves_other_text_and_values_alone() {
        let query = "query($a: String) { users(first: 3, after: $a) { nodes { username } } }";
        assert_eq!(refused_field(query, json!({ "a": "Zoë Ångström 🐎 \u{200b}" })), None);
        assert_eq!(refused_field(query, json!({ "a": null, "unused": "\u{0}" })), None);
    }
}
