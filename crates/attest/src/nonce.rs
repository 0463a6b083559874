//! The CAS's nonce store: 32 random bytes, single use, short TTL, bounded in total and per peer
//! (design decision 10). Time is passed in by the caller, so tests can drive it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::binding::{Nonce, RandomError};
use crate::time::UnixTime;

/// The longest TTL a store accepts (60 s, decision 10).
pub const MAX_NONCE_TTL_MS: u64 = 60_000;

/// Why a nonce could not be issued or consumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    /// The nonce was never issued, was already used, or was dropped after expiry.
    #[error("The attestation nonce is unknown or was already used")]
    Unknown,
    /// The nonce was issued but its TTL has passed.
    #[error("The attestation nonce has expired")]
    Expired,
    /// The peer holds too many outstanding nonces.
    #[error("Too many outstanding attestation nonces for this peer (limit {limit})")]
    PeerLimit {
        /// The per-peer limit.
        limit: usize,
    },
    /// The store is full.
    #[error("Too many outstanding attestation nonces (limit {limit})")]
    Full {
        /// The total limit.
        limit: usize,
    },
    /// The RNG failed.
    #[error("Could not create an attestation nonce: {0}")]
    Random(#[from] RandomError),
}

/// Limits of a [`NonceStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceLimits {
    /// Lifetime of a nonce in milliseconds (clamped to [`MAX_NONCE_TTL_MS`]).
    pub ttl_ms: u64,
    /// Outstanding nonces in total.
    pub max_total: usize,
    /// Outstanding nonces per peer.
    pub max_per_peer: usize,
}

impl Default for NonceLimits {
    fn default() -> Self {
        Self {
            ttl_ms: 30_000,
            max_total: 100_000,
            max_per_peer: 64,
        }
    }
}

#[derive(Debug)]
struct Entry {
    peer: String,
    expires: UnixTime,
}

#[derive(Debug, Default)]
struct Inner {
    live: HashMap<Nonce, Entry>,
    order: VecDeque<(UnixTime, Nonce)>,
    per_peer: HashMap<String, usize>,
}

impl Inner {
    fn forget(&mut self, nonce: &Nonce) -> Option<Entry> {
        let e = self.live.remove(nonce)?;
        if let Some(c) = self.per_peer.get_mut(&e.peer) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_peer.remove(&e.peer);
            }
        }
        Some(e)
    }

    fn purge(&mut self, at: UnixTime) {
        while let Some((exp, n)) = self.order.front().copied() {
            if exp > at {
                break;
            }
            self.order.pop_front();
            if self.live.get(&n).is_some_and(|e| e.expires == exp) {
                self.forget(&n);
            }
        }
    }
}

/// Outstanding nonces. Thread-safe; share it behind an `Arc`.
#[derive(Debug)]
pub struct NonceStore {
    limits: NonceLimits,
    inner: Mutex<Inner>,
}

impl NonceStore {
    /// A store with `limits` (TTL clamped to 60 s).
    pub fn new(mut limits: NonceLimits) -> Self {
        limits.ttl_ms = limits.ttl_ms.clamp(1, MAX_NONCE_TTL_MS);
        Self {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The effective limits.
    pub fn limits(&self) -> NonceLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave Inner inconsistent in a way that matters
        // for safety (at worst a nonce is forgotten), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issue a fresh nonce to `peer` (e.g. its IP address) at time `at`; returns it and its expiry.
    pub fn issue(&self, peer: &str, at: UnixTime) -> Result<(Nonce, UnixTime), NonceError> {
        let nonce = Nonce::random()?;
        self.insert(peer, nonce, at).map(|exp| (nonce, exp))
    }

    fn insert(&self, peer: &str, nonce: Nonce, at: UnixTime) -> Result<UnixTime, NonceError> {
        let mut inner = self.lock();
        inner.purge(at);
        if inner.live.len() >= self.limits.max_total {
            return Err(NonceError::Full {
                limit: self.limits.max_total,
            });
        }
        let count = inner.per_peer.get(peer).copied().unwrap_or(0);
        if count >= self.limits.max_per_peer {
            return Err(NonceError::PeerLimit {
                limit: self.limits.max_per_peer,
            });
        }
        let expires = at.plus_millis(self.limits.ttl_ms);
        if inner.live.contains_key(&nonce) {
            // 2^-256; treat as an RNG failure rather than silently sharing a nonce.
            return Err(NonceError::Random(RandomError));
        }
        inner.live.insert(
            nonce,
            Entry {
                peer: peer.to_string(),
                expires,
            },
        );
        inner.order.push_back((expires, nonce));
        *inner.per_peer.entry(peer.to_string()).or_insert(0) += 1;
        Ok(expires)
    }

    /// Use `nonce` at time `at`: succeeds once per issued, unexpired nonce.
    pub fn consume(&self, nonce: &Nonce, at: UnixTime) -> Result<(), NonceError> {
        let mut inner = self.lock();
        let entry = inner.forget(nonce).ok_or(NonceError::Unknown)?;
        inner.purge(at);
        if at >= entry.expires {
            return Err(NonceError::Expired);
        }
        Ok(())
    }

    /// Number of outstanding nonces (expired ones may still count until the next call).
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether no nonce is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(ttl: u64, total: usize, per_peer: usize) -> NonceStore {
        NonceStore::new(NonceLimits {
            ttl_ms: ttl,
            max_total: total,
            max_per_peer: per_peer,
        })
    }

    #[test]
    fn single_use() -> Result<(), NonceError> {
        let s = store(1000, 10, 10);
        let (n, exp) = s.issue("p", UnixTime(0))?;
        assert_eq!(exp, UnixTime(1000));
        assert_eq!(s.consume(&n, UnixTime(10)), Ok(()));
        assert_eq!(s.consume(&n, UnixTime(11)), Err(NonceError::Unknown));
        assert_eq!(
            s.consume(&Nonce([0; 32]), UnixTime(11)),
            Err(NonceError::Unknown)
        );
        Ok(())
    }

    #[test]
    fn expiry() -> Result<(), NonceError> {
        let s = store(1000, 10, 10);
        let (n, _) = s.issue("p", UnixTime(0))?;
        assert_eq!(s.consume(&n, UnixTime(1000)), Err(NonceError::Expired));
        let (n2, _) = s.issue("p", UnixTime(5000))?;
        assert_eq!(s.consume(&n2, UnixTime(5999)), Ok(()));
        Ok(())
    }

    #[test]
    fn ttl_clamped_to_60s() {
        assert_eq!(store(3_600_000, 1, 1).limits().ttl_ms, MAX_NONCE_TTL_MS);
    }

    #[test]
    fn per_peer_and_total_limits() -> Result<(), NonceError> {
        let s = store(1000, 3, 2);
        let (a, _) = s.issue("a", UnixTime(0))?;
        s.issue("a", UnixTime(0))?;
        assert_eq!(
            s.issue("a", UnixTime(0)).map(|_| ()),
            Err(NonceError::PeerLimit { limit: 2 })
        );
        s.issue("b", UnixTime(0))?;
        assert_eq!(
            s.issue("c", UnixTime(0)).map(|_| ()),
            Err(NonceError::Full { limit: 3 })
        );
        // Using a nonce frees a slot for its peer.
        s.consume(&a, UnixTime(1))?;
        s.issue("a", UnixTime(1))?;
        // Expired nonces are purged and free their slots.
        s.issue("c", UnixTime(2000))?;
        assert_eq!(s.len(), 1);
        Ok(())
    }
}
