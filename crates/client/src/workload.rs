//! Typed calls of the CAS workload API (enclave port, `veil_api::workload`), for the launcher,
//! benchmarks and tests.
//!
//! - On any [`Connection`]: [`Connection::nonce`], [`Connection::attest`],
//!   [`Connection::update_tag`], [`Connection::heartbeat`], [`Connection::report_exit`] (async).
//! - [`WorkloadChannel`]: the launcher's blocking form. One TLS connection to a pinned CAS with
//!   a fresh ephemeral client key, on its own current-thread runtime (no thread is started; the
//!   address is resolved synchronously), dropped with the channel. Nonce and attestation must
//!   use **one** channel: the evidence is bound to the nonce and to this channel's client key
//!   ([`WorkloadChannel::report_data`]); the CAS checks both.

use std::net::ToSocketAddrs;

use veil_api::workload::{
    ATTEST_PATH, AttestRequest, ConfigResponse, EXIT_PATH, ExitRequest, ExitResponse,
    HEARTBEAT_PATH, HeartbeatRequest, HeartbeatResponse, NONCE_PATH, NonceRequest, NonceResponse,
    TAGS_PATH, TagUpdateRequest, TagUpdateResponse,
};
use veil_attest::{Nonce, ReportData};
use veil_identity::Identity;

use crate::{ClientError, Connection};

impl Connection {
    /// `POST /v1/workload/nonce`.
    pub async fn nonce(&mut self) -> Result<NonceResponse, ClientError> {
        self.post_json(NONCE_PATH, &NonceRequest {}).await
    }

    /// `POST /v1/workload/attest`: the configuration, if the CAS accepts the evidence.
    pub async fn attest(&mut self, req: &AttestRequest) -> Result<ConfigResponse, ClientError> {
        self.post_json(ATTEST_PATH, req).await
    }

    /// `POST /v1/workload/tags`: compare-and-swap of a volume's tag. Returns once the CAS has
    /// stored it durably, with the tag it recorded (the caller checks it is the requested one).
    pub async fn update_tag(
        &mut self,
        req: &TagUpdateRequest,
    ) -> Result<TagUpdateResponse, ClientError> {
        self.post_json(TAGS_PATH, req).await
    }

    /// `POST /v1/workload/heartbeat`: renew the instance's leases.
    pub async fn heartbeat(
        &mut self,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.post_json(HEARTBEAT_PATH, req).await
    }

    /// `POST /v1/workload/exit`: the program has exited.
    pub async fn report_exit(&mut self, req: &ExitRequest) -> Result<ExitResponse, ClientError> {
        self.post_json(EXIT_PATH, req).await
    }
}

/// A CAS's workload port and its pinned key hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasTarget {
    /// `host:port`.
    pub addr: String,
    /// The key hash the CAS must present.
    pub key_hash: String,
}

/// One blocking workload-API connection with its own ephemeral client key (see the module
/// documentation). Every call blocks the calling thread.
pub struct WorkloadChannel {
    // Dropped before the runtime that drives it.
    conn: Connection,
    identity: Identity,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for WorkloadChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadChannel")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl WorkloadChannel {
    /// Make an ephemeral key, resolve `target.addr` and connect to the pinned CAS.
    /// Errors: [`ClientError::Identity`] (key), [`ClientError::Runtime`], and
    /// [`ClientError::Connect`] / [`ClientError::KeyChanged`] (the channel).
    pub fn open(target: &CasTarget) -> Result<Self, ClientError> {
        let identity = Identity::generate("veil-launcher", &[])?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let addrs: Vec<std::net::SocketAddr> = target
            .addr
            .to_socket_addrs()
            .map_err(|e| ClientError::Connect {
                addr: target.addr.clone(),
                msg: format!("cannot resolve {}: {e}", target.addr),
            })?
            .collect();
        let conn = rt.block_on(Connection::connect_resolved(
            "cas",
            &target.addr,
            &addrs,
            Some(&target.key_hash),
            Some(&identity),
        ))?;
        Ok(Self { conn, identity, rt })
    }

    /// What evidence for this channel must carry: the nonce bound to this channel's key.
    pub fn report_data(&self, nonce: &Nonce) -> ReportData {
        ReportData::bind(nonce, self.identity.spki_der())
    }

    /// See [`Connection::nonce`].
    pub fn nonce(&mut self) -> Result<NonceResponse, ClientError> {
        self.rt.block_on(self.conn.nonce())
    }

    /// See [`Connection::attest`]. `req.evidence` must carry [`WorkloadChannel::report_data`]
    /// of `req.nonce`, a nonce issued on this channel.
    pub fn attest(&mut self, req: &AttestRequest) -> Result<ConfigResponse, ClientError> {
        self.rt.block_on(self.conn.attest(req))
    }

    /// See [`Connection::update_tag`].
    pub fn update_tag(&mut self, req: &TagUpdateRequest) -> Result<TagUpdateResponse, ClientError> {
        self.rt.block_on(self.conn.update_tag(req))
    }

    /// See [`Connection::heartbeat`].
    pub fn heartbeat(&mut self, req: &HeartbeatRequest) -> Result<HeartbeatResponse, ClientError> {
        self.rt.block_on(self.conn.heartbeat(req))
    }

    /// See [`Connection::report_exit`].
    pub fn report_exit(&mut self, req: &ExitRequest) -> Result<ExitResponse, ClientError> {
        self.rt.block_on(self.conn.report_exit(req))
    }
}
