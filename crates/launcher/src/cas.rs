//! The launcher's CAS client: one TLS 1.3 connection to the workload port, the CAS pinned by
//! its key hash, the launcher's ephemeral key as client certificate. On that one connection:
//! `POST /v1/workload/nonce`, then evidence bound to (nonce, our SPKI), then
//! `POST /v1/workload/attest` → the configuration.
//!
//! The tokio runtime is current-thread and addresses are resolved synchronously, so no thread
//! outlives a call (the executor needs a single-threaded process for `unshare`).

use std::net::ToSocketAddrs;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use veil_attest::protocol::{
    ATTEST_PATH, AttestRequest, ConfigResponse, EXIT_PATH, ErrorBody, ExitRequest, NONCE_PATH,
    NonceRequest, NonceResponse,
};
use veil_attest::{Evidence, ReportData, Tier};
use veil_identity::Identity;

use crate::error::{LauncherError, err};

const MAX_BODY: usize = 64 * 1024 * 1024;
const CHANNEL: &str = "Failed to establish an encrypted channel to CAS";

/// Where and how to reach the CAS.
#[derive(Debug, Clone)]
pub struct CasTarget {
    /// `host:port`.
    pub addr: String,
    /// Pinned CAS key hash.
    pub key_hash: String,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn runtime() -> Result<tokio::runtime::Runtime, LauncherError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err("Cannot start the I/O runtime", e))
}

async fn connect(target: &CasTarget, identity: &Identity) -> Result<Sender, LauncherError> {
    let addrs: Vec<std::net::SocketAddr> = target
        .addr
        .to_socket_addrs()
        .map_err(|e| err(CHANNEL, format!("cannot resolve {}: {e}", target.addr)))?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for a in addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(format!("{a}: {e}")),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        err(
            CHANNEL,
            last.unwrap_or_else(|| format!("{} resolves to no address", target.addr)),
        )
    })?;
    let _ = tcp.set_nodelay(true);
    let verifier = Arc::new(veil_identity::PinnedServerKey::new(Some(
        target.key_hash.clone(),
    )));
    let cfg =
        veil_identity::client_config(Some(identity), verifier).map_err(|e| err(CHANNEL, e))?;
    let host = target
        .addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or("cas");
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .or_else(|_| rustls::pki_types::ServerName::try_from("cas".to_string()))
        .map_err(|e| err(CHANNEL, e))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| err(CHANNEL, e))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| err(CHANNEL, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("CAS connection ended: {e}");
        }
    });
    Ok(sender)
}

async fn post<Req: Serialize, Resp: DeserializeOwned>(
    sender: &mut Sender,
    path: &str,
    body: &Req,
    outer: &str,
) -> Result<Resp, LauncherError> {
    let json = serde_json::to_vec(body).map_err(|e| err(outer, e))?;
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, "cas")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(json)))
        .map_err(|e| err(outer, e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err(outer, format!("CAS request failed: {e}")))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| err(outer, format!("reading the CAS answer: {e}")))?
        .to_bytes();
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| err(outer, format!("malformed CAS answer: {e}")));
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(e) if !e.msg.is_empty() => {
            let mut chain = e.msg;
            if chain.first().map(String::as_str) != Some(outer) {
                chain.insert(0, outer.to_string());
            }
            Err(LauncherError::chain(chain))
        }
        _ => Err(err(outer, format!("CAS answered HTTP {status}"))),
    }
}

/// Attest to the CAS and fetch the configuration of `config_id`. `make_evidence` receives the
/// report data (bound to the CAS's nonce and the ephemeral key of this connection) and returns
/// the evidence of `tier`.
pub fn attest(
    target: &CasTarget,
    config_id: &str,
    tier: Tier,
    service_access_token: Option<String>,
    make_evidence: impl FnOnce(ReportData) -> Result<Evidence, LauncherError>,
) -> Result<ConfigResponse, LauncherError> {
    // The ephemeral key is made after PR_SET_DUMPABLE 0 (see lib.rs) and never leaves memory.
    let identity = Identity::generate("veil-launcher", &[])
        .map_err(|e| err("Cannot create the launcher's TLS key", e))?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let mut sender = connect(target, &identity).await?;
        let nonce: NonceResponse = post(
            &mut sender,
            NONCE_PATH,
            &NonceRequest {},
            "Failed to retrieve an attestation nonce from CAS",
        )
        .await?;
        let report_data = ReportData::bind(&nonce.nonce, identity.spki_der());
        let evidence = make_evidence(report_data)?;
        post(
            &mut sender,
            ATTEST_PATH,
            &AttestRequest {
                config_id: config_id.to_string(),
                tier,
                nonce: nonce.nonce,
                evidence,
                service_access_token,
            },
            "Attestation failed",
        )
        .await
    });
    drop(rt);
    result
}

/// Tell the CAS the program exited (best effort; failures are logged, not fatal).
pub fn report_exit(target: &CasTarget, instance_token: &str, status: i32) {
    let run = || -> Result<(), LauncherError> {
        let identity = Identity::generate("veil-launcher", &[])
            .map_err(|e| err("Cannot create a TLS key", e))?;
        let rt = runtime()?;
        rt.block_on(async {
            let mut sender = connect(target, &identity).await?;
            let _: serde_json::Value = post(
                &mut sender,
                EXIT_PATH,
                &ExitRequest {
                    instance_token: instance_token.to_string(),
                    status,
                },
                "Failed to report the exit to CAS",
            )
            .await?;
            Ok(())
        })
    };
    if let Err(e) = run() {
        tracing::warn!("{e}");
    }
}
