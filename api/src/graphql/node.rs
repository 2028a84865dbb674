//! Relay object identification: every user, account, entry and transfer has a global id, and `node` and `nodes`
//! fetch any of them by it.
//!
//! A global id is opaque to clients: base64url, without padding, of the type and the key, `Account:42` or
//! `User:alice`. This module is the one place ids are written and read; the service keeps its integer keys and
//! usernames. Every argument that names an object takes its global id, checked for its type here.

use std::fmt;

use async_graphql::{Context, ID, Interface, Object};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::join_all;
use service::auth::Caller;

use super::ledger::{Account, Entry, Transfer};
use super::users::User;
use super::{ApiError, caller};

/// The most ids one `nodes` takes.
pub const MAX_NODES: usize = 100;

/// The types that have global ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Account,
    Entry,
    Transfer,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::User, Kind::Account, Kind::Entry, Kind::Transfer];

    /// The GraphQL type's name, which the id carries.
    fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Account => "Account",
            Kind::Entry => "Entry",
            Kind::Transfer => "Transfer",
        }
    }

    /// The name with its indefinite article, for messages.
    fn a(self) -> &'static str {
        match self {
            Kind::User => "a User",
            Kind::Account => "an Account",
            Kind::Entry => "an Entry",
            Kind::Transfer => "a Transfer",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The global id of the object of type `kind` whose key is `key`.
pub(crate) fn global_id(kind: Kind, key: impl fmt::Display) -> ID {
    ID(URL_SAFE_NO_PAD.encode(format!("{kind}:{key}")))
}

/// What a global id names.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    User(String),
    Account(i64),
    Entry(i64),
    Transfer(i64),
}

impl Key {
    fn kind(&self) -> Kind {
        match self {
            Key::User(_) => Kind::User,
            Key::Account(_) => Kind::Account,
            Key::Entry(_) => Kind::Entry,
            Key::Transfer(_) => Kind::Transfer,
        }
    }
}

/// What `id` names, if it is a global id exactly as [`global_id`] writes it: one object, one id (no padding, no
/// sign or leading zero in a number).
fn decode(id: &str) -> Option<Key> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(id).ok()?).ok()?;
    let (name, key) = text.split_once(':')?;
    let kind = Kind::ALL.into_iter().find(|kind| kind.name() == name)?;
    let number = || key.parse::<i64>().ok().filter(|n| n.to_string() == key);
    Some(match kind {
        Kind::User => Key::User(key.to_owned()),
        Kind::Account => Key::Account(number()?),
        Kind::Entry => Key::Entry(number()?),
        Kind::Transfer => Key::Transfer(number()?),
    })
}

/// The key inside `id`, given as the argument or input field `field`, which takes ids of `kind`: anything else is
/// `BAD_USER_INPUT`, a bare number (an id as it was before ids were global) and another type's id alike.
pub(crate) fn parse_id(id: &ID, kind: Kind, field: &'static str) -> Result<i64, ApiError> {
    let key = decode(id).ok_or_else(|| {
        let message = if id.parse::<i64>().is_ok() {
            format!("{field} takes the global id of {} (its `id` field), not a bare number", kind.a())
        } else {
            format!("{field} is not an id from this API")
        };
        ApiError::invalid_argument(field, message)
    })?;
    match key {
        Key::Account(n) | Key::Entry(n) | Key::Transfer(n) if key.kind() == kind => Ok(n),
        _ => {
            Err(ApiError::invalid_argument(field, format!("{field} takes {} id, not {} id", kind.a(), key.kind().a())))
        }
    }
}

/// An object with a global id.
#[derive(Interface)]
#[graphql(field(
    name = "id",
    ty = "ID",
    desc = "Global and opaque: it names this object among all types, and `node` fetches it."
))]
pub enum Node {
    User(User),
    Account(Account),
    Entry(Entry),
    Transfer(Transfer),
}

/// The object `id` names, authorized as its type's own query is: `FORBIDDEN` for one the caller may not see, `None`
/// for an id that names nothing (unknown, or not a global id at all).
async fn fetch(ctx: &Context<'_>, caller: &Caller, id: &ID) -> Result<Option<Node>, ApiError> {
    Ok(match decode(id) {
        None => None,
        Some(Key::User(username)) => User::find(ctx, caller, username).await?.map(Node::User),
        Some(Key::Account(key)) => Account::find(ctx, caller, key).await?.map(Node::Account),
        Some(Key::Entry(key)) => Entry::find(ctx, caller, key).await?.map(Node::Entry),
        Some(Key::Transfer(key)) => Transfer::find(ctx, caller, key).await?.map(Node::Transfer),
    })
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// The object with this global id, as its type's own query answers it: null for an id that names nothing,
    /// and null with `FORBIDDEN` for an object you may not see (an entry belongs to its account).
    async fn node(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Node>, ApiError> {
        fetch(ctx, caller(ctx).await?, &id).await
    }

    /// The objects with these global ids (at most 100), in their order: each as `node` answers it, a refusal
    /// nulling its own item only. Read in one statement per type, however many.
    async fn nodes(&self, ctx: &Context<'_>, ids: Vec<ID>) -> Result<Vec<Option<Result<Node, ApiError>>>, ApiError> {
        if ids.len() > MAX_NODES {
            return Err(ApiError::invalid_argument("ids", format!("at most {MAX_NODES} ids")));
        }
        let caller = caller(ctx).await?;
        let found = join_all(ids.iter().map(|id| fetch(ctx, caller, id))).await;
        Ok(found.into_iter().map(Result::transpose).collect())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_id_is_base64url_of_the_type_and_key() {
        assert_eq!(global_id(Kind::Account, 1).0, "QWNjb3VudDox");
        assert_eq!(URL_SAFE_NO_PAD.decode(global_id(Kind::User, "alice").0).expect("base64url"), b"User:alice");
    }

    proptest! {
        #[test]
        fn every_id_decodes_to_what_it_was_made_of(n in any::<i64>(), name in "[a-z0-9_]{3,32}") {
            prop_assert_eq!(decode(&global_id(Kind::Account, n)), Some(Key::Account(n)));
            prop_assert_eq!(decode(&global_id(Kind::Entry, n)), Some(Key::Entry(n)));
            prop_assert_eq!(decode(&global_id(Kind::Transfer, n)), Some(Key::Transfer(n)));
            prop_assert_eq!(decode(&global_id(Kind::User, &name)), Some(Key::User(name)));
        }

        #[test]
        fn a_bare_number_is_no_id(n in any::<i64>()) {
            prop_assert_eq!(decode(&n.to_string()), None);
        }
    }

    #[test]
    fn only_the_one_spelling_of_an_id_is_one() {
        let encode = |text: &str| URL_SAFE_NO_PAD.encode(text);
        for text in
            ["Account:042", "Account:+42", "Account: 42", "Account:", "Account:4.2", "Teller:1", "account:1", "42"]
        {
            assert_eq!(decode(&encode(text)), None, "{text}");
        }
        let padded = base64::engine::general_purpose::URL_SAFE.encode("Account:42");
        assert!(padded.ends_with('='));
        assert_eq!(decode(&padded), None);
        assert_eq!(decode(&encode("Account:42")), Some(Key::Account(42)));
    }

    #[test]
    fn an_argument_takes_its_own_type_only_and_says_why_not() {
        let message = |id: ID| {
            let error = async_graphql::Error::from(parse_id(&id, Kind::Account, "accountId").expect_err("refused"));
            error.message
        };
        assert_eq!(parse_id(&global_id(Kind::Account, 7), Kind::Account, "accountId").ok(), Some(7));
        assert_eq!(message(global_id(Kind::Entry, 7)), "accountId takes an Account id, not an Entry id");
        assert!(message(ID("7".into())).contains("not a bare number"));
        assert_eq!(message(ID("%%".into())), "accountId is not an id from this API");
    }
}
