//! Of a user other than themself, a depositor reads the `id` and `username` only; bankers read everything; everyone
//! reads all of themself. Checked on every path from `Query` and `Mutation` to `User`, found in the served schema
//! (through an interface, into each of its types: `node { ... on Account { owner } }`), so a path added later is
//! checked without touching this file, and a root field this file cannot call fails the test.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};
use tests::{AliceAndBob, Backend, PASSWORD, TestApp, on_both_backends, spawn_app, transfer_input};

/// The longest path a client can take: the server's default `MAX_QUERY_DEPTH` (16) refuses deeper operations before
/// anything runs, and a path's operation nests two levels below its last field (`accounts { __typename }`).
const LONGEST_PATH: usize = 13;
/// The longest path this test sends. Longer ones only combine steps that shorter ones take (the test checks that
/// they do), and there are more of them with every field: statements alone took their number from 450 to 1,000.
const LONGEST_CHECKED_PATH: usize = 10;

/// Paths that no data can reach, with why; every other path must reach a user.
const UNREACHABLE: &[(&str, &str)] = &[
    ("createUser.accounts", "someone who has just signed up has no accounts"),
    ("createAccount.entries", "a new account has no entries"),
    ("createAccount.transfers", "a new account has no transfers"),
    ("createAccount.statement", "a new account has no entries"),
    ("deposit.transfer", "a deposit is not half of a transfer"),
    ("withdraw.transfer", "a withdrawal is not half of a transfer"),
];

/// Page size for every list on a path: enough to hold a transfer each way.
const PAGE: u32 = 3;

const INTROSPECTION: &str = "{ __schema { queryType { name } mutationType { name } types { name possibleTypes { name } \
    fields { name args { name type { kind } } type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

/// The fields a depositor reads of any user.
const PUBLIC: [&str; 2] = ["id", "username"];

/// A field of an object or interface type: the object or interface type it leads to (if any) and its arguments
/// (name, required). An interface also has a step `... on T` into each of its types `T`, an inline fragment.
struct FieldInfo {
    name: String,
    object: Option<String>,
    args: Vec<(String, bool)>,
}

struct Schema {
    roots: Vec<(String, bool)>,
    types: BTreeMap<String, Vec<FieldInfo>>,
}

impl Schema {
    async fn of(app: &TestApp) -> Self {
        let response = app.graphql(INTROSPECTION, json!({}), None).await;
        response.assert_ok();
        let schema = response.data("__schema");
        let mut types = BTreeMap::new();
        for ty in schema["types"].as_array().expect("types") {
            let (Some(name), Some(fields)) = (ty["name"].as_str(), ty["fields"].as_array()) else { continue };
            let fields = fields
                .iter()
                .map(|field| {
                    let mut ty = &field["type"];
                    while ty["kind"] == "NON_NULL" || ty["kind"] == "LIST" {
                        ty = &ty["ofType"];
                    }
                    FieldInfo {
                        name: field["name"].as_str().expect("a name").to_owned(),
                        object: (ty["kind"] == "OBJECT" || ty["kind"] == "INTERFACE")
                            .then(|| ty["name"].as_str().expect("a name").to_owned()),
                        args: field["args"]
                            .as_array()
                            .expect("args")
                            .iter()
                            .map(|arg| {
                                (arg["name"].as_str().expect("a name").to_owned(), arg["type"]["kind"] == "NON_NULL")
                            })
                            .collect(),
                    }
                })
                .collect::<Vec<_>>();
            let fragments = ty["possibleTypes"].as_array().into_iter().flatten().map(|possible| {
                let possible = possible["name"].as_str().expect("a name");
                FieldInfo { name: format!("... on {possible}"), object: Some(possible.to_owned()), args: Vec::new() }
            });
            types.insert(name.to_owned(), fields.into_iter().chain(fragments).collect());
        }
        let root = |kind: &str| schema[kind]["name"].as_str().expect("a root type").to_owned();
        Self { roots: vec![(root("queryType"), false), (root("mutationType"), true)], types }
    }

    fn field(&self, ty: &str, name: &str) -> &FieldInfo {
        self.types[ty].iter().find(|f| f.name == name).expect("a field of the type")
    }

    /// Every path from a root field to a field of type `User` of at most `longest` fields: no field twice, ending
    /// at the first user below the root (beyond a user, paths go on only through its own, guarded, fields).
    fn paths_to_user(&self, longest: usize) -> Vec<(Vec<String>, bool)> {
        let mut paths = Vec::new();
        for (root, mutation) in &self.roots {
            for field in self.types[root].iter() {
                let Some(ty) = &field.object else { continue };
                let mut found = Vec::new();
                let mut path = vec![field.name.clone()];
                if ty == "User" {
                    found.push(path.clone());
                }
                let mut used = HashSet::from([(root.clone(), field.name.clone())]);
                self.walk(ty, longest, &mut path, &mut used, &mut found);
                paths.extend(found.into_iter().map(|path| (path, *mutation)));
            }
        }
        paths
    }

    /// The (type, field) steps `path` takes from its root.
    fn steps(&self, path: &[String], mutation: bool) -> Vec<(String, String)> {
        let mut ty = self.roots[usize::from(mutation)].0.clone();
        let mut steps = Vec::new();
        for name in path {
            steps.push((ty.clone(), name.clone()));
            ty = self.field(&ty, name).object.clone().unwrap_or_default();
        }
        steps
    }

    fn walk(
        &self,
        ty: &str,
        longest: usize,
        path: &mut Vec<String>,
        used: &mut HashSet<(String, String)>,
        found: &mut Vec<Vec<String>>,
    ) {
        if path.len() >= longest {
            return;
        }
        for field in &self.types[ty] {
            let Some(next) = &field.object else { continue };
            let edge = (ty.to_owned(), field.name.clone());
            if used.contains(&edge) {
                continue;
            }
            path.push(field.name.clone());
            if next == "User" {
                found.push(path.clone());
            } else {
                used.insert(edge.clone());
                self.walk(next, longest, path, used, found);
                used.remove(&edge);
            }
            path.pop();
        }
    }

    /// The operation that follows `path` from the root field `call` and selects every field of the users at its end.
    fn operation(&self, path: &[String], call: &str, mutation: bool) -> String {
        let root = &self.roots[usize::from(mutation)].0;
        let mut ty = self.field(root, &path[0]).object.clone().expect("an object");
        let mut opening = format!("{} {{ {call}", if mutation { "mutation" } else { "query" });
        let mut depth = 0;
        for name in &path[1..] {
            let field = self.field(&ty, name);
            let mut args = Vec::new();
            for (arg, required) in &field.args {
                match arg.as_str() {
                    "first" => args.push(format!("first: {PAGE}")),
                    "after" => {}
                    // A statement over all time, so that it has entries to walk to.
                    "since" => args.push("since: \"2000-01-01T00:00:00Z\"".to_owned()),
                    "until" => args.push("until: \"2100-01-01T00:00:00Z\"".to_owned()),
                    _ => assert!(!required, "{ty}.{name} needs `{arg}`: teach this test what to pass"),
                }
            }
            let args = if args.is_empty() { String::new() } else { format!("({})", args.join(", ")) };
            opening.push_str(&format!(" {{ {name}{args}"));
            ty = field.object.clone().expect("an object");
            depth += 1;
        }
        let selection: Vec<String> = self.types["User"]
            .iter()
            .map(|f| if f.object.is_some() { format!("{} {{ __typename }}", f.name) } else { f.name.clone() })
            .collect();
        format!("{opening} {{ {} }}{}", selection.join(" "), " }".repeat(depth + 1))
    }
}

/// The bank the paths run through: alice and bob are depositors who paid each other; the banker paid alice and
/// was paid by her, so every account's newest entries and transfers lead to another user.
struct Scene {
    app: TestApp,
    alice: String,
    banker: String,
    alice_usd: String,
    bob_usd: String,
    banker_usd: String,
    alice_to_bob: String,
    /// Alice's newest entry when the scene is set: her payment to the banker.
    alice_entry: String,
}

impl Scene {
    async fn new(backend: Backend) -> Self {
        let app = spawn_app(backend).await;
        let alice = app.user("alice").await;
        let bob = app.user("bob").await;
        let banker = app.banker("banker").await;
        let alice_usd = app.open_account(&alice, "USD").await;
        let bob_usd = app.open_account(&bob, "USD").await;
        let banker_usd = app.open_account(&banker, "USD").await;
        for account in [&alice_usd, &bob_usd, &banker_usd] {
            app.deposit(&banker, account, 1_000_000).await;
        }
        let scene = Self {
            app,
            alice,
            banker,
            alice_usd,
            bob_usd,
            banker_usd,
            alice_to_bob: String::new(),
            alice_entry: String::new(),
        };
        let alice_to_bob = scene.transfer(&scene.alice, &scene.alice_usd, &scene.bob_usd).await;
        scene.transfer(&bob, &scene.bob_usd, &scene.alice_usd).await;
        scene.transfer(&scene.banker, &scene.banker_usd, &scene.alice_usd).await;
        scene.transfer(&scene.alice, &scene.alice_usd, &scene.banker_usd).await;
        let newest = "query($id: ID!) { account(id: $id) { entries(first: 1) { nodes { id } } } }";
        let entries = scene.app.graphql(newest, json!({ "id": scene.alice_usd }), Some(&scene.alice)).await;
        let alice_entry = entries.assert_ok().str("account/entries/nodes/0/id");
        Self { alice_to_bob, alice_entry, ..scene }
    }

    /// Moves one cent: the transfer's id.
    async fn transfer(&self, token: &str, from: &str, to: &str) -> String {
        let response = self.app.graphql(tests::TRANSFER, tests::transfer_input(from, to, 1, "USD"), Some(token)).await;
        response.assert_ok();
        response.str("createTransfer/transfer/id")
    }

    /// The root field of `path` called as `banker` or as alice, the `n`th time: its call, the token to send, and
    /// who the caller is (a sign-up is its new user).
    async fn call(&self, path: &[String], banker: bool, n: usize) -> (String, Option<String>, String) {
        let (me, token, own_usd) =
            if banker { ("banker", &self.banker, &self.banker_usd) } else { ("alice", &self.alice, &self.alice_usd) };
        let token = Some(token.clone());
        // Whom `user` and `node` name: someone else, whom only a banker may read.
        let other = if banker { "alice" } else { "bob" };
        let id_of = |step: &str| match step {
            "... on User" => tests::global_id("User", other),
            "... on Account" => self.alice_usd.clone(),
            "... on Entry" => self.alice_entry.clone(),
            "... on Transfer" => self.alice_to_bob.clone(),
            step => panic!("`node` leads to User through `{step}`: teach Scene::call an id of that type"),
        };
        let call = match path[0].as_str() {
            "me" => "me".to_owned(),
            "user" => format!(r#"user(username: "{other}")"#),
            "node" => format!(r#"node(id: "{}")"#, id_of(&path[1])),
            "nodes" => {
                let ids = [tests::global_id("User", me), id_of("... on User"), id_of("... on Account")]
                    .into_iter()
                    .chain([id_of("... on Entry"), id_of("... on Transfer")]);
                format!("nodes(ids: [{}])", ids.map(|id| format!("\"{id}\"")).collect::<Vec<_>>().join(", "))
            }
            "users" => format!("users(first: {PAGE})"),
            "account" => format!(r#"account(id: "{}")"#, self.alice_usd),
            "transfer" => format!(r#"transfer(id: "{}")"#, self.alice_to_bob),
            "createUser" => {
                let name = format!("newcomer_{}_{n}", u8::from(banker));
                let call = format!(
                    r#"createUser(input: {{username: "{name}", password: "{PASSWORD}", fullName: "New Comer", email: "{name}@example.com"}})"#
                );
                return (call, None, name);
            }
            "login" => {
                return (format!(r#"login(input: {{username: "{me}", password: "{PASSWORD}"}})"#), None, me.to_owned());
            }
            "refreshAccessToken" => {
                let (_, refresh) = self.app.login(me).await;
                return (format!(r#"refreshAccessToken(refreshToken: "{refresh}")"#), None, me.to_owned());
            }
            "updateUser" if banker => r#"updateUser(input: {username: "alice", fullName: "Alice Liddell"})"#.to_owned(),
            "updateUser" => r#"updateUser(input: {fullName: "Alice Liddell"})"#.to_owned(),
            "addEmail" => format!(r#"addEmail(email: "{me}.{n}@example.com")"#),
            "removeEmail" => {
                let email = format!("{me}.gone{n}@example.com");
                let add = "mutation($e: String!) { addEmail(email: $e) { username } }";
                self.app.graphql(add, json!({ "e": email }), token.as_deref()).await.assert_ok();
                format!(r#"removeEmail(email: "{email}")"#)
            }
            "setPrimaryEmail" => format!(r#"setPrimaryEmail(email: "{me}@example.com")"#),
            "createAccount" => {
                let currency = ["EUR", "CAD"].get(n).expect("one account per currency: add a user to open more");
                format!("createAccount(currency: {currency})")
            }
            "deposit" => {
                // The account's newest entries keep a transfer among them.
                self.transfer(&self.alice, &self.alice_usd, &self.bob_usd).await;
                format!(r#"deposit(input: {{accountId: "{}", amount: 1}})"#, self.alice_usd)
            }
            "withdraw" => {
                // The account's newest entries keep a transfer among them.
                self.transfer(&self.alice, &self.alice_usd, &self.bob_usd).await;
                format!(r#"withdraw(input: {{accountId: "{}", amount: 1}})"#, self.alice_usd)
            }
            "createTransfer" => {
                let to = if banker { &self.alice_usd } else { &self.bob_usd };
                format!(
                    r#"createTransfer(input: {{fromAccountId: "{own_usd}", toAccountId: "{to}", amount: 1, currency: USD}})"#
                )
            }
            other => {
                panic!("`{other}` leads to User, but this test does not know how to call it: add it to Scene::call")
            }
        };
        (call, token, me.to_owned())
    }
}

/// The users a response holds at the end of `path`, each with its response path.
fn users_at<'a>(value: &'a Value, path: &[String], at: Vec<Value>, found: &mut Vec<(Vec<Value>, &'a Value)>) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let mut at = at.clone();
                at.push(json!(i));
                users_at(item, path, at, found);
            }
        }
        Value::Object(fields) => match path.split_first() {
            None => found.push((at, value)),
            // An inline fragment on another type than the object's selects nothing of it.
            Some((name, rest)) if name.starts_with("... on ") => {
                if !fields.is_empty() {
                    users_at(value, rest, at, found);
                }
            }
            Some((name, rest)) => {
                if let Some(next) = fields.get(name) {
                    let mut at = at.clone();
                    at.push(json!(name));
                    users_at(next, rest, at, found);
                }
            }
        },
        _ => {}
    }
}

/// What one run of one path showed.
#[derive(Default)]
struct Seen {
    others: usize,
    selves: usize,
    refused_before: bool,
}

/// Runs `path` and checks every user it reaches: all of them readable for a banker; for a depositor, all of
/// themself and only the username of anyone else, every other field `FORBIDDEN`.
async fn check_path(schema: &Schema, scene: &Scene, path: &[String], mutation: bool, banker: bool, n: usize) -> Seen {
    let (call, token, me) = scene.call(path, banker, n).await;
    let operation = schema.operation(path, &call, mutation);
    let response = scene.app.graphql(&operation, json!({}), token.as_deref()).await;
    let shown = format!("{}\n{operation}\n{:#}", path.join("."), response.0);
    let errors: Vec<(Vec<Value>, String)> = response.0["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let path = e["path"].as_array().cloned().unwrap_or_default();
                    (path, e["extensions"]["code"].as_str().unwrap_or_default().to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut users = Vec::new();
    users_at(&response.0["data"], path, Vec::new(), &mut users);
    let mut seen = Seen::default();
    if banker {
        assert!(errors.is_empty(), "a banker reads every field: {shown}");
    }
    for (at, user) in &users {
        let username = user["username"].as_str().unwrap_or_else(|| panic!("username is readable: {shown}"));
        assert!(user["id"].is_string(), "id is readable: {shown}");
        let fields = user.as_object().expect("an object");
        if banker || username == me {
            for (field, value) in fields {
                assert!(!value.is_null() || field == "email", "{field} of {username} is readable: {shown}");
            }
            seen.selves += usize::from(username == me);
            seen.others += usize::from(username != me);
        } else {
            for (field, value) in fields.iter().filter(|(field, _)| !PUBLIC.contains(&field.as_str())) {
                let mut field_at = at.clone();
                field_at.push(json!(field));
                assert!(value.is_null(), "{field} of another user is withheld: {shown}");
                assert!(
                    errors.iter().any(|(path, code)| *path == field_at && code == "FORBIDDEN"),
                    "{field} of another user answers FORBIDDEN: {shown}"
                );
            }
            seen.others += 1;
        }
    }
    for (error_at, code) in &errors {
        assert_eq!(code, "FORBIDDEN", "the only error is a refusal: {shown}");
        // A refusal above the users' fields: the path itself is closed to the caller.
        seen.refused_before |= !users.iter().any(|(at, _)| error_at.starts_with(at));
    }
    assert!(
        !users.is_empty() || seen.refused_before,
        "the path reaches no user and nothing refused it: give Scene::call data that reaches one: {shown}"
    );
    if banker {
        assert!(!users.is_empty(), "as a banker the path reaches a user: {shown}");
    }
    seen
}

async fn every_path_to_a_user_shows_a_depositor_only_the_username_of_others_and_a_banker_everything(backend: Backend) {
    let scene = Scene::new(backend).await;
    let schema = Schema::of(&scene.app).await;
    let paths = schema.paths_to_user(LONGEST_CHECKED_PATH);
    let checked: HashSet<_> = paths.iter().flat_map(|(path, mutation)| schema.steps(path, *mutation)).collect();
    for (path, mutation) in schema.paths_to_user(LONGEST_PATH) {
        let unchecked: Vec<_> = schema.steps(&path, mutation).into_iter().filter(|s| !checked.contains(s)).collect();
        assert!(unchecked.is_empty(), "{} takes steps no checked path takes: {unchecked:?}", path.join("."));
    }
    for (prefix, why) in UNREACHABLE {
        assert!(
            paths.iter().any(|(path, _)| path.join(".").starts_with(prefix)),
            "UNREACHABLE lists {prefix} ({why}), which is no longer a path: remove it"
        );
    }
    let reachable: Vec<_> = paths
        .iter()
        .filter(|(path, _)| {
            let path = path.join(".");
            !UNREACHABLE.iter().any(|(prefix, _)| path == *prefix || path.starts_with(&format!("{prefix}.")))
        })
        .collect();
    for root in
        ["me", "user", "node", "nodes", "account", "transfer", "createTransfer", "deposit", "login", "createUser"]
    {
        assert!(reachable.iter().any(|(path, _)| path[0] == root), "{root} leads to User");
    }
    assert!(reachable.iter().any(|(path, _)| path.join(".") == "createTransfer.toAccount.owner"));

    let mut calls: BTreeMap<(String, bool), usize> = BTreeMap::new();
    let mut others_by_root: BTreeMap<String, usize> = BTreeMap::new();
    let mut selves = 0;
    for (path, mutation) in &reachable {
        for banker in [false, true] {
            let n = calls.entry((path[0].clone(), banker)).or_default();
            let seen = check_path(&schema, &scene, path, *mutation, banker, *n).await;
            *n += 1;
            if !banker {
                *others_by_root.entry(path[0].clone()).or_default() += seen.others;
                selves += seen.selves;
            }
        }
    }
    assert!(selves > 0, "a depositor reached themself");
    // Each of these reaches another user for a depositor somewhere below it (a transfer's other side).
    for root in
        ["me", "node", "nodes", "account", "transfer", "createTransfer", "updateUser", "addEmail", "removeEmail"]
    {
        assert!(others_by_root.get(root).is_some_and(|&n| n > 0), "a depositor reached another user through {root}");
    }
}

/// Paying someone tells the payer nothing of the receiver's balance (their entry's `balanceAfter` is it) nor whether
/// the receiver was deleted (`closedAt`); the payer's own side answers in full.
async fn paying_someone_reveals_neither_their_balance_nor_whether_their_account_closed(backend: Backend) {
    let app = spawn_app(backend).await;
    let AliceAndBob { alice, bob, .. } = AliceAndBob::open(&app).await;
    let pay = "mutation($input: CreateTransferInput!) { createTransfer(input: $input) { \
               fromEntry { balanceAfter } toEntry { balanceAfter } toAccount { id closedAt } } }";

    let response = app.graphql(pay, transfer_input(&alice.account, &bob.account, 1, "USD"), Some(&alice.token)).await;

    assert_eq!(response.data("createTransfer/fromEntry/balanceAfter"), "9999", "the payer's own balance");
    let withheld = |path: &str| response.0.pointer(&format!("/data/{path}")).is_none_or(Value::is_null);
    assert!(withheld("createTransfer/toEntry"), "{:#}", response.0);
    assert!(withheld("createTransfer/toAccount/closedAt"), "{:#}", response.0);
    assert_eq!(response.data("createTransfer/toAccount/id"), &json!(bob.account));
    let mut refused: Vec<String> = response.0["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| {
            assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{error:#}");
            error["path"]
                .as_array()
                .expect("a path")
                .iter()
                .map(|p| p.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect();
    refused.sort();
    assert_eq!(refused, ["createTransfer.toAccount.closedAt", "createTransfer.toEntry"]);

    let theirs = "query($id: ID!) { account(id: $id) { closedAt entries(first: 1) { nodes { balanceAfter } } } }";
    let own = app.graphql(theirs, json!({ "id": bob.account }), Some(&bob.token)).await;
    assert_eq!(own.assert_ok().data("account/entries/nodes/0/balanceAfter"), "5001", "the receiver sees it all");
}

on_both_backends!(
    every_path_to_a_user_shows_a_depositor_only_the_username_of_others_and_a_banker_everything,
    paying_someone_reveals_neither_their_balance_nor_whether_their_account_closed,
);
