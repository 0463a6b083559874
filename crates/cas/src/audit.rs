//! The CAS's audit log (`<data-dir>/audit.log`, format and verification in `veil-audit`).
//!
//! Every start appends `cas_started` with the CAS public key and the DB's monotonic counter;
//! a graceful stop appends `cas_stopped` with the counter. Session creates and updates are
//! appended (and fsynced) in their DB group commit (one write and one fsync per batch, after
//! the DB commit) and before the HTTP response, as is a `state_committed` entry for every
//! other DB write (volume tags, volume keys, node registry, OTP replay and lockout state,
//! volume leases); the other events (session read, service attested, attestation refused,
//! volume tag updated, OTP failure / lockout, node registered / revoked) are likewise durable
//! before the response.
//! Entries carry names, hashes, key hashes, tiers, measurements and reasons, never a secret
//! value.
//!
//! # Rollback check (decision 17)
//!
//! The DB counter counts every committed DB write: session writes and key-value writes
//! (volume tags, volume keys, node registry, OTP state, leases). Before the log is continued,
//! the counter the log implies is computed: the counter of the last `cas_started` /
//! `cas_stopped` / `state_committed` entry plus one per later `session_created` /
//! `session_updated` entry. A DB whose counter is lower (a restored or rolled-back
//! `cas.redb`, even if only a volume tag, a node revocation or an OTP use happened since the
//! copy) is refused with [`CasError::RolledBack`], as is a DB with writes next to a missing
//! or empty log.
//!
//! What this does **not** catch: a rollback of the DB *and* the log together (copy both away
//! and restore both); a DB replaced by another one (same DB key) with at least as many
//! writes; a crash between the DB commit and the audit write of the same batch leaves the DB
//! ahead of the log, which is allowed (with a warning). The log is also not protected against deletion
//! beyond the "missing log" check; `veil audit verify --last SEQ:HASH` with a head recorded
//! elsewhere detects a truncated or rewritten log.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use veil_audit::{AuditError, AuditWriter, EcdsaP256Signer, Event};
use veil_identity::Identity;

use crate::CasError;

/// File name of the audit log in the data directory.
pub const AUDIT_FILE: &str = "audit.log";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The open audit log of a running CAS.
pub struct Audit {
    writer: Mutex<AuditWriter>,
    path: PathBuf,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("path", &self.path).finish()
    }
}

/// The DB counter implied by the log `data` (see the module doc), and whether the log has
/// any entry. Only complete lines are read (a torn last line is cut off when the log is
/// opened for writing).
pub fn implied_counter(data: &[u8]) -> Result<(u64, bool), String> {
    let complete = match data.iter().rposition(|&b| b == b'\n') {
        Some(i) => &data[..=i],
        None => &data[..0],
    };
    let entries = veil_audit::read_entries(complete).map_err(|e| e.to_string())?;
    let mut counter = 0u64;
    for e in &entries {
        match e.event {
            Event::CasStarted { counter: c, .. } | Event::CasStopped { counter: c } => counter = c,
            Event::StateCommitted { counter: c, .. } => counter = counter.max(c),
            Event::SessionCreated { .. } | Event::SessionUpdated { .. } => counter += 1,
            _ => {}
        }
    }
    Ok((counter, !entries.is_empty()))
}

impl Audit {
    /// Check the DB counter against the log at `<data_dir>/audit.log`, then open the log and
    /// append `cas_started` signed by the CAS key.
    pub fn open(data_dir: &Path, identity: &Identity, db_counter: u64) -> Result<Self, CasError> {
        let path = data_dir.join(AUDIT_FILE);
        let shown = path.display().to_string();
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(CasError::Io {
                    path: shown,
                    source,
                });
            }
        };
        let (implied, any) = implied_counter(&data)
            .map_err(|reason| CasError::Audit(format!("{shown}: {reason}")))?;
        if !any && db_counter > 0 {
            return Err(CasError::RolledBack(format!(
                "the database has {db_counter} writes but the audit log {shown} is missing or empty; refusing to start (restore the audit log)"
            )));
        }
        if db_counter < implied {
            return Err(CasError::RolledBack(format!(
                "the database is behind the audit log {shown}: its counter is {db_counter}, the log records {implied} writes (a restored or rolled-back database); refusing to start"
            )));
        }
        if db_counter > implied && any {
            tracing::warn!(
                db_counter,
                log_counter = implied,
                "the database is ahead of the audit log (writes whose audit entries were lost in a crash)"
            );
        }
        let pem = identity.to_pem();
        let key = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| CasError::Audit("the CAS identity has no PKCS#8 key".into()))?;
        let signer = EcdsaP256Signer::from_pkcs8(key.secret_pkcs8_der())
            .map_err(|e| CasError::Audit(e.to_string()))?;
        let (writer, head) = AuditWriter::open(&path, Box::new(signer), db_counter, now_unix())
            .map_err(|e| CasError::Audit(e.to_string()))?;
        tracing::info!(seq = head.seq, hash = %head.hash, "audit log opened");
        Ok(Self {
            writer: Mutex::new(writer),
            path,
        })
    }

    /// Append `events` with one write and one fsync (blocking).
    pub fn record_blocking(&self, events: Vec<Event>) -> Result<(), AuditError> {
        let mut w = self.writer.lock().map_err(|_| AuditError::Closed)?;
        let now = now_unix();
        for e in events {
            // On an error, entries staged so far are written with the next group.
            w.stage(e, now)?;
        }
        w.flush().map(|_| ())
    }

    /// Append `cas_stopped` with `counter` and close the log (blocking).
    pub fn close(&self, counter: u64) -> Result<(), AuditError> {
        let mut w = self.writer.lock().map_err(|_| AuditError::Closed)?;
        w.close(counter, now_unix()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity::generate("veil CAS", &["localhost".into()]).unwrap()
    }

    fn created(n: &str) -> Event {
        Event::SessionCreated {
            session: n.into(),
            hash: "00".repeat(32),
            by: "k".into(),
        }
    }

    #[test]
    fn log_verifies_and_a_db_behind_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let id = identity();
        let a = Audit::open(dir.path(), &id, 0).unwrap();
        a.record_blocking(vec![created("a")]).unwrap();
        a.record_blocking(vec![created("b")]).unwrap();
        drop(a);
        // Crash (no cas_stopped): the log implies 2 session writes.
        let data = std::fs::read(dir.path().join(AUDIT_FILE)).unwrap();
        assert_eq!(implied_counter(&data).unwrap(), (2, true));
        let err = Audit::open(dir.path(), &id, 1).unwrap_err();
        assert!(matches!(err, CasError::RolledBack(_)), "{err}");
        assert!(err.to_string().contains("counter is 1"), "{err}");
        let a = Audit::open(dir.path(), &id, 2).unwrap();
        a.close(2).unwrap();
        let data = std::fs::read(dir.path().join(AUDIT_FILE)).unwrap();
        assert_eq!(implied_counter(&data).unwrap(), (2, true));
        let report = veil_audit::verify(&data, &id.key_hash(), None).unwrap();
        assert_eq!(report.entries, 5);
        assert_eq!(report.starts, 2);
        // A DB ahead of the log (lost audit entries) starts.
        Audit::open(dir.path(), &id, 3).unwrap();
    }

    #[test]
    fn missing_log_with_db_history_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Audit::open(dir.path(), &identity(), 4).unwrap_err();
        assert!(err.to_string().contains("missing or empty"), "{err}");
        assert!(!dir.path().join(AUDIT_FILE).exists());
    }
}
