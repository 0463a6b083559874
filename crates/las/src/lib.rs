//! The local attestation service (LAS) of the `node` tier: one per node, run by the node's root
//! in the host pid namespace (design decision 11).
//!
//! * Evidence is given **only over a unix `SOCK_SEQPACKET` socket** (default
//!   `/run/veil/las.sock`). The pid of the asking process comes from the kernel (the
//!   `SCM_CREDENTIALS` of the request message itself), never from the request. The LAS hashes
//!   `/proc/<pid>/exe` itself, checking the executable's (dev, inode), the process start time and
//!   `TracerPid == 0` before and after hashing, and signs [`veil_attest::NodeClaims`]
//!   {node id, time, pid, uid, gid, cgroup, launcher hash, target, measurement, report data}
//!   with the node key (ECDSA P-256). The program hash in the target is the measured
//!   launcher's word, so only code the LAS trusts may ask (decision 20): it refuses a
//!   requester whose executable's hash is not in its `--launcher-hash` list, that is
//!   dynamically linked, has `LD_*` in its environment, maps executable memory other than its
//!   executable, or is traced. The pid, uid and gid are the kernel's `SCM_CREDENTIALS`
//!   (translated into the LAS's pid and user namespaces).
//! * The socket is root-only (`root:root`, 0600) unless `--socket-gid` opts a group in
//!   (`root:gid`, 0660). Connections are capped globally and per uid (`SO_PEERCRED`), with a
//!   reserve for root, and time out quickly when idle.
//! * TCP (default `0.0.0.0:18766`) serves only `GET /healthz` and `GET /v1/node-key`.
//!
//! Modules: [`elf`] (is an executable static?), [`key`] (the node key in the data dir), [`procfs`] (measuring a process),
//! [`server`] (both listeners, and [`server::parse_request`], the one parser of a socket
//! message). This crate is the server only: the socket messages are in `veil_api::las`, the
//! client side of the socket (the launcher's) in `veil_client::las`, so the launcher links no
//! LAS server code.

#![deny(missing_docs)]

pub mod elf;
pub mod key;
pub mod procfs;
pub mod server;

/// Default TCP listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:18766";
/// Default unix socket path.
pub use veil_api::las::DEFAULT_SOCKET;

/// Errors of the LAS.
#[derive(Debug, thiserror::Error)]
pub enum LasError {
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (names the path).
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The node key file is unusable.
    #[error("{path}: not a PKCS#8 ECDSA P-256 key")]
    BadKey {
        /// The key file.
        path: String,
    },
    /// Cryptography failed (key generation or signing).
    #[error("crypto operation failed: {0}")]
    Crypto(&'static str),
    /// The asking process could not be measured.
    #[error("cannot measure process {pid}: {reason}")]
    Measure {
        /// The pid.
        pid: i32,
        /// Why.
        reason: String,
    },
    /// A request was malformed.
    #[error("malformed LAS message: {0}")]
    Protocol(String),
}

impl LasError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}
