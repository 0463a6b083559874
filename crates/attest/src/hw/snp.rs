//! AMD SEV-SNP attestation reports (versions 2, 3 and 5): parsing with the `sev` crate and
//! offline verification against a VCEK or VLEK and the AMD CA chain at a given time.
//!
//! Checks, in order: the report is exactly 1184 bytes; the signing key the report names
//! (VCEK or VLEK) is the kind supplied; the ARK's key is one of AMD's published roots (Milan,
//! Genoa, Turin, as shipped in `sev`); ARK is self-signed, ARK signs the ASK/ASVK, which signs
//! the VCEK/VLEK (`sev`); every certificate is inside its validity window at `at`; a VCEK's
//! hwID is the report's chip id; the TCB a VCEK was issued for (its `blSPL`, `teeSPL`, `snpSPL`,
//! `ucodeSPL` and, on Turin, `fmcSPL` extensions) is the report's REPORTED_TCB, so a VCEK of an
//! older or newer TCB of the same chip is refused; the ECDSA P-384 signature verifies over bytes
//! `0..0x2a0` as received (not a re-encoding, so reserved bytes are covered too).

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
use serde::Serialize;
use sev::certs::snp::{Certificate, Chain, Verifiable, builtin, ca};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{HwClaims, HwCollateral, HwError, HwTier, Measurements, hex_bytes};
use crate::hash::Digest32;
use crate::time::UnixTime;

/// Size of an SNP attestation report.
pub const REPORT_LEN: usize = 1184;
/// End of the signed part of the report.
const SIGNED_LEN: usize = 0x2a0;
/// `SIGNATURE_ALGO` value for ECDSA P-384 with SHA-384.
const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Guest policy bit 19: debugging allowed.
const POLICY_DEBUG: u64 = 1 << 19;
/// VCEK extension holding the chip's hardware id.
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
/// VCEK/VLEK extensions holding the TCB the key was issued for (AMD's "Versioned Chip
/// Endorsement Key" specification, table "VCEK certificate extensions").
const OID_TCB: [(&str, &str); 5] = [
    ("1.3.6.1.4.1.3704.1.3.1", "bootloader"),
    ("1.3.6.1.4.1.3704.1.3.2", "tee"),
    ("1.3.6.1.4.1.3704.1.3.3", "snp"),
    ("1.3.6.1.4.1.3704.1.3.8", "microcode"),
    ("1.3.6.1.4.1.3704.1.3.9", "fmc"),
];

/// The reported TCB of an SNP platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SnpTcb {
    /// PSP bootloader SVN.
    pub bootloader: u8,
    /// PSP OS SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
    /// FMC SVN (Turin and later).
    pub fmc: Option<u8>,
}

/// Identity of an SNP guest, as in its report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpMeasurements {
    /// MEASUREMENT: the launch digest.
    #[serde(with = "hex_bytes")]
    pub measurement: [u8; 48],
    /// Guest policy.
    pub policy: u64,
    /// HOST_DATA supplied at launch.
    #[serde(with = "hex_bytes")]
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST.
    #[serde(with = "hex_bytes")]
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    #[serde(with = "hex_bytes")]
    pub author_key_digest: [u8; 48],
    /// FAMILY_ID.
    #[serde(with = "hex_bytes")]
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    #[serde(with = "hex_bytes")]
    pub image_id: [u8; 16],
    /// Guest SVN.
    pub guest_svn: u32,
    /// The VMPL that requested the report.
    pub vmpl: u32,
    /// Chip id (zero when masked, as with a VLEK).
    #[serde(with = "hex_bytes")]
    pub chip_id: [u8; 64],
    /// REPORTED_TCB.
    pub reported_tcb: SnpTcb,
    /// `vcek` or `vlek`.
    pub signing_key: &'static str,
    /// The guest policy allows debugging (the host can read and change guest memory).
    pub debug: bool,
}

/// A parsed report and its (unverified) claims.
pub(crate) struct Parsed {
    pub(crate) claims: HwClaims,
    signing_key: u32,
    sig_algo: u32,
    chip_id: [u8; 64],
    reported_tcb: SnpTcb,
}

fn malformed(detail: impl std::fmt::Display) -> HwError {
    HwError::Malformed {
        tier: HwTier::Snp,
        detail: detail.to_string(),
    }
}

/// Parse a report (exactly [`REPORT_LEN`] bytes: a report has no trailing data).
pub(crate) fn parse(evidence: &[u8]) -> Result<Parsed, HwError> {
    if evidence.len() != REPORT_LEN {
        return Err(malformed(format!(
            "an SNP report is exactly {REPORT_LEN} bytes, this is {}",
            evidence.len()
        )));
    }
    let version = evidence
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    if !(2..=5).contains(&version) {
        return Err(HwError::UnsupportedVersion {
            tier: HwTier::Snp,
            version,
        });
    }
    let r = AttestationReport::from_bytes(evidence).map_err(malformed)?;
    let signing_key = r.key_info.signing_key();
    let policy: u64 = r.policy.0;
    let t = r.reported_tcb;
    let m = SnpMeasurements {
        measurement: r.measurement,
        policy,
        host_data: r.host_data,
        id_key_digest: r.id_key_digest,
        author_key_digest: r.author_key_digest,
        family_id: r.family_id,
        image_id: r.image_id,
        guest_svn: r.guest_svn,
        vmpl: r.vmpl,
        chip_id: r.chip_id,
        reported_tcb: SnpTcb {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
            fmc: t.fmc,
        },
        signing_key: match signing_key {
            0 => "vcek",
            1 => "vlek",
            _ => "none",
        },
        debug: policy & POLICY_DEBUG != 0,
    };
    let debug = m.debug;
    Ok(Parsed {
        claims: HwClaims {
            tier: HwTier::Snp,
            version: r.version,
            measurements: Measurements::Snp(Box::new(m)),
            report_data: r.report_data,
            debug,
            tcb_status: None,
            advisory_ids: Vec::new(),
            platform_id: None,
            evidence_digest: Digest32::of(evidence),
            trailing_bytes: 0,
            collateral_digests: Vec::new(),
            verified_at: None,
        },
        signing_key,
        sig_algo: r.sig_algo,
        chip_id: r.chip_id,
        reported_tcb: SnpTcb {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
            fmc: t.fmc,
        },
    })
}

/// The key of a certificate's SubjectPublicKeyInfo (DER of the SPKI).
fn spki(der: &[u8], which: &str) -> Result<Vec<u8>, HwError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| HwError::BadCollateral {
        detail: format!("{which} certificate does not parse: {e}"),
    })?;
    Ok(cert.public_key().raw.to_vec())
}

/// The AMD product whose published ARK has the key of `ark_der`.
fn pinned_product(ark_der: &[u8]) -> Result<&'static str, HwError> {
    let supplied = spki(ark_der, "ARK")?;
    let roots: [(&'static str, &[u8]); 3] = [
        ("Milan", builtin::milan::ARK),
        ("Genoa", builtin::genoa::ARK),
        ("Turin", builtin::turin::ARK),
    ];
    for (name, pem) in roots {
        let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem) else {
            continue;
        };
        if spki(&p.contents, "built-in ARK")? == supplied {
            return Ok(name);
        }
    }
    Err(HwError::UntrustedChain {
        which: "the ARK".to_string(),
        vendor: "AMD",
        detail: "its key is none of AMD's published ARKs (Milan, Genoa, Turin)".to_string(),
    })
}

/// Check a certificate's validity window against `at`.
fn check_validity(der: &[u8], which: &str, at: UnixTime) -> Result<(), HwError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| HwError::BadCollateral {
        detail: format!("{which} certificate does not parse: {e}"),
    })?;
    let v = cert.validity();
    let secs = i64::try_from(at.0 / 1000).unwrap_or(i64::MAX);
    let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
    if secs < nb || secs > na {
        return Err(HwError::CertificateExpired {
            which: which.to_string(),
            detail: format!(
                "valid {} .. {}, time is {}",
                v.not_before, v.not_after, secs
            ),
        });
    }
    Ok(())
}

/// The 64-byte hwID of a VCEK, if it has one.
fn hw_id(vek_der: &[u8]) -> Result<Option<Vec<u8>>, HwError> {
    let (_, cert) = X509Certificate::from_der(vek_der).map_err(|e| HwError::BadCollateral {
        detail: format!("VCEK certificate does not parse: {e}"),
    })?;
    for ext in cert.extensions() {
        if ext.oid.to_id_string() == OID_HW_ID {
            let v = ext.value;
            // Raw 64 bytes (as AMD KDS issues it) or wrapped in an OCTET STRING.
            let id = match v.len() {
                64 => v.to_vec(),
                66 if v[0] == 0x04 && v[1] == 64 => v[2..].to_vec(),
                n => {
                    return Err(HwError::BadCollateral {
                        detail: format!("VCEK hwID extension has {n} bytes"),
                    });
                }
            };
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The TCB components a VCEK's extensions name, as (component, value), in [`OID_TCB`] order.
fn vek_tcb(vek_der: &[u8]) -> Result<Vec<(&'static str, u8)>, HwError> {
    let (_, cert) = X509Certificate::from_der(vek_der).map_err(|e| HwError::BadCollateral {
        detail: format!("VCEK certificate does not parse: {e}"),
    })?;
    let mut out = Vec::new();
    for (oid, name) in OID_TCB {
        let Some(ext) = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
        else {
            continue;
        };
        out.push((name, tcb_value(ext.value, name)?));
    }
    Ok(out)
}

/// One TCB extension's value: a DER INTEGER 0..=255.
fn tcb_value(der: &[u8], name: &str) -> Result<u8, HwError> {
    let bad = || HwError::BadCollateral {
        detail: format!("VCEK {name} TCB extension is not an INTEGER 0..255"),
    };
    match der {
        [0x02, 1, v] if *v < 0x80 => Ok(*v),
        [0x02, 2, 0, v] if *v >= 0x80 => Ok(*v),
        _ => Err(bad()),
    }
}

/// Compare the TCB a VCEK was issued for with the report's REPORTED_TCB.
fn check_vek_tcb(vek: &[(&'static str, u8)], reported: &SnpTcb) -> Result<(), HwError> {
    if vek.is_empty() {
        return Err(HwError::BadCollateral {
            detail: "the VCEK names no TCB (no blSPL/teeSPL/snpSPL/ucodeSPL extensions)".into(),
        });
    }
    for (name, v) in vek {
        let r = match *name {
            "bootloader" => Some(reported.bootloader),
            "tee" => Some(reported.tee),
            "snp" => Some(reported.snp),
            "microcode" => Some(reported.microcode),
            _ => reported.fmc,
        };
        if r != Some(*v) {
            return Err(HwError::VekMismatch {
                key: "VCEK",
                detail: format!(
                    "it was issued for {name} SVN {v} but the report's REPORTED_TCB has {}",
                    r.map_or_else(|| "none".to_string(), |r| r.to_string())
                ),
            });
        }
    }
    Ok(())
}

/// `r ‖ s` big-endian (48 bytes each) from the report's little-endian 72-byte components.
fn fixed_signature(evidence: &[u8]) -> Option<[u8; 96]> {
    let sig = evidence.get(SIGNED_LEN..SIGNED_LEN + 144)?;
    let mut out = [0u8; 96];
    for (i, comp) in sig.chunks_exact(72).enumerate() {
        // The components are P-384 scalars: the top 24 bytes must be zero.
        if comp[48..].iter().any(|&b| b != 0) {
            return None;
        }
        for (j, b) in comp[..48].iter().rev().enumerate() {
            out[i * 48 + j] = *b;
        }
    }
    Some(out)
}

/// Verify an SNP report against AMD collateral at `at`.
pub(crate) fn verify(
    evidence: &[u8],
    collateral: &HwCollateral,
    at: UnixTime,
) -> Result<HwClaims, HwError> {
    let parsed = parse(evidence)?;
    let Some(amd) = &collateral.amd else {
        return Err(match &collateral.amd_incomplete {
            Some(why) => HwError::BadCollateral {
                detail: format!("AMD collateral is incomplete: {why}"),
            },
            None => HwError::MissingCollateral {
                tier: HwTier::Snp,
                what: "AMD (VCEK or VLEK, ASK or ASVK, ARK)",
            },
        });
    };
    if parsed.sig_algo != SIG_ALGO_ECDSA_P384_SHA384 {
        return Err(malformed(format!(
            "unsupported signature algorithm {}",
            parsed.sig_algo
        )));
    }
    let (key, inter) = match (parsed.signing_key, amd.vek_is_vlek) {
        (0, false) => ("VCEK", "ASK"),
        (1, true) => ("VLEK", "ASVK"),
        (k, vlek) => {
            return Err(HwError::VekMismatch {
                key: if vlek { "VLEK" } else { "VCEK" },
                detail: format!(
                    "the report names signing key {} but a {} was supplied",
                    match k {
                        0 => "VCEK",
                        1 => "VLEK",
                        _ => "none",
                    },
                    if vlek { "VLEK" } else { "VCEK" }
                ),
            });
        }
    };
    let product = pinned_product(&amd.ark_der)?;
    let cert = |der: &[u8], which: &str| {
        Certificate::from_der(der).map_err(|e| HwError::BadCollateral {
            detail: format!("{which} certificate does not parse: {e}"),
        })
    };
    let chain = Chain {
        ca: ca::Chain {
            ark: cert(&amd.ark_der, "ARK")?,
            ask: cert(&amd.intermediate_der, inter)?,
        },
        vek: cert(&amd.vek_der, key)?,
    };
    (&chain).verify().map_err(|e| HwError::UntrustedChain {
        which: format!("the {key} ({inter}, ARK)"),
        vendor: "AMD",
        detail: e.to_string(),
    })?;
    check_validity(&amd.ark_der, "ARK", at)?;
    check_validity(&amd.intermediate_der, inter, at)?;
    check_validity(&amd.vek_der, key, at)?;
    if key == "VCEK"
        && let Some(id) = hw_id(&amd.vek_der)?
        && id != parsed.chip_id
    {
        return Err(HwError::VekMismatch {
            key: "VCEK",
            detail: format!(
                "its hwID {}… is not the report's chip id {}…",
                hex::encode(&id[..8]),
                hex::encode(&parsed.chip_id[..8])
            ),
        });
    }
    if key == "VCEK" {
        check_vek_tcb(&vek_tcb(&amd.vek_der)?, &parsed.reported_tcb)?;
    }
    let (_, vek) = X509Certificate::from_der(&amd.vek_der).map_err(|e| HwError::BadCollateral {
        detail: format!("{key} certificate does not parse: {e}"),
    })?;
    let point = vek.public_key().subject_public_key.data.to_vec();
    let sig = fixed_signature(evidence).ok_or(HwError::BadSignature { tier: HwTier::Snp })?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point)
        .verify(&evidence[..SIGNED_LEN], &sig)
        .map_err(|_| HwError::BadSignature { tier: HwTier::Snp })?;
    let mut claims = parsed.claims;
    claims.platform_id = Some(product.to_string());
    claims.collateral_digests = collateral.digests.clone();
    claims.verified_at = Some(at);
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> Vec<u8> {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/hardware-vectors/snp/trustee-milan-vcek")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn a_vcek_names_the_tcb_of_its_report_and_no_other() {
        let vek = vek_tcb(&vector("vcek.der")).unwrap();
        let names: Vec<&str> = vek.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["bootloader", "tee", "snp", "microcode"]);
        let reported = parse(&vector("evidence.bin")).unwrap().reported_tcb;
        check_vek_tcb(&vek, &reported).unwrap();
        // The same chip at another TCB (a VCEK from before a firmware update, or a report from
        // a platform rolled back to older microcode) is refused, naming the component.
        for (i, name) in ["bootloader", "tee", "snp", "microcode"].iter().enumerate() {
            let mut other = reported;
            match i {
                0 => other.bootloader ^= 1,
                1 => other.tee ^= 1,
                2 => other.snp ^= 1,
                _ => other.microcode ^= 1,
            }
            let e = check_vek_tcb(&vek, &other).unwrap_err().to_string();
            assert!(e.contains(&format!("issued for {name} SVN")), "{e}");
        }
        // A VCEK naming no TCB at all is bad collateral, not a pass.
        assert!(matches!(
            check_vek_tcb(&[], &reported),
            Err(HwError::BadCollateral { .. })
        ));
    }

    #[test]
    fn tcb_extension_values_are_small_der_integers() {
        assert_eq!(tcb_value(&[0x02, 1, 0x7f], "x").unwrap(), 0x7f);
        assert_eq!(tcb_value(&[0x02, 2, 0, 0xd1], "x").unwrap(), 0xd1);
        for bad in [
            &[][..],
            &[0x02, 1, 0x80],
            &[0x02, 2, 0, 0x10],
            &[0x02, 2, 1, 0],
            &[0x04, 1, 3],
        ] {
            assert!(tcb_value(bad, "x").is_err(), "{bad:?}");
        }
    }
}
