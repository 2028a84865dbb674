//! Parts of ordered lists, as Relay's cursor connections ask for them: the first items after a cursor, or the last
//! ones before it, with whether more lie on either side.

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Order, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use crate::Error;

/// Which part of a list to read. A list is ordered by a unique key; its cursors are key values. `after` and
/// `before` bound the part (either may be absent), and `take` says from which end to count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice<K> {
    pub after: Option<K>,
    pub before: Option<K>,
    pub take: Take,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// The first so many items after `after`.
    First(u64),
    /// The last so many items before `before`.
    Last(u64),
}

/// A part of a list, in list order.
#[derive(Debug)]
pub struct Page<T> {
    pub rows: Vec<T>,
    /// Items precede the part in the list (the row at `after` included).
    pub has_previous: bool,
    /// Items follow the part in the list (the row at `before` included).
    pub has_next: bool,
}

/// Reads `slice` of the list `query` (filtered, not yet ordered or limited), ordered by `key` in `order`. One
/// statement, and one more to tell whether anything lies on the far side of a given cursor.
pub(crate) async fn read<E, K>(
    db: &impl ConnectionTrait,
    query: Select<E>,
    key: E::Column,
    order: Order,
    slice: Slice<K>,
) -> Result<Page<E::Model>, Error>
where
    E: EntityTrait,
    K: Into<sea_orm::Value> + Clone,
{
    let ascending = matches!(order, Order::Asc);
    // In list order: past a cursor, and short of one.
    let past = |cursor: K| if ascending { key.gt(cursor) } else { key.lt(cursor) };
    let up_to = |cursor: K| if ascending { key.lte(cursor) } else { key.gte(cursor) };
    let short_of = |cursor: K| if ascending { key.lt(cursor) } else { key.gt(cursor) };
    let from = |cursor: K| if ascending { key.gte(cursor) } else { key.lte(cursor) };
    let mut bounded = query.clone();
    if let Some(after) = slice.after.clone() {
        bounded = bounded.filter(past(after));
    }
    if let Some(before) = slice.before.clone() {
        bounded = bounded.filter(short_of(before));
    }
    let exists =
        |condition| async { Ok::<_, Error>(query.clone().filter(condition).limit(1).one(db).await?.is_some()) };
    match slice.take {
        Take::First(n) => {
            let mut rows = bounded.order_by(key, order).limit(n + 1).all(db).await?;
            let has_next = rows.len() as u64 > n;
            rows.truncate(n as usize);
            let has_previous = match slice.after {
                Some(after) => exists(up_to(after)).await?,
                None => false,
            };
            Ok(Page { rows, has_previous, has_next })
        }
        Take::Last(n) => {
            let reversed = if ascending { Order::Desc } else { Order::Asc };
            let mut rows = bounded.order_by(key, reversed).limit(n + 1).all(db).await?;
            let has_previous = rows.len() as u64 > n;
            rows.truncate(n as usize);
            rows.reverse();
            let has_next = match slice.before {
                Some(before) => exists(from(before)).await?,
                None => false,
            };
            Ok(Page { rows, has_previous, has_next })
        }
    }
}

/// How many items the whole list `query` has.
pub(crate) async fn count<E: EntityTrait>(db: &impl ConnectionTrait, query: Select<E>) -> Result<u64, Error>
where
    E::Model: Sync,
{
    Ok(query.count(db).await?)
}
