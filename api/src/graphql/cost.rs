//! Demand control: what an operation may ask of the server, judged before any of it runs.
//!
//! Counting fields is not enough: a page of pages of pages asks for a million nodes in a few hundred bytes. So an
//! operation's cost is its worst-case node count (GitHub's node limit, IBM's cost directives): every selected
//! field counts one, `__typename` and each alias included, and a list multiplies the cost of its selection by how
//! long it can be, so nested lists multiply. A connection's `edges` and `nodes` are as long as its page size
//! (`first`/`last`, else the default page size); a list of one item per item of an argument ([`SIZED_BY`], `nodes`) is
//! as long as that argument; a list whose bound the schema cannot show ([`KNOWN_BOUNDS`]) is as long as that bound;
//! any other list is assumed a full page. Fragments are expanded where they are spread.
//!
//! The walk learns the schema's shapes (which fields are lists, which take a page size) from the schema's own
//! introspection, once at start, so a new field is covered without being listed anywhere. Introspection itself is
//! counted exactly against that same answer (its lists are as long as this schema makes them, and differ from type
//! to type), up to the limit: past it, counting stops, since the operation is refused anyway.
//!
//! The same analysis counts the root fields that hash a password ([`Walk::hashes`]): hashing is deliberately
//! slow, so one request may ask for one hash, not hundreds.
//!
//! The walk knows nothing of SQL or of resolvers, and it runs on documents that may not be valid yet (validation
//! comes later, in the executor): unknown fields count one, unknown fragments and fragment cycles count nothing.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;

use async_graphql::parser::types::{
    ExecutableDocument, Field, OperationDefinition, OperationType, Selection, SelectionSet,
};
use async_graphql::{ErrorExtensions, ServerError, Value, Variables};
use serde::Deserialize;

use super::{BankSchema, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// Lists whose length the schema's types do not show, each bounded by the number of values of an enum.
const KNOWN_BOUNDS: &[(&str, &str, &str)] = &[
    // One account per currency (a unique index in the database).
    ("User", "accounts", "Currency"),
];

/// Lists with one item per item of one of their arguments, a list.
const SIZED_BY: &[(&str, &str, &str)] = &[("Query", "nodes", "ids")];

/// The `updateUser` input fields that make it hash: a new password, or the current one to check.
const PASSWORD_INPUTS: [&str; 2] = ["password", "currentPassword"];

/// Nesting the walk follows (selections and fragment spreads together). Legitimate operations stay far below it
/// (the depth limit is 16); a long chain of fragments could otherwise exhaust the stack. Deeper is over any limit.
const MAX_WALK_DEPTH: usize = 256;
/// Fragment spreads the password-field count follows before it stops: enough for any real mutation, and a bound
/// on a document that spreads fragments within fragments to multiply its size.
const MAX_SPREADS: usize = 1_000;

/// The schema as the walk sees it: for each output type, its fields' shapes; and the introspection answer itself.
pub struct Model {
    types: HashMap<String, HashMap<String, FieldShape>>,
    query: String,
    mutation: Option<String>,
    subscription: Option<String>,
    schema: Introspected,
    /// Index in `schema.types` by name.
    by_name: HashMap<String, usize>,
}

struct FieldShape {
    /// The named type under any list and non-null wrappers.
    ty: String,
    /// How many lists wrap it (`[[T]]` is two).
    lists: u32,
    /// Takes a page size (`first` or `last`): its own list, or the lists in its selection (a connection's
    /// `edges` and `nodes`), are that long.
    paged: bool,
    /// The argument whose items it answers one by one ([`SIZED_BY`]).
    sized_by: Option<&'static str>,
    bound: Option<u64>,
}

/// The schema's shapes, as its introspection answers them.
const INTROSPECTION: &str = "{ __schema { queryType { name } mutationType { name } subscriptionType { name }
    directives { args { ...Value } }
    types { name fields(includeDeprecated: true) { name args { ...Value } type { ...Ref } } inputFields { ...Value }
            enumValues(includeDeprecated: true) { name } interfaces { name } possibleTypes { name } } } }
    fragment Value on __InputValue { name type { ...Ref } }
    fragment Ref on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Introspected {
    query_type: Named,
    mutation_type: Option<Named>,
    subscription_type: Option<Named>,
    directives: Vec<DirectiveInfo>,
    types: Vec<TypeInfo>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct DirectiveInfo {
    args: Vec<ValueInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeInfo {
    name: String,
    fields: Option<Vec<FieldInfo>>,
    input_fields: Option<Vec<ValueInfo>>,
    enum_values: Option<Vec<Named>>,
    interfaces: Option<Vec<Named>>,
    possible_types: Option<Vec<Named>>,
}

#[derive(Deserialize)]
struct FieldInfo {
    name: String,
    args: Vec<ValueInfo>,
    #[serde(rename = "type")]
    ty: TypeRef,
}

/// An argument or an input field.
#[derive(Deserialize)]
struct ValueInfo {
    name: String,
    #[serde(rename = "type")]
    ty: TypeRef,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeRef {
    kind: String,
    name: Option<String>,
    of_type: Option<Box<TypeRef>>,
}

impl TypeRef {
    fn is_wrapper(&self) -> bool {
        self.kind == "LIST" || self.kind == "NON_NULL"
    }
}

impl Model {
    /// Reads the shapes of `schema` from its introspection (which must be enabled on it).
    pub async fn of(schema: &BankSchema) -> anyhow::Result<Self> {
        let response = schema.execute(INTROSPECTION).await;
        if let Some(error) = response.errors.first() {
            anyhow::bail!("the schema's introspection failed: {}", error.message);
        }
        let mut data = response.data.into_json()?;
        Ok(Self::from_introspection(serde_json::from_value(data["__schema"].take())?))
    }

    fn from_introspection(schema: Introspected) -> Self {
        let enum_len = |name: &str| {
            let values = schema.types.iter().find(|ty| ty.name == name).and_then(|ty| ty.enum_values.as_ref());
            values.map_or(0, Vec::len) as u64
        };
        let types = schema
            .types
            .iter()
            .filter_map(|ty| Some((ty, ty.fields.as_ref()?)))
            .map(|(ty, fields)| {
                let fields = fields.iter().map(|field| {
                    let (named, lists) = unwrap(&field.ty);
                    let bound = KNOWN_BOUNDS
                        .iter()
                        .find(|(on, name, _)| *on == ty.name && *name == field.name)
                        .map(|(_, _, enumeration)| enum_len(enumeration));
                    let paged = field.args.iter().any(|arg| arg.name == "first" || arg.name == "last");
                    let sized_by = SIZED_BY
                        .iter()
                        .find(|(on, name, _)| *on == ty.name && *name == field.name)
                        .map(|(_, _, argument)| *argument);
                    (field.name.clone(), FieldShape { ty: named, lists, paged, sized_by, bound })
                });
                (ty.name.clone(), fields.collect())
            })
            .collect();
        let by_name = schema.types.iter().enumerate().map(|(i, ty)| (ty.name.clone(), i)).collect();
        Self {
            types,
            query: schema.query_type.name.clone(),
            mutation: schema.mutation_type.as_ref().map(|ty| ty.name.clone()),
            subscription: schema.subscription_type.as_ref().map(|ty| ty.name.clone()),
            schema,
            by_name,
        }
    }

    /// The field `name` of the type `ty`, `__typename` included (`__schema` and `__type` are walked as
    /// introspection).
    fn field(&self, ty: &str, name: &str) -> Option<&FieldShape> {
        static TYPENAME: FieldShape =
            FieldShape { ty: String::new(), lists: 0, paged: false, sized_by: None, bound: None };
        if name == "__typename" { Some(&TYPENAME) } else { self.types.get(ty)?.get(name) }
    }

    fn named(&self, name: &str) -> Option<&TypeInfo> {
        self.by_name.get(name).map(|i| &self.schema.types[*i])
    }

    /// The `__Type` a type reference introspects as: a wrapper, or the named type.
    fn type_of<'m>(&'m self, ty: &'m TypeRef) -> Option<Meta<'m>> {
        if ty.is_wrapper() {
            Some(Meta::Wrapper(ty))
        } else {
            ty.name.as_deref().and_then(|name| self.named(name)).map(Meta::Type)
        }
    }

    /// Analyses `operation` as far as it can without the request's variables: once per parsed document. Counting
    /// stops past `limit`.
    pub fn plan(&self, document: &ExecutableDocument, operation: &OperationDefinition, limit: u64) -> Plan {
        let mut walk = Walk::new(self, document, operation, None, limit);
        let cost = walk.cost();
        let cost = if walk.consulted_variables { None } else { Some(cost) };
        let mut walk = Walk::new(self, document, operation, None, limit);
        let hashing = walk.hashing_fields();
        let hashing = if walk.consulted_variables { None } else { Some(hashing) };
        Plan { cost, hashing }
    }

    /// The demand of `operation` with these variables, finishing what `plan` could not settle.
    pub fn demand(
        &self,
        plan: &Plan,
        document: &ExecutableDocument,
        operation: &OperationDefinition,
        variables: &Variables,
        limit: u64,
    ) -> Demand {
        let walk = || Walk::new(self, document, operation, Some(variables), limit);
        Demand {
            cost: plan.cost.unwrap_or_else(|| walk().cost()),
            hashing_fields: plan.hashing.unwrap_or_else(|| walk().hashing_fields()),
        }
    }
}

/// Something introspection answers about, as a walk of an introspection selection meets it.
#[derive(Clone, Copy)]
enum Meta<'m> {
    Schema,
    Type(&'m TypeInfo),
    /// A list or non-null `__Type`.
    Wrapper(&'m TypeRef),
    Field(&'m FieldInfo),
    Value(&'m ValueInfo),
    Directive(&'m DirectiveInfo),
    /// An `__EnumValue`: scalars only.
    Leaf,
}

/// What one field of an introspection object answers with.
enum Answer<'m> {
    /// A scalar, an enum or null: nothing to select from.
    Scalar,
    One(Meta<'m>),
    Many(Vec<Meta<'m>>),
}

impl Model {
    fn answer<'m>(&'m self, meta: Meta<'m>, field: &str) -> Answer<'m> {
        let one = |meta: Option<Meta<'m>>| meta.map_or(Answer::Scalar, Answer::One);
        let named = |names: &'m Option<Vec<Named>>| {
            Answer::Many(names.iter().flatten().filter_map(|n| self.named(&n.name)).map(Meta::Type).collect())
        };
        let values = |values: &'m [ValueInfo]| Answer::Many(values.iter().map(Meta::Value).collect());
        let schema = &self.schema;
        match (meta, field) {
            (Meta::Schema, "types") => Answer::Many(schema.types.iter().map(Meta::Type).collect()),
            (Meta::Schema, "directives") => Answer::Many(schema.directives.iter().map(Meta::Directive).collect()),
            (Meta::Schema, "queryType") => one(self.named(&schema.query_type.name).map(Meta::Type)),
            (Meta::Schema, "mutationType") => {
                one(schema.mutation_type.as_ref().and_then(|t| self.named(&t.name)).map(Meta::Type))
            }
            (Meta::Schema, "subscriptionType") => {
                one(schema.subscription_type.as_ref().and_then(|t| self.named(&t.name)).map(Meta::Type))
            }
            (Meta::Type(ty), "fields") => Answer::Many(ty.fields.iter().flatten().map(Meta::Field).collect()),
            (Meta::Type(ty), "inputFields") => values(ty.input_fields.as_deref().unwrap_or_default()),
            (Meta::Type(ty), "enumValues") => {
                Answer::Many(ty.enum_values.iter().flatten().map(|_| Meta::Leaf).collect())
            }
            (Meta::Type(ty), "interfaces") => named(&ty.interfaces),
            (Meta::Type(ty), "possibleTypes") => named(&ty.possible_types),
            (Meta::Wrapper(ty), "ofType") => one(ty.of_type.as_deref().and_then(|inner| self.type_of(inner))),
            (Meta::Field(field), "args") => values(&field.args),
            (Meta::Field(field), "type") => one(self.type_of(&field.ty)),
            (Meta::Value(value), "type") => one(self.type_of(&value.ty)),
            (Meta::Directive(directive), "args") => values(&directive.args),
            _ => Answer::Scalar,
        }
    }
}

/// The named type under `ty`'s wrappers, and how many of those are lists.
fn unwrap(ty: &TypeRef) -> (String, u32) {
    match (&ty.of_type, ty.kind.as_str()) {
        (Some(inner), "LIST") => {
            let (named, lists) = unwrap(inner);
            (named, lists + 1)
        }
        (Some(inner), _) => unwrap(inner),
        (None, _) => (ty.name.clone().unwrap_or_default(), 0),
    }
}

/// What analysing an operation settled without its variables; `None` where they decide.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    cost: Option<u64>,
    hashing: Option<usize>,
}

impl Plan {
    /// Nothing is left to work out per request: the operation's demand is the same whatever its variables.
    pub fn settled(&self) -> bool {
        self.cost.is_some() && self.hashing.is_some()
    }
}

/// What an operation asks of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// The worst-case node count.
    pub cost: u64,
    /// Distinct root fields that hash a password.
    pub hashing_fields: usize,
}

impl Demand {
    /// Why the operation must not run, if it must not.
    pub fn refusals(&self, max_cost: u64) -> Vec<Refusal> {
        let mut refusals = Vec::new();
        if self.cost > max_cost {
            refusals.push(Refusal::CostExceeded { cost: self.cost, limit: max_cost });
        }
        if self.hashing_fields > 1 {
            refusals.push(Refusal::TooManyPasswordFields);
        }
        refusals
    }
}

/// An operation refused before it runs, each with a stable `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `QUERY_COST_EXCEEDED`, with `extensions.cost` and `extensions.limit`.
    CostExceeded { cost: u64, limit: u64 },
    /// `TOO_MANY_PASSWORD_FIELDS`: more than one of `createUser`, `login` and a password-changing `updateUser`.
    TooManyPasswordFields,
}

impl Refusal {
    pub fn code(&self) -> service::Code {
        match self {
            Self::CostExceeded { .. } => service::Code::QueryCostExceeded,
            Self::TooManyPasswordFields => service::Code::TooManyPasswordFields,
        }
    }
}

impl From<Refusal> for ServerError {
    fn from(refusal: Refusal) -> Self {
        let message = match refusal {
            Refusal::CostExceeded { cost, limit } => format!(
                "the operation could return up to {cost} nodes, over the limit of {limit}: ask for smaller pages \
                 or fewer nested lists"
            ),
            Refusal::TooManyPasswordFields => "the operation selects more than one field that checks or sets a \
                password (createUser, login, updateUser with a password); send one per request"
                .to_owned(),
        };
        let error = async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", refusal.code().as_str());
            if let Refusal::CostExceeded { cost, limit } = refusal {
                ext.set("cost", cost);
                ext.set("limit", limit);
            }
        });
        error.into_server_error(async_graphql::Pos::default())
    }
}

/// One walk over one operation.
struct Walk<'a> {
    model: &'a Model,
    document: &'a ExecutableDocument,
    operation: &'a OperationDefinition,
    /// `None` while planning: then any variable that would decide makes the answer per request.
    variables: Option<&'a Variables>,
    consulted_variables: bool,
    /// Fragment costs by name and the page size their lists inherit: each fragment is walked once per page size,
    /// so fragments spreading fragments cost time linear in the document, however large the count they add up to.
    fragments: HashMap<(&'a str, Option<u64>), u64>,
    /// Fragments being walked, to stop at a cycle (which validation refuses later).
    entered: HashSet<&'a str>,
    depth: usize,
    /// Introspection fields still to be counted one by one before the operation is known to be over the limit.
    budget: u64,
}

impl<'a> Walk<'a> {
    fn new(
        model: &'a Model,
        document: &'a ExecutableDocument,
        operation: &'a OperationDefinition,
        variables: Option<&'a Variables>,
        limit: u64,
    ) -> Self {
        Self {
            model,
            document,
            operation,
            variables,
            consulted_variables: false,
            fragments: HashMap::new(),
            entered: HashSet::new(),
            depth: 0,
            budget: limit.saturating_add(1),
        }
    }

    fn root(&self) -> Option<&'a str> {
        match self.operation.ty {
            OperationType::Query => Some(self.model.query.as_str()),
            OperationType::Mutation => self.model.mutation.as_deref(),
            // Each event runs the selection once, so an event costs what a query of that selection would.
            OperationType::Subscription => self.model.subscription.as_deref(),
        }
    }

    fn cost(&mut self) -> u64 {
        self.selection_set(self.root(), &self.operation.selection_set.node, None)
    }

    /// `set` on the type `ty` (`None`: unknown), whose lists are `page` long if it is a connection's selection.
    fn selection_set(&mut self, ty: Option<&'a str>, set: &'a SelectionSet, page: Option<u64>) -> u64 {
        if self.depth >= MAX_WALK_DEPTH {
            return u64::MAX;
        }
        self.depth += 1;
        let mut cost = 0u64;
        for selection in &set.items {
            let item = match &selection.node {
                Selection::Field(field) => self.field(ty, &field.node, page),
                Selection::InlineFragment(fragment) => {
                    let on = fragment.node.type_condition.as_ref().map(|c| c.node.on.node.as_str()).or(ty);
                    self.selection_set(on, &fragment.node.selection_set.node, page)
                }
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node, page),
            };
            cost = cost.saturating_add(item);
        }
        self.depth -= 1;
        cost
    }

    fn field(&mut self, parent: Option<&'a str>, field: &'a Field, page: Option<u64>) -> u64 {
        let model = self.model;
        if parent == Some(model.query.as_str()) {
            match field.name.node.as_str() {
                "__schema" => return 1u64.saturating_add(self.introspection(Meta::Schema, &field.selection_set.node)),
                "__type" => {
                    let Some(name) = field.get_argument("name") else { return 1 };
                    let name =
                        name.node.clone().into_const_with(|variable| Ok::<_, Infallible>(self.variable(&variable)));
                    let Ok(Value::String(name)) = name else { return 1 };
                    let Some(ty) = model.named(&name) else { return 1 };
                    return 1u64.saturating_add(self.introspection(Meta::Type(ty), &field.selection_set.node));
                }
                _ => {}
            }
        }
        let Some(shape) = parent.and_then(|ty| model.field(ty, &field.name.node)) else {
            return 1u64.saturating_add(self.selection_set(None, &field.selection_set.node, None));
        };
        let own_page = shape.paged.then(|| self.page_size(field));
        let sized = shape.sized_by.map(|argument| self.items(field, argument));
        let length = own_page.or(sized).or(shape.bound).or(page).unwrap_or(MAX_PAGE_SIZE as u64);
        let multiplier = length.saturating_pow(shape.lists);
        // A paged field that is not a list itself is a connection: its page size is its lists' length.
        let inherited = if shape.lists == 0 { own_page } else { None };
        let each = self.selection_set(Some(shape.ty.as_str()), &field.selection_set.node, inherited);
        1u64.saturating_add(multiplier.saturating_mul(each))
    }

    /// `set` on what introspection answers about, counted node by node, until the budget is spent.
    fn introspection(&mut self, meta: Meta<'a>, set: &'a SelectionSet) -> u64 {
        if self.depth >= MAX_WALK_DEPTH {
            return u64::MAX;
        }
        self.depth += 1;
        let mut cost = 0u64;
        for selection in &set.items {
            if self.budget == 0 {
                break;
            }
            let item = match &selection.node {
                Selection::Field(field) => {
                    self.budget -= 1;
                    let (name, below) = (&field.node.name.node, &field.node.selection_set.node);
                    let nested = match self.model.answer(meta, name) {
                        Answer::Scalar => 0,
                        Answer::One(meta) => self.introspection(meta, below),
                        Answer::Many(metas) => metas
                            .into_iter()
                            .fold(0u64, |sum, meta| sum.saturating_add(self.introspection(meta, below))),
                    };
                    1u64.saturating_add(nested)
                }
                Selection::InlineFragment(fragment) => self.introspection(meta, &fragment.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    match self.document.fragments.get(name) {
                        Some(fragment) if self.entered.insert(name) => {
                            let cost = self.introspection(meta, &fragment.node.selection_set.node);
                            self.entered.remove(name);
                            cost
                        }
                        _ => 0,
                    }
                }
            };
            cost = cost.saturating_add(item);
        }
        self.depth -= 1;
        cost
    }

    fn fragment(&mut self, name: &'a str, page: Option<u64>) -> u64 {
        if let Some(cost) = self.fragments.get(&(name, page)) {
            return *cost;
        }
        let Some(fragment) = self.document.fragments.get(name) else { return 0 };
        if !self.entered.insert(name) {
            return 0;
        }
        let on = fragment.node.type_condition.node.on.node.as_str();
        let cost = self.selection_set(Some(on), &fragment.node.selection_set.node, page);
        self.entered.remove(name);
        self.fragments.insert((name, page), cost);
        cost
    }

    /// The larger of `first` and `last`, within the page sizes the server serves; the default when neither is
    /// given; a full page when one cannot be read (a value of the wrong type, which validation refuses later).
    fn page_size(&mut self, field: &Field) -> u64 {
        let max = MAX_PAGE_SIZE as u64;
        let mut size = None;
        for name in ["first", "last"] {
            let Some(value) = field.get_argument(name) else { continue };
            let value = value.node.clone().into_const_with(|variable| Ok::<_, Infallible>(self.variable(&variable)));
            let this = match value {
                Ok(Value::Null) => continue,
                Ok(Value::Number(n)) => n.as_i64().map_or(max, |n| n.clamp(0, max as i64) as u64),
                _ => max,
            };
            size = size.max(Some(this));
        }
        size.unwrap_or(DEFAULT_PAGE_SIZE as u64)
    }

    /// How many items the list argument `name` holds: none when absent or null, one for a single value (which
    /// GraphQL takes as a list of one).
    fn items(&mut self, field: &Field, name: &str) -> u64 {
        let Some(value) = field.get_argument(name) else { return 0 };
        let value = value.node.clone().into_const_with(|variable| Ok::<_, Infallible>(self.variable(&variable)));
        match value {
            Ok(Value::List(items)) => items.len() as u64,
            Ok(Value::Null) => 0,
            _ => 1,
        }
    }

    /// A variable's value: the request's, else its default, else null.
    fn variable(&mut self, name: &str) -> Value {
        self.consulted_variables = true;
        let given = self.variables.and_then(|variables| variables.get(name));
        let default = || {
            let definitions = &self.operation.variable_definitions;
            definitions.iter().find(|d| d.node.name.node == name).and_then(|d| d.node.default_value())
        };
        given.or_else(default).cloned().unwrap_or(Value::Null)
    }

    /// How many root fields that hash a password a mutation selects, counting every selection: the executor runs
    /// each one, also two of one response key (`t: login(…) t: login(…)`, `...F ...F`), and merges only their
    /// results. The count stops at two, which is already a refusal, and so does a walk that has spread fragments
    /// more than [`MAX_SPREADS`] times (a document that large is over the cost limit anyway).
    fn hashing_fields(&mut self) -> usize {
        if self.operation.ty != OperationType::Mutation {
            return 0;
        }
        let (operation, document) = (self.operation, self.document);
        let mut count = 0;
        let mut spreads = 0;
        let mut pending = vec![&operation.selection_set.node];
        while let Some(set) = pending.pop() {
            for selection in &set.items {
                match &selection.node {
                    Selection::Field(field) => {
                        if self.hashes(&field.node) {
                            count += 1;
                            if count > 1 {
                                return count;
                            }
                        }
                    }
                    Selection::InlineFragment(fragment) => pending.push(&fragment.node.selection_set.node),
                    Selection::FragmentSpread(spread) => {
                        spreads += 1;
                        if spreads > MAX_SPREADS {
                            return count;
                        }
                        if let Some(fragment) = document.fragments.get(spread.node.fragment_name.node.as_str()) {
                            pending.push(&fragment.node.selection_set.node);
                        }
                    }
                }
            }
        }
        count
    }

    /// `createUser` and `login` always hash; `updateUser` when its input carries a new or the current password.
    fn hashes(&mut self, field: &Field) -> bool {
        match field.name.node.as_str() {
            "createUser" | "login" => true,
            "updateUser" => {
                let Some(input) = field.get_argument("input") else { return false };
                let input =
                    input.node.clone().into_const_with(|variable| Ok::<_, Infallible>(self.variable(&variable)));
                match input {
                    Ok(Value::Object(input)) => {
                        PASSWORD_INPUTS.iter().any(|name| input.get(*name).is_some_and(|value| *value != Value::Null))
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use sea_orm::Iterable;
    use serde_json::json;

    use super::*;

    /// High enough to count every test's operation in full.
    const LIMIT: u64 = 1 << 40;

    async fn model() -> Model {
        crate::graphql::cost_model().await.expect("the schema's shapes")
    }

    /// The demand of the document's only operation, with `variables`; and whether planning settled its cost.
    async fn demand_with(query: &str, variables: serde_json::Value) -> (Demand, bool) {
        let model = model().await;
        let document = parse_query(query).expect("a document");
        let operation = &document.operations.iter().next().expect("an operation").1.node;
        let plan = model.plan(&document, operation, LIMIT);
        let variables = Variables::from_json(variables);
        (model.demand(&plan, &document, operation, &variables, LIMIT), plan.cost.is_some())
    }

    async fn cost(query: &str) -> u64 {
        demand_with(query, json!({})).await.0.cost
    }

    fn currencies() -> u64 {
        service::entity::account::Currency::iter().count() as u64
    }

    #[tokio::test]
    async fn every_field_counts_one_typename_and_each_alias_included() {
        assert_eq!(cost("{ __typename }").await, 1);
        assert_eq!(cost("{ a: __typename b: __typename me { username u: username } }").await, 5);
    }

    #[tokio::test]
    async fn fragments_count_where_they_are_spread() {
        let spread = "{ me { ...Names } a: me { ...Names } } fragment Names on User { username fullName }";
        assert_eq!(cost(spread).await, 6);
        assert_eq!(cost("{ me { ... on User { username fullName } } }").await, 3);
    }

    #[tokio::test]
    async fn a_connection_multiplies_its_edges_and_nodes_by_its_page_size_and_its_page_info_not() {
        let query =
            "{ users(first: 5) { pageInfo { hasNextPage } edges { cursor node { username } } nodes { username } } }";
        // users, pageInfo and hasNextPage; edges and 5 × (cursor, node, username); nodes and 5 × username.
        assert_eq!(cost(query).await, 3 + (1 + 5 * 3) + (1 + 5));
    }

    #[tokio::test]
    async fn without_first_a_page_is_the_default_size_and_past_the_largest_page_it_is_the_largest() {
        let page = |first: &str| format!("{{ users{first} {{ nodes {{ username }} }} }}");
        assert_eq!(cost(&page("")).await, 2 + DEFAULT_PAGE_SIZE as u64);
        assert_eq!(cost(&page("(first: null)")).await, 2 + DEFAULT_PAGE_SIZE as u64);
        assert_eq!(cost(&page("(first: 3)")).await, 2 + 3);
        assert_eq!(cost(&page("(first: 100000000)")).await, 2 + MAX_PAGE_SIZE as u64);
        assert_eq!(cost(&page("(first: \"many\")")).await, 2 + MAX_PAGE_SIZE as u64, "unreadable: a full page");
    }

    #[tokio::test]
    async fn a_users_accounts_count_one_per_currency() {
        assert_eq!(cost("{ me { accounts { id } } }").await, 2 + currencies());
    }

    #[tokio::test]
    async fn nodes_count_one_per_id_given_inline_or_in_a_variable() {
        assert_eq!(cost(r#"{ nodes(ids: ["a", "b", "c"]) { id } }"#).await, 1 + 3);
        assert_eq!(cost(r#"{ nodes(ids: "a") { id ... on Account { balance } } }"#).await, 1 + 2);
        let query = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }";
        let (demand, settled) = demand_with(query, json!({ "ids": vec!["x"; 250] })).await;
        assert_eq!((demand.cost, settled), (1 + 250, false));
        let nested = r#"{ nodes(ids: ["a", "b"]) { ... on Account { entries(first: 10) { nodes { id } } } } }"#;
        assert_eq!(cost(nested).await, 1 + 2 * (1 + (1 + 10)));
    }

    #[tokio::test]
    async fn nested_lists_multiply() {
        let query = "{ users(first: 10) { nodes { accounts { entries(first: 7) { nodes { id } } } } } }";
        let entries = 1 + (1 + 7);
        let accounts = 1 + currencies() * entries;
        assert_eq!(cost(query).await, 1 + (1 + 10 * accounts));
    }

    #[tokio::test]
    async fn the_million_node_query_costs_millions() {
        let query = "{ me { accounts { entries(first: 100) { nodes { account { entries(first: 100) { nodes { account { \
                     entries(first: 100) { nodes { id } } } } } } } } } } }";
        assert!(cost(query).await > 1_000_000, "{}", cost(query).await);
    }

    #[tokio::test]
    async fn a_page_size_in_a_variable_is_judged_by_its_value_or_default_per_request() {
        let query = "query($n: Int) { users(first: $n) { nodes { username } } }";
        let (given, settled) = demand_with(query, json!({ "n": 3 })).await;
        assert_eq!((given.cost, settled), (2 + 3, false));
        assert_eq!(demand_with(query, json!({})).await.0.cost, 2 + DEFAULT_PAGE_SIZE as u64);
        let defaulted = "query($n: Int = 7) { users(first: $n) { nodes { username } } }";
        assert_eq!(demand_with(defaulted, json!({})).await.0.cost, 2 + 7);
        assert!(demand_with("{ users(first: 3) { nodes { username } } }", json!({})).await.1, "no variable: settled");
    }

    #[tokio::test]
    async fn introspection_is_counted_node_by_node_against_this_schema_until_past_the_limit() {
        let model = model().await;
        let types = model.schema.types.len() as u64;
        assert!(types > 20, "{types}");
        assert_eq!(cost("{ __schema { types { name } } }").await, 2 + types);
        assert_eq!(cost("{ __type(name: \"Role\") { name enumValues { name } } }").await, 1 + 1 + 1 + 2);
        assert_eq!(cost("{ __type(name: \"NoSuchType\") { name } }").await, 1);
        // LoginInput's two fields are both `String!`: a non-null wrapper whose `ofType` is String, whose is null.
        let wrapped =
            "{ __type(name: \"LoginInput\") { inputFields { name type { kind ofType { kind ofType { kind } } } } } }";
        assert_eq!(cost(wrapped).await, 2 + 2 * (1 + (1 + 1 + (1 + 1 + 1))));

        let document = parse_query("{ __schema { types { name } } }").expect("a document");
        let operation = &document.operations.iter().next().expect("an operation").1.node;
        let capped = model.plan(&document, operation, 10).cost.expect("settled");
        assert!(capped > 10 && capped < 2 + types, "{capped}");
    }

    #[tokio::test]
    async fn fragment_cycles_and_unknown_fields_end_the_walk_and_a_doubling_chain_saturates() {
        assert_eq!(cost("{ me { ...A } } fragment A on User { username ...A }").await, 2);
        assert_eq!(cost("{ nothing { at { all } } }").await, 3);
        let mut chain = String::from("query { ...F0 }");
        for i in 0..70 {
            chain.push_str(&format!(
                " fragment F{i} on Query {{ a: __typename ...F{j} b: me {{ ...F{j} }} }}",
                j = i + 1
            ));
        }
        chain.push_str(" fragment F70 on Query { __typename }");
        assert_eq!(cost(&chain).await, u64::MAX, "2^70 nodes, counted in linear time");
        let deep: String = (0..1000).map(|i| format!(" fragment G{i} on Query {{ ...G{} }}", i + 1)).collect();
        assert_eq!(cost(&format!("{{ ...G0 }} {deep} fragment G1000 on Query {{ __typename }}")).await, u64::MAX);
    }

    #[tokio::test]
    async fn login_create_user_and_a_password_changing_update_user_hash() {
        async fn hashing(query: &str, variables: serde_json::Value) -> usize {
            demand_with(query, variables).await.0.hashing_fields
        }
        let login = r#"login(input: {username: "a", password: "b"}) { accessToken }"#;
        assert_eq!(hashing(&format!("mutation {{ {login} }}"), json!({})).await, 1);
        let many: String = (0..500).map(|i| format!("l{i}: {login} ")).collect();
        assert_eq!(hashing(&format!("mutation {{ {many} }}"), json!({})).await, 2, "counting stops at a refusal");
        let same_key = format!("mutation {{ t: {login} t: {login} t: {login} }}");
        assert_eq!(hashing(&same_key, json!({})).await, 2, "one response key still runs each of its fields");
        assert_eq!(hashing("query { me { username } }", json!({})).await, 0);
        let twice = "mutation { ...L ...L } fragment L on Mutation { login(input: {username: \"a\", password: \"b\"}) { accessToken } }";
        assert_eq!(hashing(twice, json!({})).await, 2, "a fragment spread twice runs twice");

        let update = "mutation($input: UpdateUserInput!) { a: updateUser(input: $input) { username } \
                      b: createUser(input: {username: \"u\", password: \"p\", fullName: \"f\", email: \"e\"}) { username } }";
        assert_eq!(hashing(update, json!({ "input": { "fullName": "x" } })).await, 1);
        assert_eq!(hashing(update, json!({ "input": { "fullName": "x", "password": null } })).await, 1);
        assert_eq!(hashing(update, json!({ "input": { "password": "new password" } })).await, 2);
        assert_eq!(hashing(update, json!({ "input": { "currentPassword": "old password" } })).await, 2);
        let literal = "mutation($p: String) { updateUser(input: {password: $p}) { username } login(input: {username: \"a\", password: \"b\"}) { accessToken } }";
        assert_eq!(hashing(literal, json!({ "p": "new password" })).await, 2);
        assert_eq!(hashing(literal, json!({})).await, 1);
    }

    #[test]
    fn a_demand_is_refused_over_the_cost_limit_or_with_more_than_one_hashing_field() {
        let demand = |cost, hashing_fields| Demand { cost, hashing_fields };
        assert_eq!(demand(10, 1).refusals(10), vec![]);
        assert_eq!(demand(11, 1).refusals(10), vec![Refusal::CostExceeded { cost: 11, limit: 10 }]);
        assert_eq!(demand(5, 2).refusals(10), vec![Refusal::TooManyPasswordFields]);
        let error = ServerError::from(Refusal::CostExceeded { cost: 11, limit: 10 });
        let extensions = error.extensions.expect("extensions");
        assert_eq!(extensions.get("code"), Some(&Value::from("QUERY_COST_EXCEEDED")));
        assert_eq!((extensions.get("cost"), extensions.get("limit")), (Some(&Value::from(11)), Some(&Value::from(10))));
    }
}
