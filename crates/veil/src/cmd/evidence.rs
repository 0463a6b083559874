//! `veil evidence verify FILE [--collateral DIR] [--time RFC3339] [--json]`: verify recorded
//! hardware evidence (an SGX or TDX DCAP quote, an SEV-SNP report) offline against vendor
//! collateral, and `veil evidence inspect FILE [--json]`: print its claims without verifying.
//!
//! The collateral directory layout is documented in `veil_attest::hw::collateral`. The time
//! of the verification is `--time`; without it this command (never the library) takes the
//! current time. Exit codes: 0 verified; 1 refused (the reason on stderr) or unreadable input;
//! 2 no `--collateral` given, so the printed claims are parsed but not verified.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow};
use veil_attest::UnixTime;
use veil_attest::hw::{self, HwClaims, HwCollateral, Measurements};

/// `veil evidence` subcommands.
#[derive(clap::Subcommand)]
pub enum EvidenceCmd {
    /// Verify a quote or report against collateral at a time, and print its claims.
    /// Exit codes: 0 verified, 1 refused, 2 no collateral (claims printed, not verified).
    Verify {
        /// The evidence: raw SGX/TDX quote or 1184-byte SNP report.
        file: PathBuf,
        /// Directory of collateral files (tcb_info.json, qe_identity.json, *_chain.pem,
        /// pck_crl.der, root_ca_crl.der; vcek.der or vlek.der, ask.pem or asvk.pem, ark.pem).
        #[arg(long, value_name = "DIR")]
        collateral: Option<PathBuf>,
        /// Verify as of this time (RFC 3339); default: now.
        #[arg(long, value_name = "RFC3339")]
        time: Option<String>,
        /// Print the claims as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the claims of a quote or report without verifying anything.
    Inspect {
        /// The evidence file.
        file: PathBuf,
        /// Print the claims as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Largest evidence file read (quotes are a few kilobytes).
const MAX_EVIDENCE: u64 = 1024 * 1024;

fn read_evidence(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if len > MAX_EVIDENCE {
        return Err(anyhow!(
            "{} is {len} bytes, larger than any quote or report",
            file.display()
        ));
    }
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Run an evidence subcommand.
pub fn run(c: EvidenceCmd) -> anyhow::Result<ExitCode> {
    match c {
        EvidenceCmd::Inspect { file, json } => {
            let ev = read_evidence(&file)?;
            let claims = hw::inspect(&ev).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            print_claims(claims.unverified_claims(), json, false)?;
            Ok(ExitCode::SUCCESS)
        }
        EvidenceCmd::Verify {
            file,
            collateral,
            time,
            json,
        } => {
            let ev = read_evidence(&file)?;
            let at = match &time {
                Some(t) => hw::parse_rfc3339(t)
                    .ok_or_else(|| anyhow!("--time {t}: not an RFC 3339 time after 1970"))?,
                None => UnixTime::now(),
            };
            let Some(dir) = collateral else {
                let claims = hw::inspect(&ev).map_err(|e| anyhow!("{}: {e}", file.display()))?;
                print_claims(claims.unverified_claims(), json, false)?;
                eprintln!(
                    "not verified: no --collateral given; the claims above are parsed, not vouched for"
                );
                return Ok(ExitCode::from(2));
            };
            let col = HwCollateral::from_dir(&dir)?;
            match hw::verify(&ev, &col, at) {
                Ok(claims) => {
                    print_claims(&claims, json, true)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!(
                        "refused: {e} (evidence {}, collateral {}, time {})",
                        file.display(),
                        dir.display(),
                        hw::format_rfc3339(at)
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

fn print_claims(c: &HwClaims, json: bool, verified: bool) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(c)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("verified".into(), verified.into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut out = Vec::new();
    match c.verified_at {
        Some(at) if verified => out.push(format!(
            "verified: {} evidence version {} at {}",
            c.tier,
            c.version,
            hw::format_rfc3339(at)
        )),
        _ => out.push(format!(
            "NOT VERIFIED: {} evidence version {} (parsed only)",
            c.tier, c.version
        )),
    }
    if let Some(p) = &c.platform_id {
        out.push(format!("platform: {p}"));
    }
    match &c.measurements {
        Measurements::Sgx(m) => {
            out.push(format!("mrenclave: {}", hex(&m.mrenclave)));
            out.push(format!("mrsigner: {}", hex(&m.mrsigner)));
            out.push(format!("isvprodid: {}", m.isv_prod_id));
            out.push(format!("isvsvn: {}", m.isv_svn));
            out.push(format!("attributes: {}", hex(&m.attributes)));
        }
        Measurements::Tdx(m) => {
            out.push(format!("mrtd: {}", hex(&m.mrtd)));
            for (i, r) in m.rtmr.iter().enumerate() {
                out.push(format!("rtmr{i}: {}", hex(r)));
            }
            if let Some(s) = &m.mrservicetd {
                out.push(format!("mrservicetd: {}", hex(s)));
            }
            out.push(format!("td_attributes: {}", hex(&m.td_attributes)));
            out.push(format!("mrseam: {}", hex(&m.mrseam)));
            out.push(format!("mrsignerseam: {}", hex(&m.mrsignerseam)));
            out.push(format!("tee_tcb_svn: {}", hex(&m.tee_tcb_svn)));
        }
        Measurements::Snp(m) => {
            out.push(format!("measurement: {}", hex(&m.measurement)));
            out.push(format!("policy: {:#x}", m.policy));
            out.push(format!("host_data: {}", hex(&m.host_data)));
            out.push(format!("vmpl: {}", m.vmpl));
            let t = &m.reported_tcb;
            out.push(format!(
                "reported_tcb: bootloader {} tee {} snp {} microcode {}{}",
                t.bootloader,
                t.tee,
                t.snp,
                t.microcode,
                t.fmc.map(|f| format!(" fmc {f}")).unwrap_or_default()
            ));
            out.push(format!("signing_key: {}", m.signing_key));
            out.push(format!("chip_id: {}", hex(&m.chip_id)));
        }
    }
    out.push(format!("report_data: {}", hex(&c.report_data)));
    out.push(format!("debug: {}", c.debug));
    out.push(format!(
        "tcb_status: {}",
        c.tcb_status.as_deref().unwrap_or("-")
    ));
    out.push(format!("advisory_ids: {}", c.advisory_ids.join(",")));
    out.push(format!("evidence_sha256: {}", c.evidence_digest.to_hex()));
    if c.trailing_bytes > 0 {
        out.push(format!(
            "trailing_bytes: {} (after the quote, not signed, ignored)",
            c.trailing_bytes
        ));
    }
    for (name, d) in &c.collateral_digests {
        out.push(format!("collateral: {name} sha256:{}", d.to_hex()));
    }
    println!("{}", out.join("\n"));
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
