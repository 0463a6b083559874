//! # veil-client: the one client of the CAS and LAS
//!
//! Used by the CLI, the launcher and the integration tests; it links no server code.
//!
//! - [`config`]: [`CliConfig`], the pinned CAS keys in `~/.veil/config.json`
//!   (`-c/--config`, `VEIL_CLI_CONFIG`, `SCONE_CLI_CONFIG`; the first pinned CAS is the default), and [`identity_path`] /
//!   [`load_identity`], the client identity (`~/.veil/identity.pem`, `VEIL_IDENTITY`).
//! - [`connection`]: [`Connection`], one keep-alive HTTPS connection (TLS 1.3) to a CAS whose
//!   key hash must equal the pinned one, with an optional client identity and a response-size
//!   limit; typed calls for the session routes and JSON bodies ([`Connection::post_json`]).
//! - [`workload`]: typed workload-API calls (nonce, attest, tags, heartbeat, exit) and
//!   [`workload::WorkloadChannel`], the launcher's blocking connection with an ephemeral key.
//! - [`las`]: the LAS unix-socket client (evidence for this process).
//! - [`tsm`]: hardware evidence inside a TDX or SEV-SNP guest through Linux configfs-tsm.

pub mod config;
pub mod connection;
pub mod las;
pub mod tsm;
pub mod workload;

pub use config::{
    CliConfig, PinnedCas, config_path, identity_path, load_identity, set_config_path,
    with_default_port,
};
pub use connection::{Answer, Connection, MAX_RESPONSE, PlainConnection, encode_path};

pub use hyper::Method;

/// Default client API port of a CAS.
pub const DEFAULT_PORT: u16 = 8081;

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CAS is not pinned.
    #[error(
        "CAS `{0}` is not attested: run `veil cas attest {0} --key-hash <CAS key hash>` first (the CAS prints its key hash at start and with `veil cas show-identification`)"
    )]
    Unpinned(String),
    /// No CAS is pinned at all.
    #[error(
        "no CAS is attested: run `veil cas attest <ADDR> --key-hash <CAS key hash>` first, or pass --cas"
    )]
    NoDefault,
    /// The CAS presented a different key than the pinned one.
    #[error(
        "the key of CAS `{cas}` changed: pinned {pinned}, the server presented {seen}. If this change is expected, attest it again with `veil cas attest {cas} --key-hash {seen}`; otherwise do not trust this server"
    )]
    KeyChanged {
        /// CAS name.
        cas: String,
        /// The pinned key hash.
        pinned: String,
        /// The key hash presented.
        seen: String,
    },
    /// Establishing the connection failed (resolving, TCP, TLS handshake).
    #[error("cannot talk to CAS at {addr}: {msg}")]
    Connect {
        /// Address.
        addr: String,
        /// What failed.
        msg: String,
    },
    /// Sending a request on an established connection failed.
    #[error("cannot talk to CAS at {addr}: {msg}")]
    Send {
        /// Address.
        addr: String,
        /// What failed.
        msg: String,
    },
    /// Reading an answer failed (or it exceeded the response-size limit).
    #[error("cannot talk to CAS at {addr}: {msg}")]
    Receive {
        /// Address.
        addr: String,
        /// What failed.
        msg: String,
    },
    /// The CAS answered with an error.
    #[error("{}", msg.join(": "))]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// `msg` chain.
        msg: Vec<String>,
    },
    /// The CAS answered an error status without an error body.
    #[error("the CAS answered HTTP {status}")]
    Status {
        /// HTTP status.
        status: u16,
    },
    /// The CAS answered something unexpected.
    #[error("unexpected answer from the CAS (HTTP {status}): {detail}")]
    Protocol {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// Client config file problem.
    #[error("{path}: {msg}")]
    Config {
        /// File.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A request body could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// The I/O runtime of a blocking channel could not be started.
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    /// Identity problem.
    #[error(transparent)]
    Identity(#[from] veil_identity::IdentityError),
}
