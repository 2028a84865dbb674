//! Inputs at the edge of what text can be: control characters in any string argument, and email addresses that
//! look alike. Every string argument of every query and mutation is found in the served schema, so one added later is
//! checked too.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use tests::{Backend, PASSWORD, TestApp, on_both_backends, spawn_app};

const TYPE_REF: &str = "kind name ofType { kind name ofType { kind name ofType { kind name } } }";

/// The schema's root fields with their arguments, and its input and enum types.
struct Inputs {
    roots: Vec<(&'static str, String, Vec<Value>)>,
    types: BTreeMap<String, Value>,
}

impl Inputs {
    async fn of(app: &TestApp) -> Self {
        let query = format!(
            "{{ __schema {{ queryType {{ name }} mutationType {{ name }} types {{ name kind \
             fields {{ name args {{ name type {{ {TYPE_REF} }} }} type {{ {TYPE_REF} }} }} \
             inputFields {{ name type {{ {TYPE_REF} }} }} enumValues {{ name }} }} }} }}"
        );
        let response = app.graphql(&query, json!({}), None).await;
        response.assert_ok();
        let schema = response.data("__schema");
        let types: BTreeMap<String, Value> = schema["types"]
            .as_array()
            .expect("types")
            .iter()
            .map(|ty| (ty["name"].as_str().expect("a name").to_owned(), ty.clone()))
            .collect();
        let mut roots = Vec::new();
        for (kind, root) in [("query", "queryType"), ("mutation", "mutationType")] {
            let name = schema[root]["name"].as_str().expect("a root");
            for field in types[name]["fields"].as_array().expect("fields") {
                let args = field["args"].as_array().expect("args").clone();
                roots.push((kind, field["name"].as_str().expect("a name").to_owned(), args));
            }
        }
        Self { roots, types }
    }

    /// A value of the type that parses (its content may still be refused later).
    fn filler(&self, ty: &Value) -> Value {
        match ty["kind"].as_str() {
            Some("NON_NULL") => self.filler(&ty["ofType"]),
            Some("LIST") => json!([self.filler(&ty["ofType"])]),
            _ => {
                let name = ty["name"].as_str().expect("a named type");
                let named = &self.types[name];
                match named["kind"].as_str() {
                    Some("ENUM") => named["enumValues"][0]["name"].clone(),
                    Some("INPUT_OBJECT") => Value::Object(
                        named["inputFields"]
                            .as_array()
                            .expect("input fields")
                            .iter()
                            .map(|f| (f["name"].as_str().expect("a name").to_owned(), self.filler(&f["type"])))
                            .collect(),
                    ),
                    _ => match name {
                        "Int" => json!(1),
                        "Float" => json!(1.0),
                        "Boolean" => json!(true),
                        "DateTime" => json!("2024-01-01T00:00:00Z"),
                        _ => json!("1"),
                    },
                }
            }
        }
    }

    /// Every string input inside a value of `ty`: its input field name and the path of keys to it.
    fn string_inputs(&self, ty: &Value, field: &str, at: Vec<String>, found: &mut Vec<(String, Vec<String>)>) {
        match ty["kind"].as_str() {
            Some("NON_NULL" | "LIST") => self.string_inputs(&ty["ofType"], field, at, found),
            _ => {
                let name = ty["name"].as_str().expect("a named type");
                if name == "String" || name == "ID" {
                    found.push((field.to_owned(), at));
                } else if self.types[name]["kind"] == "INPUT_OBJECT" {
                    for input in self.types[name]["inputFields"].as_array().expect("input fields") {
                        let input_name = input["name"].as_str().expect("a name");
                        let mut at = at.clone();
                        at.push(input_name.to_owned());
                        self.string_inputs(&input["type"], input_name, at, found);
                    }
                }
            }
        }
    }

    fn selection(&self, root_kind: &str, field: &str) -> &'static str {
        let root = if root_kind == "query" { "Query" } else { "Mutation" };
        let ty = self.types[root]["fields"]
            .as_array()
            .and_then(|fields| fields.iter().find(|f| f["name"] == field))
            .map(|f| &f["type"])
            .expect("the field");
        let mut ty = ty;
        while ty["kind"] == "NON_NULL" || ty["kind"] == "LIST" {
            ty = &ty["ofType"];
        }
        if ty["kind"] == "OBJECT" || ty["kind"] == "INTERFACE" { "{ __typename }" } else { "" }
    }
}

fn type_name(ty: &Value) -> String {
    match ty["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", type_name(&ty["ofType"])),
        Some("LIST") => format!("[{}]", type_name(&ty["ofType"])),
        _ => ty["name"].as_str().expect("a named type").to_owned(),
    }
}

fn set_at(value: &mut Value, at: &[String], text: &str) {
    match at.split_first() {
        None => *value = json!(text),
        Some((key, rest)) => set_at(
            value.as_object_mut().and_then(|o: &mut Map<String, Value>| o.get_mut(key)).expect("a key"),
            rest,
            text,
        ),
    }
}

/// Whether the app still answers a plain request: nothing got stuck on the way.
async fn assert_healthy(app: &TestApp, token: &str) {
    assert!(app.is_alive().await);
    app.graphql("{ me { username } }", json!({}), Some(token)).await.assert_ok();
}

async fn a_nul_in_any_string_argument_of_any_query_or_mutation_is_bad_user_input_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    let inputs = Inputs::of(&app).await;
    let mut checked = 0;
    for (kind, root, args) in &inputs.roots {
        let mut variables = Map::new();
        let mut declarations = Vec::new();
        let mut call_args = Vec::new();
        let mut targets = Vec::new();
        for arg in args {
            let name = arg["name"].as_str().expect("a name");
            variables.insert(name.to_owned(), inputs.filler(&arg["type"]));
            declarations.push(format!("${name}: {}", type_name(&arg["type"])));
            call_args.push(format!("{name}: ${name}"));
            let mut found = Vec::new();
            inputs.string_inputs(&arg["type"], name, vec![name.to_owned()], &mut found);
            targets.extend(found);
        }
        let declarations =
            if declarations.is_empty() { String::new() } else { format!("({})", declarations.join(", ")) };
        let call_args = if call_args.is_empty() { String::new() } else { format!("({})", call_args.join(", ")) };
        let operation = format!("{kind}{declarations} {{ {root}{call_args} {} }}", inputs.selection(kind, root));
        for (field, at) in targets {
            let mut variables = Value::Object(variables.clone());
            set_at(&mut variables, &at, "a\u{0}b");
            let response = app.graphql(&operation, variables.clone(), Some(&alice)).await;
            assert_eq!(response.error_code(), Some("BAD_USER_INPUT"), "{operation} {variables}: {:#}", response.0);
            assert_eq!(response.error_field(), Some(field.as_str()), "{operation} {variables}: {:#}", response.0);
            checked += 1;
        }
    }
    // login, refreshAccessToken, logout, user, users, account, transfer, the email mutations, deleteUser, createUser,
    // updateUser, deposit and createTransfer all take strings.
    assert!(checked >= 20, "only {checked} string inputs found");
    assert_healthy(&app, &alice).await;
}

async fn a_control_character_written_into_the_document_is_refused_the_same_way(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    for escape in ["\\u0000", "\\u0001", "\\u001b", "\\u007f", "\\u0085", "\\n", "\\t", "\\r"] {
        let cases = [
            (
                format!(
                    r#"mutation {{ login(input: {{username: "alice{escape}", password: "{PASSWORD}"}}) {{ accessToken }} }}"#
                ),
                "username",
            ),
            (
                format!(
                    r#"mutation {{ login(input: {{username: "alice", password: "{PASSWORD}{escape}"}}) {{ accessToken }} }}"#
                ),
                "password",
            ),
            (
                format!(r#"mutation {{ refreshAccessToken(refreshToken: "a.b{escape}") {{ accessToken }} }}"#),
                "refreshToken",
            ),
            (format!(r#"mutation {{ addEmail(email: "alice{escape}@example.com") {{ username }} }}"#), "email"),
            (format!(r#"{{ user(username: "alice{escape}") {{ username }} }}"#), "username"),
            (format!(r#"{{ account(id: "1{escape}") {{ id }} }}"#), "id"),
            (
                format!(
                    r#"mutation {{ createTransfer(input: {{fromAccountId: "1", toAccountId: "2", amount: 1, currency: USD, idempotencyKey: "k{escape}"}}) {{ transfer {{ id }} }} }}"#
                ),
                "idempotencyKey",
            ),
        ];
        for (operation, field) in cases {
            let response = app.graphql(&operation, json!({}), Some(&alice)).await;
            assert_eq!(response.error_code(), Some("BAD_USER_INPUT"), "{operation}: {:#}", response.0);
            assert_eq!(response.error_field(), Some(field), "{operation}: {:#}", response.0);
        }
    }
    assert_healthy(&app, &alice).await;
}

async fn create_user(app: &TestApp, username: &str, email: &str) -> tests::Response {
    app.graphql(
        "mutation($input: CreateUserInput!) { createUser(input: $input) { username email emails } }",
        json!({ "input": { "username": username, "password": PASSWORD, "fullName": "Some One", "email": email } }),
        None,
    )
    .await
}

async fn an_address_whose_domain_differs_only_by_fullwidth_letters_or_case_is_taken(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_up("alice").await;
    let fullwidth = create_user(&app, "mallory", "alice@\u{ff45}xample.com").await;
    let shouting = create_user(&app, "mallory", "ALICE@\u{ff25}XAMPLE.COM").await;
    let mallory = app.user("mallory").await;
    let added = app
        .graphql(
            "mutation($e: String!) { addEmail(email: $e) { username } }",
            json!({ "e": "alice@example\u{3002}com" }),
            Some(&mallory),
        )
        .await;

    assert_eq!(fullwidth.error_code(), Some("EMAIL_TAKEN"), "{:#}", fullwidth.0);
    assert_eq!(shouting.error_code(), Some("EMAIL_TAKEN"), "{:#}", shouting.0);
    assert_eq!(added.error_code(), Some("EMAIL_TAKEN"), "{:#}", added.0);
}

async fn addresses_with_invisible_characters_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.user("alice").await;
    // Zero-width space, non-joiner and joiner, soft hyphen, byte-order mark, bidi override and isolate, word joiner.
    for invisible in ['\u{200b}', '\u{200c}', '\u{200d}', '\u{ad}', '\u{feff}', '\u{202e}', '\u{2066}', '\u{2060}'] {
        for address in [format!("bob{invisible}@example.com"), format!("bob@exam{invisible}ple.com")] {
            let created = create_user(&app, "bob", &address).await;
            assert_eq!(created.error_code(), Some("BAD_USER_INPUT"), "{address:?}: {:#}", created.0);
            assert_eq!(created.error_field(), Some("email"));
            let added = app
                .graphql(
                    "mutation($e: String!) { addEmail(email: $e) { username } }",
                    json!({ "e": address }),
                    Some(&alice),
                )
                .await;
            assert_eq!(added.error_code(), Some("BAD_USER_INPUT"), "{address:?}: {:#}", added.0);
            assert_eq!(added.error_field(), Some("email"));
        }
    }
}

async fn an_address_is_stored_and_shown_in_its_canonical_form(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = create_user(&app, "zoe", " Zoe\u{308}@\u{ff22}\u{dc}CHER.de ").await;
    created.assert_ok();
    assert_eq!(created.str("createUser/email"), "zo\u{eb}@xn--bcher-kva.de");
    assert_eq!(created.data("createUser/emails"), &json!(["zo\u{eb}@xn--bcher-kva.de"]));
    // The same mailbox spelled as DNS spells it is the same address.
    let again = create_user(&app, "zoe_two", "zo\u{eb}@xn--bcher-kva.de").await;
    assert_eq!(again.error_code(), Some("EMAIL_TAKEN"), "{:#}", again.0);
}

on_both_backends!(
    a_nul_in_any_string_argument_of_any_query_or_mutation_is_bad_user_input_naming_the_field,
    a_control_character_written_into_the_document_is_refused_the_same_way,
    an_address_whose_domain_differs_only_by_fullwidth_letters_or_case_is_taken,
    addresses_with_invisible_characters_are_refused,
    an_address_is_stored_and_shown_in_its_canonical_form,
);
