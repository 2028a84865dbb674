//! Password hashing with argon2id, on threads of its own: bounded in how many run at once, in memory, and in how
//! much CPU they can take from other requests.

use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, mpsc};

use argon2::{Algorithm, Argon2, Block, Params, PasswordVerifier, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::RngCore;

use crate::Error;
use crate::domain::Password;

/// OWASP's argon2id parameters: 19 MiB of memory, 2 iterations, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// argon2 runs on threads of its own: one per core but one (at least one), so that the core left over keeps
/// answering every other request during a login flood. Each owns its 19 MiB work area, allocated once: handed back
/// to the allocator after each hash, blocks that large tend to stay resident, and a few hundred logins left the
/// server holding over 500 MB. They also run at a lower CPU priority (nice 10), so that the scheduler prefers
/// the other requests' work whenever both want a core.
static HASHERS: LazyLock<Hashers> = LazyLock::new(Hashers::start);

type Job = Box<dyn FnOnce(&mut [Block]) + Send>;

struct Hashers(mpsc::Sender<Job>);

impl Hashers {
    fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..cores.saturating_sub(1).max(1) {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                lower_priority();
                let blocks = Params::new(MEMORY_KIB, ITERATIONS, LANES, Some(HASH_LEN)).map_or(0, |p| p.block_count());
                let mut area = vec![Block::default(); blocks];
                // The lock is held only while waiting for a job, not while running it.
                while let Ok(job) = receiver.lock().unwrap_or_else(PoisonError::into_inner).recv() {
                    job(&mut area);
                }
            });
            if let Err(err) = spawned {
                tracing::error!(%err, "cannot start a password-hashing thread");
            }
        }
        Self(sender)
    }
}

/// Best effort: where the process may not renice its threads, hashes run at normal priority.
#[cfg(target_os = "linux")]
fn lower_priority() {
    if let Err(err) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(%err, "password hashing runs at normal priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// A hash of a password nobody has, verified against when the user does not exist, so that an unknown username
/// costs the same time as a wrong password and reveals nothing.
static DECOY_HASH: OnceLock<String> = OnceLock::new();

/// How this service writes a hash (PHC string format), up to the salt.
fn phc_prefix() -> String {
    format!("$argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={LANES}$")
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, Some(HASH_LEN)).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with a fresh random salt, in PHC string form.
pub async fn hash(password: &Password) -> Result<String, Error> {
    let password = password.expose().to_owned();
    run_blocking(move |area| hash_in(area, password.as_bytes())).await
}

/// Whether `password` matches `hash`; with no hash (unknown user) it checks a decoy and answers false.
pub async fn verify(password: &str, hash: Option<String>) -> Result<bool, Error> {
    let password = password.to_owned();
    run_blocking(move |area| {
        let Some(hash) = hash else {
            let decoy = match DECOY_HASH.get() {
                Some(decoy) => decoy.clone(),
                None => DECOY_HASH.get_or_init(|| hash_in(area, b"decoy password").unwrap_or_default()).clone(),
            };
            verify_in(area, password.as_bytes(), &decoy);
            return Ok(false);
        };
        Ok(verify_in(area, password.as_bytes(), &hash))
    })
    .await
}

fn hash_in(area: &mut [Block], password: &[u8]) -> Result<String, Error> {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    let mut out = [0u8; HASH_LEN];
    argon2()
        .hash_password_into_with_memory(password, &salt, &mut out, area)
        .map_err(|err| Error::internal_from("hashing a password", err))?;
    Ok(format!("{}{}${}", phc_prefix(), STANDARD_NO_PAD.encode(salt), STANDARD_NO_PAD.encode(out)))
}

/// Hashes in this service's own form are checked in the reused work area; any other form (older parameters, say)
/// goes through argon2's own verifier.
fn verify_in(area: &mut [Block], password: &[u8], phc: &str) -> bool {
    let Some((salt, expected)) = phc.strip_prefix(&phc_prefix()).and_then(|rest| rest.split_once('$')) else {
        return argon2().verify_password(password, phc).is_ok();
    };
    let (Ok(salt), Ok(expected)) = (STANDARD_NO_PAD.decode(salt), STANDARD_NO_PAD.decode(expected)) else {
        return false;
    };
    let mut out = [0u8; HASH_LEN];
    if expected.len() != HASH_LEN || argon2().hash_password_into_with_memory(password, &salt, &mut out, area).is_err() {
        return false;
    }
    // Compared in constant time: how many leading bytes match says nothing.
    out.iter().zip(&expected).fold(0u8, |differ, (a, b)| differ | (a ^ b)) == 0
}

/// Runs `work` on a hashing thread, in its work area.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce(&mut [Block]) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let (result, answer) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |area| {
        // A request that stopped waiting (timed out, or its client left) costs no hash.
        if !result.is_closed() {
            let _ = result.send(work(area));
        }
    });
    let stopped = || Error::internal("password hashing has stopped");
    HASHERS.0.send(job).map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?
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

    #[tokio::test]
    async fn hashes_in_argon2s_own_form_still_verify() -> Result<(), Error> {
        use argon2::PasswordHasher;
        let theirs = argon2().hash_password(b"correct horse battery").map(|h| h.to_string());
        let theirs = theirs.map_err(|err| Error::internal_from("hashing in argon2's own form", err))?;
        assert!(verify("correct horse battery", Some(theirs.clone())).await?);
        assert!(!verify("wrong horse battery", Some(theirs)).await?);
        let ours = hash(&Password::parse("correct horse battery")?).await?;
        assert!(argon2().verify_password(b"correct horse battery", ours.as_str()).is_ok(), "argon2 reads ours too");
        Ok(())
    }
}
