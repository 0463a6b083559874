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
use veil_api::workload::{
    ATTEST_PATH, AttestRequest, ConfigId, ConfigResponse, EXIT_PATH, ExitRequest, HEARTBEAT_PATH,
    HeartbeatRequest, HeartbeatResponse, NONCE_PATH, NonceRequest, NonceResponse, TAGS_PATH,
    TagUpdateRequest, TagUpdateResponse,
};
use veil_attest::{Evidence, ReportData, Tier};
use veil_api::ErrorBody;
use veil_identity::Identity;
use veil_types::{SecretString, Tag};

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
                config_id: ConfigId(config_id.to_string()),
                tier,
                nonce: nonce.nonce,
                evidence,
                service_access_token: service_access_token.map(SecretString::from),
            },
            "Attestation failed",
        )
        .await
    });
    drop(rt);
    result
}

/// One request on a fresh connection with a fresh ephemeral key (tag updates, heartbeats,
/// the exit report: the instance token authorises them, not the connection).
fn one_shot<Req: Serialize, Resp: DeserializeOwned>(
    target: &CasTarget,
    path: &str,
    body: &Req,
    outer: &str,
) -> Result<Resp, LauncherError> {
    let identity =
        Identity::generate("veil-launcher", &[]).map_err(|e| err("Cannot create a TLS key", e))?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let mut sender = connect(target, &identity).await?;
        post(&mut sender, path, body, outer).await
    });
    drop(rt);
    result
}

/// Record `new_tag` for `volume` by compare-and-swap from `old_tag` (`None` = first use).
/// Returns only once the CAS has stored it durably (decision 2).
pub fn update_tag(
    target: &CasTarget,
    instance_token: &str,
    volume: &str,
    old_tag: Option<Tag>,
    new_tag: Tag,
) -> Result<(), LauncherError> {
    let outer = format!("Failed to record the tag of volume {volume} in CAS");
    let r: TagUpdateResponse = one_shot(
        target,
        TAGS_PATH,
        &TagUpdateRequest {
            instance_token: SecretString::from(instance_token.to_string()),
            volume: volume.to_string(),
            old_tag,
            new_tag,
        },
        &outer,
    )
    .map_err(|e| {
        if e.chain.first() == Some(&outer) {
            e
        } else {
            e.context(outer.clone())
        }
    })?;
    if r.tag != new_tag {
        return Err(err(outer, format!("CAS recorded tag {} instead", r.tag)));
    }
    Ok(())
}

/// Renew the instance's volume leases.
pub fn heartbeat(target: &CasTarget, instance_token: &str) -> Result<(), LauncherError> {
    let _: HeartbeatResponse = one_shot(
        target,
        HEARTBEAT_PATH,
        &HeartbeatRequest {
            instance_token: SecretString::from(instance_token.to_string()),
        },
        "Failed to renew the volume leases in CAS",
    )?;
    Ok(())
}

/// Tell the CAS the program exited (best effort; failures are logged, not fatal).
pub fn report_exit(target: &CasTarget, instance_token: &str, status: i32) {
    let r: Result<serde_json::Value, _> = one_shot(
        target,
        EXIT_PATH,
        &ExitRequest {
            instance_token: SecretString::from(instance_token.to_string()),
            status,
        },
        "Failed to report the exit to CAS",
    );
    if let Err(e) = r {
        tracing::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    //! The client against a minimal workload-API server written only from `veil_attest`:
    //! nonce store, binding to the SPKI of the connection's client certificate, pure appraisal.
    //! It doubles as an executable description of what the CAS side must do.
    use super::*;
    use std::convert::Infallible;
    use veil_attest::nonce::{NonceLimits, NonceStore};
    use veil_api::workload::InjectionFile;
    use veil_attest::{
        Collateral, Digest32, Expected, FactorSet, ReferenceValues, SimEvidence, Target,
        TrustAnchors, UnixTime, appraise,
    };

    fn json(status: u16, body: &impl Serialize) -> hyper::Response<Full<Bytes>> {
        let mut r = hyper::Response::new(Full::new(Bytes::from(
            serde_json::to_vec(body).unwrap_or_default(),
        )));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        r
    }

    async fn handle(
        req: hyper::Request<hyper::body::Incoming>,
        spki: Arc<Vec<u8>>,
        store: Arc<NonceStore>,
        want: Digest32,
        anchors: Arc<TrustAnchors>,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let now = UnixTime::now();
        Ok(match path.as_str() {
            NONCE_PATH => match store.issue("peer", now) {
                Ok((nonce, expires_at)) => json(200, &NonceResponse { nonce, expires_at }),
                Err(e) => json(
                    429,
                    &ErrorBody {
                        code: "nonce".into(),
                        msg: vec![e.to_string()],
                    },
                ),
            },
            ATTEST_PATH => {
                let Ok(a) = serde_json::from_slice::<AttestRequest>(&body) else {
                    return Ok(json(
                        400,
                        &ErrorBody {
                            code: "bad_request".into(),
                            msg: vec!["bad".into()],
                        },
                    ));
                };
                if let Err(e) = store.consume(&a.nonce, now) {
                    return Ok(json(
                        403,
                        &ErrorBody {
                            code: "nonce".into(),
                            msg: vec!["Attestation failed".into(), e.to_string()],
                        },
                    ));
                }
                let rv =
                    ReferenceValues::from_policy(vec![FactorSet::mrenclave(vec![want])], vec![]);
                let expected = Expected {
                    report_data: ReportData::bind(&a.nonce, &spki),
                };
                match appraise(
                    &a.evidence,
                    &Collateral::None,
                    &rv,
                    &expected,
                    &anchors,
                    now,
                ) {
                    Ok(_) => json(
                        200,
                        &ConfigResponse {
                            argv: vec!["prog".into(), "@@1".into()],
                            env: [("K".to_string(), "V".to_string())].into_iter().collect(),
                            pwd: Some("/".into()),
                            injection_files: vec![InjectionFile {
                                path: "/x".into(),
                                content: b"c".to_vec(),
                                mode: 0o600,
                            }],
                            code_region: None,
                            volumes: vec![],
                            instance_token: "tok".into(),
                        },
                    ),
                    Err(e) => json(
                        403,
                        &ErrorBody {
                            code: e.code().into(),
                            msg: e.chain(),
                        },
                    ),
                }
            }
            _ => json(
                404,
                &ErrorBody {
                    code: "not_found".into(),
                    msg: vec!["not found".into()],
                },
            ),
        })
    }

    /// Start the mock CAS on 127.0.0.1:0 in its own thread; returns its address and key hash.
    fn mock_cas(want: Digest32, anchors: TrustAnchors) -> (String, String) {
        let anchors = Arc::new(anchors);
        let identity = Identity::generate("cas", &["cas".into()]).expect("identity");
        let key_hash = identity.key_hash();
        let cfg = veil_identity::server_config(
            &identity,
            Arc::new(veil_identity::AnyClientCert::new(true)),
        )
        .expect("server config");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_listener.local_addr().expect("addr").to_string();
        std_listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let rt = runtime().expect("rt");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
                let store = Arc::new(NonceStore::new(NonceLimits::default()));
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    let Some(cert) = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first().cloned())
                    else {
                        continue;
                    };
                    let spki = Arc::new(veil_identity::spki_from_cert_der(&cert).expect("spki"));
                    let store = store.clone();
                    let anchors = anchors.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            handle(req, spki.clone(), store.clone(), want, anchors.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        });
        (addr, key_hash)
    }

    pub(super) fn mock_cas_pub(want: Digest32, anchors: TrustAnchors) -> (String, String) {
        mock_cas(want, anchors)
    }

    fn sim(rd: ReportData) -> Result<Evidence, LauncherError> {
        let target = Target::Program {
            hash: Digest32::of(b"prog"),
        };
        Ok(Evidence::Sim(SimEvidence::new(
            crate::program::launcher_hash()?,
            target,
            rd,
        )))
    }

    #[test]
    fn attests_and_receives_the_configuration() {
        let target = Target::Program {
            hash: Digest32::of(b"prog"),
        };
        let want = crate::program::own_measurement(&target).expect("measure");
        let (addr, key_hash) = mock_cas(want, TrustAnchors::default());
        let t = CasTarget {
            addr: addr.clone(),
            key_hash: key_hash.clone(),
        };
        let cfg = attest(&t, "s/svc", Tier::Sim, None, sim).expect("attest");
        assert_eq!(cfg.argv, vec!["prog".to_string(), "@@1".to_string()]);
        assert_eq!(cfg.injection_files[0].content, b"c");

        // Evidence bound to another nonce (a replay) is refused with the binding error.
        let stale = ReportData::bind(&veil_attest::Nonce([1; 32]), b"x");
        let e = attest(&t, "s/svc", Tier::Sim, None, |_| sim(stale)).expect_err("replay");
        assert_eq!(e.chain[0], "Attestation failed");
        assert!(e.chain[1].contains("report data mismatch"), "{e:?}");
    }

    #[test]
    fn wrong_measurement_gives_the_scone_chain() {
        let want = Digest32::of(b"expected");
        let (addr, key_hash) = mock_cas(want, TrustAnchors::default());
        let t = CasTarget { addr, key_hash };
        let e = attest(&t, "s/svc", Tier::Sim, None, sim).expect_err("mismatch");
        assert_eq!(e.chain.len(), 2, "{e:?}");
        assert_eq!(e.chain[0], "Attestation failed");
        assert!(
            e.chain[1].starts_with("Unexpected enclave measurement (MRENCLAVE, "),
            "{e:?}"
        );
        assert!(
            e.chain[1].ends_with(&format!(") - Expected {want}")),
            "{e:?}"
        );
    }

    #[test]
    fn refuses_a_cas_with_another_key() {
        let (addr, _) = mock_cas(Digest32::of(b"x"), TrustAnchors::default());
        let t = CasTarget {
            addr,
            key_hash: "0".repeat(64),
        };
        let e = attest(&t, "s/svc", Tier::Sim, None, sim).expect_err("pin");
        assert_eq!(e.chain[0], CHANNEL);
        assert!(e.chain[1].contains("differs from the pinned one"), "{e:?}");
    }
}

#[cfg(test)]
mod node_tests {
    //! The `node` tier end to end in one process: an in-process LAS on a temp socket measures
    //! this test binary, the mock CAS appraises with the registered node key.
    use super::*;
    use veil_attest::{Digest32, RegisteredNodeKey, Target, TrustAnchors, UnixTime};
    use veil_las::server::{Las, LasConfig};

    fn start_las(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
        let socket = dir.join("las.sock");
        let las = Las::bind(&LasConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            socket: socket.clone(),
            data_dir: dir.join("data"),
            node_id: "n1".into(),
        })
        .expect("bind las");
        let key = veil_las::key::NodeKey::load_or_create(&dir.join("data")).expect("key");
        std::thread::spawn(move || las.run());
        (socket, key.spki_der().to_vec())
    }

    fn anchors(spki: Vec<u8>) -> TrustAnchors {
        TrustAnchors {
            node_keys: vec![RegisteredNodeKey {
                node_id: "n1".into(),
                spki_der: spki,
                registered_at: UnixTime(0),
                revoked_at: None,
            }],
            ..TrustAnchors::default()
        }
    }

    #[test]
    fn node_tier_registered_key_works_unregistered_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let (socket, spki) = start_las(d.path());
        let target = Target::Program {
            hash: Digest32::of(b"prog"),
        };
        let want = crate::program::own_measurement(&target).expect("measure");
        let evidence = |rd| {
            veil_client::las::request_evidence(&socket, rd, target)
                .map(Evidence::Node)
                .map_err(|e| LauncherError::new(e.to_string()))
        };
        let (addr, key_hash) = super::tests::mock_cas_pub(want, anchors(spki.clone()));
        let t = CasTarget { addr, key_hash };
        let cfg = attest(&t, "s/svc", Tier::Node, None, evidence).expect("node attest");
        assert_eq!(cfg.instance_token, "tok");

        let other = tempfile::tempdir().expect("tmp");
        let other_key = veil_las::key::NodeKey::load_or_create(other.path()).expect("key");
        let (addr, key_hash) =
            super::tests::mock_cas_pub(want, anchors(other_key.spki_der().to_vec()));
        let t = CasTarget { addr, key_hash };
        let e = attest(&t, "s/svc", Tier::Node, None, evidence).expect_err("unregistered");
        assert_eq!(e.chain[0], "Attestation failed");
        assert!(
            e.chain[1].contains("is not registered with this CAS"),
            "{e:?}"
        );

        // The node tier also matches measurements: a wrong mrenclave is refused.
        let (addr, key_hash) =
            super::tests::mock_cas_pub(Digest32::of(b"other"), anchors(spki.clone()));
        let t = CasTarget { addr, key_hash };
        let e = attest(&t, "s/svc", Tier::Node, None, evidence).expect_err("measurement");
        assert!(
            e.chain[1].starts_with("Unexpected enclave measurement (MRENCLAVE, "),
            "{e:?}"
        );
    }
}
