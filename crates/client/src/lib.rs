//! # veil-client: the client side of the CAS API
//!
//! - [`CliConfig`]: the pinned CAS keys in `~/.veil/config.json` (`VEIL_CLI_CONFIG`); the first
//!   pinned CAS is the default.
//! - [`identity_path`] / [`load_identity`]: the client identity (`~/.veil/identity.pem`,
//!   `VEIL_IDENTITY`, created on first use).
//! - [`Connection`]: one keep-alive HTTPS connection (TLS 1.3) to a CAS whose key hash must
//!   equal the pinned one (checked in the handshake by [`veil_identity::PinnedServerKey`]);
//!   typed calls for the session routes.
//! - [`las`]: the LAS unix-socket client (evidence for this process).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use veil_identity::{Identity, PinnedServerKey};

pub mod las;

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
    /// Network or TLS failure.
    #[error("cannot talk to CAS at {addr}: {msg}")]
    Connect {
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
    /// Identity problem.
    #[error(transparent)]
    Identity(#[from] veil_identity::IdentityError),
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The identity file: `explicit`, else `VEIL_IDENTITY`, else `~/.veil/identity.pem`.
pub fn identity_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os("VEIL_IDENTITY") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => home().join(".veil/identity.pem"),
    }
}

/// Load the client identity, creating it on first use.
pub fn load_identity(explicit: Option<&Path>) -> Result<Identity, ClientError> {
    Ok(Identity::load_or_create(
        &identity_path(explicit),
        "veil cli",
    )?)
}

/// The client config file: `VEIL_CLI_CONFIG`, else `~/.veil/config.json`.
pub fn config_path() -> PathBuf {
    match std::env::var_os("VEIL_CLI_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => home().join(".veil/config.json"),
    }
}

/// One pinned CAS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PinnedCas {
    /// `host:port` of the client API.
    pub address: String,
    /// The pinned key hash.
    pub key_hash: String,
}

/// The client config: pinned CAS keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// The default CAS name.
    #[serde(default)]
    pub default: Option<String>,
    /// Pinned CASes by name.
    #[serde(default)]
    pub cas: BTreeMap<String, PinnedCas>,
}

/// `host:port` for a CAS address given as `host` or `host:port`.
pub fn with_default_port(addr: &str) -> String {
    let addr = addr.trim_start_matches("https://").trim_end_matches('/');
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return addr.to_string();
    }
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{addr}]:{DEFAULT_PORT}");
    }
    match addr.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => addr.to_string(),
        _ => format!("{addr}:{DEFAULT_PORT}"),
    }
}

impl CliConfig {
    /// Load `path` (missing file = empty config).
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(ClientError::Config {
                    path: path.display().to_string(),
                    msg: e.to_string(),
                });
            }
        };
        serde_json::from_str(&text).map_err(|e| ClientError::Config {
            path: path.display().to_string(),
            msg: format!("invalid client config: {e}"),
        })
    }

    /// Save to `path` (mode 0600, atomic).
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ClientError::Config {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        veil_identity::write_private_file(path, text.as_bytes())?;
        Ok(())
    }

    /// Pin `name` at `address` with `key_hash`; the first pinned CAS becomes the default.
    pub fn pin(&mut self, name: &str, address: &str, key_hash: &str) {
        self.cas.insert(
            name.to_string(),
            PinnedCas {
                address: address.to_string(),
                key_hash: key_hash.to_string(),
            },
        );
        if self.default.is_none() {
            self.default = Some(name.to_string());
        }
    }

    /// The pinned CAS `name` (or the default when `None`).
    pub fn get(&self, name: Option<&str>) -> Result<(String, PinnedCas), ClientError> {
        let name = match name {
            Some(n) => n.to_string(),
            None => self.default.clone().ok_or(ClientError::NoDefault)?,
        };
        if let Some(p) = self.cas.get(&name) {
            return Ok((name, p.clone()));
        }
        // Also accept the address (with or without the default port) of a pinned CAS.
        let full = with_default_port(&name);
        self.cas
            .iter()
            .find(|(_, p)| p.address == full)
            .map(|(n, p)| (n.clone(), p.clone()))
            .ok_or(ClientError::Unpinned(name))
    }
}

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
}

/// One keep-alive HTTPS connection to a CAS.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    /// Key hash the server presented.
    pub server_key_hash: String,
}

impl Connection {
    /// Connect to `addr` (`host:port`). `pinned`: the key hash the server must present
    /// (`None` = accept any, only for `--only-for-testing-trust-any`); `cas` names it in errors.
    pub async fn connect(
        cas: &str,
        addr: &str,
        pinned: Option<&str>,
        identity: Option<&Identity>,
    ) -> Result<Self, ClientError> {
        let cerr = |msg: String| ClientError::Connect {
            addr: addr.to_string(),
            msg,
        };
        let verifier = Arc::new(PinnedServerKey::new(pinned.map(String::from)));
        let seen = verifier.seen();
        let cfg = veil_identity::client_config(identity, verifier)?;
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(addr)
            .to_string();
        let server_name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| cerr(format!("invalid host name `{host}`: {e}")))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| cerr(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tls = match connector.connect(server_name, tcp).await {
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
                return Err(cerr(format!("TLS handshake failed: {e}")));
            }
        };
        let server_key_hash = seen
            .lock()
            .ok()
            .and_then(|s| s.key_hash.clone())
            .ok_or_else(|| cerr("the server presented no certificate".into()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| cerr(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
            server_key_hash,
        })
    }

    /// Send one request.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        send(&mut self.sender, &self.host, method, path, body).await
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

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Answer, ClientError> {
    let cerr = |msg: String| ClientError::Connect {
        addr: host.to_string(),
        msg,
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| cerr(e.to_string()))?;
    sender.ready().await.map_err(|e| cerr(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| cerr(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| cerr(e.to_string()))?
        .to_bytes();
    Ok(Answer { status, body })
}

/// A keep-alive plain-HTTP/1.1 connection, for benchmarks against local baselines (etcd's
/// JSON gateway in `veil bench cas`). Never used to talk to a CAS.
pub struct PlainConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl PlainConnection {
    /// Connect to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let cerr = |msg: String| ClientError::Connect {
            addr: addr.to_string(),
            msg,
        };
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| cerr(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| cerr(e.to_string()))?;
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
        send(&mut self.sender, &self.host, method, path, body).await
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

    #[test]
    fn config_pins_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c/config.json");
        let mut c = CliConfig::load(&p).unwrap();
        assert!(matches!(c.get(None), Err(ClientError::NoDefault)));
        c.pin("a", "127.0.0.1:8081", &"a".repeat(64));
        c.pin("b", "10.0.0.1:8081", &"b".repeat(64));
        c.save(&p).unwrap();
        let c = CliConfig::load(&p).unwrap();
        assert_eq!(c.default.as_deref(), Some("a"));
        assert_eq!(c.get(Some("10.0.0.1")).unwrap().0, "b");
        assert!(matches!(c.get(Some("x")), Err(ClientError::Unpinned(_))));
    }

    #[test]
    fn ports_and_paths() {
        assert_eq!(with_default_port("cas"), "cas:8081");
        assert_eq!(with_default_port("cas:9"), "cas:9");
        assert_eq!(with_default_port("127.0.0.1:5"), "127.0.0.1:5");
        assert_eq!(with_default_port("::1"), "[::1]:8081");
        assert_eq!(encode_path("a/b c"), "a/b%20c");
    }
}
