//! `veil evidence verify|inspect` on the recorded hardware vectors of
//! `../shared/hardware-vectors` (read in place, never copied into the project).

use std::path::PathBuf;
use std::process::Output;

use crate::support::veil;

fn vectors() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/hardware-vectors");
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "hardware vectors missing at {}",
        dir.display()
    );
    dir
}

/// The MANIFEST row of `dir` as column name → value.
fn manifest_row(dir: &str) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(vectors().join("MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let row: Vec<&str> = lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|r| r[0] == dir)
        .unwrap();
    header
        .iter()
        .zip(row)
        .map(|(h, v)| (h.to_string(), v.to_string()))
        .collect()
}

fn claim<'a>(row: &'a std::collections::BTreeMap<String, String>, key: &str) -> &'a str {
    row["claims"]
        .split(';')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap()
}

fn verify(home: &std::path::Path, file: &std::path::Path, dir: &str, extra: &[&str]) -> Output {
    let row = manifest_row(dir);
    veil(home)
        .args(["evidence", "verify"])
        .arg(file)
        .arg("--collateral")
        .arg(vectors().join(dir))
        .args(["--time", &row["time"]])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn evidence_verify_prints_the_claims_of_a_tdx_quote_and_refuses_a_tampered_copy() {
    let home = tempfile::tempdir().unwrap();
    let dir = "tdx/trustee-quote4";
    let row = manifest_row(dir);
    let file = vectors().join(dir).join("evidence.bin");

    let out = verify(home.path(), &file, dir, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["tier"], "tdx");
    assert_eq!(v["measurements"]["mrtd"], claim(&row, "mrtd"));
    assert_eq!(v["measurements"]["rtmr"][1], claim(&row, "rtmr1"));
    assert_eq!(v["report_data"], claim(&row, "report_data"));
    assert_eq!(v["debug"], true, "a debug TD is flagged");
    assert_eq!(v["tcb_status"], row["tcb_status"].as_str());

    // The same bytes with one bit of MRTD flipped: refused, exit 1, the reason on stderr.
    let tampered = home.path().join("tampered.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    let off: usize = row["tamper_offset"].parse().unwrap();
    bytes[off] ^= 1;
    std::fs::write(&tampered, &bytes).unwrap();
    let out = verify(home.path(), &tampered, dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("signature does not verify"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn evidence_verify_refuses_an_unsupported_tcb_level_and_a_stale_time() {
    let home = tempfile::tempdir().unwrap();
    let dir = "tdx/gotdx-spr-e4";
    let file = vectors().join(dir).join("evidence.bin");
    let out = verify(home.path(), &file, dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TCB level not supported"), "{err}");

    // All Intel collateral is expired today: without --time (now) the SGX vector is refused.
    let dir = "sgx/mobilecoin-hw-quote";
    let out = veil(home.path())
        .args(["evidence", "verify"])
        .arg(vectors().join(dir).join("evidence.bin"))
        .arg("--collateral")
        .arg(vectors().join(dir))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not valid at the given time"), "{err}");
}

#[test]
fn evidence_verify_without_collateral_prints_unverified_claims_and_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let dir = "snp/gosev-milan-debug";
    let row = manifest_row(dir);
    let out = veil(home.path())
        .args(["evidence", "verify"])
        .arg(vectors().join(dir).join("evidence.bin"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NOT VERIFIED"), "{text}");
    assert!(text.contains(claim(&row, "measurement")), "{text}");
    assert!(text.contains("debug: true"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --collateral"));

    // A bad --time is an argument error.
    let out = veil(home.path())
        .args(["evidence", "verify"])
        .arg(vectors().join(dir).join("evidence.bin"))
        .args(["--time", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}
