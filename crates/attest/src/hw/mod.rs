//! Hardware evidence: Intel SGX DCAP quotes (v3), Intel TDX quotes (v4, v5) and AMD SEV-SNP
//! attestation reports, verified offline against supplied collateral at a given time.
//!
//! The entry point is [`verify`]: `hw::verify(evidence_bytes, &collateral, at) -> Result<HwClaims,
//! HwError>`. It is a pure function of the evidence bytes, the [`HwCollateral`] and the time
//! `at`: no clock, no network, no file is read inside it. The CAS will call it from its
//! attestation flow (mapping [`HwClaims`] into the appraisal's claims and its policy for TCB
//! statuses and advisories); the `veil evidence verify` command calls it today.
//! [`HwCollateral::from_dir`] reads the documented collateral directory layout (see
//! [`collateral`]); [`inspect`] parses evidence without verifying it (claims only).
//!
//! * SGX and TDX quotes are parsed and verified with the `dcap-qvl` crate (PCK chain to the
//!   pinned Intel SGX Root CA key, both CRLs, TCB info v2/v3 and QE identity with their
//!   signatures and `nextUpdate`, QE report, quote signature, TCB level → status and
//!   advisories, TDX module identities). Its error strings are mapped onto [`HwError`].
//! * SNP reports are parsed with the `sev` crate, which also checks the ARK → ASK/ASVK →
//!   VCEK/VLEK signatures; the ARK is pinned by key to AMD's published roots (Milan, Genoa,
//!   Turin), every certificate's validity window is checked against `at`, the VCEK's hwID must be
//!   the report's chip id, and the report signature is checked over the bytes as received.

pub mod collateral;
mod dcap;
pub mod sgx;
pub mod snp;
pub mod tdx;

#[cfg(test)]
mod tests;

use serde::Serialize;

pub use collateral::{AmdCollateral, CollateralError, HwCollateral, IntelCollateral};

use crate::hash::Digest32;
use crate::time::UnixTime;

/// The hardware a piece of evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HwTier {
    /// Intel SGX (DCAP quote).
    Sgx,
    /// Intel TDX (DCAP quote).
    Tdx,
    /// AMD SEV-SNP (attestation report).
    Snp,
}

impl std::fmt::Display for HwTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HwTier::Sgx => "sgx",
            HwTier::Tdx => "tdx",
            HwTier::Snp => "snp",
        })
    }
}

/// The measurements of the evidence, per tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "tier", rename_all = "lowercase")]
pub enum Measurements {
    /// An SGX enclave report.
    Sgx(sgx::SgxMeasurements),
    /// A TD report.
    Tdx(Box<tdx::TdxMeasurements>),
    /// An SNP guest.
    Snp(Box<snp::SnpMeasurements>),
}

/// What verified (or, from [`inspect`], merely parsed) evidence says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HwClaims {
    /// The hardware.
    pub tier: HwTier,
    /// Quote or report version.
    pub version: u32,
    /// Measurements and identities of the enclave / TD / guest.
    pub measurements: Measurements,
    /// The 64 bytes of report data.
    #[serde(with = "hex_bytes")]
    pub report_data: [u8; 64],
    /// Debug enclave (SGX attributes), debug TD (TD attributes) or debug-allowed guest policy
    /// (SNP). Reported, not refused: the relying party's policy decides.
    pub debug: bool,
    /// The TCB status from Intel's TCB info and QE identity (`UpToDate`, `OutOfDate`, …);
    /// `None` for SNP (AMD publishes no status) and for unverified claims.
    pub tcb_status: Option<String>,
    /// Intel security advisories (`INTEL-SA-…`) that apply to the platform's TCB level.
    pub advisory_ids: Vec<String>,
    /// The platform: the FMSPC of the PCK certificate (Intel, hex) or the AMD product whose
    /// root the VCEK/VLEK chains to (`Milan`, `Genoa`, `Turin`; only after verification).
    pub platform_id: Option<String>,
    /// SHA-256 of the evidence as signed (without trailing bytes).
    pub evidence_digest: Digest32,
    /// Bytes after the quote's declared end (padding some attesters add); they are not signed
    /// and not used.
    pub trailing_bytes: usize,
    /// SHA-256 of each collateral file used, by file name (empty for unverified claims).
    pub collateral_digests: Vec<(String, Digest32)>,
    /// The time of the verification (`None` for unverified claims).
    pub verified_at: Option<UnixTime>,
}

/// Why hardware evidence was refused. Each variant has its own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwError {
    /// Neither a DCAP quote nor an SNP report.
    #[error(
        "unrecognised evidence ({len} bytes): neither an SGX/TDX DCAP quote nor an SEV-SNP report"
    )]
    UnknownFormat {
        /// Its length.
        len: usize,
    },
    /// The evidence does not parse.
    #[error("malformed {tier} evidence: {detail}")]
    Malformed {
        /// The tier it looked like.
        tier: HwTier,
        /// What is wrong.
        detail: String,
    },
    /// A version this verifier does not support.
    #[error("unsupported {tier} evidence version {version}")]
    UnsupportedVersion {
        /// The tier.
        tier: HwTier,
        /// The version found.
        version: u32,
    },
    /// Collateral needed for this tier is missing.
    #[error("no {what} collateral supplied for {tier} evidence")]
    MissingCollateral {
        /// The tier.
        tier: HwTier,
        /// What is missing.
        what: &'static str,
    },
    /// A collateral item does not parse or is of the wrong kind.
    #[error("bad collateral: {detail}")]
    BadCollateral {
        /// What is wrong.
        detail: String,
    },
    /// TCB info or QE identity is not valid at the given time (`issueDate..nextUpdate`).
    #[error("collateral is not valid at the given time: {detail}")]
    CollateralNotFresh {
        /// Which item and how.
        detail: String,
    },
    /// A CRL is not valid at the given time.
    #[error("a CRL is not valid at the given time: {detail}")]
    CrlNotFresh {
        /// Detail.
        detail: String,
    },
    /// A certificate is outside its validity window at the given time.
    #[error("certificate {which} is not valid at the given time: {detail}")]
    CertificateExpired {
        /// Which certificate.
        which: String,
        /// Its window versus the time.
        detail: String,
    },
    /// A certificate was revoked.
    #[error("a certificate of the chain is revoked: {detail}")]
    Revoked {
        /// Detail.
        detail: String,
    },
    /// A chain does not lead to the pinned vendor root.
    #[error("certificate chain of {which} does not lead to the pinned {vendor} root: {detail}")]
    UntrustedChain {
        /// Which chain.
        which: String,
        /// Intel or AMD.
        vendor: &'static str,
        /// Detail.
        detail: String,
    },
    /// A signature over TCB info or QE identity does not verify.
    #[error("the signature over the {what} does not verify")]
    CollateralSignature {
        /// Which collateral item.
        what: &'static str,
    },
    /// The quoting enclave's report is not signed by the PCK key, or does not bind the
    /// attestation key, or does not match the QE identity.
    #[error("the quoting enclave report is invalid: {detail}")]
    QeReport {
        /// Detail.
        detail: String,
    },
    /// The quote or report signature does not verify: the evidence was altered or signed by
    /// another key.
    #[error(
        "the {tier} evidence signature does not verify: the evidence was altered or signed by another key"
    )]
    BadSignature {
        /// The tier.
        tier: HwTier,
    },
    /// The SNP endorsement key certificate is not the one of the chip that made the report.
    #[error("the {key} certificate does not match the report: {detail}")]
    VekMismatch {
        /// VCEK or VLEK.
        key: &'static str,
        /// Detail.
        detail: String,
    },
    /// The collateral is for another platform model.
    #[error("the TCB info is for FMSPC {collateral}, but the quote's PCK certificate says {quote}")]
    FmspcMismatch {
        /// FMSPC of the TCB info.
        collateral: String,
        /// FMSPC of the PCK certificate.
        quote: String,
    },
    /// The platform's TCB is below every level the TCB info knows.
    #[error(
        "TCB level not supported: the platform TCB is below every level of the TCB info ({detail})"
    )]
    TcbLevelNotSupported {
        /// Detail.
        detail: String,
    },
    /// The TCB status is `Revoked`.
    #[error("the platform TCB status is Revoked")]
    TcbRevoked,
    /// The TDX module is not one of the identities of the TCB info.
    #[error("the TDX module does not match the TCB info's module identities: {detail}")]
    TdxModule {
        /// Detail.
        detail: String,
    },
    /// The report data is not the one expected.
    #[error("report data mismatch: expected {expected}, evidence has {actual}")]
    ReportDataMismatch {
        /// Expected, hex.
        expected: String,
        /// In the evidence, hex.
        actual: String,
    },
    /// Any other refusal by the DCAP verifier.
    #[error("DCAP quote verification failed: {detail}")]
    Dcap {
        /// The verifier's message.
        detail: String,
    },
}

/// Recognise the evidence format from its first bytes.
pub fn detect(evidence: &[u8]) -> Result<HwTier, HwError> {
    let unknown = HwError::UnknownFormat {
        len: evidence.len(),
    };
    let Some(head) = evidence.get(..8) else {
        return Err(unknown);
    };
    let version = u16::from_le_bytes([head[0], head[1]]);
    let word2 = u16::from_le_bytes([head[2], head[3]]);
    let tee_type = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    // An SNP report starts with a 32-bit version and a 32-bit guest SVN; a DCAP quote with a
    // 16-bit version and the attestation key type (2 = ECDSA P-256, never 0).
    if word2 == 0 && (2..=5).contains(&version) {
        return Ok(HwTier::Snp);
    }
    match (version, tee_type) {
        (3..=5, dcap::TEE_TYPE_SGX) => Ok(HwTier::Sgx),
        (4..=5, dcap::TEE_TYPE_TDX) => Ok(HwTier::Tdx),
        (0..=2 | 6.., dcap::TEE_TYPE_SGX | dcap::TEE_TYPE_TDX) => {
            Err(HwError::UnsupportedVersion {
                tier: if tee_type == dcap::TEE_TYPE_SGX {
                    HwTier::Sgx
                } else {
                    HwTier::Tdx
                },
                version: u32::from(version),
            })
        }
        _ => Err(unknown),
    }
}

/// Verify hardware evidence against `collateral` at time `at` (pure: no clock, no network).
pub fn verify(
    evidence: &[u8],
    collateral: &HwCollateral,
    at: UnixTime,
) -> Result<HwClaims, HwError> {
    match detect(evidence)? {
        HwTier::Sgx | HwTier::Tdx => dcap::verify(evidence, collateral, at),
        HwTier::Snp => snp::verify(evidence, collateral, at),
    }
}

/// [`verify`], then check the report data against the expected value.
pub fn verify_bound(
    evidence: &[u8],
    collateral: &HwCollateral,
    at: UnixTime,
    expected_report_data: &[u8; 64],
) -> Result<HwClaims, HwError> {
    let claims = verify(evidence, collateral, at)?;
    if &claims.report_data != expected_report_data {
        return Err(HwError::ReportDataMismatch {
            expected: hex::encode(expected_report_data),
            actual: hex::encode(claims.report_data),
        });
    }
    Ok(claims)
}

/// Claims parsed from evidence that was **not** verified: nothing in them is vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified(HwClaims);

impl Unverified {
    /// The parsed, unverified claims.
    pub fn unverified_claims(&self) -> &HwClaims {
        &self.0
    }
}

/// Parse evidence and extract its claims without verifying anything (for display and for
/// evidence without collateral).
pub fn inspect(evidence: &[u8]) -> Result<Unverified, HwError> {
    let claims = match detect(evidence)? {
        HwTier::Sgx | HwTier::Tdx => dcap::parse(evidence)?.claims,
        HwTier::Snp => snp::parse(evidence)?.claims,
    };
    Ok(Unverified(claims))
}

/// Parse an RFC 3339 time (`2025-06-25T00:00:00Z`) into a [`UnixTime`]; `None` if it does not
/// parse or is before the epoch.
pub fn parse_rfc3339(s: &str) -> Option<UnixTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).ok().map(UnixTime)
}

/// Format a [`UnixTime`] as RFC 3339 (UTC).
pub fn format_rfc3339(at: UnixTime) -> String {
    i128::from(at.0)
        .checked_mul(1_000_000)
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{} ms after the epoch", at.0))
}

/// Serialise byte arrays as lowercase hex.
pub(crate) mod hex_bytes {
    use serde::Serializer;

    /// Serialise as hex.
    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v.as_ref()))
    }
}
