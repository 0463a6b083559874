//! SGX enclave identity from a DCAP quote v3 (verification is shared with TDX in `dcap`).

use dcap_qvl::quote::EnclaveReport;
use serde::Serialize;

use super::hex_bytes;

/// The `DEBUG` flag of the SGX enclave attributes (bit 1 of the flags).
const SGX_FLAGS_DEBUG: u8 = 0x02;

/// Identity of an SGX enclave, as in its report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgxMeasurements {
    /// MRENCLAVE.
    #[serde(with = "hex_bytes")]
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    #[serde(with = "hex_bytes")]
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// ATTRIBUTES (flags ‖ XFRM).
    #[serde(with = "hex_bytes")]
    pub attributes: [u8; 16],
    /// MISCSELECT.
    pub misc_select: u32,
    /// CPUSVN of the report.
    #[serde(with = "hex_bytes")]
    pub cpu_svn: [u8; 16],
    /// The enclave runs in debug mode (its memory is readable by the host).
    pub debug: bool,
}

pub(crate) fn measurements(r: &EnclaveReport) -> SgxMeasurements {
    SgxMeasurements {
        mrenclave: r.mr_enclave,
        mrsigner: r.mr_signer,
        isv_prod_id: r.isv_prod_id,
        isv_svn: r.isv_svn,
        attributes: r.attributes,
        misc_select: r.misc_select,
        cpu_svn: r.cpu_svn,
        debug: r.attributes[0] & SGX_FLAGS_DEBUG != 0,
    }
}
