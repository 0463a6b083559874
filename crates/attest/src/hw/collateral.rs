//! Offline collateral for hardware evidence, and the directory layout it is read from.
//!
//! A collateral directory holds the files Intel PCS and AMD KDS serve, unchanged:
//!
//! | file | content |
//! | --- | --- |
//! | `tcb_info.json` | PCS TCB info body `{"tcbInfo":{…},"signature":"<r‖s hex>"}` (SGX or TDX, v2 or v3) |
//! | `qe_identity.json` | PCS enclave identity body `{"enclaveIdentity":{…},"signature":"…"}` (`QE` / `TD_QE`) |
//! | `tcb_signing_chain.pem` | `TCB-Info-Issuer-Chain`: Intel SGX TCB Signing cert + Intel SGX Root CA |
//! | `qe_identity_issuer_chain.pem` | `SGX-Enclave-Identity-Issuer-Chain` (defaults to the TCB chain) |
//! | `pck_crl.der` | CRL of the PCK CA (Processor or Platform) that issued the quote's PCK cert |
//! | `pck_crl_issuer_chain.pem` | its issuer chain (optional, informational) |
//! | `root_ca_crl.der` | Intel SGX Root CA CRL |
//! | `vcek.der` or `vlek.der` | AMD KDS VCEK / VLEK certificate (DER) |
//! | `ask.pem` or `asvk.pem`, `ark.pem` | AMD KDS `cert_chain`, split (or `cert_chain.pem`: intermediate then ARK) |
//!
//! The PCK certificate chain travels inside every quote (certification data type 5). Reading
//! the directory is I/O; [`HwCollateral::from_files`] builds the same value from bytes (the CAS
//! stores collateral as blobs), and verification itself never touches the file system.

use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::hash::Digest32;

/// Intel DCAP collateral for one FMSPC (SGX or TDX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntelCollateral {
    /// The exact bytes of the `tcbInfo` value (what the signature covers).
    pub tcb_info: String,
    /// Raw `r ‖ s` signature over `tcb_info`.
    pub tcb_info_signature: Vec<u8>,
    /// PEM chain of the TCB info signer.
    pub tcb_info_issuer_chain: String,
    /// The exact bytes of the `enclaveIdentity` value.
    pub qe_identity: String,
    /// Raw `r ‖ s` signature over `qe_identity`.
    pub qe_identity_signature: Vec<u8>,
    /// PEM chain of the QE identity signer.
    pub qe_identity_issuer_chain: String,
    /// PCK CA CRL (DER).
    pub pck_crl: Vec<u8>,
    /// PEM chain of the PCK CRL issuer (may be empty).
    pub pck_crl_issuer_chain: String,
    /// Intel SGX Root CA CRL (DER).
    pub root_ca_crl: Vec<u8>,
}

/// AMD SEV-SNP endorsement: the VCEK or VLEK and the CA chain above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdCollateral {
    /// The VCEK or VLEK certificate (DER).
    pub vek_der: Vec<u8>,
    /// Whether `vek_der` is a VLEK (else a VCEK).
    pub vek_is_vlek: bool,
    /// The ASK (VCEK) or ASVK (VLEK) certificate (DER).
    pub intermediate_der: Vec<u8>,
    /// The ARK certificate (DER); it is pinned by key to AMD's published roots.
    pub ark_der: Vec<u8>,
}

/// Everything a verifier may need, with the digest of every file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HwCollateral {
    /// Intel collateral, when present and complete.
    pub intel: Option<IntelCollateral>,
    /// AMD collateral, when present and complete.
    pub amd: Option<AmdCollateral>,
    /// Why Intel collateral is absent although some Intel file was supplied.
    pub intel_incomplete: Option<String>,
    /// Why AMD collateral is absent although some AMD file was supplied.
    pub amd_incomplete: Option<String>,
    /// SHA-256 of each file supplied, by name (sorted).
    pub digests: Vec<(String, Digest32)>,
}

/// A collateral file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum CollateralError {
    /// I/O error on the directory or a file.
    #[error("cannot read collateral {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file does not parse.
    #[error("collateral file {file} is malformed: {detail}")]
    Malformed {
        /// File name.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// The directory holds no known collateral file.
    #[error("no known collateral file in {0}")]
    Empty(String),
}

/// The file names read from a collateral directory.
pub const KNOWN_FILES: &[&str] = &[
    "tcb_info.json",
    "qe_identity.json",
    "tcb_signing_chain.pem",
    "qe_identity_issuer_chain.pem",
    "pck_crl.der",
    "pck_crl_issuer_chain.pem",
    "root_ca_crl.der",
    "vcek.der",
    "vlek.der",
    "ask.pem",
    "asvk.pem",
    "ark.pem",
    "cert_chain.pem",
];

/// Largest collateral file accepted (TCB infos are tens of kilobytes).
const MAX_FILE: u64 = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct TcbInfoBody<'a> {
    #[serde(rename = "tcbInfo", borrow)]
    tcb_info: &'a RawValue,
    signature: String,
}

#[derive(Deserialize)]
struct QeIdentityBody<'a> {
    #[serde(rename = "enclaveIdentity", borrow)]
    identity: &'a RawValue,
    signature: String,
}

fn malformed(file: &str, detail: impl std::fmt::Display) -> CollateralError {
    CollateralError::Malformed {
        file: file.to_string(),
        detail: detail.to_string(),
    }
}

fn utf8(file: &str, bytes: &[u8]) -> Result<String, CollateralError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed(file, "not UTF-8"))
}

/// `(raw signed JSON value, signature bytes)` of a PCS body.
fn split_tcb_info(bytes: &[u8]) -> Result<(String, Vec<u8>), CollateralError> {
    let file = "tcb_info.json";
    let body: TcbInfoBody<'_> = serde_json::from_slice(bytes).map_err(|e| malformed(file, e))?;
    let sig = hex::decode(&body.signature).map_err(|e| malformed(file, e))?;
    Ok((body.tcb_info.get().to_string(), sig))
}

fn split_qe_identity(bytes: &[u8]) -> Result<(String, Vec<u8>), CollateralError> {
    let file = "qe_identity.json";
    let body: QeIdentityBody<'_> = serde_json::from_slice(bytes).map_err(|e| malformed(file, e))?;
    let sig = hex::decode(&body.signature).map_err(|e| malformed(file, e))?;
    Ok((body.identity.get().to_string(), sig))
}

/// DER of every certificate in a PEM file.
fn pem_certs(file: &str, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CollateralError> {
    let mut out = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let item = item.map_err(|e| malformed(file, e))?;
        if item.label != "CERTIFICATE" {
            return Err(malformed(
                file,
                format!("unexpected PEM block {}", item.label),
            ));
        }
        out.push(item.contents);
    }
    if out.is_empty() {
        return Err(malformed(file, "no certificate"));
    }
    Ok(out)
}

fn one_pem_cert(file: &str, bytes: &[u8]) -> Result<Vec<u8>, CollateralError> {
    let mut certs = pem_certs(file, bytes)?;
    if certs.len() != 1 {
        return Err(malformed(
            file,
            format!("expected one certificate, found {}", certs.len()),
        ));
    }
    Ok(certs.remove(0))
}

impl HwCollateral {
    /// Build collateral from `(file name, bytes)` pairs named as in the directory layout;
    /// unknown names are ignored.
    pub fn from_files(files: &[(String, Vec<u8>)]) -> Result<Self, CollateralError> {
        let get = |name: &str| {
            files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b.as_slice())
        };
        let mut digests: Vec<(String, Digest32)> = files
            .iter()
            .filter(|(n, _)| KNOWN_FILES.contains(&n.as_str()))
            .map(|(n, b)| (n.clone(), Digest32::of(b)))
            .collect();
        digests.sort();

        let intel_names = [
            "tcb_info.json",
            "qe_identity.json",
            "tcb_signing_chain.pem",
            "pck_crl.der",
            "root_ca_crl.der",
        ];
        let missing_intel: Vec<&str> = intel_names
            .iter()
            .copied()
            .filter(|n| get(n).is_none())
            .collect();
        let (intel, intel_incomplete) = if missing_intel.len() == intel_names.len() {
            (None, None)
        } else if !missing_intel.is_empty() {
            (None, Some(format!("missing {}", missing_intel.join(", "))))
        } else {
            let (tcb_info, tcb_info_signature) =
                split_tcb_info(get("tcb_info.json").unwrap_or_default())?;
            let (qe_identity, qe_identity_signature) =
                split_qe_identity(get("qe_identity.json").unwrap_or_default())?;
            let tcb_chain_bytes = get("tcb_signing_chain.pem").unwrap_or_default();
            pem_certs("tcb_signing_chain.pem", tcb_chain_bytes)?;
            let tcb_info_issuer_chain = utf8("tcb_signing_chain.pem", tcb_chain_bytes)?;
            let qe_identity_issuer_chain = match get("qe_identity_issuer_chain.pem") {
                Some(b) => {
                    pem_certs("qe_identity_issuer_chain.pem", b)?;
                    utf8("qe_identity_issuer_chain.pem", b)?
                }
                None => tcb_info_issuer_chain.clone(),
            };
            let pck_crl_issuer_chain = match get("pck_crl_issuer_chain.pem") {
                Some(b) => utf8("pck_crl_issuer_chain.pem", b)?,
                None => String::new(),
            };
            (
                Some(IntelCollateral {
                    tcb_info,
                    tcb_info_signature,
                    tcb_info_issuer_chain,
                    qe_identity,
                    qe_identity_signature,
                    qe_identity_issuer_chain,
                    pck_crl: get("pck_crl.der").unwrap_or_default().to_vec(),
                    pck_crl_issuer_chain,
                    root_ca_crl: get("root_ca_crl.der").unwrap_or_default().to_vec(),
                }),
                None,
            )
        };

        let (amd, amd_incomplete) = Self::amd_from(&get)?;
        if intel.is_none()
            && amd.is_none()
            && intel_incomplete.is_none()
            && amd_incomplete.is_none()
        {
            return Ok(Self::default());
        }
        Ok(Self {
            intel,
            amd,
            intel_incomplete,
            amd_incomplete,
            digests,
        })
    }

    #[allow(clippy::type_complexity)]
    fn amd_from<'a>(
        get: &impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<(Option<AmdCollateral>, Option<String>), CollateralError> {
        let (vek_der, vek_is_vlek) = match (get("vcek.der"), get("vlek.der")) {
            (None, None) => {
                let any = ["ask.pem", "asvk.pem", "ark.pem", "cert_chain.pem"]
                    .iter()
                    .any(|n| get(n).is_some());
                return Ok((
                    None,
                    any.then(|| "missing vcek.der or vlek.der".to_string()),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(malformed(
                    "vcek.der",
                    "both vcek.der and vlek.der are present",
                ));
            }
            (Some(v), None) => (v.to_vec(), false),
            (None, Some(v)) => (v.to_vec(), true),
        };
        let inter_name = if vek_is_vlek { "asvk.pem" } else { "ask.pem" };
        let (intermediate_der, ark_der) = match (get(inter_name), get("ark.pem")) {
            (Some(i), Some(a)) => (one_pem_cert(inter_name, i)?, one_pem_cert("ark.pem", a)?),
            _ => match get("cert_chain.pem") {
                Some(chain) => {
                    let certs = pem_certs("cert_chain.pem", chain)?;
                    let [inter, ark] = <[Vec<u8>; 2]>::try_from(certs).map_err(|c| {
                        malformed(
                            "cert_chain.pem",
                            format!(
                                "expected intermediate then ARK, found {} certificates",
                                c.len()
                            ),
                        )
                    })?;
                    (inter, ark)
                }
                None => {
                    return Ok((
                        None,
                        Some(format!(
                            "missing {inter_name} and ark.pem (or cert_chain.pem)"
                        )),
                    ));
                }
            },
        };
        Ok((
            Some(AmdCollateral {
                vek_der,
                vek_is_vlek,
                intermediate_der,
                ark_der,
            }),
            None,
        ))
    }

    /// Read the known files of a collateral directory (see the module documentation).
    pub fn from_dir(dir: &Path) -> Result<Self, CollateralError> {
        let io = |path: &Path, source| CollateralError::Io {
            path: path.display().to_string(),
            source,
        };
        if !dir.is_dir() {
            return Err(io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            ));
        }
        let mut files = Vec::new();
        for name in KNOWN_FILES {
            let path = dir.join(name);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {
                    if m.len() > MAX_FILE {
                        return Err(malformed(name, format!("larger than {MAX_FILE} bytes")));
                    }
                    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
                    files.push((name.to_string(), bytes));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path, e)),
            }
        }
        if files.is_empty() {
            return Err(CollateralError::Empty(dir.display().to_string()));
        }
        Self::from_files(&files)
    }
}
