//! Random GraphQL operations generated from the server's own schema, for generative testing.
//!
//! [`Schema::parse`] reads the SDL (`simple_bank::graphql::sdl()`, what `schema.graphql` holds), so a field added to the
//! schema is generated without anyone touching this file. [`Generator`] then writes operations the way a client
//! (or an attacker) might: random root fields, sub-selections several levels deep through connections, aliases,
//! inline fragments and named fragments, `@include`/`@skip`, arguments inline or as variables, with values drawn
//! from pools of extremes (empty, 10 kB, NUL and control characters, zero-width and fullwidth letters, emoji, SQL
//! fragments, huge numbers, money as strings and integers and floats). Most operations are valid, so resolvers and
//! the database really run, and values like account ids, usernames and refresh tokens come from a [`World`] of
//! things that exist, so mutations succeed and money moves. About one in eight carries one deliberate mistake
//! (unknown field, missing or unknown argument, wrong type, bad variables, broken syntax).
//!
//! Everything is drawn from one `StdRng` seeded by the caller: the same seed and world give the same operations.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use async_graphql::parser::types::{BaseType, FieldDefinition, Type, TypeKind, TypeSystemDefinition};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

/// Mutation fields that can take a user's access away (their own, or another's when a banker names them): sent only
/// by spare users and anonymous callers, and naming only users the run may lose, so the run keeps its actors.
pub const SELF_HARMING: &[&str] = &["deleteUser", "updateUser"];

/// The most list nodes a generated valid operation may ask for (page sizes multiplied through nested lists), so a
/// single operation stays cheap enough for thousands to run in minutes. Out-of-range page sizes are still generated.
const NODE_BUDGET: u64 = 1_000;
/// How deep selections nest below a root field.
const MAX_DEPTH: usize = 6;

/// The schema's types, as the generator needs them.
pub struct Schema {
    types: HashMap<String, Kind>,
    query: String,
    mutation: Option<String>,
}

enum Kind {
    Object(Vec<Field>),
    Input(Vec<Arg>),
    Enum(Vec<String>),
    Scalar,
}

#[derive(Clone)]
struct Field {
    name: String,
    args: Vec<Arg>,
    ty: Type,
}

#[derive(Clone)]
struct Arg {
    name: String,
    ty: Type,
}

impl Schema {
    /// Reads an SDL document (object, input, enum and scalar types; the schema definition names the roots).
    pub fn parse(sdl: &str) -> Self {
        let document = async_graphql::parser::parse_schema(sdl).expect("the schema's SDL parses");
        let mut types = HashMap::new();
        let (mut query, mut mutation, mut subscription) = ("Query".to_owned(), None, "Subscription".to_owned());
        for definition in document.definitions {
            match definition {
                TypeSystemDefinition::Schema(schema) => {
                    if let Some(name) = &schema.node.query {
                        query = name.node.to_string();
                    }
                    mutation = schema.node.mutation.as_ref().map(|name| name.node.to_string());
                    if let Some(name) = &schema.node.subscription {
                        subscription = name.node.to_string();
                    }
                }
                TypeSystemDefinition::Type(ty) => {
                    let args =
                        |list: &[async_graphql::Positioned<async_graphql::parser::types::InputValueDefinition>]| {
                            list.iter()
                                .map(|a| Arg { name: a.node.name.node.to_string(), ty: a.node.ty.node.clone() })
                                .collect()
                        };
                    let fields = |list: &[async_graphql::Positioned<FieldDefinition>]| {
                        list.iter()
                            .map(|f| Field {
                                name: f.node.name.node.to_string(),
                                args: args(&f.node.arguments),
                                ty: f.node.ty.node.clone(),
                            })
                            .collect()
                    };
                    let kind = match &ty.node.kind {
                        TypeKind::Object(object) => Kind::Object(fields(&object.fields)),
                        TypeKind::Interface(interface) => Kind::Object(fields(&interface.fields)),
                        TypeKind::InputObject(input) => Kind::Input(args(&input.fields)),
                        TypeKind::Enum(e) => {
                            Kind::Enum(e.values.iter().map(|v| v.node.value.node.to_string()).collect())
                        }
                        TypeKind::Scalar | TypeKind::Union(_) => Kind::Scalar,
                    };
                    types.insert(ty.node.name.node.to_string(), kind);
                }
                TypeSystemDefinition::Directive(_) => {}
            }
        }
        if mutation.is_none() && types.contains_key("Mutation") {
            mutation = Some("Mutation".to_owned());
        }
        // Subscriptions run over the socket, not over HTTP where these operations go; the socket's own tests
        // (`tests/integration/subscriptions.rs`) cover them.
        types.remove(&subscription);
        Self { types, query, mutation }
    }

    fn fields(&self, type_name: &str) -> &[Field] {
        match self.types.get(type_name) {
            Some(Kind::Object(fields)) => fields,
            _ => &[],
        }
    }

    /// Whether `ty` (an argument's type) holds, at any depth, a required input field named `password`: a field
    /// that hashes a password, which is slow (argon2) and throttled, so such fields are generated rarely.
    fn hashes_password(&self, ty: &Type, seen: usize) -> bool {
        let Some(Kind::Input(fields)) = self.types.get(named(ty)) else { return false };
        seen < 4
            && fields.iter().any(|f| (f.name == "password" && !f.ty.nullable) || self.hashes_password(&f.ty, seen + 1))
    }
}

/// The named type at the bottom of a (list, non-null) type.
fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(inner) => named(inner),
    }
}

fn is_list(ty: &Type) -> bool {
    matches!(ty.base, BaseType::List(_))
}

/// Who sends an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Actor {
    /// The run's banker: deposits, reads everyone; never loses access.
    Banker,
    /// A depositor with funded accounts; never loses access.
    Depositor(usize),
    /// A user the run may delete, demote, promote or lock out (`SELF_HARMING` fields).
    Spare(usize),
    Anonymous,
}

/// What exists on the server when the run starts: the values generated arguments refer to.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Users no generated mutation may name (the banker and the depositors).
    pub protected_usernames: Vec<String>,
    /// Users mutations may name, delete or change.
    pub spare_usernames: Vec<String>,
    /// How many depositors and spares there are ([`Actor::Depositor`] and [`Actor::Spare`] indices).
    pub depositors: usize,
    pub spares: usize,
    /// The accounts of each depositor (by index), then every known account.
    pub depositor_accounts: Vec<Vec<String>>,
    pub accounts: Vec<String>,
    pub transfers: Vec<String>,
    /// Refresh tokens of spare users only: logging out or rotating them costs the run nothing.
    pub refresh_tokens: Vec<String>,
    pub emails: Vec<String>,
    /// Real page cursors, read at setup.
    pub cursors: Vec<String>,
}

/// One generated request.
#[derive(Clone, Debug)]
pub struct Operation {
    pub actor: Actor,
    pub query: String,
    pub variables: Value,
    /// Each root field's response key (alias or name) and field name.
    pub roots: Vec<(String, String)>,
    /// The deliberate mistake, if any.
    pub mistake: Option<Mistake>,
}

impl Operation {
    /// The field name behind a root response key.
    pub fn root_field(&self, key: &str) -> Option<&str> {
        self.roots.iter().find(|(k, _)| k == key).map(|(_, field)| field.as_str())
    }

    /// The distinct root field names, in order.
    pub fn root_fields(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = Vec::new();
        for (_, field) in &self.roots {
            if !fields.contains(&field.as_str()) {
                fields.push(field);
            }
        }
        fields
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mistake {
    UnknownField,
    UnknownArgument,
    MissingArgument,
    WrongType,
    SelectionOnLeaf,
    UndefinedFragment,
    BadVariables,
    BadSyntax,
}

const MISTAKES: &[Mistake] = &[
    Mistake::UnknownField,
    Mistake::UnknownArgument,
    Mistake::MissingArgument,
    Mistake::WrongType,
    Mistake::SelectionOnLeaf,
    Mistake::UndefinedFragment,
    Mistake::BadVariables,
    Mistake::BadSyntax,
];

/// A value as the generator builds it, written either as a GraphQL literal or as JSON for a variable.
#[derive(Clone, Debug)]
enum Lit {
    Null,
    /// A number as written: an integer or a float literal, possibly far outside any integer type.
    Number(String),
    Str(String),
    Bool(bool),
    Enum(String),
    List(Vec<Lit>),
    Object(Vec<(String, Lit)>),
}

impl Lit {
    fn graphql(&self, out: &mut String) {
        match self {
            Lit::Null => out.push_str("null"),
            Lit::Number(n) => out.push_str(n),
            Lit::Str(s) => out.push_str(&graphql_string(s)),
            Lit::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Lit::Enum(e) => out.push_str(e),
            Lit::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.graphql(out);
                }
                out.push(']');
            }
            Lit::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(name);
                    out.push_str(": ");
                    value.graphql(out);
                }
                out.push('}');
            }
        }
    }

    fn json(&self) -> Value {
        match self {
            Lit::Null => Value::Null,
            // Numbers JSON cannot hold exactly (beyond 64 bits) become floats, as a JavaScript client would send.
            Lit::Number(n) => serde_json::from_str(n).unwrap_or_else(|_| Value::String(n.clone())),
            Lit::Str(s) => Value::String(s.clone()),
            Lit::Bool(b) => Value::Bool(*b),
            Lit::Enum(e) => Value::String(e.clone()),
            Lit::List(items) => Value::Array(items.iter().map(Lit::json).collect()),
            Lit::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), v.json())).collect()),
        }
    }
}

/// A GraphQL string literal: every character escaped as the spec allows, so any text (NUL included) round-trips.
fn graphql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Strings with a history of breaking things.
pub fn string_pool() -> Vec<String> {
    let mut pool: Vec<String> = [
        "",
        " ",
        "a",
        "alice",
        "Alice",
        "ALICE",
        "al",
        "a_very_long_username_of_32_chars",
        "a_very_long_username_of_33_chars_",
        "nul\u{0}byte",
        "\u{0}",
        "tab\there",
        "line\nbreak",
        "\u{1b}[31mred\u{1b}[0m",
        "\u{7f}\u{80}\u{9f}",
        "zero\u{200b}width",
        "\u{feff}bom",
        "ｆｕｌｌｗｉｄｔｈ",
        "alice@ｅxample.com",
        "al\u{200d}ice@example.com",
        "ALICE@EXAMPLE.COM",
        "alice@example.com",
        "not-an-email",
        "@",
        "a@b",
        "a@b.c",
        "\"quoted\"@example.com",
        "🦀🏦💸",
        "👨‍👩‍👧‍👦",
        "e\u{301}",
        "é",
        "\u{202e}reversed",
        "𝕦𝕟𝕚𝕔𝕠𝕕𝕖",
        "' OR '1'='1",
        "'; DROP TABLE users; --",
        "\" OR 1=1 --",
        "%",
        "%%",
        "_",
        "\\",
        "\\x00",
        "%s%n%x",
        "${jndi:ldap://x}",
        "<script>alert(1)</script>",
        "../../etc/passwd",
        "null",
        "undefined",
        "true",
        "0",
        "-1",
        "NaN",
        "9223372036854775807",
        "correct horse battery",
        "short",
        "USD",
        "usd",
        "BANKER",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJiYW5rZXIifQ.",
        "1.2.3",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    pool.push("x".repeat(129));
    pool.push("a".repeat(1_000));
    pool.push("Ω".repeat(5_000)); // 10 kB of UTF-8
    pool.push("x".repeat(10_240));
    pool.push(format!("{}@example.com", "a".repeat(300)));
    pool
}

/// Money as clients might send it: mostly small valid amounts, sometimes anything.
const MONEY_EXTREMES: &[&str] = &[
    "0",
    "-1",
    "-100",
    "1",
    "9223372036854775807",
    "9223372036854775806",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    "1e3",
    "1E3",
    "1e400",
    "0.5",
    "1.00",
    "12.345",
    "-0",
    "+1",
    "0x10",
    "1_000",
    " 1",
    "1 ",
    "",
    "NaN",
    "Infinity",
    "١٢٣",
    "１２３",
];

/// Page sizes: the valid range's edges and beyond.
const PAGE_EXTREMES: &[&str] =
    &["-1", "-2147483648", "101", "1000", "2147483647", "2147483648", "99999999999999999999", "1.5", "1e2"];

const IDEMPOTENCY_KEYS: &[&str] = &["key-1", "key-2", "key-3", "retry", ""];

/// Writes random operations against a [`Schema`] and a [`World`].
pub struct Generator<'a> {
    schema: &'a Schema,
    world: &'a World,
    rng: StdRng,
    strings: Vec<String>,
    serial: u64,
    // Per operation:
    actor: Actor,
    mutation: bool,
    mistake: Option<Mistake>,
    applied: bool,
    variables: Vec<(String, String)>,
    values: Map<String, Value>,
    fragments: Vec<String>,
    multiplier: u64,
    /// Every `Type.field` selected so far.
    covered: BTreeSet<String>,
}

impl<'a> Generator<'a> {
    pub fn new(schema: &'a Schema, world: &'a World, seed: u64) -> Self {
        Self {
            schema,
            world,
            rng: StdRng::seed_from_u64(seed),
            strings: string_pool(),
            serial: 0,
            actor: Actor::Anonymous,
            mutation: false,
            mistake: None,
            applied: false,
            variables: Vec::new(),
            values: Map::new(),
            fragments: Vec::new(),
            multiplier: 1,
            covered: BTreeSet::new(),
        }
    }

    /// The schema's object fields (`Type.field`) no operation so far has selected.
    pub fn uncovered(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .schema
            .types
            .iter()
            .flat_map(|(name, kind)| match kind {
                Kind::Object(fields) => fields.iter().map(|f| format!("{name}.{}", f.name)).collect(),
                _ => Vec::new(),
            })
            .filter(|field| !self.covered.contains(field))
            .collect();
        all.sort();
        all
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        items.choose(&mut self.rng).cloned()
    }

    fn pool_string(&mut self) -> String {
        let i = self.rng.random_range(0..self.strings.len());
        self.strings[i].clone()
    }

    /// True (once per operation) when the planned mistake is `m` and now is the moment to make it.
    fn mistake_now(&mut self, m: Mistake) -> bool {
        if self.mistake == Some(m) && !self.applied && self.chance(0.5) {
            self.applied = true;
            true
        } else {
            false
        }
    }

    /// The next operation.
    pub fn operation(&mut self) -> Operation {
        self.serial += 1;
        self.actor = self.actor();
        self.mutation = self.schema.mutation.is_some() && self.chance(0.35);
        self.mistake = if self.chance(0.12) { self.pick(MISTAKES) } else { None };
        self.applied = false;
        self.variables.clear();
        self.values = Map::new();
        self.fragments.clear();

        let root_type = if self.mutation { self.schema.mutation.clone() } else { Some(self.schema.query.clone()) };
        let root_type = root_type.unwrap_or_default();
        let count = if self.chance(0.8) { 1 } else { self.rng.random_range(2..=3) };
        let mut body = String::new();
        let mut roots = Vec::new();
        let mut hashed = false;
        for i in 0..count {
            let Some(field) = self.root_field(&root_type, hashed) else { continue };
            hashed |= field.args.iter().any(|a| self.schema.hashes_password(&a.ty, 0));
            let key = if i > 0 || self.chance(0.15) { format!("r{i}_{}", field.name) } else { field.name.clone() };
            if key != field.name {
                let _ = write!(body, "{key}: ");
            }
            roots.push((key, field.name.clone()));
            self.multiplier = 1;
            self.field(&root_type, &field, 0, &mut body);
            body.push(' ');
        }
        if !self.mutation && self.chance(0.03) {
            // Introspection is not in the SDL; a little of it, with arbitrary names.
            let name = if self.chance(0.5) { "Account".to_owned() } else { self.pool_string() };
            let _ = write!(body, "__type(name: {}) {{ name kind fields {{ name }} }} ", graphql_string(&name));
            roots.push(("__type".to_owned(), "__type".to_owned()));
        }
        if self.mistake == Some(Mistake::UndefinedFragment) && !self.applied {
            self.applied = true;
            body.push_str("...undefinedFragment ");
        }

        let mut query = String::new();
        let keyword = if self.mutation { "mutation" } else { "query" };
        let shorthand = !self.mutation && self.variables.is_empty() && self.chance(0.3);
        if !shorthand {
            query.push_str(keyword);
            if self.chance(0.3) {
                let _ = write!(query, " Op{}", self.serial);
            }
            if !self.variables.is_empty() {
                query.push('(');
                let definitions: Vec<String> =
                    self.variables.iter().map(|(name, ty)| format!("${name}: {ty}")).collect();
                query.push_str(&definitions.join(", "));
                query.push(')');
            }
            query.push(' ');
        }
        query.push_str("{ ");
        query.push_str(&body);
        query.push('}');
        for fragment in &self.fragments {
            query.push('\n');
            query.push_str(fragment);
        }

        let mut variables = Value::Object(std::mem::take(&mut self.values));
        match self.mistake {
            Some(Mistake::BadVariables) if !self.applied => {
                self.applied = true;
                variables = match self.rng.random_range(0..5) {
                    0 => Value::String("not an object".to_owned()),
                    1 => Value::Array(vec![Value::from(1)]),
                    2 => Value::Object(Map::new()), // every declared variable missing
                    3 => serde_json::json!({ "undeclared": { "deeply": [1, 2, 3] } }),
                    _ => {
                        // Every variable's value replaced by one of another kind.
                        let mut map = Map::new();
                        for (name, _) in self.variables.clone() {
                            let wrong =
                                [Value::Bool(true), Value::from(-1), Value::from(1e308), serde_json::json!([{}])];
                            map.insert(name, self.pick(&wrong).unwrap_or(Value::Null));
                        }
                        Value::Object(map)
                    }
                };
            }
            Some(Mistake::BadSyntax) if !self.applied => {
                self.applied = true;
                query = self.break_syntax(query);
            }
            _ => {}
        }
        let mistake = if self.applied { self.mistake } else { None };
        Operation { actor: self.actor, query, variables, roots, mistake }
    }

    fn actor(&mut self) -> Actor {
        let roll = self.rng.random_range(0..100);
        match roll {
            0..30 => Actor::Banker,
            30..80 if self.world.depositors > 0 => Actor::Depositor(self.rng.random_range(0..self.world.depositors)),
            80..88 if self.world.spares > 0 => Actor::Spare(self.rng.random_range(0..self.world.spares)),
            _ => Actor::Anonymous,
        }
    }

    /// A root field to select: password-hashing fields rarely (and at most one per operation), self-harming ones
    /// only for callers the run may lose, and the fields that move money often for the callers who can (deposits
    /// for the banker, transfers for depositors), so the ledger really moves.
    fn root_field(&mut self, root_type: &str, hashed: bool) -> Option<Field> {
        let actor = self.actor;
        let protected = matches!(actor, Actor::Banker | Actor::Depositor(_));
        let schema = self.schema;
        let candidates: Vec<(Field, u32)> = schema
            .fields(root_type)
            .iter()
            .filter(|f| !(protected && SELF_HARMING.contains(&f.name.as_str())))
            .map(|f| {
                let weight = if f.args.iter().any(|a| schema.hashes_password(&a.ty, 0)) {
                    if hashed { 0 } else { 1 }
                } else {
                    match (f.name.as_str(), actor) {
                        ("deposit", Actor::Banker) | ("createTransfer", Actor::Depositor(_)) => 60,
                        _ => 12,
                    }
                };
                (f.clone(), weight)
            })
            .collect();
        candidates.choose_weighted(&mut self.rng, |(_, weight)| *weight).ok().map(|(field, _)| field.clone())
    }

    /// Writes `field(args) { selection }` (without its alias).
    fn field(&mut self, parent: &str, field: &Field, depth: usize, out: &mut String) {
        self.covered.insert(format!("{parent}.{}", field.name));
        out.push_str(&field.name);
        let saved = self.multiplier;
        let mut args: Vec<String> = Vec::new();
        for arg in &field.args {
            if !arg.ty.nullable && self.mistake_now(Mistake::MissingArgument) {
                continue;
            }
            let default_too_big = arg.name == "first" && self.multiplier.saturating_mul(20) > NODE_BUDGET;
            let include = if arg.name == "after" { 0.25 } else { 0.6 };
            if arg.ty.nullable && !default_too_big && !self.chance(include) {
                if arg.name == "first" {
                    self.multiplier = self.multiplier.saturating_mul(20);
                }
                continue;
            }
            let value = self.argument(&field.name, arg);
            args.push(format!("{}: {}", arg.name, value));
        }
        if self.mistake_now(Mistake::UnknownArgument) {
            args.push("unknownArgument: 1".to_owned());
        }
        if !args.is_empty() {
            let _ = write!(out, "({})", args.join(", "));
        }
        if self.chance(0.04) {
            let directive = if self.chance(0.5) { "@include(if: true)" } else { "@skip(if: false)" };
            let _ = write!(out, " {directive}");
        }
        let target = named(&field.ty).to_owned();
        if is_list(&field.ty) && !field.args.iter().any(|a| a.name == "first") && !parent.ends_with("Connection") {
            // A list with no page size of its own (a user's accounts, emails): a handful. A connection's edges and
            // nodes are its page, counted where the page size was chosen.
            self.multiplier = self.multiplier.saturating_mul(3);
        }
        match self.schema.types.get(&target) {
            Some(Kind::Object(_)) => {
                out.push_str(" { ");
                self.selection(&target, depth + 1, out);
                out.push('}');
            }
            _ => {
                if self.mistake_now(Mistake::SelectionOnLeaf) {
                    out.push_str(" { nothing }");
                }
            }
        }
        self.multiplier = saved;
    }

    /// Writes the fields selected from an object type.
    fn selection(&mut self, type_name: &str, depth: usize, out: &mut String) {
        let fields: Vec<Field> = self.schema.fields(type_name).to_vec();
        let leaves: Vec<Field> = fields.iter().filter(|f| self.is_leaf(f)).cloned().collect();
        let deep_enough = depth >= MAX_DEPTH || self.multiplier >= NODE_BUDGET;
        let count = self.rng.random_range(1..=3);
        let mut written = 0;
        let mut keys: Vec<String> = Vec::new();
        for i in 0..count {
            let choices = if deep_enough { &leaves } else { &fields };
            let Some(field) = self.pick(choices) else { break };
            // Spell the same selection in one of the ways GraphQL allows. Each response key is used once, so two
            // selections of a field with different arguments never have to merge.
            let style = self.rng.random_range(0..100);
            let alias = if keys.contains(&field.name) || self.chance(0.2) {
                Some(format!("a{i}_{}", field.name))
            } else {
                None
            };
            keys.push(alias.clone().unwrap_or_else(|| field.name.clone()));
            let mut text = String::new();
            if let Some(alias) = &alias {
                let _ = write!(text, "{alias}: ");
            }
            self.field(type_name, &field, depth, &mut text);
            match style {
                0..8 => {
                    let _ = write!(out, "... on {type_name} {{ {text} }} ");
                }
                8..14 => {
                    let name = format!("F{}", self.fragments.len());
                    self.fragments.push(format!("fragment {name} on {type_name} {{ {text} }}"));
                    let _ = write!(out, "...{name} ");
                }
                _ => {
                    out.push_str(&text);
                    out.push(' ');
                }
            }
            written += 1;
        }
        if written == 0 || self.chance(0.1) {
            out.push_str("__typename ");
        }
        if self.mistake_now(Mistake::UnknownField) {
            out.push_str("noSuchField ");
        }
    }

    fn is_leaf(&self, field: &Field) -> bool {
        !matches!(self.schema.types.get(named(&field.ty)), Some(Kind::Object(_)))
    }

    /// An argument's value, inline or as a variable.
    fn argument(&mut self, field: &str, arg: &Arg) -> String {
        let mut value = self.value(field, &arg.name, &arg.ty, 0);
        let wrong = self.mistake_now(Mistake::WrongType);
        if wrong {
            value = self.wrong_value(&arg.ty);
        }
        if !wrong && self.chance(0.4) {
            let name = format!("v{}", self.variables.len());
            self.variables.push((name.clone(), arg.ty.to_string()));
            self.values.insert(name.clone(), value.json());
            format!("${name}")
        } else {
            let mut text = String::new();
            value.graphql(&mut text);
            text
        }
    }

    /// A value of another kind than `ty` wants.
    fn wrong_value(&mut self, ty: &Type) -> Lit {
        let options = [
            Lit::Bool(true),
            Lit::Number("3.14".to_owned()),
            Lit::Number("-99999999999999999999999".to_owned()),
            Lit::Str("wrong".to_owned()),
            Lit::Enum("NOT_A_VALUE".to_owned()),
            Lit::List(vec![Lit::Null, Lit::Number("1".to_owned())]),
            Lit::Object(vec![("nested".to_owned(), Lit::Object(vec![]))]),
            Lit::Null,
        ];
        loop {
            let lit = self.pick(&options).unwrap_or(Lit::Null);
            let fits = match (&lit, named(ty)) {
                (Lit::Str(_), "String" | "ID" | "Money" | "DateTime") => true,
                (Lit::Null, _) => ty.nullable,
                (Lit::Object(_), name) => matches!(self.schema.types.get(name), Some(Kind::Input(_))),
                _ => false,
            };
            if !fits {
                return lit;
            }
        }
    }

    /// A value for `name` of type `ty`: mostly one that makes sense, sometimes an extreme.
    fn value(&mut self, field: &str, name: &str, ty: &Type, depth: usize) -> Lit {
        if ty.nullable && self.chance(0.04) {
            return Lit::Null;
        }
        if let BaseType::List(inner) = &ty.base {
            let n = self.rng.random_range(0..4);
            return Lit::List((0..n).map(|_| self.value(field, name, inner, depth + 1)).collect());
        }
        match named(ty) {
            "Int" if name == "first" => self.page_size(),
            "Int" => Lit::Number(
                self.pick(&["0", "1", "-1", "2147483647", "-2147483648", "2147483648"]).unwrap_or("0").to_owned(),
            ),
            "Float" => Lit::Number(self.pick(&["0.0", "-1.5", "1e308", "1e309", "3"]).unwrap_or("0.0").to_owned()),
            "Boolean" => Lit::Bool(self.chance(0.5)),
            "Money" => self.money(),
            "ID" => self.id(field, name),
            "DateTime" => Lit::Str(
                self.pick(&["2024-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0000-00-00", "yesterday"])
                    .unwrap_or_default()
                    .to_owned(),
            ),
            "String" => Lit::Str(self.string(field, name)),
            other => match self.schema.types.get(other) {
                Some(Kind::Enum(values)) => {
                    let values = values.clone();
                    // Transfers need both accounts' currency, and every funded account is in the first one.
                    if field == "createTransfer" && self.chance(0.8) {
                        Lit::Enum(values.first().cloned().unwrap_or_default())
                    } else {
                        Lit::Enum(self.pick(&values).unwrap_or_default())
                    }
                }
                Some(Kind::Input(fields)) if depth < 4 => {
                    let fields = fields.clone();
                    let mut out = Vec::new();
                    for f in &fields {
                        if !f.ty.nullable && self.mistake_now(Mistake::MissingArgument) {
                            continue;
                        }
                        let include = !f.ty.nullable
                            || if f.name == "password" {
                                // A password change hashes: rarely.
                                self.chance(0.05)
                            } else {
                                self.chance(0.5)
                            };
                        if include {
                            out.push((f.name.clone(), self.value(field, &f.name, &f.ty, depth + 1)));
                        }
                    }
                    Lit::Object(out)
                }
                _ => Lit::Str(self.pool_string()),
            },
        }
    }

    fn page_size(&mut self) -> Lit {
        if self.chance(0.1) {
            // Out of range or of the wrong shape: refused before any work.
            return Lit::Number(self.pick(PAGE_EXTREMES).unwrap_or("-1").to_owned());
        }
        let room = (NODE_BUDGET / self.multiplier.max(1)).clamp(0, 100);
        let size = match self.rng.random_range(0..10) {
            0 => 0,
            1 => room,
            2 => 1,
            _ => self.rng.random_range(0..=room.min(10)),
        };
        self.multiplier = self.multiplier.saturating_mul(size.max(1));
        Lit::Number(size.to_string())
    }

    fn money(&mut self) -> Lit {
        if self.chance(0.75) {
            let amount = self.rng.random_range(1..=500).to_string();
            return if self.chance(0.5) { Lit::Str(amount) } else { Lit::Number(amount) };
        }
        let text = self.pick(MONEY_EXTREMES).unwrap_or("0").to_owned();
        let numeric = text.parse::<f64>().is_ok_and(f64::is_finite) && !text.contains(['x', '_', ' ', '+', 'N', 'I']);
        if numeric && self.chance(0.5) { Lit::Number(text) } else { Lit::Str(text) }
    }

    fn id(&mut self, field: &str, name: &str) -> Lit {
        let roll = self.rng.random_range(0..100);
        let own = match self.actor {
            Actor::Depositor(i) => self.world.depositor_accounts.get(i).cloned().unwrap_or_default(),
            _ => Vec::new(),
        };
        let world = self.world;
        let any: Vec<String>;
        let known = match field {
            "transfer" => &world.transfers,
            "node" | "nodes" => {
                any = world.accounts.iter().chain(&world.transfers).cloned().collect();
                &any
            }
            _ => &world.accounts,
        };
        let id = match roll {
            0..70 if name == "fromAccountId" && !own.is_empty() => self.pick(&own),
            0..80 if !known.is_empty() => self.pick(known),
            80..90 => self
                .pick(&["0", "-1", "9223372036854775807", "9223372036854775808", "1e3", "01", " 1"])
                .map(str::to_owned),
            _ => Some(self.pool_string()),
        };
        Lit::Str(id.unwrap_or_default())
    }

    fn string(&mut self, field: &str, name: &str) -> String {
        let sometimes = self.chance(0.65);
        let known = |list: &[String]| list.to_vec();
        let choice = match name {
            "username" if sometimes => {
                if field == "createUser" || field == "login" {
                    // New users (sign-ups that succeed), the spares, or anyone (a login does no harm).
                    let mut names = known(&self.world.spare_usernames);
                    names.push(format!("fuzz_{}", self.serial));
                    if field == "login" {
                        names.extend(known(&self.world.protected_usernames));
                    }
                    self.pick(&names)
                } else if self.mutation {
                    self.pick(&known(&self.world.spare_usernames))
                } else {
                    let mut names = known(&self.world.protected_usernames);
                    names.extend(known(&self.world.spare_usernames));
                    self.pick(&names)
                }
            }
            "password" if sometimes => Some(crate::PASSWORD.to_owned()),
            "email" if sometimes => {
                let mut emails = known(&self.world.emails);
                emails.push(format!("fuzz_{}@example.com", self.serial));
                emails.push(format!("Fuzz_{}@EXAMPLE.com", self.serial));
                self.pick(&emails)
            }
            "refreshToken" if sometimes => self.pick(&known(&self.world.refresh_tokens)),
            "after" if sometimes => self.pick(&known(&self.world.cursors)),
            "idempotencyKey" if sometimes => self.pick(IDEMPOTENCY_KEYS).map(str::to_owned),
            _ => None,
        };
        choice.unwrap_or_else(|| self.pool_string())
    }

    /// Breaks an operation's syntax in one of the ways a truncated or garbled request would.
    fn break_syntax(&mut self, query: String) -> String {
        let chars: Vec<char> = query.chars().collect();
        let at = self.rng.random_range(0..=chars.len());
        let (head, tail): (String, String) = (chars[..at].iter().collect(), chars[at..].iter().collect());
        match self.rng.random_range(0..6) {
            0 => head,
            1 => format!("{head}{{{tail}"),
            2 => format!("{head}\"{tail}"),
            3 => format!("{head}\u{0}{tail}"),
            4 => format!("{head}...{tail}"),
            _ => format!("{head}$ ({tail}"),
        }
    }
}
