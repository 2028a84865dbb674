//! Domain values, parsed once at the edge: a value of one of these types is valid by construction.

mod amount;
mod email;
mod full_name;
mod idempotency_key;
mod password;
mod period;
mod username;

pub use amount::Amount;
pub use email::Email;
pub use full_name::FullName;
pub use idempotency_key::IdempotencyKey;
pub use password::Password;
pub use period::Period;
pub use username::Username;
