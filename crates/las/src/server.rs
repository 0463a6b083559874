//! `veil las serve`: the evidence socket and the TCP health/key endpoint.

// accept4 hands back a raw descriptor; taking ownership of it (`OwnedFd::from_raw_fd`) is unsafe.
#![allow(unsafe_code)]

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    sockopt,
};
use nix::sys::time::TimeVal;
use veil_attest::{NodeClaims, NodeEvidence, UnixTime, measurement};

use crate::LasError;
use crate::key::NodeKey;
use crate::procfs::Measurer;
use veil_api::las::{EvidenceRequest, EvidenceResponse, MAX_MESSAGE, NodeKeyInfo};

/// Settings of a LAS.
#[derive(Debug, Clone)]
pub struct LasConfig {
    /// TCP address for `/healthz` and `/v1/node-key`.
    pub listen: SocketAddr,
    /// Path of the evidence socket.
    pub socket: PathBuf,
    /// Directory of the node key.
    pub data_dir: PathBuf,
    /// The node id put into claims (must match the CAS registration).
    pub node_id: String,
}

/// At most this many evidence requests are served at once; more are closed unanswered.
const MAX_ACTIVE: usize = 64;

struct Shared {
    key: NodeKey,
    node_id: String,
    measurer: Measurer,
}

/// A bound LAS (both listeners open), ready to [`Las::run`].
pub struct Las {
    shared: Arc<Shared>,
    unix: OwnedFd,
    tcp: std::net::TcpListener,
    socket_path: PathBuf,
}

impl std::fmt::Debug for Las {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Las")
            .field("node_id", &self.shared.node_id)
            .field("socket", &self.socket_path)
            .finish_non_exhaustive()
    }
}

fn sockerr(what: String) -> impl FnOnce(nix::Error) -> LasError {
    move |e| LasError::io(what, std::io::Error::from(e))
}

fn bind_unix(path: &Path) -> Result<OwnedFd, LasError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| LasError::io(format!("creating {}", dir.display()), e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => std::fs::remove_file(path)
            .map_err(|e| LasError::io(format!("removing stale socket {shown}"), e))?,
        Ok(_) => {
            return Err(LasError::io(
                format!("binding {shown}"),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                ),
            ));
        }
        Err(_) => {}
    }
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sockerr(format!("creating socket {shown}")))?;
    socket::setsockopt(&fd, sockopt::PassCred, &true)
        .map_err(sockerr(format!("SO_PASSCRED on {shown}")))?;
    let addr = UnixAddr::new(path).map_err(sockerr(format!("socket path {shown}")))?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(sockerr(format!("binding {shown}")))?;
    // Any local process may ask: what it gets is a signed statement about itself.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| LasError::io(format!("chmod {shown}"), e))?;
    let backlog = Backlog::new(128).map_err(sockerr("backlog".into()))?;
    socket::listen(&fd, backlog).map_err(sockerr(format!("listening on {shown}")))?;
    Ok(fd)
}

impl Las {
    /// Load or create the node key and bind both listeners.
    pub fn bind(config: &LasConfig) -> Result<Self, LasError> {
        let key = NodeKey::load_or_create(&config.data_dir)?;
        let unix = bind_unix(&config.socket)?;
        let tcp = std::net::TcpListener::bind(config.listen)
            .map_err(|e| LasError::io(format!("binding {}", config.listen), e))?;
        Ok(Self {
            shared: Arc::new(Shared {
                key,
                node_id: config.node_id.clone(),
                measurer: Measurer::new(),
            }),
            unix,
            tcp,
            socket_path: config.socket.clone(),
        })
    }

    /// The node key hash to register with the CAS.
    pub fn node_key_hash(&self) -> String {
        self.shared.key.key_hash()
    }

    /// The bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> Result<SocketAddr, LasError> {
        self.tcp
            .local_addr()
            .map_err(|e| LasError::io("local address", e))
    }

    /// Serve until the process ends.
    pub fn run(self) -> Result<(), LasError> {
        let shared = self.shared.clone();
        let unix = self.unix;
        std::thread::Builder::new()
            .name("las-socket".into())
            .spawn(move || accept_loop(unix, shared))
            .map_err(|e| LasError::io("starting the socket thread", e))?;
        self.tcp
            .set_nonblocking(true)
            .map_err(|e| LasError::io("tcp listener", e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LasError::io("tokio runtime", e))?;
        let info = NodeKeyInfo {
            node_id: self.shared.node_id.clone(),
            key_hash: self.shared.key.key_hash(),
            public_key_der: base64::engine::general_purpose::STANDARD
                .encode(self.shared.key.spki_der()),
        };
        let tcp = self.tcp;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(tcp)
                .map_err(|e| LasError::io("tcp listener", e))?;
            let app = axum::Router::new()
                .route("/healthz", axum::routing::get(|| async { "ok" }))
                .route(
                    veil_api::las::NODE_KEY_PATH,
                    axum::routing::get(move || {
                        let info = info.clone();
                        async move { axum::Json(info) }
                    }),
                );
            axum::serve(listener, app)
                .await
                .map_err(|e| LasError::io("serving http", e))
        })
    }
}

fn accept_loop(listener: OwnedFd, shared: Arc<Shared>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let raw = match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            Err(nix::Error::EINTR) | Err(nix::Error::ECONNABORTED) => continue,
            Err(e) => {
                tracing::error!("accept on the LAS socket failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        // SAFETY: `raw` is a new descriptor just returned by accept4 and owned by nobody else.
        let conn = unsafe { OwnedFd::from_raw_fd(raw) };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_ACTIVE {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("too many concurrent evidence requests; closing one");
            continue;
        }
        let shared = shared.clone();
        let active2 = active.clone();
        let spawned = std::thread::Builder::new()
            .name("las-conn".into())
            .spawn(move || {
                handle(&conn, &shared);
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::error!("cannot start a thread for an evidence request: {e}");
        }
    }
}

/// Receive one message and the kernel's credentials of its sender.
fn recv_with_pid(conn: &OwnedFd) -> Result<(Vec<u8>, Sender), LasError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!(socket::UnixCredentials);
    let (len, sender) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(sockerr("receiving a request".into()))?;
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(LasError::Protocol("request too large".into()));
        }
        let mut sender = None;
        for c in msg.cmsgs().map_err(sockerr("reading credentials".into()))? {
            if let ControlMessageOwned::ScmCredentials(cred) = c {
                sender = Some(Sender {
                    pid: cred.pid(),
                    uid: cred.uid(),
                    gid: cred.gid(),
                });
            }
        }
        (msg.bytes, sender)
    };
    if len == 0 {
        return Ok((
            Vec::new(),
            Sender {
                pid: 0,
                uid: 0,
                gid: 0,
            },
        ));
    }
    let sender = sender.ok_or_else(|| {
        LasError::Protocol(
            "the request carries no SCM_CREDENTIALS (enable SO_PASSCRED before sending)".into(),
        )
    })?;
    buf.truncate(len);
    Ok((buf, sender))
}

/// Who sent a request, as the kernel says (`SCM_CREDENTIALS`).
#[derive(Debug, Clone, Copy)]
struct Sender {
    pid: i32,
    uid: u32,
    gid: u32,
}

/// Parse one evidence request as it arrived on the socket (at most [`MAX_MESSAGE`] bytes of
/// JSON). Never panics, whatever the bytes; exposed for the fuzz target.
#[doc(hidden)]
pub fn parse_request(body: &[u8]) -> Result<EvidenceRequest, LasError> {
    if body.len() > MAX_MESSAGE {
        return Err(LasError::Protocol("request too large".into()));
    }
    serde_json::from_slice(body).map_err(|e| LasError::Protocol(e.to_string()))
}

fn evidence_for(shared: &Shared, body: &[u8], sender: Sender) -> Result<NodeEvidence, LasError> {
    let req = parse_request(body)?;
    let pid = sender.pid;
    if pid <= 0 {
        return Err(LasError::Protocol(format!("invalid sender pid {pid}")));
    }
    let launcher_hash = shared.measurer.measure(pid)?;
    let claims = NodeClaims {
        node_id: shared.node_id.clone(),
        time: UnixTime::now(),
        pid: u32::try_from(pid).map_err(|_| LasError::Protocol("pid".into()))?,
        launcher_hash,
        target: req.target,
        measurement: measurement(&launcher_hash, &req.target),
        report_data: req.report_data,
        uid: sender.uid,
        gid: sender.gid,
        cgroup: crate::procfs::cgroup(pid)?,
    };
    let signature = shared.key.sign(&claims.signed_bytes())?;
    tracing::info!(
        pid,
        launcher = %launcher_hash,
        measurement = %claims.measurement,
        "issued node evidence"
    );
    Ok(NodeEvidence {
        claims,
        node_key_hash: shared.key.key_hash(),
        signature,
    })
}

fn handle(conn: &OwnedFd, shared: &Shared) {
    let timeout = TimeVal::new(5, 0);
    // Best effort: on failure the request simply has no timeout.
    let _ = socket::setsockopt(conn, sockopt::ReceiveTimeout, &timeout);
    let _ = socket::setsockopt(conn, sockopt::PassCred, &true);
    let received = recv_with_pid(conn);
    if matches!(&received, Ok((body, _)) if body.is_empty()) {
        // A reachability probe (connect and close): nothing to answer.
        return;
    }
    let answer = match received.and_then(|(body, sender)| evidence_for(shared, &body, sender)) {
        Ok(ev) => EvidenceResponse::Evidence(Box::new(ev)),
        Err(e) => {
            tracing::warn!("refused an evidence request: {e}");
            EvidenceResponse::Error(e.to_string())
        }
    };
    match serde_json::to_vec(&answer) {
        Ok(bytes) => {
            if let Err(e) = socket::send(conn.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
                tracing::warn!("could not answer an evidence request: {e}");
            }
        }
        Err(e) => tracing::error!("could not encode an answer: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use veil_attest::{Digest32, ReportData, Target};

    #[test]
    fn parse_request_takes_the_binding_and_target_only() {
        let req = EvidenceRequest {
            report_data: ReportData([7; 64]),
            target: Target::Program {
                hash: Digest32::of(b"p"),
            },
        };
        let mut v = serde_json::to_value(&req).unwrap();
        assert_eq!(parse_request(v.to_string().as_bytes()).unwrap(), req);
        // A claimed pid or executable is no part of the request: ignored.
        v["pid"] = serde_json::json!(1);
        v["exe"] = serde_json::json!("/bin/true");
        assert_eq!(parse_request(v.to_string().as_bytes()).unwrap(), req);
        for bad in [&b"not json"[..], b"{}", b"", b"{\"report_data\": 1}"] {
            assert!(matches!(parse_request(bad), Err(LasError::Protocol(_))));
        }
        let big = vec![b' '; MAX_MESSAGE + 1];
        assert!(
            parse_request(&big)
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }

    proptest! {
        #[test]
        fn parse_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_request(&bytes);
        }
    }
}
