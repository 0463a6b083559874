//! The CAS's encrypted, durable store: an embedded redb database in the data directory.
//!
//! - Every value is **sealed** with AES-256-GCM (aws-lc-rs) under a key derived from the DB key;
//!   the AAD is `table ‖ 0x00 ‖ record key ‖ schema version` (decision 17), so a record moved to
//!   another key or table fails authentication. Format: `VSEAL1` ‖ 12-byte nonce ‖ ciphertext ‖ tag.
//! - **Session names are secret**: the `current` table is keyed by HMAC-SHA256(name key, name);
//!   the plaintext name exists only inside sealed values. Version records are keyed by the
//!   session hash (a public value).
//! - Writes go through one writer thread that **group-commits**: concurrent create/update
//!   requests are applied in one redb transaction with `Durability::Immediate`, and every
//!   caller is answered only after that commit returned (durable before acknowledgement).
//!   Each operation is a compare-and-swap on the session's current hash, evaluated inside the
//!   transaction, so of racing updates with the same predecessor exactly one wins.
//! - **Every** DB mutation goes through that writer: session puts and the generic key-value
//!   compare-and-swap / delete ([`Store::kv_swap`]: volume tags, volume keys, node registry,
//!   OTP replay and lockout state, volume leases). One batch may mix them.
//! - A monotonic counter (`meta/counter`) grows by one per committed operation, of any kind
//!   (decision 17).
//! - The audit entries of a batch's operations are appended to the audit log with one write
//!   and one fsync right after the batch's DB commit and before any caller of the batch is
//!   answered: a session write's own entry, and for every key-value write a
//!   `state_committed` entry with its kind (the table) and the counter after it, followed by
//!   the caller's descriptive entries. So the log always knows the counter (see
//!   `crate::audit`), and a DB restored without the log is refused at start.
//! - At open, every record is unsealed once: a wrong DB key or a modified file refuses to start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use redb::{
    ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition,
};
use serde::{Deserialize, Serialize};

const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
const CURRENT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("current");
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
const SECRETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("secrets");

/// Schema version, part of every record's AAD.
pub const SCHEMA_VERSION: u32 = 1;
const MAGIC: &[u8] = b"VSEAL1";
const MAX_BATCH: usize = 512;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database layer failed.
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A record did not authenticate under the DB key.
    #[error(
        "database record {table}/{key} fails authentication: the DB key is wrong or the database file was modified"
    )]
    Integrity {
        /// Table name.
        table: &'static str,
        /// Printable record key (hex).
        key: String,
    },
    /// The DB key file is unusable.
    #[error("DB key file {path}: {msg}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The commit of a batch failed; nothing of it was written.
    #[error("database commit failed: {0}")]
    Commit(String),
    /// The audit entries of a (committed) operation could not be made durable.
    #[error("audit log write failed: {0}")]
    Audit(String),
    /// The writer thread is gone.
    #[error("the database writer stopped")]
    WriterGone,
    /// Compare-and-swap failed: the session already exists (create without predecessor).
    #[error("session already exists")]
    Exists,
    /// Compare-and-swap failed: the current hash is not the expected predecessor.
    #[error("the current version is {current}, not the given predecessor")]
    Stale {
        /// The current hash.
        current: String,
    },
    /// Update of a session that does not exist.
    #[error("session not found")]
    Missing,
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// The pointer to a session's active version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Current {
    /// Session name.
    pub name: String,
    /// Hash of the active version.
    pub hash: String,
}

/// One immutable session version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    /// Session name.
    pub name: String,
    /// Normalised YAML including `creator` (the creator's certificate PEM).
    pub yaml: String,
    /// Key hash of the creator's certificate.
    pub creator_key_hash: String,
    /// Hash of the previous version.
    pub predecessor: Option<String>,
    /// Unix seconds of the write.
    pub created_at: u64,
}

/// A create or update to apply atomically.
#[derive(Debug)]
pub struct Put {
    /// Hash of the new version.
    pub hash: String,
    /// The new version.
    pub version: Version,
    /// `None`: create (the name must be free); `Some(h)`: update (the current hash must be `h`).
    pub expect_current: Option<String>,
    /// Sealed-at-rest secret values of this version (serialized by the caller), if any.
    pub secrets: Option<Vec<u8>>,
}

/// A generic key-value write: compare-and-swap of one record, or its deletion.
#[derive(Debug)]
struct KvWrite {
    table: &'static str,
    /// The stored (HMAC) key.
    key: Vec<u8>,
    expected: Option<Vec<u8>>,
    /// `None`: delete.
    new: Option<Vec<u8>>,
}

#[derive(Debug)]
enum Op {
    Session(Put),
    Kv(KvWrite),
}

/// The outcome of one operation: `Ok(counter)` when applied, `Err(current)` when a key-value
/// comparison failed (nothing written). Session compare-and-swap failures are `StoreError`s.
type OpResult = Result<Result<u64, Option<Vec<u8>>>, StoreError>;

enum Reply {
    Async(tokio::sync::oneshot::Sender<OpResult>),
    Blocking(std::sync::mpsc::SyncSender<OpResult>),
}

impl Reply {
    fn send(self, r: OpResult) {
        // The caller may have gone away (dropped request); the write stands.
        match self {
            Self::Async(tx) => {
                let _ = tx.send(r);
            }
            Self::Blocking(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

struct WriteReq {
    op: Op,
    /// Audit entries describing the operation, written in the batch's group if it applies.
    events: Vec<veil_audit::Event>,
    reply: Reply,
}

/// Seals and opens records; derives the name MAC key. Debug prints nothing secret.
struct Sealer {
    aead: RandomizedNonceKey,
    names: hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn aad(table: &str, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(table.len() + key.len() + 5);
    a.extend_from_slice(table.as_bytes());
    a.push(0);
    a.extend_from_slice(key);
    a.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
    a
}

impl Sealer {
    fn new(db_key: &[u8; 32]) -> Result<Self, StoreError> {
        let root = hmac::Key::new(hmac::HMAC_SHA256, db_key);
        let enc = hmac::sign(&root, b"veil-cas-v1 record encryption");
        let mac = hmac::sign(&root, b"veil-cas-v1 session names");
        let aead =
            RandomizedNonceKey::new(&AES_256_GCM, enc.as_ref()).map_err(|_| StoreError::Key {
                path: String::new(),
                msg: "cannot derive the encryption key".into(),
            })?;
        Ok(Self {
            aead,
            names: hmac::Key::new(hmac::HMAC_SHA256, mac.as_ref()),
        })
    }

    fn name_key(&self, name: &str) -> Vec<u8> {
        hmac::sign(&self.names, name.as_bytes()).as_ref().to_vec()
    }

    fn seal(&self, table: &'static str, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut data = plain.to_vec();
        let nonce = self
            .aead
            .seal_in_place_append_tag(Aad::from(aad(table, key)), &mut data)
            .map_err(|_| StoreError::Integrity {
                table,
                key: hex::encode(key),
            })?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&data);
        Ok(out)
    }

    fn open(&self, table: &'static str, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let bad = || StoreError::Integrity {
            table,
            key: printable_key(key),
        };
        let rest = sealed.strip_prefix(MAGIC).ok_or_else(bad)?;
        if rest.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut data = ct.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(aad(table, key)), &mut data)
            .map_err(|_| bad())?;
        Ok(plain.to_vec())
    }
}

fn printable_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.bytes().all(|b| b.is_ascii_graphic()) => s.to_string(),
        _ => hex::encode(key),
    }
}

/// Read the DB key from `path` (64 hex characters, optionally followed by a newline).
pub fn read_db_key(path: &Path) -> Result<[u8; 32], StoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let bad = |msg: &str| StoreError::Key {
        path: path.display().to_string(),
        msg: msg.to_string(),
    };
    let bytes = hex::decode(text.trim()).map_err(|_| bad("expected 64 hex characters"))?;
    bytes
        .try_into()
        .map_err(|_| bad("expected 64 hex characters (32 bytes)"))
}

/// Create a new random DB key file (mode 0600, 64 hex characters).
pub fn generate_db_key(path: &Path) -> Result<[u8; 32], StoreError> {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| StoreError::Key {
        path: path.display().to_string(),
        msg: "random generator failed".into(),
    })?;
    let text = format!("{}\n", hex::encode(key));
    veil_identity::write_private_file(path, text.as_bytes()).map_err(|e| StoreError::Key {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    Ok(key)
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<redb::Database>,
    sealer: Arc<Sealer>,
    writer: tokio::sync::mpsc::UnboundedSender<WriteReq>,
    sessions: Arc<AtomicU64>,
    counter: Arc<AtomicU64>,
    path: PathBuf,
    audit: AuditSlot,
}

type AuditSlot = Arc<std::sync::OnceLock<Arc<crate::audit::Audit>>>;

impl Store {
    /// Open (or create) the database at `path` with `db_key`, verify every record and start
    /// the writer thread.
    pub fn open(path: &Path, db_key: &[u8; 32]) -> Result<Self, StoreError> {
        let sealer = Arc::new(Sealer::new(db_key)?);
        let db = redb::Database::create(path).map_err(db_err)?;
        let db = Arc::new(db);
        let (counter, sessions) = init_and_verify(&db, &sealer)?;
        let counter = Arc::new(AtomicU64::new(counter));
        let sessions = Arc::new(AtomicU64::new(sessions));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let audit: AuditSlot = Arc::default();
        {
            let w = Writer {
                db: db.clone(),
                sealer: sealer.clone(),
                counter: counter.clone(),
                sessions: sessions.clone(),
                audit: audit.clone(),
            };
            std::thread::Builder::new()
                .name("cas-writer".into())
                .spawn(move || w.run(rx))
                .map_err(|source| StoreError::Io {
                    path: "cas-writer thread".into(),
                    source,
                })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                sealer,
                writer: tx,
                sessions,
                counter,
                path: path.to_path_buf(),
                audit,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Number of sessions (names).
    pub fn session_count(&self) -> u64 {
        self.inner.sessions.load(Ordering::Relaxed)
    }

    /// The monotonic counter (number of committed operations).
    pub fn counter(&self) -> u64 {
        self.inner.counter.load(Ordering::Relaxed)
    }

    /// Attach the audit log; [`Store::audit`] writes to it from then on (once per store).
    pub fn set_audit(&self, audit: Arc<crate::audit::Audit>) {
        if self.inner.audit.set(audit).is_err() {
            tracing::warn!("the audit log was already attached");
        }
    }

    /// The attached audit log, if any.
    pub fn audit_log(&self) -> Option<Arc<crate::audit::Audit>> {
        self.inner.audit.get().cloned()
    }

    /// Append `events` to the audit log as one group, durable (fsynced) when this returns.
    /// Without an attached log (unit tests of other parts) this does nothing.
    pub async fn audit(&self, events: Vec<veil_audit::Event>) -> Result<(), StoreError> {
        let Some(a) = self.inner.audit.get().cloned() else {
            return Ok(());
        };
        match tokio::task::spawn_blocking(move || a.record_blocking(events)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit log write failed");
                Err(StoreError::Audit(e.to_string()))
            }
            Err(e) => Err(StoreError::Audit(e.to_string())),
        }
    }

    /// The active version pointer of `name`.
    pub fn current(&self, name: &str) -> Result<Option<Current>, StoreError> {
        let key = self.inner.sealer.name_key(name);
        let txn = self.inner.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(CURRENT).map_err(db_err)?;
        let Some(v) = table.get(key.as_slice()).map_err(db_err)? else {
            return Ok(None);
        };
        let plain = self.inner.sealer.open("current", &key, v.value())?;
        let cur: Current = decode("current", &key, &plain)?;
        if cur.name != name {
            return Err(StoreError::Integrity {
                table: "current",
                key: hex::encode(&key),
            });
        }
        Ok(Some(cur))
    }

    /// A version by hash.
    pub fn version(&self, hash: &str) -> Result<Option<Version>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(VERSIONS).map_err(db_err)?;
        let Some(v) = table.get(hash.as_bytes()).map_err(db_err)? else {
            return Ok(None);
        };
        let plain = self
            .inner
            .sealer
            .open("versions", hash.as_bytes(), v.value())?;
        decode("versions", hash.as_bytes(), &plain).map(Some)
    }

    /// The sealed-at-rest secret values stored with version `hash` (unsealed), if any.
    pub fn secrets(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(SECRETS).map_err(db_err)?;
        let Some(v) = table.get(hash.as_bytes()).map_err(db_err)? else {
            return Ok(None);
        };
        self.inner
            .sealer
            .open("secrets", hash.as_bytes(), v.value())
            .map(Some)
    }

    /// All active version pointers.
    pub fn list(&self) -> Result<Vec<Current>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(CURRENT).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let plain = self.inner.sealer.open("current", k.value(), v.value())?;
            out.push(decode("current", k.value(), &plain)?);
        }
        out.sort_by(|a: &Current, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Apply `put` (create or compare-and-swap update) durably; returns the new counter value.
    pub async fn put(&self, put: Put) -> Result<u64, StoreError> {
        self.put_audited(put, Vec::new()).await
    }

    /// [`Store::put`], with `events` (the session write's audit entries, which must include
    /// exactly one `session_created` / `session_updated`) written to the audit log in the
    /// same group commit, durable before this returns.
    pub async fn put_audited(
        &self,
        put: Put,
        events: Vec<veil_audit::Event>,
    ) -> Result<u64, StoreError> {
        match self.submit(Op::Session(put), events).await? {
            Ok(n) => Ok(n),
            Err(_) => Err(StoreError::Commit("unexpected key-value outcome".into())),
        }
    }

    async fn submit(&self, op: Op, events: Vec<veil_audit::Event>) -> OpResult {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .send(WriteReq {
                op,
                events,
                reply: Reply::Async(tx),
            })
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    fn submit_blocking(&self, op: Op, events: Vec<veil_audit::Event>) -> OpResult {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.inner
            .writer
            .send(WriteReq {
                op,
                events,
                reply: Reply::Blocking(tx),
            })
            .map_err(|_| StoreError::WriterGone)?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }
}

fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    key: &[u8],
    plain: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(plain).map_err(|_| StoreError::Integrity {
        table,
        key: printable_key(key),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and integers to JSON cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

const CHECK: &[u8] = b"check";
const COUNTER: &[u8] = b"counter";
const CHECK_VALUE: &[u8] = b"veil-cas database";

/// Create the tables on first use, then unseal every record; returns (counter, session count).
fn init_and_verify(db: &redb::Database, sealer: &Sealer) -> Result<(u64, u64), StoreError> {
    {
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            txn.open_table(CURRENT).map_err(db_err)?;
            txn.open_table(VERSIONS).map_err(db_err)?;
            txn.open_table(SECRETS).map_err(db_err)?;
            if meta.get(CHECK).map_err(db_err)?.is_none() {
                let sealed = sealer.seal("meta", CHECK, CHECK_VALUE)?;
                meta.insert(CHECK, sealed.as_slice()).map_err(db_err)?;
                let sealed = sealer.seal("meta", COUNTER, &0u64.to_be_bytes())?;
                meta.insert(COUNTER, sealed.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
    }
    let txn = db.begin_read().map_err(db_err)?;
    let mut counter = 0;
    let mut sessions = 0;
    for (def, name) in [
        (META, "meta"),
        (CURRENT, "current"),
        (VERSIONS, "versions"),
        (SECRETS, "secrets"),
    ] {
        let table = txn.open_table(def).map_err(db_err)?;
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let plain = sealer.open(name, k.value(), v.value())?;
            match name {
                "meta" if k.value() == COUNTER => {
                    let bytes: [u8; 8] =
                        plain
                            .as_slice()
                            .try_into()
                            .map_err(|_| StoreError::Integrity {
                                table: "meta",
                                key: "counter".into(),
                            })?;
                    counter = u64::from_be_bytes(bytes);
                }
                "meta" if k.value() == CHECK && plain != CHECK_VALUE => {
                    return Err(StoreError::Integrity {
                        table: "meta",
                        key: "check".into(),
                    });
                }
                "current" => {
                    let _: Current = decode("current", k.value(), &plain)?;
                    sessions += 1;
                }
                "versions" => {
                    let _: Version = decode("versions", k.value(), &plain)?;
                }
                _ => {}
            }
        }
        if name == "current" && table.len().map_err(db_err)? != sessions {
            return Err(StoreError::Integrity {
                table: "current",
                key: "*".into(),
            });
        }
    }
    Ok((counter, sessions))
}

struct Writer {
    db: Arc<redb::Database>,
    sealer: Arc<Sealer>,
    counter: Arc<AtomicU64>,
    sessions: Arc<AtomicU64>,
    audit: AuditSlot,
}

impl Writer {
    fn run(self, mut rx: tokio::sync::mpsc::UnboundedReceiver<WriteReq>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let base = self.counter.load(Ordering::Relaxed);
            match apply_batch(&self.db, &self.sealer, &batch, base) {
                Ok((results, new_sessions)) => {
                    let applied = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count() as u64;
                    self.counter.store(base + applied, Ordering::Relaxed);
                    self.sessions.fetch_add(new_sessions, Ordering::Relaxed);
                    let audited = self.audit_batch(&mut batch, &results);
                    for (req, res) in batch.into_iter().zip(results) {
                        let res = match (&audited, res) {
                            (Err(e), Ok(Ok(_))) => Err(StoreError::Audit(e.clone())),
                            (_, r) => r,
                        };
                        req.reply.send(res);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "database commit failed");
                    let msg = e.to_string();
                    for req in batch {
                        req.reply.send(Err(StoreError::Commit(msg.clone())));
                    }
                }
            }
        }
    }

    /// Append the audit entries of the applied operations of a committed batch: one write,
    /// one fsync. Without an attached log (unit tests of other parts) nothing is written.
    fn audit_batch(&self, batch: &mut [WriteReq], results: &[OpResult]) -> Result<(), String> {
        let Some(audit) = self.audit.get() else {
            return Ok(());
        };
        let mut events = Vec::new();
        for (req, res) in batch.iter_mut().zip(results) {
            let Ok(Ok(counter)) = res else {
                continue;
            };
            if let Op::Kv(kv) = &req.op {
                events.push(veil_audit::Event::StateCommitted {
                    kind: kv.table.to_string(),
                    counter: *counter,
                });
            }
            events.append(&mut req.events);
        }
        if events.is_empty() {
            return Ok(());
        }
        audit.record_blocking(events).map_err(|e| {
            tracing::error!(error = %e, "audit log write failed");
            e.to_string()
        })
    }
}

type BatchResult = (Vec<OpResult>, u64);

/// Apply every operation whose compare-and-swap holds (seeing earlier operations of the same
/// batch), in one transaction committed with immediate durability.
fn apply_batch(
    db: &redb::Database,
    sealer: &Sealer,
    batch: &[WriteReq],
    base: u64,
) -> Result<BatchResult, StoreError> {
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(db_err)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut next = base;
    let mut new_sessions = 0;
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let mut current = txn.open_table(CURRENT).map_err(db_err)?;
        let mut versions = txn.open_table(VERSIONS).map_err(db_err)?;
        let mut secrets = txn.open_table(SECRETS).map_err(db_err)?;
        for req in batch {
            let put = match &req.op {
                Op::Session(put) => put,
                Op::Kv(kv) => {
                    let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(kv.table);
                    let mut t = txn.open_table(def).map_err(db_err)?;
                    let now = match t.get(kv.key.as_slice()).map_err(db_err)? {
                        Some(v) => Some(sealer.open(kv.table, &kv.key, v.value())?),
                        None => None,
                    };
                    if now != kv.expected {
                        results.push(Ok(Err(now)));
                        continue;
                    }
                    match &kv.new {
                        Some(new) => {
                            let sealed = sealer.seal(kv.table, &kv.key, new)?;
                            t.insert(kv.key.as_slice(), sealed.as_slice())
                                .map_err(db_err)?;
                        }
                        None => {
                            t.remove(kv.key.as_slice()).map_err(db_err)?;
                        }
                    }
                    next += 1;
                    results.push(Ok(Ok(next)));
                    continue;
                }
            };
            let key = sealer.name_key(&put.version.name);
            let existing = match current.get(key.as_slice()).map_err(db_err)? {
                Some(v) => {
                    let plain = sealer.open("current", &key, v.value())?;
                    Some(decode::<Current>("current", &key, &plain)?)
                }
                None => None,
            };
            let check = match (&put.expect_current, &existing) {
                (None, None) => Ok(true),
                (None, Some(_)) => Err(StoreError::Exists),
                (Some(_), None) => Err(StoreError::Missing),
                (Some(want), Some(cur)) if *want == cur.hash => Ok(false),
                (Some(_), Some(cur)) => Err(StoreError::Stale {
                    current: cur.hash.clone(),
                }),
            };
            let is_new = match check {
                Ok(n) => n,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let cur = Current {
                name: put.version.name.clone(),
                hash: put.hash.clone(),
            };
            let sealed = sealer.seal("current", &key, &encode(&cur))?;
            current
                .insert(key.as_slice(), sealed.as_slice())
                .map_err(db_err)?;
            let hk = put.hash.as_bytes();
            let sealed = sealer.seal("versions", hk, &encode(&put.version))?;
            versions.insert(hk, sealed.as_slice()).map_err(db_err)?;
            if let Some(s) = &put.secrets {
                let sealed = sealer.seal("secrets", hk, s)?;
                secrets.insert(hk, sealed.as_slice()).map_err(db_err)?;
            }
            next += 1;
            if is_new {
                new_sessions += 1;
            }
            results.push(Ok(Ok(next)));
        }
        let sealed = sealer.seal("meta", COUNTER, &next.to_be_bytes())?;
        meta.insert(COUNTER, sealed.as_slice()).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)?;
    Ok((results, new_sessions))
}

/// Tables the generic key-value API must not touch (the session store's own).
const RESERVED_TABLES: [&str; 4] = ["meta", "current", "versions", "secrets"];

/// A generic sealed key-value API for other parts of the CAS (the workload API's volume tags,
/// volume keys, OTP state and node registry). Keys are stored as HMAC-SHA256(name key,
/// table ‖ 0 ‖ key), so they do not reveal session or volume names; values are sealed with
/// AAD = table ‖ 0 ‖ stored key ‖ schema version (decision 17). Writes are compare-and-swap
/// operations of the writer's group commit (durable before they return); each applied one
/// moves the monotonic counter and is audited (`state_committed`, kind = the table) in the
/// same group, so that rolling these tables back with the DB is detected at start.
impl Store {
    fn kv_key(&self, table: &'static str, key: &[u8]) -> Result<Vec<u8>, StoreError> {
        if RESERVED_TABLES.contains(&table) {
            return Err(StoreError::Commit(format!(
                "table `{table}` is reserved for sessions"
            )));
        }
        let mut msg = Vec::with_capacity(table.len() + 1 + key.len());
        msg.extend_from_slice(table.as_bytes());
        msg.push(0);
        msg.extend_from_slice(key);
        Ok(hmac::sign(&self.inner.sealer.names, &msg).as_ref().to_vec())
    }

    /// The unsealed value of `key` in `table`, if any.
    pub fn kv_get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let k = self.kv_key(table, key)?;
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
        let txn = self.inner.db.begin_read().map_err(db_err)?;
        let t = match txn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(e)),
        };
        let Some(v) = t.get(k.as_slice()).map_err(db_err)? else {
            return Ok(None);
        };
        self.inner.sealer.open(table, &k, v.value()).map(Some)
    }

    /// Durably set `key` in `table` to `new` if its current (unsealed) value equals
    /// `expected` (`None` = absent). Returns `Ok(Ok(()))` when written, `Ok(Err(current))`
    /// when the comparison failed (nothing written). Blocking: call from a blocking context
    /// (it waits for the writer thread's group commit).
    pub fn kv_compare_and_swap(
        &self,
        table: &'static str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<Result<(), Option<Vec<u8>>>, StoreError> {
        let op = self.kv_op(table, key, expected, Some(new))?;
        Ok(self.submit_blocking(op, Vec::new())?.map(|_| ()))
    }

    /// Async compare-and-swap of `key` in `table`: set it to `new` (`None`: delete it) if its
    /// current value equals `expected` (`None` = absent), in the writer's group commit, with
    /// `events` (what the change means) audited in the same group. Returns `Ok(Ok(counter))`
    /// when written, `Ok(Err(current))` when the comparison failed (nothing written or
    /// audited).
    pub async fn kv_swap(
        &self,
        table: &'static str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
        events: Vec<veil_audit::Event>,
    ) -> Result<Result<u64, Option<Vec<u8>>>, StoreError> {
        let op = self.kv_op(table, key, expected, new)?;
        self.submit(op, events).await
    }

    fn kv_op(
        &self,
        table: &'static str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Op, StoreError> {
        Ok(Op::Kv(KvWrite {
            table,
            key: self.kv_key(table, key)?,
            expected: expected.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        }))
    }

    /// Every (unsealed) value of `table`, in stored-key order (the keys are MACs and are not
    /// returned). For small tables read at start (the persisted leases).
    pub fn kv_values(&self, table: &'static str) -> Result<Vec<Vec<u8>>, StoreError> {
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
        if RESERVED_TABLES.contains(&table) {
            return Err(StoreError::Commit(format!(
                "table `{table}` is reserved for sessions"
            )));
        }
        let txn = self.inner.db.begin_read().map_err(db_err)?;
        let t = match txn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            out.push(self.inner.sealer.open(table, k.value(), v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(name: &str, pred: Option<&str>) -> Version {
        Version {
            name: name.into(),
            yaml: format!("name: {name}\n"),
            creator_key_hash: "c".repeat(64),
            predecessor: pred.map(String::from),
            created_at: 1,
        }
    }

    #[tokio::test]
    async fn create_update_race_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cas.redb");
        let key = [7u8; 32];
        let store = Store::open(&path, &key).unwrap();
        store
            .put(Put {
                hash: "h1".into(),
                version: version("s", None),
                expect_current: None,
                secrets: Some(b"sv".to_vec()),
            })
            .await
            .unwrap();
        assert!(matches!(
            store
                .put(Put {
                    hash: "h1b".into(),
                    version: version("s", None),
                    expect_current: None,
                    secrets: None,
                })
                .await,
            Err(StoreError::Exists)
        ));
        let mut tasks = Vec::new();
        for i in 0..10 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.put(Put {
                    hash: format!("h2-{i}"),
                    version: version("s", Some("h1")),
                    expect_current: Some("h1".into()),
                    secrets: None,
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 1);
        assert_eq!(store.counter(), 2);
        assert_eq!(store.session_count(), 1);
        let cur = store.current("s").unwrap().unwrap();
        assert!(cur.hash.starts_with("h2-"));
        assert_eq!(store.secrets("h1").unwrap().unwrap(), b"sv");
        drop(store);
        // The writer thread holds the database until its channel closes.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let store = Store::open(&path, &key).unwrap();
        assert_eq!(store.counter(), 2);
        assert_eq!(store.version("h1").unwrap().unwrap().name, "s");
        assert!(store.current("other").unwrap().is_none());
        drop(store);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let wrong = Store::open(&path, &[8u8; 32]);
        assert!(matches!(wrong, Err(StoreError::Integrity { .. })));
    }

    #[tokio::test]
    async fn key_value_writes_move_the_counter_and_mix_with_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cas.redb"), &[3u8; 32]).unwrap();
        let mut tasks = Vec::new();
        for i in 0..20u8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    s.kv_swap("t", &[i], None, Some(&[i]), Vec::new())
                        .await
                        .unwrap()
                        .unwrap();
                } else {
                    s.put(Put {
                        hash: format!("h{i}"),
                        version: version(&format!("s{i}"), None),
                        expect_current: None,
                        secrets: None,
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.counter(), 20);
        // A failed comparison writes nothing and does not count.
        assert_eq!(
            store
                .kv_swap("t", &[0], None, Some(b"x"), Vec::new())
                .await
                .unwrap(),
            Err(Some(vec![0]))
        );
        assert_eq!(store.counter(), 20);
        // Delete, and the blocking form.
        assert_eq!(
            store
                .kv_swap("t", &[0], Some(&[0]), None, Vec::new())
                .await
                .unwrap(),
            Ok(21)
        );
        assert_eq!(store.kv_get("t", &[0]).unwrap(), None);
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            s.kv_compare_and_swap("t", &[0], None, b"y")
                .unwrap()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(store.counter(), 22);
        assert_eq!(store.kv_values("t").unwrap().len(), 10);
        let path = dir.path().join("cas.redb");
        drop(store);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(Store::open(&path, &[3u8; 32]).unwrap().counter(), 22);
    }

    #[test]
    fn db_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = generate_db_key(&p).unwrap();
        assert_eq!(read_db_key(&p).unwrap(), k);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&p, "abcd\n").unwrap();
        let e = read_db_key(&p).unwrap_err().to_string();
        assert!(e.contains("64 hex"), "{e}");
        std::fs::write(&p, "zz".repeat(32)).unwrap();
        assert!(read_db_key(&p).is_err());
    }

    #[test]
    fn sealed_records_are_bound_to_table_and_key() {
        let s = Sealer::new(&[1u8; 32]).unwrap();
        let sealed = s.seal("versions", b"a", b"secret text").unwrap();
        assert_eq!(s.open("versions", b"a", &sealed).unwrap(), b"secret text");
        assert!(s.open("versions", b"b", &sealed).is_err());
        assert!(s.open("current", b"a", &sealed).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(s.open("versions", b"a", &flipped).is_err());
        assert!(!sealed.windows(11).any(|w| w == b"secret text"));
    }
}
