//! The launcher's calls of the CAS workload API, over `veil-client`'s
//! [`WorkloadChannel`] (TLS 1.3, the CAS pinned by its key hash, a fresh ephemeral key as
//! client certificate, a current-thread runtime and synchronous address resolution, so no
//! thread outlives a call: the executor needs a single-threaded process for `unshare`).
//!
//! [`attest`] asks for the nonce and attests on one channel (the evidence is bound to the
//! nonce and that channel's key); tag updates, heartbeats and the exit report each use a fresh
//! channel (the instance token authorises them, not the connection). Client errors become
//! SCONE-style [`LauncherError`] chains: a CAS error body's `msg` under the call's outer
//! message, a failed connection under "Failed to establish an encrypted channel to CAS".

use veil_api::workload::{
    AttestRequest, ConfigId, ConfigResponse, ExitRequest, HeartbeatRequest, TagUpdateRequest,
};
use veil_attest::{Evidence, ReportData, Tier};
use veil_client::ClientError;
use veil_client::workload::WorkloadChannel;
use veil_types::{SecretString, Tag};

use crate::error::{LauncherError, err};

pub use veil_client::workload::CasTarget;

/// The outer message of every failure to connect to the CAS.
pub const CHANNEL: &str = "Failed to establish an encrypted channel to CAS";

fn open(target: &CasTarget) -> Result<WorkloadChannel, LauncherError> {
    // The ephemeral key is made after PR_SET_DUMPABLE 0 (see lib.rs) and never leaves memory.
    WorkloadChannel::open(target).map_err(|e| match e {
        ClientError::Identity(e) => err("Cannot create the launcher's TLS key", e),
        ClientError::Runtime(e) => err("Cannot start the I/O runtime", e),
        ClientError::KeyChanged { seen, .. } => err(
            CHANNEL,
            format!("the server's key hash {seen} differs from the pinned one"),
        ),
        ClientError::Connect { msg, .. } => err(CHANNEL, msg),
        other => err(CHANNEL, other),
    })
}

/// A failed call under `outer`: the CAS's `msg` chain (with `outer` first), or what failed.
fn call_error(outer: &str, e: ClientError) -> LauncherError {
    match e {
        ClientError::Api { mut msg, .. } => {
            if msg.first().map(String::as_str) != Some(outer) {
                msg.insert(0, outer.to_string());
            }
            LauncherError::chain(msg)
        }
        ClientError::Send { msg, .. } => err(outer, format!("CAS request failed: {msg}")),
        ClientError::Receive { msg, .. } => err(outer, format!("reading the CAS answer: {msg}")),
        ClientError::Protocol { detail, .. } => {
            err(outer, format!("malformed CAS answer: {detail}"))
        }
        ClientError::Status { status } => err(outer, format!("CAS answered HTTP {status}")),
        other => err(outer, other),
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
    let mut channel = open(target)?;
    let nonce = channel
        .nonce()
        .map_err(|e| call_error("Failed to retrieve an attestation nonce from CAS", e))?;
    let evidence = make_evidence(channel.report_data(&nonce.nonce))?;
    channel
        .attest(&AttestRequest {
            config_id: ConfigId(config_id.to_string()),
            tier,
            nonce: nonce.nonce,
            evidence,
            service_access_token: service_access_token.map(SecretString::from),
        })
        .map_err(|e| call_error("Attestation failed", e))
}

/// Record `new_tag` for `volume` by compare-and-swap from `old_tag` (`None` = first use).
/// Returns only once the CAS has stored it durably (decision 2).
pub fn update_tag(
    target: &CasTarget,
    instance_token: &SecretString,
    volume: &str,
    old_tag: Option<Tag>,
    new_tag: Tag,
) -> Result<(), LauncherError> {
    let outer = format!("Failed to record the tag of volume {volume} in CAS");
    let recorded = open(target)
        .map_err(|e| e.context(outer.clone()))?
        .update_tag(&TagUpdateRequest {
            instance_token: instance_token.clone(),
            volume: volume.to_string(),
            old_tag,
            new_tag,
        })
        .map_err(|e| call_error(&outer, e))?;
    if recorded.tag != new_tag {
        return Err(err(
            outer,
            format!("CAS recorded tag {} instead", recorded.tag),
        ));
    }
    Ok(())
}

/// The outer message of a failed heartbeat.
pub const HEARTBEAT: &str = "Failed to renew the volume leases in CAS";

/// A heartbeat that did not renew the leases.
#[derive(Debug)]
pub enum HeartbeatError {
    /// The CAS answered and refused (e.g. `instance_unknown`): the leases are gone.
    Refused(LauncherError),
    /// The CAS could not be reached or did not answer: retried until the lease TTL runs out.
    Unreachable(LauncherError),
}

/// Renew the instance's volume leases; the lease TTL the CAS granted.
pub fn heartbeat(
    target: &CasTarget,
    instance_token: &SecretString,
) -> Result<std::time::Duration, HeartbeatError> {
    let mut channel =
        open(target).map_err(|e| HeartbeatError::Unreachable(e.context(HEARTBEAT)))?;
    match channel.heartbeat(&HeartbeatRequest {
        instance_token: instance_token.clone(),
    }) {
        Ok(r) => Ok(std::time::Duration::from_millis(r.lease_ttl_ms)),
        Err(e @ (ClientError::Api { .. } | ClientError::Status { .. })) => {
            Err(HeartbeatError::Refused(call_error(HEARTBEAT, e)))
        }
        Err(e) => Err(HeartbeatError::Unreachable(call_error(HEARTBEAT, e))),
    }
}

/// Tell the CAS the program exited (best effort; failures are logged, not fatal).
pub fn report_exit(target: &CasTarget, instance_token: &SecretString, status: i32) {
    let r = open(target).and_then(|mut c| {
        c.report_exit(&ExitRequest {
            instance_token: instance_token.clone(),
            status,
        })
        .map_err(|e| call_error("Failed to report the exit to CAS", e))
    });
    if let Err(e) = r {
        tracing::warn!("{e}");
    }
}

#[cfg(test)]
mod tests;
