//! Volume and code-region tags: the recorded-tag state machine and the one-writer leases.
//!
//! State per (session name, volume) in the sealed table [`TAGS_TABLE`]: *no record* → first
//! tag (compare-and-swap from "no tag") → newer tags, each by compare-and-swap old → new. A
//! record remembers a fingerprint of the volume key it was made under; when the key changes
//! the record no longer applies (the recorded tag resets to the policy's, decision 9).
//! Records are keyed by session *name*, so they survive session updates.
//!
//! Leases (decision 9): at most one live lease per (session, volume) for `rollback_protected`
//! volumes, held by an instance token, with a TTL renewed by every tag update and heartbeat,
//! released at exit. Acquisition, release and force-release are persisted (sealed, in the
//! DB's group commit, see `state.rs`); heartbeats renew the expiry in memory only. After a
//! CAS restart every persisted lease is live again for one full TTL from the start.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use veil_api::workload::UpdatePolicy;

/// Sealed table of recorded tags.
pub const TAGS_TABLE: &str = "workload_tags";

/// How long a lease lives without a tag update or heartbeat.
pub const LEASE_TTL_MS: u64 = 120_000;

/// A recorded tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The tag (32 lowercase hex).
    pub tag: String,
    /// Fingerprint of the key the tag was recorded under.
    pub key_fp: String,
    /// When it was recorded (ms since the epoch).
    pub updated_at: u64,
}

/// The table key of a volume's tag: session ‖ 0 ‖ `v:` volume.
pub fn volume_key(session: &str, volume: &str) -> Vec<u8> {
    let mut k = session.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(b"v:");
    k.extend_from_slice(volume.as_bytes());
    k
}

/// The table key of a service's code-region tag: session ‖ 0 ‖ `c:` service.
pub fn code_key(session: &str, service: &str) -> Vec<u8> {
    let mut k = session.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(b"c:");
    k.extend_from_slice(service.as_bytes());
    k
}

/// Fingerprint of a volume or code-region key (16 bytes of a domain-separated SHA-256, hex).
pub fn key_fingerprint(key: &[u8]) -> String {
    let d = veil_attest::Digest32::of_parts(&[b"veil-volume-key-fp-v1\0", key]);
    hex::encode(&d.0[..16])
}

/// Whether `t` is a tag: 32 lowercase hex characters.
pub fn is_tag(t: &str) -> bool {
    t.len() == 32
        && t.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The tag currently in force: the record if it was made under the current key, else the
/// policy's initial tag (`fspf_tag`), else none.
pub fn effective_tag(
    record: Option<&TagRecord>,
    key_fp: &str,
    initial: Option<&str>,
) -> Option<String> {
    match record {
        Some(r) if r.key_fp == key_fp => Some(r.tag.clone()),
        _ => initial.map(String::from),
    }
}

/// Why a tag update is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagRefusal {
    /// The new tag is not 32 lowercase hex.
    Malformed,
    /// The recorded tag is not the one the caller started from.
    Mismatch {
        /// What the CAS holds.
        recorded: Option<String>,
        /// What the caller claimed.
        claimed: Option<String>,
    },
}

/// What to do with a tag update under `policy`, given the tag in force (`current`) and the
/// policy's initial tag: `Ok(true)` record the new tag, `Ok(false)` ignore it (ephemeral).
pub fn decide(
    policy: UpdatePolicy,
    current: Option<&str>,
    initial: Option<&str>,
    old: Option<&str>,
    new: &str,
) -> Result<bool, TagRefusal> {
    if !is_tag(new) {
        return Err(TagRefusal::Malformed);
    }
    match policy {
        UpdatePolicy::Ephemeral => Ok(false),
        UpdatePolicy::NoRollbackProtection => Ok(true),
        UpdatePolicy::RollbackProtected => {
            if current == old {
                Ok(true)
            } else {
                Err(TagRefusal::Mismatch {
                    recorded: current.map(String::from),
                    claimed: old.map(String::from),
                })
            }
        }
        UpdatePolicy::RollbackProtectedReinitializable => {
            if current == old || (initial.is_some() && initial == Some(new)) {
                Ok(true)
            } else {
                Err(TagRefusal::Mismatch {
                    recorded: current.map(String::from),
                    claimed: old.map(String::from),
                })
            }
        }
    }
}

/// A live lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder (instance id: SHA-256 of its token, hex).
    pub holder: String,
    /// Expiry (ms since the epoch).
    pub expires: u64,
    /// When the holder acquired it (ms since the epoch); kept across renewals.
    pub acquired_at: u64,
}

/// Leases by (session, volume). Pure: time is passed in.
#[derive(Debug, Default)]
pub struct Leases {
    map: HashMap<(String, String), Lease>,
}

/// A lease held by someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    /// Public short id of the holder.
    pub holder_short: String,
    /// Milliseconds until the lease lapses without a heartbeat.
    pub expires_in_ms: u64,
}

impl Leases {
    /// Take (or renew) the lease of (`session`, `volume`) for `holder` at `now`. `Ok(true)`:
    /// newly acquired (it was free, lapsed or another's lapsed one), `Ok(false)`: renewed.
    pub fn acquire(
        &mut self,
        session: &str,
        volume: &str,
        holder: &str,
        now: u64,
    ) -> Result<bool, InUse> {
        let k = (session.to_string(), volume.to_string());
        let expires = now.saturating_add(LEASE_TTL_MS);
        match self.map.get_mut(&k) {
            Some(l) if l.holder == holder && l.expires > now => {
                l.expires = expires;
                return Ok(false);
            }
            Some(l) if l.expires > now => {
                return Err(InUse {
                    holder_short: l.holder.chars().take(12).collect(),
                    expires_in_ms: l.expires - now,
                });
            }
            _ => {}
        }
        self.map.insert(
            k,
            Lease {
                holder: holder.to_string(),
                expires,
                acquired_at: now,
            },
        );
        Ok(true)
    }

    /// Put back a persisted lease (at start): live until `expires`. Of two claims on the same
    /// lease the one acquired later wins (the earlier one had lapsed when it was taken over).
    pub fn restore(
        &mut self,
        session: &str,
        volume: &str,
        holder: &str,
        acquired_at: u64,
        expires: u64,
    ) {
        let k = (session.to_string(), volume.to_string());
        if self
            .map
            .get(&k)
            .is_some_and(|l| l.acquired_at > acquired_at)
        {
            return;
        }
        self.map.insert(
            k,
            Lease {
                holder: holder.to_string(),
                expires,
                acquired_at,
            },
        );
    }

    /// Release the lease of (`session`, `volume`) whoever holds it; its former holder.
    pub fn release(&mut self, session: &str, volume: &str) -> Option<String> {
        self.map
            .remove(&(session.to_string(), volume.to_string()))
            .map(|l| l.holder)
    }

    /// The leases `holder` holds at `now`: (session, volume, acquired_at), sorted.
    pub fn held_by(&self, holder: &str, now: u64) -> Vec<(String, String, u64)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter(|(_, l)| l.holder == holder && l.expires > now)
            .map(|((s, vol), l)| (s.clone(), vol.clone(), l.acquired_at))
            .collect();
        v.sort();
        v
    }

    /// Release every lease of `holder`.
    pub fn release_all(&mut self, holder: &str) {
        self.map.retain(|_, l| l.holder != holder);
    }

    /// Drop lapsed leases.
    pub fn purge(&mut self, now: u64) {
        self.map.retain(|_, l| l.expires > now);
    }

    /// The lease of (`session`, `volume`), if live at `now`.
    pub fn get(&self, session: &str, volume: &str, now: u64) -> Option<&Lease> {
        self.map
            .get(&(session.to_string(), volume.to_string()))
            .filter(|l| l.expires > now)
    }

    /// Number of live and lapsed-but-unpurged leases.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccc";

    #[test]
    fn rollback_protected_is_compare_and_swap() {
        let p = UpdatePolicy::RollbackProtected;
        // First use: no tag → first tag.
        assert_eq!(decide(p, None, None, None, A), Ok(true));
        // A stale claim of "no tag" once a tag exists is refused.
        assert!(matches!(
            decide(p, Some(A), None, None, B),
            Err(TagRefusal::Mismatch { .. })
        ));
        assert_eq!(decide(p, Some(A), None, Some(A), B), Ok(true));
        // Rolling back to an older tag by claiming it is refused.
        assert_eq!(
            decide(p, Some(B), None, Some(A), C),
            Err(TagRefusal::Mismatch {
                recorded: Some(B.into()),
                claimed: Some(A.into())
            })
        );
        assert_eq!(
            decide(p, Some(A), None, Some(A), "XYZ"),
            Err(TagRefusal::Malformed)
        );
        assert_eq!(
            decide(p, Some(A), None, Some(A), &A.to_uppercase()),
            Err(TagRefusal::Malformed)
        );
    }

    #[test]
    fn other_policies() {
        assert_eq!(
            decide(UpdatePolicy::Ephemeral, Some(A), None, Some(C), B),
            Ok(false)
        );
        assert_eq!(
            decide(
                UpdatePolicy::NoRollbackProtection,
                Some(A),
                None,
                Some(C),
                B
            ),
            Ok(true)
        );
        let r = UpdatePolicy::RollbackProtectedReinitializable;
        assert_eq!(decide(r, Some(B), Some(A), Some(C), A), Ok(true));
        assert!(decide(r, Some(B), Some(A), Some(C), C).is_err());
        assert_eq!(decide(r, Some(B), Some(A), Some(B), C), Ok(true));
    }

    #[test]
    fn effective_tag_resets_on_key_change() {
        let rec = TagRecord {
            tag: B.into(),
            key_fp: key_fingerprint(b"k1"),
            updated_at: 1,
        };
        let fp1 = key_fingerprint(b"k1");
        let fp2 = key_fingerprint(b"k2");
        assert_ne!(fp1, fp2);
        assert_eq!(effective_tag(Some(&rec), &fp1, Some(A)), Some(B.into()));
        assert_eq!(effective_tag(Some(&rec), &fp2, Some(A)), Some(A.into()));
        assert_eq!(effective_tag(Some(&rec), &fp2, None), None);
        assert_eq!(effective_tag(None, &fp1, None), None);
    }

    #[test]
    fn one_live_lease_per_volume() {
        let mut l = Leases::default();
        assert!(l.acquire("s", "V1", "h1", 0).is_ok());
        // The holder renews.
        assert!(l.acquire("s", "V1", "h1", 10).is_ok());
        let e = l.acquire("s", "V1", "h2", 20).unwrap_err();
        assert_eq!(e.holder_short, "h1");
        assert_eq!(e.expires_in_ms, LEASE_TTL_MS - 10);
        // Other volumes and sessions are independent.
        assert!(l.acquire("s", "V2", "h2", 20).is_ok());
        assert!(l.acquire("t", "V1", "h2", 20).is_ok());
        // A lapsed lease can be taken over.
        assert!(l.acquire("s", "V1", "h2", 10 + LEASE_TTL_MS).is_ok());
        assert_eq!(l.get("s", "V1", 11 + LEASE_TTL_MS).unwrap().holder, "h2");
        // Release frees it at once.
        l.release_all("h2");
        assert!(l.get("s", "V1", 12 + LEASE_TTL_MS).is_none());
        assert!(l.acquire("s", "V1", "h3", 12 + LEASE_TTL_MS).is_ok());
        l.purge(u64::MAX);
        assert!(l.is_empty());
    }

    #[test]
    fn acquisition_renewal_and_restore() {
        let mut l = Leases::default();
        // New, then renewed (the acquisition time is kept: no new persisted record).
        assert_eq!(l.acquire("s", "V1", "h1", 0), Ok(true));
        assert_eq!(l.acquire("s", "V1", "h1", 10), Ok(false));
        assert_eq!(l.held_by("h1", 20), vec![("s".into(), "V1".into(), 0)]);
        // Own lapsed lease taken again: a new acquisition.
        assert_eq!(l.acquire("s", "V1", "h1", 11 + LEASE_TTL_MS), Ok(true));
        assert!(l.held_by("h1", 100 + 2 * LEASE_TTL_MS).is_empty());
        // Restored claims: the later acquisition wins, in either order.
        let mut r = Leases::default();
        r.restore("s", "V1", "old", 5, 1_000);
        r.restore("s", "V1", "new", 9, 1_000);
        r.restore("s", "V1", "older", 1, 1_000);
        assert_eq!(r.get("s", "V1", 999).unwrap().holder, "new");
        assert!(r.acquire("s", "V1", "other", 500).is_err());
        assert!(r.get("s", "V1", 1_000).is_none());
        // Force-release names the former holder.
        assert_eq!(r.release("s", "V1"), Some("new".into()));
        assert_eq!(r.release("s", "V1"), None);
    }

    #[test]
    fn keys_do_not_collide() {
        assert_ne!(volume_key("s", "x"), code_key("s", "x"));
        assert_ne!(volume_key("a/b", "c"), volume_key("a", "b/c"));
    }
}
