//! veil's audit log: an append-only file of JSON lines, each signed by the CAS key and chained
//! to the previous line by its hash, so that a changed, removed, reordered or cut entry is
//! detected by [`verify`] (and by `veil audit verify`).
//!
//! # Line format
//!
//! One JSON object per line, fields in this order:
//! `{"seq":N,"time":T,"event":{"type":"…",…},"prev":"<64 hex>","sig":"<base64>"}`
//!
//! - `seq` starts at 1 and grows by one per entry, across restarts.
//! - `time` is unix seconds.
//! - `prev` is the [`line_hash`] (SHA-256, lowercase hex) of the previous line's bytes (without
//!   the newline); the first line has 64 zeros.
//! - `sig` is an ECDSA P-256 / SHA-256 signature (ASN.1 DER, base64) by the CAS key over the
//!   line's *signed part*: the exact bytes of the line with `,"sig":"…"` removed, i.e. the
//!   object `{"seq":…,"time":…,"event":…,"prev":…}`.
//! - The first entry after every start is [`Event::CasStarted`] with the CAS public key (DER
//!   SubjectPublicKeyInfo, hex) and the CAS's monotonic counter; later entries are verified with
//!   that key, whose key hash must be the one the verifier was given.
//!
//! # Verification result codes (SCONE's numbering where it fits)
//!
//! | code | meaning |
//! |---|---|
//! | 0 | intact |
//! | 20 | integrity: an entry does not parse, its signature or its `prev` hash is wrong |
//! | 19 | wrong CAS: a `cas_started` key is not the expected one (wrong signer) |
//! | 18 | the entry given with `--last SEQ:HASH` is there but differs (history rewritten) |
//! | 17 | an entry is missing or out of order (`seq` jumps or goes back) |
//! | 15 | truncated at the start: empty, or the first entry is not seq 1 / not `cas_started` |
//! | 14 | truncated at the end: a torn last line, or fewer entries than `--last SEQ` |

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// The `prev` of the first entry.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors of writing or reading the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// File I/O failed.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The signing key is not usable.
    #[error("audit signing key: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing an audit entry failed")]
    Sign,
    /// The existing log's last entry cannot be read, so the chain cannot be continued.
    #[error("audit log {path}: the last entry (line {line}) is not readable: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The log is closed.
    #[error("audit log is closed")]
    Closed,
}

/// The requester the LAS signed `node`-tier evidence for (decision 20), as recorded in
/// [`Event::ServiceAttested`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRequester {
    /// The node id of the LAS.
    pub node_id: String,
    /// The launcher's pid (in the LAS's pid namespace).
    pub pid: u32,
    /// Its uid (`SCM_CREDENTIALS`).
    pub uid: u32,
    /// Its gid (`SCM_CREDENTIALS`).
    pub gid: u32,
    /// Its cgroup v2 path.
    pub cgroup: String,
}

/// An audited event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The CAS started; first entry after every start.
    CasStarted {
        /// The CAS public key, DER SubjectPublicKeyInfo, lowercase hex.
        public_key: String,
        /// The CAS's monotonic counter at start.
        counter: u64,
    },
    /// The CAS stopped cleanly.
    CasStopped {
        /// The CAS's monotonic counter at stop.
        counter: u64,
    },
    /// A session was created.
    SessionCreated {
        /// Session name.
        session: String,
        /// Session hash.
        hash: String,
        /// Key hash of the client.
        by: String,
    },
    /// A session was read.
    SessionRead {
        /// Session name.
        session: String,
        /// Session hash read.
        hash: String,
        /// Key hash of the client.
        by: String,
    },
    /// A session was updated.
    SessionUpdated {
        /// Session name.
        session: String,
        /// New session hash.
        hash: String,
        /// The replaced version's hash.
        predecessor: String,
        /// Key hash of the client.
        by: String,
    },
    /// A service attested and got its configuration.
    ServiceAttested {
        /// Session name.
        session: String,
        /// Service name.
        service: String,
        /// Attestation tier (`sim`, `node`, ...).
        tier: String,
        /// The measurement (64 hex).
        measurement: String,
        /// `node` tier: who the LAS signed for (absent in other tiers and in older entries).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<NodeRequester>,
    },
    /// An attestation was refused.
    AttestationRefused {
        /// Session name (as asked for).
        session: String,
        /// Service name (as asked for).
        service: String,
        /// Why.
        reason: String,
    },
    /// A volume's recorded tag changed.
    VolumeTagUpdated {
        /// Session name.
        session: String,
        /// Volume name.
        volume: String,
        /// The new tag (32 hex).
        tag: String,
    },
    /// A wrong one-time password.
    OtpFailure {
        /// Session name.
        session: String,
        /// Service name.
        service: String,
    },
    /// OTP checks were locked after repeated failures.
    OtpLockout {
        /// Session name.
        session: String,
        /// Service name.
        service: String,
        /// End of the lockout (unix seconds).
        until: u64,
    },
    /// An owner-only operation (node registration, lockout reset, tag acceptance, ...).
    OwnerAction {
        /// What was done.
        action: String,
        /// Key hash of the owner.
        by: String,
    },
    /// A CAS database write other than a session write committed (decision 17): written in
    /// the same group commit as the write, before the descriptive entries of the same
    /// operation (`volume_tag_updated`, `owner_action`, ...). A verifier and the CAS's
    /// rollback check learn the DB's monotonic counter from it.
    StateCommitted {
        /// What changed: the CAS table (`workload_tags`, `workload_volume_keys`,
        /// `workload_nodes`, `workload_otp`, `workload_leases`).
        kind: String,
        /// The DB's monotonic counter after this write.
        counter: u64,
    },
}

/// The signed part of an entry, in line order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Signed {
    seq: u64,
    time: u64,
    event: Event,
    prev: String,
}

/// One entry as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number.
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// The event.
    pub event: Event,
    /// Hash of the previous line.
    pub prev: String,
    /// Hash of this line (what the next entry's `prev` must be).
    pub hash: String,
}

/// SHA-256 (lowercase hex) of a line's bytes without its newline.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, line))
}

/// What signs audit entries: the CAS key, or a test key.
pub trait AuditSigner: Send {
    /// DER SubjectPublicKeyInfo of the verifying key.
    fn public_key_spki(&self) -> &[u8];
    /// An ECDSA P-256 / SHA-256 ASN.1 signature over `msg`.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, AuditError>;
}

/// An [`AuditSigner`] holding a P-256 key from PKCS#8 DER.
pub struct EcdsaP256Signer {
    key: EcdsaKeyPair,
    spki: Vec<u8>,
    rng: SystemRandom,
}

/// A new P-256 private key (PKCS#8 DER) from the system CSPRNG, for tools and tests (the CAS
/// signs with its own key).
pub fn generate_p256_pkcs8() -> Result<Vec<u8>, AuditError> {
    Ok(
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
            .map_err(|_| AuditError::Key("key generation failed".into()))?
            .as_ref()
            .to_vec(),
    )
}

impl EcdsaP256Signer {
    /// Load a P-256 PKCS#8 DER private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, AuditError> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der)
            .map_err(|_| AuditError::Key("not a P-256 PKCS#8 private key".into()))?;
        let spki: PublicKeyX509Der<'static> = key
            .public_key()
            .as_der()
            .map_err(|_| AuditError::Key("cannot encode the public key".into()))?;
        Ok(Self {
            spki: spki.as_ref().to_vec(),
            key,
            rng: SystemRandom::new(),
        })
    }
}

impl std::fmt::Debug for EcdsaP256Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcdsaP256Signer({})", veil_types::key_hash(&self.spki))
    }
}

impl AuditSigner for EcdsaP256Signer {
    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, AuditError> {
        Ok(self
            .key
            .sign(&self.rng, msg)
            .map_err(|_| AuditError::Sign)?
            .as_ref()
            .to_vec())
    }
}

/// Build one signed line (without newline).
fn make_line(
    signer: &dyn AuditSigner,
    seq: u64,
    time: u64,
    event: &Event,
    prev: &str,
) -> Result<Vec<u8>, AuditError> {
    let signed = Signed {
        seq,
        time,
        event: event.clone(),
        prev: prev.to_string(),
    };
    let mut body = serde_json::to_vec(&signed).map_err(|_| AuditError::Sign)?;
    let sig = signer.sign(&body)?;
    // `body` ends with '}': replace it with the signature field.
    body.pop();
    body.extend_from_slice(b",\"sig\":\"");
    body.extend_from_slice(B64.encode(sig).as_bytes());
    body.extend_from_slice(b"\"}");
    Ok(body)
}

/// Split a line into its signed part and its signature, and parse the signed part.
fn parse_line(line: &[u8]) -> Result<(Signed, Vec<u8>, Vec<u8>), String> {
    const MARK: &[u8] = b",\"sig\":\"";
    let pos = line
        .windows(MARK.len())
        .rposition(|w| w == MARK)
        .ok_or("no signature field")?;
    let tail = &line[pos + MARK.len()..];
    let sig_b64 = tail
        .strip_suffix(b"\"}")
        .ok_or("malformed signature field")?;
    let sig = B64
        .decode(sig_b64)
        .map_err(|_| "signature is not base64".to_string())?;
    let mut body = line[..pos].to_vec();
    body.push(b'}');
    let signed: Signed = serde_json::from_slice(&body).map_err(|e| format!("not an entry: {e}"))?;
    // The signed part must be exactly what the writer produces (no extra spacing or fields).
    let canonical = serde_json::to_vec(&signed).map_err(|e| e.to_string())?;
    if canonical != body {
        return Err("entry is not in canonical form".to_string());
    }
    Ok((signed, body, sig))
}

/// A reference to a written entry: its sequence number and line hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRef {
    /// Sequence number.
    pub seq: u64,
    /// The line's hash.
    pub hash: String,
}

/// Appends signed entries to the log file. Every [`AuditWriter::append`] and
/// [`AuditWriter::flush`] ends with an fsync; a failed write truncates the file back so the
/// log is as before.
pub struct AuditWriter {
    file: Option<File>,
    path: String,
    signer: Box<dyn AuditSigner>,
    next_seq: u64,
    last_hash: String,
    pending: Vec<u8>,
    pending_refs: Vec<EntryRef>,
    len: u64,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("path", &self.path)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl AuditWriter {
    /// Open (or create) the log at `path`, continue its chain, and append and fsync
    /// [`Event::CasStarted`] with the signer's public key and `counter`.
    ///
    /// A torn last line (no final newline: a write cut by a crash before its fsync returned,
    /// so never acknowledged) is cut off. A last complete line that does not parse is an
    /// error: the chain cannot be continued, and the log is left as it is.
    pub fn open(
        path: &Path,
        signer: Box<dyn AuditSigner>,
        counter: u64,
        now_unix: u64,
    ) -> Result<(Self, EntryRef), AuditError> {
        let p = path.display().to_string();
        let io = |source| AuditError::Io {
            path: p.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let complete = match data.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => 0,
        };
        if complete < data.len() {
            file.set_len(complete as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
            data.truncate(complete);
        }
        let (next_seq, last_hash) = match data[..complete.saturating_sub(1)]
            .rsplit(|&b| b == b'\n')
            .next()
            .filter(|l| !l.is_empty())
        {
            None => (1, GENESIS_PREV.to_string()),
            Some(last) => {
                let line_no = data.iter().filter(|&&b| b == b'\n').count();
                let (signed, _, _) = parse_line(last).map_err(|reason| AuditError::Corrupt {
                    path: p.clone(),
                    line: line_no,
                    reason,
                })?;
                (signed.seq + 1, line_hash(last))
            }
        };
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let public_key = hex::encode(signer.public_key_spki());
        let mut w = AuditWriter {
            file: Some(file),
            path: p,
            signer,
            next_seq,
            last_hash,
            pending: Vec::new(),
            pending_refs: Vec::new(),
            len: complete as u64,
        };
        let r = w.append(
            Event::CasStarted {
                public_key,
                counter,
            },
            now_unix,
        )?;
        Ok((w, r))
    }

    /// The last written (or staged) entry's sequence number (0: none) and hash.
    pub fn head(&self) -> EntryRef {
        EntryRef {
            seq: self.next_seq - 1,
            hash: self.last_hash.clone(),
        }
    }

    /// Stage an entry in memory; it becomes durable with the next [`AuditWriter::flush`] or
    /// [`AuditWriter::append`] (one write and one fsync for the whole group).
    pub fn stage(&mut self, event: Event, time: u64) -> Result<EntryRef, AuditError> {
        if self.file.is_none() {
            return Err(AuditError::Closed);
        }
        let line = make_line(
            self.signer.as_ref(),
            self.next_seq,
            time,
            &event,
            &self.last_hash,
        )?;
        let r = EntryRef {
            seq: self.next_seq,
            hash: line_hash(&line),
        };
        self.pending.extend_from_slice(&line);
        self.pending.push(b'\n');
        self.pending_refs.push(r.clone());
        self.next_seq += 1;
        self.last_hash = r.hash.clone();
        Ok(r)
    }

    /// Write all staged entries and fsync. On failure the file is cut back to its previous
    /// length, the staged entries are dropped and the chain continues from the last durable
    /// entry.
    pub fn flush(&mut self) -> Result<Vec<EntryRef>, AuditError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let file = self.file.as_mut().ok_or(AuditError::Closed)?;
        let res = file
            .write_all(&self.pending)
            .and_then(|()| file.sync_data());
        match res {
            Ok(()) => {
                self.len += self.pending.len() as u64;
                self.pending.clear();
                Ok(std::mem::take(&mut self.pending_refs))
            }
            Err(source) => {
                let _ = file.set_len(self.len);
                let _ = file.sync_data();
                if let Some(first) = self.pending_refs.first() {
                    self.next_seq = first.seq;
                }
                // Recover the durable head: the `prev` of the first dropped entry.
                let first_line_end = self
                    .pending
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(self.pending.len());
                if let Ok((signed, _, _)) = parse_line(&self.pending[..first_line_end]) {
                    self.last_hash = signed.prev;
                }
                self.pending.clear();
                self.pending_refs.clear();
                Err(AuditError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Append one entry (plus any staged ones) and fsync.
    pub fn append(&mut self, event: Event, time: u64) -> Result<EntryRef, AuditError> {
        let r = self.stage(event, time)?;
        self.flush()?;
        Ok(r)
    }

    /// Append several entries with one write and one fsync.
    pub fn append_group(
        &mut self,
        events: impl IntoIterator<Item = Event>,
        time: u64,
    ) -> Result<Vec<EntryRef>, AuditError> {
        for e in events {
            self.stage(e, time)?;
        }
        self.flush()
    }

    /// Append [`Event::CasStopped`], fsync and close.
    pub fn close(&mut self, counter: u64, time: u64) -> Result<EntryRef, AuditError> {
        let r = self.append(Event::CasStopped { counter }, time)?;
        self.file = None;
        Ok(r)
    }
}

/// Why a log does not verify; [`VerifyError::exit_code`] gives the documented code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Code 20.
    #[error("line {line}: broken entry: {reason}")]
    Integrity {
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// Code 19.
    #[error("line {line}: signed by a different CAS key (key hash {found}, expected {expected})")]
    WrongCas {
        /// 1-based line.
        line: usize,
        /// The key hash in the log.
        found: String,
        /// The expected key hash.
        expected: String,
    },
    /// Code 18.
    #[error(
        "entry {seq} has hash {found}, not the recorded {expected}: the log's history was rewritten (rollback)"
    )]
    Rewritten {
        /// The sequence number.
        seq: u64,
        /// Its hash in the file.
        found: String,
        /// The recorded hash.
        expected: String,
    },
    /// Code 17.
    #[error(
        "line {line}: expected entry {expected} but found entry {found}: entries were removed or reordered"
    )]
    MissingOrReordered {
        /// 1-based line.
        line: usize,
        /// Expected seq.
        expected: u64,
        /// Found seq.
        found: u64,
    },
    /// Code 15.
    #[error("the log is truncated at its start: {0}")]
    TruncatedStart(String),
    /// Code 14.
    #[error("the log is truncated at its end: {0}")]
    TruncatedEnd(String),
}

impl VerifyError {
    /// The documented process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            VerifyError::Integrity { .. } => 20,
            VerifyError::WrongCas { .. } => 19,
            VerifyError::Rewritten { .. } => 18,
            VerifyError::MissingOrReordered { .. } => 17,
            VerifyError::TruncatedStart(_) => 15,
            VerifyError::TruncatedEnd(_) => 14,
        }
    }
}

/// The result of a successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of entries.
    pub entries: usize,
    /// The last entry's sequence number and hash (for a later `--last`).
    pub last: EntryRef,
    /// Number of `cas_started` entries.
    pub starts: usize,
}

/// Read all entries of a log (no signature check); for tools and tests.
pub fn read_entries(data: &[u8]) -> Result<Vec<Entry>, VerifyError> {
    let mut out = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let (s, _, _) = parse_line(line).map_err(|reason| VerifyError::Integrity {
            line: i + 1,
            reason,
        })?;
        out.push(Entry {
            seq: s.seq,
            time: s.time,
            event: s.event,
            prev: s.prev,
            hash: line_hash(line),
        });
    }
    Ok(out)
}

/// Verify a whole log against the expected CAS key hash and, optionally, a previously
/// recorded entry (`last = (seq, hash)`) that must still be there, unchanged.
pub fn verify(
    data: &[u8],
    cas_key_hash: &str,
    last: Option<(u64, &str)>,
) -> Result<VerifyReport, VerifyError> {
    if data.is_empty() {
        return Err(VerifyError::TruncatedStart("the log is empty".into()));
    }
    let ends_cleanly = data.last() == Some(&b'\n');
    let body = if ends_cleanly {
        &data[..data.len() - 1]
    } else {
        data
    };
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    let n = lines.len();
    let mut key: Option<Vec<u8>> = None;
    let mut expected_seq = 1u64;
    let mut prev_hash = GENESIS_PREV.to_string();
    let mut starts = 0usize;
    let mut found_last = false;
    for (i, line) in lines.iter().enumerate() {
        let line_no = i + 1;
        let is_last = i + 1 == n;
        if is_last && !ends_cleanly {
            return Err(VerifyError::TruncatedEnd(format!(
                "line {line_no} is incomplete (no final newline): the last write was cut"
            )));
        }
        let integrity = |reason: String| VerifyError::Integrity {
            line: line_no,
            reason,
        };
        let (signed, msg, sig) = parse_line(line).map_err(integrity)?;
        if let Event::CasStarted { public_key, .. } = &signed.event {
            let spki = hex::decode(public_key)
                .map_err(|_| integrity("cas_started public key is not hex".into()))?;
            let found = veil_types::key_hash(&spki);
            if found != cas_key_hash {
                return Err(VerifyError::WrongCas {
                    line: line_no,
                    found,
                    expected: cas_key_hash.to_string(),
                });
            }
            key = Some(spki);
            starts += 1;
        }
        if i == 0 && (signed.seq != 1 || !matches!(signed.event, Event::CasStarted { .. })) {
            return Err(VerifyError::TruncatedStart(format!(
                "the first entry is seq {} ({}), not seq 1 (cas_started): earlier entries were removed",
                signed.seq,
                event_name(&signed.event)
            )));
        }
        let Some(k) = key.as_ref() else {
            return Err(VerifyError::TruncatedStart(
                "no cas_started entry before the first entry".into(),
            ));
        };
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, k)
            .verify(&msg, &sig)
            .map_err(|_| {
                integrity(format!(
                    "entry {}: the signature does not verify",
                    signed.seq
                ))
            })?;
        if signed.seq != expected_seq {
            return Err(VerifyError::MissingOrReordered {
                line: line_no,
                expected: expected_seq,
                found: signed.seq,
            });
        }
        if signed.prev != prev_hash {
            return Err(integrity(format!(
                "entry {}: `prev` does not match the hash of the entry before it",
                signed.seq
            )));
        }
        let h = line_hash(line);
        if let Some((lseq, lhash)) = last
            && lseq == signed.seq
        {
            if h != lhash {
                return Err(VerifyError::Rewritten {
                    seq: lseq,
                    found: h.clone(),
                    expected: lhash.to_string(),
                });
            }
            found_last = true;
        }
        prev_hash = h;
        expected_seq += 1;
    }
    if let Some((lseq, _)) = last
        && !found_last
    {
        return Err(VerifyError::TruncatedEnd(format!(
            "the log ends at entry {} but entry {lseq} was recorded",
            expected_seq - 1
        )));
    }
    Ok(VerifyReport {
        entries: n,
        last: EntryRef {
            seq: expected_seq - 1,
            hash: prev_hash,
        },
        starts,
    })
}

fn event_name(e: &Event) -> &'static str {
    match e {
        Event::CasStarted { .. } => "cas_started",
        Event::CasStopped { .. } => "cas_stopped",
        Event::SessionCreated { .. } => "session_created",
        Event::SessionRead { .. } => "session_read",
        Event::SessionUpdated { .. } => "session_updated",
        Event::ServiceAttested { .. } => "service_attested",
        Event::AttestationRefused { .. } => "attestation_refused",
        Event::VolumeTagUpdated { .. } => "volume_tag_updated",
        Event::OtpFailure { .. } => "otp_failure",
        Event::OtpLockout { .. } => "otp_lockout",
        Event::OwnerAction { .. } => "owner_action",
        Event::StateCommitted { .. } => "state_committed",
    }
}

#[cfg(test)]
mod tests;
