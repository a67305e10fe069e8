//! Replay protection for request-bound tokens: remember each nonce until its token expires.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::AuthError;
use crate::time::unix_millis;

/// Nonces a [`NonceCache`] holds by default: 65 536, enough for about 200 requests a second
/// with the default 5-minute window, a few megabytes at most.
pub const DEFAULT_NONCE_CACHE_CAPACITY: usize = 65_536;

/// Where a [`Verifier`](super::Verifier) remembers the nonces it has accepted.
///
/// Implement it over a shared store (a database, a Durable Object) when several processes
/// verify tokens for the same secret; the built-in [`NonceCache`] is per process.
pub trait NonceStore: fmt::Debug + Send + Sync {
    /// Records `nonce`, from a token whose signature is valid, until `remember_until` (the
    /// last instant its token is acceptable); `now` is the verifier's clock.
    ///
    /// Returns [`AuthError::Replayed`] when the nonce is already recorded and not yet
    /// forgotten, [`AuthError::ReplayCacheFull`] when the store cannot take one more (it must
    /// fail closed, not forget a live nonce).
    fn check_and_record(
        &self,
        nonce: &str,
        remember_until: SystemTime,
        now: SystemTime,
    ) -> Result<(), AuthError>;
}

/// A bounded in-memory [`NonceStore`], per process.
///
/// Each nonce is kept until its token expires, then dropped on the next call. When it holds
/// `capacity` live nonces it refuses new tokens with [`AuthError::ReplayCacheFull`] rather than
/// forgetting a nonce that could still be replayed. Cheap to share: put it in an `Arc` and give
/// it to every [`Verifier`](super::Verifier) of the process.
pub struct NonceCache {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// nonce -> forget after (Unix ms).
    by_nonce: HashMap<String, u64>,
    /// (forget after, nonce), ordered so expired entries are found from the front.
    by_expiry: BTreeSet<(u64, String)>,
}

impl NonceCache {
    /// A cache holding at most `capacity` live nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    /// The most live nonces it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many nonces it holds now (expired ones included until the next call to
    /// [`NonceStore::check_and_record`]).
    pub fn len(&self) -> usize {
        self.lock().by_nonce.len()
    }

    /// True when it holds no nonce.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (each insert/remove pair is done before
        // anything that can panic), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for NonceCache {
    /// A cache of [`DEFAULT_NONCE_CACHE_CAPACITY`].
    fn default() -> Self {
        Self::new(DEFAULT_NONCE_CACHE_CAPACITY)
    }
}

impl fmt::Debug for NonceCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl NonceStore for NonceCache {
    fn check_and_record(
        &self,
        nonce: &str,
        remember_until: SystemTime,
        now: SystemTime,
    ) -> Result<(), AuthError> {
        let now_ms = unix_millis(now);
        let until_ms = unix_millis(remember_until);
        let mut state = self.lock();
        while let Some(first) = state.by_expiry.first() {
            if first.0 >= now_ms {
                break;
            }
            if let Some((_, expired)) = state.by_expiry.pop_first() {
                state.by_nonce.remove(&expired);
            }
        }
        if state.by_nonce.contains_key(nonce) {
            return Err(AuthError::Replayed);
        }
        if state.by_nonce.len() >= self.capacity {
            tracing::warn!(
                capacity = self.capacity,
                "auth nonce cache full; refusing request-bound tokens until entries expire"
            );
            return Err(AuthError::ReplayCacheFull);
        }
        state.by_nonce.insert(nonce.to_owned(), until_ms);
        state.by_expiry.insert((until_ms, nonce.to_owned()));
        Ok(())
    }
}
