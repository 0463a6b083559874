//! # veil-cas: the configuration and attestation service
//!
//! The CAS stores policies as immutable, versioned **sessions** that only their owners can read
//! or change (SCONE's session lifecycle, reference §2.6), in an encrypted redb database, and
//! serves them over a TLS 1.3 REST API that speaks SCONE's shapes.
//!
//! - [`store`]: the sealed (AES-256-GCM) redb store with group commit and a monotonic counter.
//! - [`sessions`]: create / update / read / list and access-policy evaluation.
//! - [`server`]: the TLS accept loop (client certificate optional at the handshake, enforced per
//!   route by [`server::Caller`] and [`server::Owner`]), the client API router (port 8081) and the enclave router
//!   (port 18765).
//! - [`error`]: the single mapping of errors of both ports to HTTP status + `{"code","msg"}`.
//! - [`routing`]: the route tables both routers and the OpenAPI test are built from.
//! - [`workload`]: the workload API (port 18765), volume tags and leases, the node registry.
//! - [`metrics`]: Prometheus text metrics.
//! - [`config`]: the `cas.toml` file.
//! - [`audit`]: the signed, hash-chained audit log and the DB-rollback check against it.
//!
//! Invariants: the CAS never returns a generated secret to a session client; a write is answered
//! only after its transaction is durable; a record that fails authentication is never returned.

pub mod audit;
pub mod config;
pub mod error;
pub mod metrics;
pub mod routing;
pub mod server;
pub mod sessions;
pub mod store;
pub mod workload;

use std::path::Path;

use veil_identity::Identity;

pub use server::{Running, ServeOptions, start};

/// The hand-written OpenAPI document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// File name of the CAS identity (PKCS#8 key + certificate) in the data directory.
pub const IDENTITY_FILE: &str = "cas-identity.pem";
/// File name of the generated DB key in the data directory.
pub const DB_KEY_FILE: &str = "cas.db-key";

/// Errors starting the CAS.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// File access failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The identity could not be loaded or created.
    #[error("CAS identity: {0}")]
    Identity(#[from] veil_identity::IdentityError),
    /// The database could not be opened (or failed authentication).
    #[error("CAS database: {0}")]
    Store(#[from] store::StoreError),
    /// The configuration file is invalid.
    #[error("{0}")]
    Config(String),
    /// The audit log cannot be read, continued or signed.
    #[error("audit log: {0}")]
    Audit(String),
    /// The database is behind the audit log (restored or rolled back).
    #[error("CAS database rollback detected: {0}")]
    RolledBack(String),
}

/// Load `<data_dir>/cas-identity.pem` or create it (P-256, SANs `alt_names`).
pub fn load_or_create_cas_identity(
    data_dir: &Path,
    alt_names: &[String],
) -> Result<Identity, CasError> {
    let path = data_dir.join(IDENTITY_FILE);
    if path.exists() {
        return Ok(Identity::load(&path)?);
    }
    let id = Identity::generate("veil CAS", alt_names)?;
    id.save(&path)?;
    tracing::info!(path = %path.display(), "created the CAS identity");
    Ok(id)
}

/// The key hash of the CAS identity in `data_dir`, if it exists.
pub fn show_identification(data_dir: &Path) -> Result<String, CasError> {
    Ok(Identity::load(&data_dir.join(IDENTITY_FILE))?.key_hash())
}

/// The DB key: from the configured file, or generated next to the DB (with a warning).
pub fn db_key(opts: &ServeOptions) -> Result<[u8; 32], CasError> {
    if let Some(f) = &opts.db_key_file {
        return Ok(store::read_db_key(f)?);
    }
    let path = opts.data_dir.join(DB_KEY_FILE);
    if path.exists() {
        tracing::warn!(path = %path.display(), "using the DB key stored next to the database; production must supply it with --db-key-file from a secret store");
        return Ok(store::read_db_key(&path)?);
    }
    tracing::warn!(path = %path.display(), "generated a DB key next to the database (mode 0600); production must supply it with --db-key-file from a secret store");
    Ok(store::generate_db_key(&path)?)
}
