//! `veil las serve`: the evidence socket and the TCP health/key endpoint.

// accept4 hands back a raw descriptor; taking ownership of it (`OwnedFd::from_raw_fd`) is unsafe.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    sockopt,
};
use nix::sys::time::TimeVal;
use veil_attest::{Digest32, NodeClaims, NodeEvidence, UnixTime, measurement};

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
    /// `None`: the socket is root's only (`root:root`, mode 0600). `Some(gid)`: `root:gid`,
    /// mode 0660 (the group may ask for evidence).
    pub socket_gid: Option<u32>,
    /// SHA-256 of the accepted launcher executables; a requester whose executable hashes to
    /// anything else is refused. Must not be empty.
    pub launcher_hashes: Vec<Digest32>,
}

/// At most this many evidence requests are served at once; more are closed unanswered.
pub const MAX_ACTIVE: usize = 64;
/// At most this many concurrent requests per uid (of the connecting process, `SO_PEERCRED`).
pub const MAX_PER_UID: usize = 8;
/// Slots of [`MAX_ACTIVE`] that only root (uid 0) may use.
pub const ROOT_RESERVE: usize = MAX_PER_UID;
/// How long a connection may stay silent before its request arrives.
pub const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

struct Shared {
    key: NodeKey,
    node_id: String,
    measurer: Measurer,
    launcher_hashes: Vec<Digest32>,
}

/// Concurrent connections, globally and per uid (decision 20: a local user's idle connections
/// must not starve another uid's launcher).
#[derive(Debug, Default)]
pub struct Slots {
    inner: std::sync::Mutex<(usize, HashMap<u32, usize>)>,
}

impl Slots {
    /// Take a slot for `uid`, or say why not.
    pub fn take(&self, uid: u32) -> Result<(), &'static str> {
        let mut g = self.inner.lock().map_err(|_| "lock poisoned")?;
        let (total, per) = &mut *g;
        let mine = per.get(&uid).copied().unwrap_or(0);
        if mine >= MAX_PER_UID {
            return Err("this uid has too many concurrent evidence requests");
        }
        let cap = if uid == 0 {
            MAX_ACTIVE
        } else {
            MAX_ACTIVE - ROOT_RESERVE
        };
        if *total >= cap {
            return Err("too many concurrent evidence requests");
        }
        *total += 1;
        per.insert(uid, mine + 1);
        Ok(())
    }

    /// Give back a slot of `uid`.
    pub fn give(&self, uid: u32) {
        if let Ok(mut g) = self.inner.lock() {
            let (total, per) = &mut *g;
            *total = total.saturating_sub(1);
            if let Some(n) = per.get_mut(&uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per.remove(&uid);
                }
            }
        }
    }
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

fn bind_unix(path: &Path, gid: Option<u32>) -> Result<OwnedFd, LasError> {
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
    // The socket is created without any permission for group and others (umask 0177) and
    // only then given its owner and mode: nobody else can connect in between. The process is
    // still single-threaded here (`Las::bind` runs before any thread starts).
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = socket::bind(fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    bound.map_err(sockerr(format!("binding {shown}")))?;
    // Root-only by default (decision 20); `--socket-gid` opts one group in.
    let (group, mode) = match gid {
        None => (0, 0o600),
        Some(g) => (g, 0o660),
    };
    std::os::unix::fs::chown(path, Some(0), Some(group))
        .map_err(|e| LasError::io(format!("chown root:{group} {shown}"), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| LasError::io(format!("chmod {mode:o} {shown}"), e))?;
    let backlog = Backlog::new(128).map_err(sockerr("backlog".into()))?;
    socket::listen(&fd, backlog).map_err(sockerr(format!("listening on {shown}")))?;
    Ok(fd)
}

impl Las {
    /// Load or create the node key and bind both listeners.
    pub fn bind(config: &LasConfig) -> Result<Self, LasError> {
        if config.launcher_hashes.is_empty() {
            return Err(LasError::Protocol(
                "no accepted launcher hash (give --launcher-hash)".into(),
            ));
        }
        let key = NodeKey::load_or_create(&config.data_dir)?;
        let unix = bind_unix(&config.socket, config.socket_gid)?;
        let tcp = std::net::TcpListener::bind(config.listen)
            .map_err(|e| LasError::io(format!("binding {}", config.listen), e))?;
        Ok(Self {
            shared: Arc::new(Shared {
                key,
                node_id: config.node_id.clone(),
                measurer: Measurer::new(),
                launcher_hashes: config.launcher_hashes.clone(),
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
    let slots = Arc::new(Slots::default());
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
        // The connecting process's uid, as the kernel recorded it at connect time.
        let uid = match socket::getsockopt(&conn, sockopt::PeerCredentials) {
            Ok(c) => c.uid(),
            Err(e) => {
                tracing::warn!("no peer credentials on an evidence connection: {e}");
                continue;
            }
        };
        if let Err(why) = slots.take(uid) {
            tracing::warn!(uid, "{why}; closing a connection");
            continue;
        }
        let shared = shared.clone();
        let slots2 = slots.clone();
        let spawned = std::thread::Builder::new()
            .name("las-conn".into())
            .spawn(move || {
                handle(&conn, &shared);
                drop(conn);
                slots2.give(uid);
            });
        if let Err(e) = spawned {
            slots.give(uid);
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
    if !shared.launcher_hashes.contains(&launcher_hash) {
        return Err(LasError::Measure {
            pid,
            reason: format!(
                "its executable (SHA-256 {launcher_hash}) is not an accepted launcher (--launcher-hash)"
            ),
        });
    }
    let measurement = measurement(&launcher_hash, &req.target);
    let claims = NodeClaims {
        node_id: shared.node_id.clone(),
        time: UnixTime::now(),
        pid: u32::try_from(pid).map_err(|_| LasError::Protocol("pid".into()))?,
        launcher_hash,
        target: req.target,
        measurement,
        report_data: req.report_data,
        uid: sender.uid,
        gid: sender.gid,
        cgroup: crate::procfs::cgroup(pid)?,
    };
    let signature = shared.key.sign(&claims.signed_bytes())?;
    tracing::info!(
        pid,
        uid = claims.uid,
        gid = claims.gid,
        cgroup = %claims.cgroup,
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
    let timeout = TimeVal::new(i64::try_from(IDLE_TIMEOUT.as_secs()).unwrap_or(2), 0);
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
            // The reason goes to the requester too: it is about its own process.
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

    #[test]
    fn slots_per_uid_and_root_reserve() {
        let s = Slots::default();
        for _ in 0..MAX_PER_UID {
            s.take(65534).unwrap();
        }
        assert!(s.take(65534).is_err(), "per-uid cap");
        // Other uids fill the rest of the non-root slots...
        let mut uid = 1000;
        let mut taken = MAX_PER_UID;
        while taken < MAX_ACTIVE - ROOT_RESERVE {
            for _ in 0..MAX_PER_UID.min(MAX_ACTIVE - ROOT_RESERVE - taken) {
                s.take(uid).unwrap();
                taken += 1;
            }
            uid += 1;
        }
        assert!(s.take(uid + 1).is_err(), "global cap for non-root");
        // ... and root still has its reserve.
        for _ in 0..ROOT_RESERVE {
            s.take(0).unwrap();
        }
        assert!(s.take(0).is_err());
        s.give(0);
        s.take(0).unwrap();
        s.give(65534);
        assert!(s.take(65534).is_err(), "the non-root slots are still full");
    }

    proptest! {
        #[test]
        fn parse_request_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_request(&bytes);
        }
    }
}
