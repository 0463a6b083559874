//! Intel DCAP quotes (SGX v3, TDX v4/v5): parsing and offline verification with `dcap-qvl`,
//! and the mapping of its error strings onto [`HwError`].

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::{Quote, Report};

use super::{HwClaims, HwCollateral, HwError, HwTier, Measurements, sgx, tdx};
use crate::hash::Digest32;
use crate::time::UnixTime;

/// `tee_type` of an SGX quote.
pub(crate) const TEE_TYPE_SGX: u32 = 0x0000_0000;
/// `tee_type` of a TDX quote.
pub(crate) const TEE_TYPE_TDX: u32 = 0x0000_0081;

/// A parsed quote, its claims (unverified) and the length of the quote proper.
pub(crate) struct Parsed {
    pub(crate) claims: HwClaims,
    pub(crate) quote_len: usize,
}

/// Parse a quote by its declared lengths; bytes after it are counted, not used.
pub(crate) fn parse(evidence: &[u8]) -> Result<Parsed, HwError> {
    let tier = super::detect(evidence)?;
    let malformed = |detail: String| HwError::Malformed { tier, detail };
    let quote = Quote::parse(evidence).map_err(|e| malformed(format!("{e:#}")))?;
    // The quote ends after the signed body and its length-prefixed signature data.
    let signed_len = quote.signed_length();
    let signed = evidence
        .get(..signed_len)
        .ok_or_else(|| malformed("shorter than its signed body".to_string()))?;
    let sig_len = evidence
        .get(signed_len..signed_len.saturating_add(4))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| malformed("no signature data length".to_string()))?;
    let quote_len = usize::try_from(sig_len)
        .ok()
        .and_then(|n| signed_len.checked_add(4)?.checked_add(n))
        .filter(|&n| n <= evidence.len())
        .ok_or_else(|| malformed("signature data runs past the end".to_string()))?;
    let fmspc = dcap_qvl::intel::extract_cert_chain(&quote)
        .ok()
        .and_then(|chain| chain.first().cloned())
        .and_then(|leaf| dcap_qvl::intel::parse_pck_extension(&leaf).ok())
        .map(|ext| hex::encode(ext.fmspc));
    let version = u32::from(quote.header.version);
    let (measurements, report_data, debug) = match (&quote.report, tier) {
        (Report::SgxEnclave(r), HwTier::Sgx) => {
            let m = sgx::measurements(r);
            let debug = m.debug;
            (Measurements::Sgx(m), r.report_data, debug)
        }
        (Report::TD10(_) | Report::TD15(_) | Report::TD15Ex(_), HwTier::Tdx) => {
            let m = tdx::measurements(&quote.report).ok_or(HwError::Malformed {
                tier,
                detail: "no TD report".to_string(),
            })?;
            let debug = m.debug;
            let rd = quote
                .report
                .as_td10()
                .map(|r| r.report_data)
                .unwrap_or([0; 64]);
            (Measurements::Tdx(Box::new(m)), rd, debug)
        }
        _ => {
            return Err(HwError::Malformed {
                tier,
                detail: "the report body does not match the TEE type".to_string(),
            });
        }
    };
    Ok(Parsed {
        claims: HwClaims {
            tier,
            version,
            measurements,
            report_data,
            debug,
            tcb_status: None,
            advisory_ids: Vec::new(),
            evidence_digest: Digest32::of(signed),
            platform_id: fmspc,
            trailing_bytes: evidence.len() - quote_len,
            collateral_digests: Vec::new(),
            verified_at: None,
        },
        quote_len,
    })
}

/// Verify an SGX or TDX quote against Intel collateral at `at`.
pub(crate) fn verify(
    evidence: &[u8],
    collateral: &HwCollateral,
    at: UnixTime,
) -> Result<HwClaims, HwError> {
    let parsed = parse(evidence)?;
    let tier = parsed.claims.tier;
    if tier == HwTier::Sgx && parsed.claims.version != 3 {
        return Err(HwError::UnsupportedVersion {
            tier,
            version: parsed.claims.version,
        });
    }
    let Some(intel) = &collateral.intel else {
        return Err(match &collateral.intel_incomplete {
            Some(why) => HwError::BadCollateral {
                detail: format!("Intel collateral is incomplete: {why}"),
            },
            None => HwError::MissingCollateral {
                tier,
                what: "Intel (TCB info, QE identity, CRLs)",
            },
        });
    };
    let qvl = QuoteCollateralV3 {
        pck_crl_issuer_chain: intel.pck_crl_issuer_chain.clone(),
        root_ca_crl: intel.root_ca_crl.clone(),
        pck_crl: intel.pck_crl.clone(),
        tcb_info_issuer_chain: intel.tcb_info_issuer_chain.clone(),
        tcb_info: intel.tcb_info.clone(),
        tcb_info_signature: intel.tcb_info_signature.clone(),
        qe_identity_issuer_chain: intel.qe_identity_issuer_chain.clone(),
        qe_identity: intel.qe_identity.clone(),
        qe_identity_signature: intel.qe_identity_signature.clone(),
        pck_certificate_chain: None,
    };
    // The quote proper: dcap-qvl reads by the declared lengths too, trailing bytes are not
    // passed on.
    let quote = evidence.get(..parsed.quote_len).unwrap_or(evidence);
    // Debug enclaves/TDs and service-TD bindings are reported in the claims, the relying
    // party's policy decides on them.
    let verifier = dcap_qvl::verify::QuoteVerifier::new_prod()
        .allow_debug(true)
        .allow_service_td(true);
    let report = verifier.verify(quote, &qvl, at.0 / 1000).map_err(|e| {
        classify(
            &e,
            tier,
            &intel.tcb_info,
            parsed.claims.platform_id.as_deref(),
        )
    })?;
    let mut claims = parsed.claims;
    claims.tcb_status = Some(report.status);
    claims.advisory_ids = report.advisory_ids;
    claims.collateral_digests = collateral.digests.clone();
    claims.verified_at = Some(at);
    Ok(claims)
}

/// The FMSPC a TCB info is for (for the error message).
fn tcb_info_fmspc(tcb_info: &str) -> String {
    serde_json::from_str::<serde_json::Value>(tcb_info)
        .ok()
        .and_then(|v| {
            v.get("fmspc")
                .and_then(|f| f.as_str())
                .map(str::to_lowercase)
        })
        .unwrap_or_else(|| "?".to_string())
}

/// Map a `dcap-qvl` refusal onto a typed error. Its errors are `anyhow` chains of fixed
/// strings; the outermost context names the step and the innermost the cause.
fn classify(e: &anyhow::Error, tier: HwTier, tcb_info: &str, fmspc: Option<&str>) -> HwError {
    let full = format!("{e:#}");
    let has = |s: &str| full.contains(s);
    if has("No matching TCB level found") || has("TDX module TCB level check") && has("No matching")
    {
        HwError::TcbLevelNotSupported { detail: full }
    } else if has("Fmspc mismatch") {
        HwError::FmspcMismatch {
            collateral: tcb_info_fmspc(tcb_info),
            quote: fmspc.unwrap_or("?").to_string(),
        }
    } else if has("TCBInfo expired")
        || has("TCBInfo issue date is in the future")
        || has("QE Identity expired")
        || has("QE Identity issue date is in the future")
    {
        HwError::CollateralNotFresh { detail: full }
    } else if has("CrlExpired") || has("CrlNotValidYet") {
        HwError::CrlNotFresh { detail: full }
    } else if has("UnknownRevocationStatus") {
        HwError::BadCollateral {
            detail: format!(
                "no CRL covers a certificate of the chain (is pck_crl.der the CRL of the CA that issued the quote's PCK certificate?): {full}"
            ),
        }
    } else if has("CertRevoked") {
        HwError::Revoked { detail: full }
    } else if has("CertExpired") || has("CertNotValidYet") {
        HwError::CertificateExpired {
            which: "in an Intel chain".to_string(),
            detail: full,
        }
    } else if has("TCB status is invalid: Revoked") {
        HwError::TcbRevoked
    } else if has("Signature is invalid for tcb_info") {
        HwError::CollateralSignature { what: "TCB info" }
    } else if has("Signature is invalid for qe_identity") {
        HwError::CollateralSignature {
            what: "QE identity",
        }
    } else if has("ISV enclave report signature is invalid") {
        HwError::BadSignature { tier }
    } else if has("qe_report") || has("QE report") || has("QE Identity") && has("mismatch") {
        HwError::QeReport { detail: full }
    } else if has("TDX module identity check") || has("TDX TCB Info is missing tdxModule") {
        HwError::TdxModule { detail: full }
    } else if has("UnknownIssuer")
        || has("Failed to verify certificate chain")
        || has("Failed to parse root CA CRL")
        || has("BadSignature")
    {
        HwError::UntrustedChain {
            which: "a PCK, TCB signing or CRL".to_string(),
            vendor: "Intel SGX Root CA",
            detail: full,
        }
    } else if has("Failed to decode TcbInfo")
        || has("Failed to decode QeIdentity")
        || has("Failed to parse PCK CRL")
        || has("non-TDX TCB info")
        || has("non-SGX TCB info")
        || has("Unsupported QE Identity")
        || has("Failed to parse certs")
    {
        HwError::BadCollateral { detail: full }
    } else {
        HwError::Dcap { detail: full }
    }
}
