//! The one rule every string input obeys, whatever its type: no control characters.
//!
//! Domain types (username, full name, email, password) refuse them when they parse; this guard covers every other
//! string argument (login credentials, refresh tokens, ids, cursors, idempotency keys, any added later) before the
//! operation is validated or run (the HTTP and socket layers call it where they parse a request), so none reaches the database. PostgreSQL refuses a NUL in text, which would
//! otherwise surface as an internal error. It reads the literal arguments of the document and the variables they
//! use, and names the input field (the argument, or the key inside an input object) in `extensions.field`.

use std::collections::HashMap;
use std::convert::Infallible;

use async_graphql::parser::types::{Directive, ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Name, Pos, Positioned, ServerError, ServerResult, Value, Variables};

/// Refuses, with `BAD_USER_INPUT`, a document whose arguments carry a control character: every argument in every
/// operation and fragment of `document`, with the values of the variables it uses.
pub(crate) fn check_document(document: &ExecutableDocument, variables: &Variables) -> ServerResult<()> {
    let mut defaults = HashMap::new();
    for (_, operation) in document.operations.iter() {
        for definition in &operation.node.variable_definitions {
            if let Some(default) = &definition.node.default_value {
                defaults.insert(definition.node.name.node.clone(), &default.node);
            }
        }
    }
    let check = Check { variables, defaults };
    for (_, operation) in document.operations.iter() {
        check.directives(&operation.node.directives)?;
        check.selection_set(&operation.node.selection_set.node)?;
    }
    for fragment in document.fragments.values() {
        check.directives(&fragment.node.directives)?;
        check.selection_set(&fragment.node.selection_set.node)?;
    }
    Ok(())
}

struct Check<'a> {
    variables: &'a Variables,
    defaults: HashMap<Name, &'a Value>,
}

impl Check<'_> {
    fn selection_set(&self, set: &SelectionSet) -> ServerResult<()> {
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

    fn directives(&self, directives: &[Positioned<Directive>]) -> ServerResult<()> {
        directives.iter().try_for_each(|directive| {
            directive.node.arguments.iter().try_for_each(|(name, value)| {
                self.argument(&name.node, value.node.clone().into_const_with(|v| self.variable(v)), value.pos)
            })
        })
    }

    fn arguments(&self, field: &Field) -> ServerResult<()> {
        field.arguments.iter().try_for_each(|(name, value)| {
            self.argument(&name.node, value.node.clone().into_const_with(|v| self.variable(v)), value.pos)
        })
    }

    /// An argument as the resolver will see it, its variables replaced by their values.
    fn argument(&self, name: &str, value: Result<Value, Infallible>, pos: Pos) -> ServerResult<()> {
        let Ok(value) = value;
        check_value(name, &value, pos)
    }

    /// A variable's value, or its default; a missing one is null, which execution reports if the type needs it.
    fn variable(&self, name: Name) -> Result<Value, Infallible> {
        Ok(self.variables.get(&name).or_else(|| self.defaults.get(&name).copied()).cloned().unwrap_or(Value::Null))
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
        let error = check_document(&document, &Variables::from_json(variables)).err()?;
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
    fn leaves_other_text_and_values_alone() {
        let query = "query($a: String) { users(first: 3, after: $a) { nodes { username } } }";
        assert_eq!(refused_field(query, json!({ "a": "Zoë Ångström 🐎 \u{200b}" })), None);
        assert_eq!(refused_field(query, json!({ "a": null, "unused": "\u{0}" })), None);
    }
}
