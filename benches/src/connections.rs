//! A measured load's connections, one per client, on both sides: HTTP connections to the server, PostgreSQL or
//! SQLite connections for the raw loads.

use std::sync::{Arc, Mutex, PoisonError};

use crate::Result;

/// sqlx's pool pings a connection when it is taken out and again when it is put back, two round trips the
/// database's limit must not pay; reqwest's pool does bookkeeping for every request that the load generator need
/// not add to the server's side. So each client takes a connection of its own from here and puts it back.
pub struct Dedicated<C>(Arc<Mutex<Vec<C>>>);

impl<C> Clone for Dedicated<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// A connection taken from [`Dedicated`]; it goes back when dropped.
pub struct Taken<C> {
    conn: Option<C>,
    home: Arc<Mutex<Vec<C>>>,
}

impl<C> Dedicated<C> {
    pub fn new(conns: Vec<C>) -> Self {
        Self(Arc::new(Mutex::new(conns)))
    }

    pub fn take(&self) -> Result<Taken<C>> {
        let conn =
            self.0.lock().unwrap_or_else(PoisonError::into_inner).pop().ok_or("more clients than connections")?;
        Ok(Taken { conn: Some(conn), home: self.0.clone() })
    }
}

impl<C> std::ops::Deref for Taken<C> {
    type Target = C;
    fn deref(&self) -> &C {
        self.conn.as_ref().expect("taken until dropped")
    }
}

impl<C> std::ops::DerefMut for Taken<C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn.as_mut().expect("taken until dropped")
    }
}

impl<C> Drop for Taken<C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.home.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        }
    }
}
