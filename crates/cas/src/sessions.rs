//! Session lifecycle (reference §2.6) and access-policy evaluation: one implementation behind
//! both REST surfaces.
//!
//! - create: the name is free, no `predecessor`; `a/b` needs session `a` to exist and the
//!   caller in `a`'s `create_sessions`.
//! - update: `predecessor` = the current hash (compare-and-swap in the store), caller in the
//!   current version's `update`.
//! - read (current or by hash) and list: caller in the *current* version's `read`
//!   (`list_sessions` for listing); otherwise "Session not found" (no existence oracle). A read
//!   answers the redacted rendering (`Session::to_yaml_redacted`, decision 22): every secret
//!   value, literal key, token and OTP secret is `$$VEIL::REDACTED$$`, for every caller, the
//!   creator included; the hash answered is the stored version's (over the unredacted form).
//! - The CAS sets `creator` to the caller's certificate before hashing; `creator` is hashed as
//!   its key hash (decision 15).
//! - Everything the policy crate marks "not supported yet" is refused (decision 14).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use veil_policy::{AccessEntry, Creator, Op, Rule, Session};
use veil_secrets::{ImportResolver, SecretValues, SecretsError, StoredSecret};

use crate::error::ApiError;
use crate::store::{Put, Store, StoreError, Version};

/// A client identified by its TLS certificate.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Certificate PEM.
    pub pem: String,
    /// Key hash of its public key.
    pub key_hash: String,
}

impl Peer {
    /// The peer of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, veil_identity::IdentityError> {
        Ok(Self {
            key_hash: veil_identity::key_hash_of_cert_der(der)?,
            pem: veil_identity::cert_der_to_pem(der),
        })
    }
}

/// A stored version, parsed.
#[derive(Debug)]
pub struct Loaded {
    /// Its hash.
    pub hash: String,
    /// The stored record.
    pub version: Version,
    /// The parsed session.
    pub session: Session,
}

/// The session service.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
    cache: Arc<Mutex<HashMap<String, Arc<Loaded>>>>,
}

const CACHE_LIMIT: usize = 4096;

/// Whether `rule` admits `caller` for a version created by `creator_key_hash`.
pub fn allowed(rule: &Rule, caller_key_hash: &str, creator_key_hash: &str) -> bool {
    rule.0.iter().any(|e| match e {
        AccessEntry::Creator => caller_key_hash == creator_key_hash,
        AccessEntry::Any => true,
        AccessEntry::None => false,
        AccessEntry::KeyHash(h) => h == caller_key_hash,
        AccessEntry::Certificate { spki_der, .. } => {
            veil_identity::key_hash(spki_der) == caller_key_hash
        }
        // Refused at create/update ("not supported yet"); never grant anything.
        AccessEntry::Signer { .. }
        | AccessEntry::RequireAll(_)
        | AccessEntry::RequireAtLeast(..)
        | AccessEntry::Placeholder(_) => false,
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The namespace (parent) of a session name, if it has one.
pub fn parent(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(p, _)| p)
}

fn refuse_unsupported(s: &Session) -> Result<(), ApiError> {
    let mut msgs: Vec<String> = s
        .warnings
        .iter()
        .filter(|w| w.is_unsupported())
        .map(|w| w.message.clone())
        .collect();
    let ap = &s.access_policy;
    for (field, rule) in [
        ("read", &ap.read),
        ("update", &ap.update),
        ("create_sessions", &ap.create_sessions),
        ("list_sessions", &ap.list_sessions),
    ] {
        if let Some(r) = rule
            && r.0.iter().any(|e| matches!(e, AccessEntry::Placeholder(_)))
        {
            msgs.push(format!(
                "`access_policy.{field}` with a secret placeholder is not supported yet"
            ));
        }
    }
    if msgs.is_empty() {
        return Ok(());
    }
    msgs.sort();
    msgs.dedup();
    let mut chain = vec![format!("Cannot accept session '{}'", s.name)];
    chain.extend(msgs);
    Err(ApiError::NotSupported(chain))
}

impl Sessions {
    /// Sessions stored in `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Load version `hash` (parsed; cached, versions are immutable).
    pub fn load(&self, hash: &str) -> Result<Option<Arc<Loaded>>, ApiError> {
        if let Ok(c) = self.cache.lock()
            && let Some(l) = c.get(hash)
        {
            return Ok(Some(l.clone()));
        }
        let Some(version) = self.store.version(hash)? else {
            return Ok(None);
        };
        let session = veil_policy::parse(&format!("stored session {hash}"), &version.yaml)
            .map_err(|e| {
                tracing::error!(hash, error = %e, "a stored session does not parse");
                ApiError::Internal
            })?;
        let loaded = Arc::new(Loaded {
            hash: hash.to_string(),
            version,
            session,
        });
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(hash.to_string(), loaded.clone());
        }
        Ok(Some(loaded))
    }

    /// The active version of `name`.
    pub fn current(&self, name: &str) -> Result<Option<Arc<Loaded>>, ApiError> {
        match self.store.current(name)? {
            Some(cur) => self.load(&cur.hash),
            None => Ok(None),
        }
    }

    fn may(&self, l: &Loaded, op: Op, caller: &Peer) -> bool {
        allowed(
            &l.session.access_policy.effective(op),
            &caller.key_hash,
            &l.version.creator_key_hash,
        )
    }

    /// Create or update from an uploaded YAML document; returns the new hash. The secret
    /// values of the new version are materialized (generated, migrated, imported) and stored
    /// sealed in the same write transaction as the session.
    pub async fn upload(&self, caller: &Peer, text: &str) -> Result<String, ApiError> {
        let mut session = veil_policy::parse("session", text).map_err(|e| match e {
            veil_policy::PolicyError::Invalid(d) => {
                let mut m = vec!["Invalid session".to_string()];
                m.extend(d.0.iter().map(|d| d.to_string()));
                ApiError::InvalidSession(m)
            }
            other => ApiError::InvalidSession(vec!["Invalid session".into(), other.to_string()]),
        })?;
        refuse_unsupported(&session)?;
        let name = session.name.clone();
        session.creator = Some(Creator::Certificate {
            pem: caller.pem.clone(),
        });
        let hash = session.hash(Some(&caller.key_hash));
        let predecessor = session.predecessor.clone();
        let previous = match &predecessor {
            None => {
                if self.store.current(&name)?.is_some() {
                    return Err(ApiError::Exists(vec![
                        format!("Cannot create session '{name}'"),
                        "A session with this name exists; to update it, set `predecessor` to its current hash (veil session update does this)".into(),
                    ]));
                }
                if let Some(ns) = parent(&name) {
                    let outer = format!("Cannot create session '{name}'");
                    let Some(nsl) = self.current(ns)? else {
                        return Err(ApiError::SessionNotFound(vec![
                            outer,
                            format!("Namespace session '{ns}' not found"),
                        ]));
                    };
                    if !self.may(&nsl, Op::CreateSessions, caller) {
                        if self.may(&nsl, Op::Read, caller) {
                            return Err(ApiError::Forbidden(vec![
                                outer,
                                format!(
                                    "The caller is not in `create_sessions` of namespace '{ns}'"
                                ),
                            ]));
                        }
                        return Err(ApiError::SessionNotFound(vec![
                            outer,
                            format!("Namespace session '{ns}' not found"),
                        ]));
                    }
                }
                None
            }
            Some(pred) => {
                let outer = format!("Cannot update session '{name}'");
                let Some(cur) = self.current(&name)? else {
                    return Err(ApiError::not_found(outer));
                };
                if !self.may(&cur, Op::Update, caller) {
                    if self.may(&cur, Op::Read, caller) {
                        return Err(ApiError::Forbidden(vec![
                            outer,
                            "The caller is not in the `update` policy of the current version"
                                .into(),
                        ]));
                    }
                    return Err(ApiError::not_found(outer));
                }
                if *pred != cur.hash {
                    return Err(stale(&name, pred, &cur.hash));
                }
                Some(cur)
            }
        };
        let values = self.materialize(&session, &hash, previous.as_deref())?;
        self.check_namespace_hash(&session)?;
        let sealed_secrets = serde_json::to_vec(&values).map_err(|e| {
            tracing::error!(error = %e, "secret values do not serialize");
            ApiError::Internal
        })?;
        let version = Version {
            name: name.clone(),
            yaml: session.to_yaml(),
            creator_key_hash: caller.key_hash.clone(),
            predecessor: predecessor.clone(),
            created_at: now(),
        };
        let put = Put {
            hash: hash.clone(),
            version,
            expect_current: predecessor.clone(),
            secrets: Some(sealed_secrets),
        };
        // Durable in the audit log, in the same group commit, before the response (decision 17).
        let event = match &predecessor {
            None => veil_audit::Event::SessionCreated {
                session: name.clone(),
                hash: hash.clone(),
                by: caller.key_hash.clone(),
            },
            Some(p) => veil_audit::Event::SessionUpdated {
                session: name.clone(),
                hash: hash.clone(),
                predecessor: p.clone(),
                by: caller.key_hash.clone(),
            },
        };
        match self.store.put_audited(put, vec![event]).await {
            Ok(_) => {
                tracing::info!(hash = %hash, caller = %caller.key_hash, update = predecessor.is_some(), "session stored");
                Ok(hash)
            }
            Err(StoreError::Exists) => Err(ApiError::Exists(vec![
                format!("Cannot create session '{name}'"),
                "A session with this name was created concurrently".into(),
            ])),
            Err(StoreError::Stale { current }) => Err(stale(
                &name,
                predecessor.as_deref().unwrap_or_default(),
                &current,
            )),
            Err(StoreError::Missing) => Err(ApiError::not_found(format!(
                "Cannot update session '{name}'"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Read `name` (its active version, or version `hash`): (redacted normalised YAML, hash).
    /// The YAML is [`Session::to_yaml_redacted`] of the stored version, never the stored text:
    /// no secret material leaves through a read (decision 22).
    pub fn read(
        &self,
        caller: &Peer,
        name: &str,
        hash: Option<&str>,
    ) -> Result<(String, String), ApiError> {
        let outer = format!("Cannot read session '{name}'");
        let Some(cur) = self.current(name)? else {
            return Err(ApiError::not_found(outer));
        };
        if !self.may(&cur, Op::Read, caller) {
            return Err(ApiError::not_found(outer));
        }
        let l = match hash {
            None => cur,
            Some(h) => match self.load(h)? {
                Some(l) if l.version.name == name => l,
                _ => {
                    return Err(ApiError::SessionNotFound(vec![
                        outer,
                        format!("Session not found: no version {h} of this session"),
                    ]));
                }
            },
        };
        Ok((l.session.to_yaml_redacted(), l.hash.clone()))
    }

    /// Names of the sessions the caller may list: those whose active version's
    /// `list_sessions` admits the caller, optionally only below `namespace`.
    pub fn list(&self, caller: &Peer, namespace: Option<&str>) -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        for cur in self.store.list()? {
            if let Some(ns) = namespace
                && !cur.name.starts_with(&format!("{ns}/"))
            {
                continue;
            }
            if let Some(l) = self.load(&cur.hash)?
                && self.may(&l, Op::ListSessions, caller)
            {
                out.push(cur.name);
            }
        }
        Ok(out)
    }
}

/// Answers imports of a session being created/updated from the exporters' current versions.
struct Imports<'a> {
    sessions: &'a Sessions,
    importer_hash: &'a str,
}

impl ImportResolver for Imports<'_> {
    fn resolve(
        &self,
        importer_session: &str,
        source: &veil_policy::ImportSource,
    ) -> Result<StoredSecret, SecretsError> {
        let fail = |reason: &str| SecretsError::Import {
            secret: source.secret.clone(),
            source_session: source.session.clone(),
            source_secret: source.secret.clone(),
            reason: reason.to_string(),
        };
        let exporter = self
            .sessions
            .current(&source.session)
            .map_err(|_| fail("the exporting session cannot be read"))?
            .ok_or_else(|| fail("no such session"))?;
        veil_secrets::check_export(
            &exporter.session,
            &exporter.hash,
            &source.secret,
            importer_session,
            Some(self.importer_hash),
            source.session_hash.as_deref(),
        )?;
        let values = self
            .sessions
            .secret_values(&exporter.hash)
            .map_err(|_| fail("the exporting session's values cannot be read"))?;
        values
            .0
            .get(&source.secret)
            .cloned()
            .ok_or_else(|| fail("the exporting session has no value for it"))
    }
}

impl Sessions {
    /// The secret values stored with version `hash` (empty when it has none).
    pub fn secret_values(&self, hash: &str) -> Result<SecretValues, ApiError> {
        match self.store.secrets(hash)? {
            None => Ok(SecretValues::default()),
            Some(raw) => serde_json::from_slice(&raw).map_err(|e| {
                tracing::error!(hash, error = %e, "stored secret values do not deserialize");
                ApiError::Internal
            }),
        }
    }

    /// Materialize the secret values of a new version (design-notes 18: eagerly, stored in the
    /// create/update transaction).
    fn materialize(
        &self,
        session: &Session,
        hash: &str,
        previous: Option<&Loaded>,
    ) -> Result<SecretValues, ApiError> {
        let prev_values = match previous {
            Some(p) => Some(self.secret_values(&p.hash)?),
            None => None,
        };
        let prev = previous
            .zip(prev_values.as_ref())
            .map(|(p, v)| (&p.session, v));
        let imports = Imports {
            sessions: self,
            importer_hash: hash,
        };
        veil_secrets::materialize(session, prev, &imports, std::time::SystemTime::now()).map_err(
            |e| {
                ApiError::InvalidSession(vec![
                    format!("Cannot produce the secrets of session '{}'", session.name),
                    e.to_string(),
                ])
            },
        )
    }

    /// `namespace_hash` (reference §2.6): when present, the session's namespace must exist and
    /// its active version must have this hash.
    fn check_namespace_hash(&self, session: &Session) -> Result<(), ApiError> {
        let Some(want) = &session.namespace_hash else {
            return Ok(());
        };
        let outer = format!("Cannot accept session '{}'", session.name);
        let Some(ns) = parent(&session.name) else {
            return Err(ApiError::InvalidSession(vec![
                outer,
                "`namespace_hash` is set, but the session name has no namespace (no `/`)".into(),
            ]));
        };
        let current = self.current(ns)?.map(|l| l.hash.clone());
        if current.as_deref() != Some(want.to_ascii_lowercase().as_str()) {
            return Err(ApiError::Stale(vec![
                outer,
                format!("`namespace_hash` {want} is not the active version of namespace '{ns}'"),
            ]));
        }
        Ok(())
    }

    /// Public values of session `name` (no client certificate needed): all `export_public`
    /// secrets, or the one named `secret`, in SCONE's JSON shapes.
    ///
    /// No existence oracle (issue 16): a client without a certificate must not learn whether a
    /// session exists. A session that does not exist answers exactly like one that exports
    /// nothing public: `session=X` → 200 `{"values":{}}` (SCONE's shape, empty), and
    /// `session=X,secret=S` → 404 `secret_not_visible` with SCONE's two messages ("Secret does
    /// not exist or is not visible for a public client"), whether X or S is the missing part.
    pub fn public_values(
        &self,
        name: &str,
        secret: Option<&str>,
    ) -> Result<serde_json::Value, ApiError> {
        let loaded = self.current(name)?;
        match secret {
            Some(s) => {
                let refused =
                    || ApiError::SecretNotVisible(veil_secrets::public_value_error_msg(name, s));
                let Some(l) = loaded else {
                    return Err(refused());
                };
                let values = self.secret_values(&l.hash)?;
                veil_secrets::public_value_json(&l.session, &values, s).map_err(|_| refused())
            }
            None => {
                let Some(l) = loaded else {
                    // Same answer as an existing session without public secrets.
                    return Ok(serde_json::json!({ "values": {} }));
                };
                let values = self.secret_values(&l.hash)?;
                Ok(veil_secrets::public_values_json(&l.session, &values))
            }
        }
    }
}

fn stale(name: &str, pred: &str, current: &str) -> ApiError {
    ApiError::Stale(vec![
        format!("Cannot update session '{name}'"),
        format!(
            "The predecessor {pred} is not the current version {current}: the session was updated meanwhile; read it again and retry"
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_entries() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert!(allowed(&Rule(vec![AccessEntry::Creator]), &a, &a));
        assert!(!allowed(&Rule(vec![AccessEntry::Creator]), &b, &a));
        assert!(allowed(&Rule(vec![AccessEntry::Any]), &b, &a));
        assert!(!allowed(&Rule(vec![AccessEntry::None]), &a, &a));
        assert!(allowed(
            &Rule(vec![AccessEntry::KeyHash(b.clone())]),
            &b,
            &a
        ));
        let id = veil_identity::Identity::generate("x", &[]).unwrap();
        let cert = AccessEntry::Certificate {
            pem: id.cert_pem(),
            spki_der: id.spki_der().to_vec(),
        };
        assert!(allowed(&Rule(vec![cert.clone()]), &id.key_hash(), &a));
        assert!(!allowed(&Rule(vec![cert]), &b, &a));
        assert_eq!(parent("a/b/c"), Some("a/b"));
        assert_eq!(parent("a"), None);
    }
}
