//! The launcher's side of the LAS socket (`SOCK_SEQPACKET`, one request and one answer per
//! connection, the kernel attaches this process's credentials: `SO_PASSCRED`).

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, sockopt};
use nix::sys::time::TimeVal;
use veil_attest::{NodeEvidence, ReportData, Target};

use veil_api::las::{EvidenceRequest, EvidenceResponse, MAX_MESSAGE};

/// Errors talking to the LAS.
#[derive(Debug, thiserror::Error)]
pub enum LasError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (names the socket).
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A message was malformed.
    #[error("malformed LAS message: {0}")]
    Protocol(String),
    /// The LAS refused the request.
    #[error("the LAS refused: {0}")]
    Refused(String),
}

fn io(what: String) -> impl FnOnce(nix::Error) -> LasError {
    move |e| LasError::Io {
        what,
        source: std::io::Error::from(e),
    }
}

/// What connecting to a LAS socket showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A LAS accepts connections.
    Reachable,
    /// No LAS here: no socket file (`ENOENT`, `ENOTDIR`) or nobody listening (`ECONNREFUSED`).
    Absent,
    /// A socket exists but this process may not use it (`EACCES`, …): under `auto` this is fatal,
    /// never a silent fall back to `sim` (decision 20). The reason names the socket and the error.
    Refused(String),
}

/// Connect to the LAS socket at `socket_path` and close again (the LAS ignores an empty
/// connection).
pub fn probe(socket_path: &Path) -> Probe {
    let shown = socket_path.display();
    let fd = match socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(fd) => fd,
        Err(e) => return Probe::Refused(format!("cannot create a socket for {shown}: {e}")),
    };
    let addr = match UnixAddr::new(socket_path) {
        Ok(a) => a,
        Err(e) => return Probe::Refused(format!("LAS socket path {shown}: {e}")),
    };
    match socket::connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Probe::Reachable,
        Err(nix::Error::ENOENT | nix::Error::ENOTDIR | nix::Error::ECONNREFUSED) => Probe::Absent,
        Err(e) => Probe::Refused(format!("connecting to the LAS at {shown}: {e}")),
    }
}

/// Send `body` as one message (with this process's credentials) and return the answer.
pub fn raw_request(socket_path: &Path, body: &[u8]) -> Result<Vec<u8>, LasError> {
    let shown = socket_path.display().to_string();
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io(format!("LAS socket {shown}")))?;
    socket::setsockopt(&fd, sockopt::PassCred, &true)
        .map_err(io(format!("SO_PASSCRED on {shown}")))?;
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(10, 0))
        .map_err(io(format!("timeout on {shown}")))?;
    let addr = UnixAddr::new(socket_path).map_err(io(format!("LAS socket path {shown}")))?;
    socket::connect(fd.as_raw_fd(), &addr)
        .map_err(io(format!("connecting to the LAS at {shown}")))?;
    socket::send(fd.as_raw_fd(), body, MsgFlags::MSG_NOSIGNAL)
        .map_err(io(format!("sending to the LAS at {shown}")))?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
        .map_err(io(format!("reading from the LAS at {shown}")))?;
    buf.truncate(n);
    Ok(buf)
}

/// Ask the LAS at `socket_path` for evidence about this process, bound to `report_data`, for
/// running `target`.
pub fn request_evidence(
    socket_path: &Path,
    report_data: ReportData,
    target: Target,
) -> Result<NodeEvidence, LasError> {
    let body = serde_json::to_vec(&EvidenceRequest {
        report_data,
        target,
    })
    .map_err(|e| LasError::Protocol(e.to_string()))?;
    let answer = raw_request(socket_path, &body)?;
    match serde_json::from_slice::<EvidenceResponse>(&answer)
        .map_err(|e| LasError::Protocol(format!("answer: {e}")))?
    {
        EvidenceResponse::Evidence(ev) => Ok(*ev),
        EvidenceResponse::Error(msg) => Err(LasError::Refused(msg)),
    }
}
