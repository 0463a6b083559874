//! The one pinned-TLS connection to a CAS (either port): TLS 1.3, the server accepted only when
//! its key hash equals the pinned one (checked in the handshake by
//! [`veil_identity::PinnedServerKey`]), an optional client identity, HTTP/1.1 keep-alive, and
//! every answer limited to [`MAX_RESPONSE`] bytes (or [`Connection::with_response_limit`]).
//!
//! The connection's I/O runs as a task of the caller's runtime, never on a thread of its own,
//! so it works on a current-thread runtime and ends with it (the launcher relies on that: its
//! executor `unshare`s later and needs a single-threaded process). [`Connection::connect`]
//! resolves the address through tokio; [`Connection::connect_resolved`] takes addresses the
//! caller resolved itself (the launcher resolves synchronously, so no resolver thread exists).

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use veil_api::ErrorBody;
use veil_identity::{Identity, PinnedServerKey};

use crate::ClientError;

/// Largest answer body a connection accepts by default (64 MiB).
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// An HTTP response from the CAS.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON when the status is a success, else the CAS's error.
    pub fn json(self) -> Result<serde_json::Value, ClientError> {
        let v: Option<serde_json::Value> = serde_json::from_slice(&self.body).ok();
        if self.status.is_success() {
            return v.ok_or_else(|| ClientError::Protocol {
                status: self.status.as_u16(),
                detail: "the body is not JSON".into(),
            });
        }
        let v = v.unwrap_or_default();
        let msg: Vec<String> = v["msg"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_else(|| vec![format!("HTTP {}", self.status)]);
        Err(ClientError::Api {
            status: self.status.as_u16(),
            code: v["code"].as_str().unwrap_or_default().to_string(),
            msg,
        })
    }

    /// The body as a `T` when the status is a success; else the CAS's [`ErrorBody`]
    /// ([`ClientError::Api`]), or [`ClientError::Status`] when the error has no such body.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let status = self.status.as_u16();
        if self.status.is_success() {
            return serde_json::from_slice(&self.body).map_err(|e| ClientError::Protocol {
                status,
                detail: e.to_string(),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(e) if !e.msg.is_empty() => Err(ClientError::Api {
                status,
                code: e.code,
                msg: e.msg,
            }),
            _ => Err(ClientError::Status { status }),
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTPS connection to a CAS.
pub struct Connection {
    sender: Sender,
    host: String,
    max_response: usize,
    /// Key hash the server presented.
    pub server_key_hash: String,
    /// The certificate (DER) the server presented.
    pub server_cert_der: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("server_key_hash", &self.server_key_hash)
            .finish_non_exhaustive()
    }
}

/// The TLS server name for `addr`'s host; a host that is no valid DNS name or IP address (the
/// pinned key, not the name, authenticates the server) is sent as `cas`.
fn server_name(
    addr: &str,
) -> Result<rustls::pki_types::ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(addr)
        .to_string();
    rustls::pki_types::ServerName::try_from(host)
        .or_else(|_| rustls::pki_types::ServerName::try_from("cas"))
}

impl Connection {
    /// Connect to `addr` (`host:port`, resolved through tokio). `pinned`: the key hash the
    /// server must present (`None` = accept any, only for `--only-for-testing-trust-any`);
    /// `cas` names it in errors; `identity`: the client certificate, if any.
    pub async fn connect(
        cas: &str,
        addr: &str,
        pinned: Option<&str>,
        identity: Option<&Identity>,
    ) -> Result<Self, ClientError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| connect_err(addr, format!("cannot resolve {addr}: {e}")))?
            .collect();
        Self::connect_resolved(cas, addr, &addrs, pinned, identity).await
    }

    /// Like [`Connection::connect`], trying the already resolved `addrs` of `addr` in order.
    pub async fn connect_resolved(
        cas: &str,
        addr: &str,
        addrs: &[SocketAddr],
        pinned: Option<&str>,
        identity: Option<&Identity>,
    ) -> Result<Self, ClientError> {
        let pinned = pinned
            .map(|p| p.to_ascii_lowercase().parse::<veil_types::KeyHash>())
            .transpose()
            .map_err(|e| connect_err(addr, format!("the pinned CAS key: {e}")))?;
        let verifier = Arc::new(PinnedServerKey::new(pinned));
        let seen = verifier.seen();
        let cfg = veil_identity::client_config(identity, verifier)?;
        let mut last = None;
        let mut tcp = None;
        for a in addrs {
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => {
                    last = Some(if addrs.len() > 1 {
                        format!("{a}: {e}")
                    } else {
                        e.to_string()
                    })
                }
            }
        }
        let tcp = tcp.ok_or_else(|| {
            connect_err(
                addr,
                last.unwrap_or_else(|| format!("{addr} resolves to no address")),
            )
        })?;
        let _ = tcp.set_nodelay(true);
        let name = server_name(addr).map_err(|e| connect_err(addr, e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tls = match connector.connect(name, tcp).await {
            Ok(t) => t,
            Err(e) => {
                let s = seen.lock().map(|s| s.clone()).unwrap_or_default();
                if s.mismatch
                    && let (Some(p), Some(k)) = (pinned, s.key_hash)
                {
                    return Err(ClientError::KeyChanged {
                        cas: cas.to_string(),
                        pinned: p.to_string(),
                        seen: k,
                    });
                }
                return Err(connect_err(addr, format!("TLS handshake failed: {e}")));
            }
        };
        let (server_key_hash, server_cert_der) = seen
            .lock()
            .ok()
            .and_then(|s| s.key_hash.clone().zip(s.cert_der.clone()))
            .ok_or_else(|| connect_err(addr, "the server presented no certificate".into()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect_err(addr, e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("CAS connection ended: {e}");
            }
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
            max_response: MAX_RESPONSE,
            server_key_hash,
            server_cert_der,
        })
    }

    /// Accept answers of at most `bytes` bytes (default [`MAX_RESPONSE`]).
    pub fn with_response_limit(mut self, bytes: usize) -> Self {
        self.max_response = bytes;
        self
    }

    /// Send one request (body as `application/octet-stream`).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        send(
            &mut self.sender,
            &self.host,
            self.max_response,
            method,
            path,
            "application/octet-stream",
            body.unwrap_or_default(),
        )
        .await
    }

    /// `POST` `body` as JSON to `path` and decode the answer ([`Answer::decode`]).
    pub async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, ClientError> {
        let json = serde_json::to_vec(body).map_err(|e| ClientError::Encode(e.to_string()))?;
        send(
            &mut self.sender,
            &self.host,
            self.max_response,
            Method::POST,
            path,
            "application/json",
            json,
        )
        .await?
        .decode()
    }

    /// Upload a session (create, or update when it has `predecessor`); returns its hash.
    pub async fn upload_session(&mut self, yaml: &str) -> Result<String, ClientError> {
        let v = self
            .request(Method::POST, "/v1/sessions", Some(yaml.as_bytes().to_vec()))
            .await?
            .json()?;
        str_field(&v, "hash")
    }

    /// Read a session (active version, or version `hash`): (YAML, hash).
    pub async fn read_session(
        &mut self,
        name: &str,
        hash: Option<&str>,
    ) -> Result<(String, String), ClientError> {
        let mut path = format!("/v1/sessions/{}", encode_path(name));
        if let Some(h) = hash {
            path.push_str(&format!("?hash={}", encode_path(h)));
        }
        let v = self.request(Method::GET, &path, None).await?.json()?;
        Ok((str_field(&v, "session")?, str_field(&v, "hash")?))
    }

    /// Names of the sessions this client may list.
    pub async fn list_sessions(&mut self) -> Result<Vec<String>, ClientError> {
        let v = self
            .request(Method::GET, "/v1/sessions", None)
            .await?
            .json()?;
        Ok(v["sessions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn connect_err(addr: &str, msg: String) -> ClientError {
    ClientError::Connect {
        addr: addr.to_string(),
        msg,
    }
}

async fn send(
    sender: &mut Sender,
    host: &str,
    limit: usize,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer, ClientError> {
    let send_err = |msg: String| ClientError::Send {
        addr: host.to_string(),
        msg,
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| send_err(e.to_string()))?;
    sender.ready().await.map_err(|e| send_err(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| send_err(e.to_string()))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| ClientError::Receive {
            addr: host.to_string(),
            msg: if e.is::<http_body_util::LengthLimitError>() {
                format!("the answer is larger than {limit} bytes")
            } else {
                e.to_string()
            },
        })?
        .to_bytes();
    Ok(Answer { status, body })
}

/// A keep-alive plain-HTTP/1.1 connection, for benchmarks against local baselines (etcd's
/// JSON gateway in `veil bench cas`). Never used to talk to a CAS.
pub struct PlainConnection {
    sender: Sender,
    host: String,
}

impl PlainConnection {
    /// Connect to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| connect_err(addr, e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| connect_err(addr, e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    /// Send one request.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        send(
            &mut self.sender,
            &self.host,
            MAX_RESPONSE,
            method,
            path,
            "application/octet-stream",
            body.unwrap_or_default(),
        )
        .await
    }
}

fn str_field(v: &serde_json::Value, k: &str) -> Result<String, ClientError> {
    v[k].as_str()
        .map(String::from)
        .ok_or_else(|| ClientError::Protocol {
            status: 200,
            detail: format!("no `{k}` in the answer"),
        })
}

/// Percent-encode a path component, keeping `/` (namespaced session names).
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn paths_and_server_names() {
        assert_eq!(encode_path("a/b c"), "a/b%20c");
        let name = |s: &str| rustls::pki_types::ServerName::try_from(s.to_string()).unwrap();
        assert_eq!(server_name("127.0.0.1:1").unwrap(), name("127.0.0.1"));
        assert_eq!(server_name("[::1]:1").unwrap(), name("::1"));
        assert_eq!(server_name("cas.example:1").unwrap(), name("cas.example"));
        assert_eq!(server_name("not a name:1").unwrap(), name("cas"));
    }

    #[test]
    fn decode_success_error_body_and_bare_status() {
        let v: veil_api::workload::TagUpdateResponse =
            answer(200, &format!("{{\"tag\":\"{}\"}}", "ab".repeat(16)))
                .decode()
                .unwrap();
        assert_eq!(v.tag.to_string(), "ab".repeat(16));
        let e = answer(200, "{}")
            .decode::<veil_api::workload::TagUpdateResponse>()
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Protocol { status: 200, .. }),
            "{e:?}"
        );
        let e = answer(403, r#"{"code":"x","msg":["Attestation failed","why"]}"#)
            .decode::<serde_json::Value>()
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Api { status: 403, code, msg } if code == "x" && msg.len() == 2),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "Attestation failed: why");
        for body in ["", "not json", r#"{"code":"x","msg":[]}"#] {
            let e = answer(502, body).decode::<serde_json::Value>().unwrap_err();
            assert!(matches!(e, ClientError::Status { status: 502 }), "{e:?}");
        }
    }
}
