//! Generative testing: thousands of operations written at random from the schema itself
//! ([`tests::generate`]), sent concurrently by a banker, depositors with funded accounts, spare users the run may
//! lose, and anonymous callers. Whatever they ask, the server must answer every one without an internal error or a
//! 5xx, stay healthy, and keep the ledger's total equal to what deposits brought in.
//!
//! The hand-written tests check what we thought of; this one finds what nobody did (a NUL byte in a username on
//! PostgreSQL, a deposit of 2^63−1). CI runs it with a fixed seed; `make fuzz SEED=… N=…` runs more, reading
//! `FUZZ_SEED`, `FUZZ_OPERATIONS` and `FUZZ_IN_FLIGHT`; `FUZZ_ONLY=i,j` replays single operations of a seed's
//! sequence and `FUZZ_VERBOSE=1` prints how often each error came back. A failure prints the seed and, for each class of failure,
//! the first operations that showed it, with their variables and the response, so they can be replayed.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tests::generate::{Actor, Generator, Mistake, Operation, Schema, World};
use tests::{Backend, TestApp, on_both_backends, spawn_app};

/// The seed and size CI runs with.
const DEFAULT_SEED: u64 = 14;
const DEFAULT_OPERATIONS: usize = 10_000;
/// Requests in flight at once.
const DEFAULT_IN_FLIGHT: usize = 12;
/// Examples printed per class of failure.
const EXAMPLES: usize = 3;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name}={text} is not a valid value")),
        Err(_) => default,
    }
}

/// The access tokens the actors send.
struct Callers {
    banker: String,
    depositors: Vec<(String, String)>,
    spares: Vec<String>,
}

impl Callers {
    fn token(&self, actor: Actor) -> Option<&str> {
        match actor {
            Actor::Banker => Some(&self.banker),
            Actor::Depositor(i) => self.depositors.get(i).map(|(_, token)| token.as_str()),
            Actor::Spare(i) => self.spares.get(i).map(String::as_str),
            Actor::Anonymous => None,
        }
    }
}

/// A banker, three funded depositors (one with a second currency), two spare users (a banker and a depositor) with
/// extra sessions whose refresh tokens the run may spend, two transfers, and real page cursors.
async fn open_bank(app: &TestApp) -> (World, Callers) {
    let mut world = World::default();
    let banker = app.banker("fuzz_banker").await;
    world.protected_usernames.push("fuzz_banker".to_owned());
    let mut depositors = Vec::new();
    for i in 0..3 {
        let name = format!("fuzz_depositor_{i}");
        let token = app.user(&name).await;
        let usd = app.open_account(&token, "USD").await;
        app.deposit(&banker, &usd, 1_000_000).await;
        let mut accounts = vec![usd];
        if i == 0 {
            let eur = app.open_account(&token, "EUR").await;
            app.deposit(&banker, &eur, 5_000).await;
            accounts.push(eur);
        }
        world.accounts.extend(accounts.iter().cloned());
        world.depositor_accounts.push(accounts);
        world.protected_usernames.push(name.clone());
        depositors.push((name, token));
    }
    let spare_banker = app.banker("spare_banker").await;
    let spare_depositor = app.user("spare_depositor").await;
    let spare_account = app.open_account(&spare_depositor, "USD").await;
    app.deposit(&banker, &spare_account, 10_000).await;
    world.accounts.push(spare_account);
    for name in ["spare_banker", "spare_depositor"] {
        world.spare_usernames.push(name.to_owned());
        world.refresh_tokens.push(app.login(name).await.1);
    }
    for name in world.protected_usernames.iter().chain(&world.spare_usernames) {
        world.emails.push(format!("{name}@example.com"));
    }
    world.depositors = depositors.len();
    world.spares = 2;

    for (from, to) in [(0, 1), (1, 2)] {
        let response = app
            .graphql(
                tests::TRANSFER,
                tests::transfer_input(
                    &world.depositor_accounts[from][0],
                    &world.depositor_accounts[to][0],
                    "100",
                    "USD",
                ),
                Some(&depositors[from].1),
            )
            .await;
        world.transfers.push(response.str("createTransfer/transfer/id"));
    }
    let response = app
        .graphql(
            "query($id: ID!) { users(first: 1) { pageInfo { endCursor } }
               account(id: $id) { entries(first: 1) { pageInfo { endCursor } } transfers(first: 1) { pageInfo { endCursor } } } }",
            json!({ "id": world.depositor_accounts[1][0] }),
            Some(&banker),
        )
        .await;
    for path in
        ["users/pageInfo/endCursor", "account/entries/pageInfo/endCursor", "account/transfers/pageInfo/endCursor"]
    {
        world.cursors.push(response.str(path));
    }
    (world, Callers { banker, depositors, spares: vec![spare_banker, spare_depositor] })
}

/// What one operation got back.
struct Outcome {
    index: usize,
    status: Option<u16>,
    body: String,
    elapsed: Duration,
}

async fn send(app: &TestApp, index: usize, op: &Operation, token: Option<&str>) -> Outcome {
    let started = Instant::now();
    let mut request = app
        .client
        .post(format!("{}/graphql", app.address))
        .json(&json!({ "query": op.query, "variables": op.variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let (status, body) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (Some(status), response.text().await.unwrap_or_else(|err| format!("<unreadable body: {err}>")))
        }
        Err(err) => (None, format!("<no answer: {err}>")),
    };
    Outcome { index, status, body, elapsed: started.elapsed() }
}

/// The classes of failure an answer shows: a 5xx or timeout, a body that is not a GraphQL response, an error
/// without a code, or an error the server did not expect (`INTERNAL_SERVER_ERROR`, `SERVICE_UNAVAILABLE`).
fn failures(op: &Operation, outcome: &Outcome) -> Vec<String> {
    let roots = op.root_fields().join("+");
    let Some(status) = outcome.status else { return vec![format!("no answer at all, in {roots}")] };
    let mut classes = Vec::new();
    if status >= 500 {
        classes.push(format!("HTTP {status}, in {roots}"));
    }
    if status == 408 {
        classes.push(format!("HTTP 408 (the request ran out of time), in {roots}"));
    }
    let Ok(body) = serde_json::from_str::<Value>(&outcome.body) else {
        classes.push(format!("a body that is not JSON (HTTP {status}), in {roots}"));
        return classes;
    };
    if body.get("data").is_none() && body.get("errors").is_none() {
        classes.push(format!("an answer with neither data nor errors (HTTP {status}), in {roots}"));
    }
    for error in body.get("errors").and_then(Value::as_array).into_iter().flatten() {
        let at = error
            .pointer("/path/0")
            .and_then(Value::as_str)
            .map(|key| op.root_field(key).unwrap_or(key).to_owned())
            .unwrap_or_else(|| roots.clone());
        let class = match error.pointer("/extensions/code").and_then(Value::as_str) {
            None => format!("an error without extensions.code, in {at}"),
            Some(code @ ("INTERNAL_SERVER_ERROR" | "SERVICE_UNAVAILABLE")) => format!("{code} from {at}"),
            Some(_) => continue,
        };
        if !classes.contains(&class) {
            classes.push(class);
        }
    }
    classes
}

/// Each error code seen, and how many operations moved money (a deposit or transfer that answered with data).
fn tally(op: &Operation, outcome: &Outcome, codes: &mut BTreeMap<String, usize>) -> usize {
    let Ok(body) = serde_json::from_str::<Value>(&outcome.body) else { return 0 };
    for error in body.get("errors").and_then(Value::as_array).into_iter().flatten() {
        let code = error.pointer("/extensions/code").and_then(Value::as_str).unwrap_or("(none)");
        *codes.entry(code.to_owned()).or_default() += 1;
    }
    op.roots
        .iter()
        .filter(|(key, field)| {
            (field == "deposit" || field == "createTransfer")
                && body.pointer(&format!("/data/{key}")).is_some_and(Value::is_object)
        })
        .count()
}

/// How often each (code, deliberate mistake, message) came back, most frequent first: for tuning the generator
/// (`FUZZ_VERBOSE=1`), since an error nobody meant says the generator wrote something it did not intend.
fn print_error_histogram(operations: &[Operation], outcomes: &[Outcome]) {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in outcomes {
        let Ok(body) = serde_json::from_str::<Value>(&outcome.body) else { continue };
        for error in body.get("errors").and_then(Value::as_array).into_iter().flatten() {
            let code = error.pointer("/extensions/code").and_then(Value::as_str).unwrap_or("(none)");
            let message = error.get("message").and_then(Value::as_str).unwrap_or("");
            let mistake = operations[outcome.index].mistake;
            *seen.entry(format!("{code} {mistake:?} {}", clip(message, 80))).or_default() += 1;
        }
    }
    let mut list: Vec<_> = seen.into_iter().collect();
    list.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (key, n) in list {
        eprintln!("{n:6} {key}");
    }
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

fn describe(index: usize, op: &Operation, outcome: Option<&Outcome>) -> String {
    let mistake = op.mistake.map_or(String::new(), |m| format!(", with a deliberate mistake ({m:?})"));
    let mut text = format!(
        "    operation #{index}, as {:?}{mistake}:\n      query: {}\n      variables: {}\n",
        op.actor,
        clip(&op.query, 1_500),
        clip(&op.variables.to_string(), 800)
    );
    if let Some(outcome) = outcome {
        let status = outcome.status.map_or("no status".to_owned(), |s| format!("HTTP {s}"));
        let errors = serde_json::from_str::<Value>(&outcome.body).ok().and_then(|body| body.get("errors").cloned());
        if let Some(errors) = errors {
            text.push_str(&format!("      errors: {}\n", clip(&errors.to_string(), 1_500)));
        }
        text.push_str(&format!("      answer: {status}, {}\n", clip(&outcome.body, 600)));
    }
    text
}

async fn generated_operations_get_no_internal_error_and_leave_the_server_healthy_and_the_ledger_balanced(
    backend: Backend,
) {
    let seed = setting("FUZZ_SEED", DEFAULT_SEED);
    let count = setting("FUZZ_OPERATIONS", DEFAULT_OPERATIONS);
    let in_flight = setting("FUZZ_IN_FLIGHT", DEFAULT_IN_FLIGHT).max(1);
    let app = spawn_app(backend).await;
    let setup_started = Instant::now();
    let (world, callers) = open_bank(&app).await;
    let schema = Schema::parse(&simple_bank::graphql::sdl());
    let mut generator = Generator::new(&schema, &world, seed);
    let mut operations: Vec<Operation> = (0..count).map(|_| generator.operation()).collect();
    // FUZZ_ONLY=12,345: replay just those operations of the seed's sequence (printed in full), after the same setup.
    let only: Option<Vec<usize>> =
        std::env::var("FUZZ_ONLY").ok().map(|list| list.split(',').filter_map(|i| i.trim().parse().ok()).collect());
    if let Some(only) = &only {
        operations = only.iter().filter_map(|&i| operations.get(i).cloned()).collect();
        for (op, index) in operations.iter().zip(only) {
            eprintln!("operation #{index}, as {:?}:\n{}\nvariables: {}\n", op.actor, op.query, op.variables);
        }
    }
    let count = operations.len();

    let started = Instant::now();
    let app_ref = &app;
    let callers_ref = &callers;
    let outcomes: Vec<Outcome> = futures::stream::iter(operations.iter().enumerate())
        .map(|(index, op)| send(app_ref, index, op, callers_ref.token(op.actor)))
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let run_time = started.elapsed();

    let mut by_class: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut codes = BTreeMap::new();
    let mut moved = 0;
    let mut slowest: Vec<(Duration, usize)> = Vec::new();
    let mut positions = vec![0; count];
    for (position, outcome) in outcomes.iter().enumerate() {
        positions[outcome.index] = position;
        let op = &operations[outcome.index];
        for class in failures(op, outcome) {
            by_class.entry(class).or_default().push(outcome.index);
        }
        moved += tally(op, outcome, &mut codes);
        slowest.push((outcome.elapsed, outcome.index));
    }
    slowest.sort_by(|a, b| b.cmp(a));
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        print_error_histogram(&operations, &outcomes);
    }

    // Afterwards: alive, every protected caller still served, the ledger whole, and money actually moved.
    let mut after = Vec::new();
    if !app.is_alive().await {
        after.push("/healthz does not answer after the run".to_owned());
    }
    let mut me_callers = vec![("fuzz_banker".to_owned(), callers.banker.clone())];
    me_callers.extend(callers.depositors.iter().cloned());
    for (name, token) in &me_callers {
        let response = app.graphql("{ me { username } }", json!({}), Some(token)).await;
        if response.0.pointer("/data/me/username").and_then(Value::as_str) != Some(name.as_str()) {
            after.push(format!("`{{ me {{ username }} }}` as {name} answers {}", response.0));
        }
    }
    let ledger = AssertUnwindSafe(tests::assert_ledger_consistent(&app.db)).catch_unwind().await;
    let total = match ledger {
        Ok(total) => Some(total),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            after.push(format!("the ledger is inconsistent: {message}"));
            None
        }
    };
    if moved == 0 && only.is_none() {
        after.push("no generated deposit or transfer succeeded: the run never moved money".to_owned());
    }

    let mistakes = operations.iter().filter(|op| op.mistake.is_some()).count();
    let stats = format!(
        "generative run on {backend:?}: seed {seed}, {count} operations ({mistakes} with a deliberate mistake), \
         {in_flight} in flight; setup {:.1?}, run {run_time:.1?} ({:.0} operations/s); {moved} deposits and transfers \
         went through; ledger total {total:?}; error codes seen: {codes:?}; slowest: {}",
        started.duration_since(setup_started),
        count as f64 / run_time.as_secs_f64().max(0.001),
        slowest.iter().take(3).map(|(d, i)| format!("#{i} {d:.1?}")).collect::<Vec<_>>().join(", "),
    );
    eprintln!("{stats}");
    if by_class.is_empty() && after.is_empty() {
        return;
    }
    let mut report = format!(
        "{stats}\n\nReplay with FUZZ_SEED={seed} FUZZ_OPERATIONS={count} (make fuzz SEED={seed} N={count}).\n\
         {} classes of failure:\n",
        by_class.len() + after.len()
    );
    for problem in &after {
        report.push_str(&format!("\n* {problem}\n"));
    }
    for (class, indices) in &by_class {
        report.push_str(&format!("\n* {class}: {} operations; the shortest:\n", indices.len()));
        let mut shortest = indices.clone();
        shortest.sort_by_key(|&i| (operations[i].query.len() + operations[i].variables.to_string().len(), i));
        for &index in shortest.iter().take(EXAMPLES) {
            report.push_str(&describe(index, &operations[index], Some(&outcomes[positions[index]])));
        }
    }
    panic!("{report}");
}

/// The generator is only as good as what it writes: the same seed gives the same operations, operations without a
/// deliberate syntax mistake parse, some carry each kind of mistake, and every field of the schema gets selected.
#[test]
fn the_generator_covers_every_field_of_the_schema_with_well_formed_operations_from_a_seed() {
    let schema = Schema::parse(&simple_bank::graphql::sdl());
    let world = World {
        protected_usernames: vec!["fuzz_banker".into(), "fuzz_depositor_0".into()],
        spare_usernames: vec!["spare_banker".into()],
        depositors: 1,
        spares: 1,
        depositor_accounts: vec![vec!["1".into()]],
        accounts: vec!["1".into(), "2".into()],
        transfers: vec!["1".into()],
        refresh_tokens: vec!["1.secret".into()],
        emails: vec!["fuzz_banker@example.com".into()],
        cursors: vec!["WzFd".into()],
    };
    let mut first = Generator::new(&schema, &world, 7);
    let mut again = Generator::new(&schema, &world, 7);
    let mut kinds = Vec::new();
    for _ in 0..3_000 {
        let op = first.operation();
        assert_eq!(op.query, again.operation().query, "the same seed writes the same operations");
        if op.mistake != Some(Mistake::BadSyntax)
            && let Err(err) = async_graphql::parser::parse_query(&op.query)
        {
            panic!("a generated operation does not parse ({err}):\n{}", op.query);
        }
        if op.actor == Actor::Banker || matches!(op.actor, Actor::Depositor(_)) {
            for field in tests::generate::SELF_HARMING {
                assert!(!op.root_fields().contains(field), "{field} sent as a protected caller:\n{}", op.query);
            }
        }
        kinds.extend(op.mistake.filter(|m| !kinds.contains(m)));
    }
    assert_eq!(kinds.len(), 8, "every kind of mistake is made; seen: {kinds:?}");
    assert_eq!(first.uncovered(), Vec::<String>::new(), "fields of the schema never selected");
}

on_both_backends!(generated_operations_get_no_internal_error_and_leave_the_server_healthy_and_the_ledger_balanced);
