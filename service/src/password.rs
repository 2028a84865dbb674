//! Password hashing with argon2id, off the async runtime and bounded in how many run at once.

use std::sync::LazyLock;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::Error;
use crate::domain::Password;

/// OWASP's argon2id parameters: 19 MiB of memory, 2 iterations, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;

/// At most one hash per core at a time: each holds 19 MiB and a blocking thread, so a login flood queues here
/// instead of exhausting memory or the blocking pool that other requests need.
static PERMITS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// A hash of a password nobody has, verified against when the user does not exist, so that an unknown username
/// costs the same time as a wrong password and reveals nothing.
static DECOY_HASH: LazyLock<String> = LazyLock::new(|| {
    argon2().hash_password(b"decoy password that is never used").map(|hash| hash.to_string()).unwrap_or_default()
});

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with a fresh random salt, in PHC string form.
pub async fn hash(password: &Password) -> Result<String, Error> {
    let password = password.expose().to_owned();
    run_blocking(move || {
        argon2()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|err| Error::Internal(format!("hashing a password: {err}")))
    })
    .await
}

/// Whether `password` matches `hash`; with no hash (unknown user) it checks a decoy and answers false.
pub async fn verify(password: &str, hash: Option<String>) -> Result<bool, Error> {
    let password = password.to_owned();
    run_blocking(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DECOY_HASH.clone());
        let matches = argon2().verify_password(password.as_bytes(), hash.as_str()).is_ok();
        Ok(known && matches)
    })
    .await
}

async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    let _permit = PERMITS.acquire().await.map_err(|err| Error::Internal(format!("password permits closed: {err}")))?;
    tokio::task::spawn_blocking(work).await.map_err(|err| Error::Internal(format!("password task failed: {err}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() -> Result<(), Error> {
        let password = Password::parse("correct horse battery")?;
        let hashed = hash(&password).await?;
        assert!(hashed.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery", Some(hashed.clone())).await?);
        assert!(!verify("wrong horse battery", Some(hashed)).await?);
        assert!(!verify("correct horse battery", None).await?);
        Ok(())
    }
}
