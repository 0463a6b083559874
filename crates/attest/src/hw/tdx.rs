//! TD identity from a DCAP TDX quote v4 (TDX 1.0 body) or v5 (TDX 1.0, 1.5 or 1.5ex body);
//! verification is shared with SGX in `dcap`.

use dcap_qvl::quote::Report;
use serde::Serialize;

use super::hex_bytes;

/// The `DEBUG` bit of the TD attributes (bit 0, in the TUD group).
const TD_ATTRIBUTES_DEBUG: u8 = 0x01;

/// Identity of a TD, as in its report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdxMeasurements {
    /// MRTD: the initial contents of the TD.
    #[serde(with = "hex_bytes")]
    pub mrtd: [u8; 48],
    /// RTMR0..3.
    #[serde(serialize_with = "rtmrs")]
    pub rtmr: [[u8; 48]; 4],
    /// MRCONFIGID.
    #[serde(with = "hex_bytes")]
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    #[serde(with = "hex_bytes")]
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    #[serde(with = "hex_bytes")]
    pub mrownerconfig: [u8; 48],
    /// MRSERVICETD (TDX 1.5 reports only).
    #[serde(serialize_with = "opt_hex")]
    pub mrservicetd: Option<[u8; 48]>,
    /// TD attributes.
    #[serde(with = "hex_bytes")]
    pub td_attributes: [u8; 8],
    /// XFAM.
    #[serde(with = "hex_bytes")]
    pub xfam: [u8; 8],
    /// The TDX module: MRSEAM.
    #[serde(with = "hex_bytes")]
    pub mrseam: [u8; 48],
    /// The TDX module: MRSIGNERSEAM.
    #[serde(with = "hex_bytes")]
    pub mrsignerseam: [u8; 48],
    /// TEE_TCB_SVN (byte 1 is the TDX module major version, byte 0 its SVN).
    #[serde(with = "hex_bytes")]
    pub tee_tcb_svn: [u8; 16],
    /// TEE_TCB_SVN2, the current TCB after a TD-preserving update (TDX 1.5 only).
    #[serde(serialize_with = "opt_hex")]
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// The TD runs in debug mode (its state is readable by the host).
    pub debug: bool,
}

fn rtmrs<S: serde::Serializer>(v: &[[u8; 48]; 4], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(4))?;
    for r in v {
        seq.serialize_element(&hex::encode(r))?;
    }
    seq.end()
}

fn opt_hex<S: serde::Serializer, T: AsRef<[u8]>>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_some(&hex::encode(b.as_ref())),
        None => s.serialize_none(),
    }
}

/// The TD measurements of a TDX report (`None` for an SGX report).
pub(crate) fn measurements(report: &Report) -> Option<TdxMeasurements> {
    let r = report.as_td10()?;
    let td15 = report.as_td15();
    Some(TdxMeasurements {
        mrtd: r.mr_td,
        rtmr: [r.rt_mr0, r.rt_mr1, r.rt_mr2, r.rt_mr3],
        mrconfigid: r.mr_config_id,
        mrowner: r.mr_owner,
        mrownerconfig: r.mr_owner_config,
        mrservicetd: td15.map(|t| t.mr_service_td),
        td_attributes: r.td_attributes,
        xfam: r.xfam,
        mrseam: r.mr_seam,
        mrsignerseam: r.mr_signer_seam,
        tee_tcb_svn: r.tee_tcb_svn,
        tee_tcb_svn2: td15.map(|t| t.tee_tcb_svn2),
        debug: r.td_attributes[0] & TD_ATTRIBUTES_DEBUG != 0,
    })
}
