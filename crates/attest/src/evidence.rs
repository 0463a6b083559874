//! Evidence per tier, and the exact bytes a LAS signs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::binding::ReportData;
use crate::hash::Digest32;
use crate::measure::{Target, measurement};
use crate::time::UnixTime;
use veil_types::Measurement;

/// Attestation tiers (design notes: names are part of the interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Self-reported measurement; no protection against the host.
    Sim,
    /// Measured and signed by the node's LAS; the node's root is trusted.
    Node,
    /// Intel SGX DCAP (not built yet: no verifier in this crate).
    Sgx,
    /// Intel TDX (not built yet).
    Tdx,
    /// AMD SEV-SNP (not built yet).
    Snp,
}

impl Tier {
    /// The lowercase name (`sim`, `node`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Sim => "sim",
            Tier::Node => "node",
            Tier::Sgx => "sgx",
            Tier::Tdx => "tdx",
            Tier::Snp => "snp",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Evidence as it travels in an attest request; the tier is the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tier", rename_all = "lowercase")]
pub enum Evidence {
    /// `sim`: what the launcher says about itself.
    Sim(SimEvidence),
    /// `node`: claims signed by a LAS.
    Node(NodeEvidence),
}

impl Evidence {
    /// The tier of this evidence.
    pub fn tier(&self) -> Tier {
        match self {
            Evidence::Sim(_) => Tier::Sim,
            Evidence::Node(_) => Tier::Node,
        }
    }

    /// SHA-256 over a stable encoding of the evidence (for the audit log).
    pub fn digest(&self) -> Digest32 {
        match self {
            Evidence::Sim(s) => Digest32::of_parts(&[
                b"veil-sim-evidence-v1\0",
                &s.launcher_hash.0,
                &target_bytes(&s.target),
                &s.measurement.0,
                &s.report_data.0,
            ]),
            Evidence::Node(n) => Digest32::of_parts(&[&n.claims.signed_bytes(), &n.signature]),
        }
    }
}

/// `sim` evidence: the launcher's own word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimEvidence {
    /// SHA-256 of the launcher executable (as the launcher read `/proc/self/exe`).
    pub launcher_hash: Digest32,
    /// What it will run.
    pub target: Target,
    /// The measurement (must equal `measurement(launcher_hash, target)`).
    pub measurement: Measurement,
    /// The binding to the nonce and TLS key.
    pub report_data: ReportData,
}

impl SimEvidence {
    /// Self-reported evidence for `launcher_hash` running `target`, bound to `report_data`.
    pub fn new(launcher_hash: Digest32, target: Target, report_data: ReportData) -> Self {
        Self {
            measurement: measurement(&launcher_hash, &target),
            launcher_hash,
            target,
            report_data,
        }
    }
}

/// What a LAS signs about one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeClaims {
    /// The node's id (as registered with the CAS).
    pub node_id: String,
    /// When the LAS made the claims.
    pub time: UnixTime,
    /// The pid of the attested process (in the LAS's pid namespace), for the audit log.
    pub pid: u32,
    /// SHA-256 of `/proc/<pid>/exe`, computed by the LAS.
    pub launcher_hash: Digest32,
    /// What the launcher says it will run (the program hash is the measured launcher's word).
    pub target: Target,
    /// `measurement(launcher_hash, target)`.
    pub measurement: Measurement,
    /// The binding to the nonce and TLS key, as the process asked.
    pub report_data: ReportData,
    /// Who asked, as the kernel says (the real uid from `SCM_CREDENTIALS`, in the LAS's user
    /// namespace): sessions may restrict it (`veil.node.uids`), the CAS audits it.
    pub uid: u32,
    /// The real gid from `SCM_CREDENTIALS`.
    pub gid: u32,
    /// The requester's cgroup (v2) path from `/proc/<pid>/cgroup`, e.g.
    /// `/system.slice/podman-….scope`; sessions may restrict its prefix.
    pub cgroup: String,
}

/// Domain string at the start of the bytes a LAS signs.
pub const NODE_CLAIMS_DOMAIN: &[u8] = b"veil-las-evidence-v2\0";

fn target_bytes(t: &Target) -> Vec<u8> {
    match t {
        Target::Envcas => vec![0],
        Target::Program { hash } => {
            let mut v = vec![1];
            v.extend_from_slice(&hash.0);
            v
        }
        Target::Image {
            program,
            list,
            files,
        } => {
            let mut v = Vec::with_capacity(69 + 32 * files.len());
            v.push(2);
            v.extend_from_slice(&program.0);
            v.extend_from_slice(&list.0);
            v.extend_from_slice(&u32::try_from(files.len()).unwrap_or(u32::MAX).to_be_bytes());
            for f in files {
                v.extend_from_slice(&f.0);
            }
            v
        }
    }
}

impl NodeClaims {
    /// The exact, length-prefixed binary encoding a LAS signs (no JSON canonicalisation):
    /// domain ‖ u32be len(node_id) ‖ node_id ‖ u64be time ‖ u32be pid ‖ launcher_hash ‖
    /// target (0 = envcas | 1 ‖ program hash | 2 ‖ program hash ‖ list hash ‖ u32be n ‖ n file
    /// hashes) ‖ measurement ‖ report_data ‖ u32be uid ‖
    /// u32be gid ‖ u32be len(cgroup) ‖ cgroup.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let id = self.node_id.as_bytes();
        let mut v = Vec::with_capacity(NODE_CLAIMS_DOMAIN.len() + id.len() + 200);
        v.extend_from_slice(NODE_CLAIMS_DOMAIN);
        v.extend_from_slice(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
        v.extend_from_slice(id);
        v.extend_from_slice(&self.time.0.to_be_bytes());
        v.extend_from_slice(&self.pid.to_be_bytes());
        v.extend_from_slice(&self.launcher_hash.0);
        v.extend_from_slice(&target_bytes(&self.target));
        v.extend_from_slice(&self.measurement.0);
        v.extend_from_slice(&self.report_data.0);
        v.extend_from_slice(&self.uid.to_be_bytes());
        v.extend_from_slice(&self.gid.to_be_bytes());
        let cg = self.cgroup.as_bytes();
        v.extend_from_slice(&u32::try_from(cg.len()).unwrap_or(u32::MAX).to_be_bytes());
        v.extend_from_slice(cg);
        v
    }
}

/// `node` evidence: claims plus the LAS's ECDSA P-256 (ASN.1 DER) signature over
/// [`NodeClaims::signed_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEvidence {
    /// The signed claims.
    pub claims: NodeClaims,
    /// Key hash (decision 7) of the node key that signed; selects the registered key.
    pub node_key_hash: String,
    /// The signature, base64 on the wire.
    #[serde(with = "crate::b64")]
    pub signature: Vec<u8>,
}
