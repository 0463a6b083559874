//! Tests on the recorded hardware vectors of `../shared/hardware-vectors` (read in place,
//! never copied): every MANIFEST row reproduces its claims, and every kind of bad evidence or
//! collateral is refused with its own message.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

fn vectors() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/hardware-vectors");
    assert!(
        dir.join("MANIFEST.tsv").is_file(),
        "the hardware vectors are missing at {} (see /work/shared/hardware-vectors/README.md)",
        dir.display()
    );
    dir
}

struct Row {
    dir: String,
    kind: String,
    version: u32,
    time: UnixTime,
    expect: String,
    tcb_status: String,
    debug: bool,
    tamper_offset: usize,
    claims: BTreeMap<String, String>,
}

fn rfc3339(s: &str) -> UnixTime {
    parse_rfc3339(s).unwrap_or_else(|| panic!("bad time {s}"))
}

#[test]
fn rfc3339_round_trips() {
    let t = rfc3339("2023-07-01T01:00:00Z");
    assert_eq!(t, UnixTime(1_688_173_200_000));
    assert_eq!(format_rfc3339(t), "2023-07-01T01:00:00Z");
    assert_eq!(parse_rfc3339("2023-07-01T03:00:00+02:00"), Some(t));
    assert_eq!(parse_rfc3339("2023-07-01"), None);
    assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
}

fn manifest() -> Vec<Row> {
    let text = std::fs::read_to_string(vectors().join("MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Row> = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Row {
                dir: f[col("dir")].to_string(),
                kind: f[col("kind")].to_string(),
                version: f[col("version")].parse().unwrap(),
                time: rfc3339(f[col("time")]),
                expect: f[col("expect")].to_string(),
                tcb_status: f[col("tcb_status")].to_string(),
                debug: f[col("debug")] == "true",
                tamper_offset: f[col("tamper_offset")].parse().unwrap(),
                claims: f[col("claims")]
                    .split(';')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_string(), v.to_string())
                    })
                    .collect(),
            }
        })
        .collect();
    assert!(rows.len() >= 16, "MANIFEST has {} rows", rows.len());
    rows
}

fn evidence(row: &Row) -> Vec<u8> {
    std::fs::read(vectors().join(&row.dir).join("evidence.bin")).unwrap()
}

fn collateral(row: &Row) -> HwCollateral {
    HwCollateral::from_dir(&vectors().join(&row.dir)).unwrap()
}

/// The claims of the MANIFEST row, as parsed by us.
fn check_claims(row: &Row, c: &HwClaims) {
    let ctx = &row.dir;
    assert_eq!(c.tier.to_string(), row.kind, "{ctx}");
    assert_eq!(c.version, row.version, "{ctx}");
    assert_eq!(c.debug, row.debug, "{ctx}: debug");
    assert_eq!(
        hex::encode(c.report_data),
        row.claims["report_data"],
        "{ctx}: report_data"
    );
    let mut ours: BTreeMap<String, String> = BTreeMap::new();
    ours.insert("report_data".into(), hex::encode(c.report_data));
    match &c.measurements {
        Measurements::Sgx(m) => {
            assert!(m.debug == c.debug);
            ours.insert("mrenclave".into(), hex::encode(m.mrenclave));
            ours.insert("mrsigner".into(), hex::encode(m.mrsigner));
            ours.insert("isvprodid".into(), m.isv_prod_id.to_string());
            ours.insert("isvsvn".into(), m.isv_svn.to_string());
        }
        Measurements::Tdx(m) => {
            assert!(m.debug == c.debug);
            ours.insert("mrtd".into(), hex::encode(m.mrtd));
            for (i, r) in m.rtmr.iter().enumerate() {
                ours.insert(format!("rtmr{i}"), hex::encode(r));
            }
            ours.insert("mrseam".into(), hex::encode(m.mrseam));
            assert_eq!(
                m.mrservicetd.is_some(),
                row.version == 5,
                "{ctx}: TDX 1.5 body"
            );
        }
        Measurements::Snp(m) => {
            assert!(m.debug == c.debug);
            ours.insert("measurement".into(), hex::encode(m.measurement));
            ours.insert("policy".into(), format!("{:#x}", m.policy));
            ours.insert("host_data".into(), hex::encode(m.host_data));
            ours.insert("chip_id".into(), hex::encode(m.chip_id));
        }
    }
    assert_eq!(ours, row.claims, "{ctx}: claims");
}

fn tamper(bytes: &[u8], offset: usize) -> Vec<u8> {
    let mut t = bytes.to_vec();
    t[offset] ^= 0x01;
    t
}

#[test]
fn every_vector_reproduces_its_manifest_row() {
    let mut verified = 0;
    for row in manifest() {
        let ev = evidence(&row);
        // Parsing alone reproduces the claims of every row.
        check_claims(&row, inspect(&ev).unwrap().unverified_claims());
        match row.expect.as_str() {
            "verify" => {
                let c = verify(&ev, &collateral(&row), row.time)
                    .unwrap_or_else(|e| panic!("{}: {e}", row.dir));
                check_claims(&row, &c);
                let status = if row.tcb_status == "-" {
                    None
                } else {
                    Some(row.tcb_status.clone())
                };
                assert_eq!(c.tcb_status, status, "{}", row.dir);
                assert_eq!(c.verified_at, Some(row.time));
                assert!(!c.collateral_digests.is_empty());
                assert!(c.platform_id.is_some(), "{}", row.dir);
                verified += 1;
            }
            "claims-only" => {}
            "refuse:tcb-level-not-supported" => {
                let e = verify(&ev, &collateral(&row), row.time).unwrap_err();
                assert!(
                    matches!(e, HwError::TcbLevelNotSupported { .. }),
                    "{}: {e}",
                    row.dir
                );
                assert!(e.to_string().starts_with("TCB level not supported"));
            }
            "refuse:vcek-does-not-match-report" => {
                let e = verify(&ev, &collateral(&row), row.time).unwrap_err();
                assert!(
                    matches!(e, HwError::VekMismatch { key: "VCEK", .. }),
                    "{}: {e}",
                    row.dir
                );
            }
            other => panic!("{}: unknown expectation {other}", row.dir),
        }
    }
    assert_eq!(verified, 10, "vectors that fully verify");
}

#[test]
fn every_tampered_copy_is_refused_by_its_signature() {
    for row in manifest() {
        if row.expect == "claims-only" || row.expect.contains("vcek") {
            continue;
        }
        let ev = tamper(&evidence(&row), row.tamper_offset);
        // The flipped byte is a measurement: parsing sees the altered value...
        assert_ne!(
            inspect(&ev).unwrap().unverified_claims().measurements,
            inspect(&evidence(&row))
                .unwrap()
                .unverified_claims()
                .measurements,
            "{}",
            row.dir
        );
        // ...and the signature check refuses it.
        let e = verify(&ev, &collateral(&row), row.time).unwrap_err();
        assert!(
            matches!(e, HwError::BadSignature { .. }),
            "{}: {e}",
            row.dir
        );
    }
}

fn row(dir: &str) -> Row {
    manifest().into_iter().find(|r| r.dir == dir).unwrap()
}

const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

#[test]
fn a_time_outside_the_window_is_refused() {
    // Intel collateral a year later: TCB info past its nextUpdate (or a CRL expired first).
    for dir in [
        "sgx/mobilecoin-hw-quote",
        "tdx/trustee-quote4",
        "tdx/gotdx-v5",
    ] {
        let r = row(dir);
        let e = verify(&evidence(&r), &collateral(&r), r.time.plus_millis(YEAR_MS)).unwrap_err();
        assert!(
            matches!(
                e,
                HwError::CollateralNotFresh { .. }
                    | HwError::CrlNotFresh { .. }
                    | HwError::CertificateExpired { .. }
            ),
            "{dir}: {e}"
        );
        // A day after the recorded time is still inside every window.
        verify(
            &evidence(&r),
            &collateral(&r),
            r.time.plus_millis(24 * 3600 * 1000),
        )
        .unwrap();
    }
    // SNP: the VLEK is valid one year only; the VCEKs before they were issued.
    let r = row("snp/trustee-milan-vlek");
    let e = verify(&evidence(&r), &collateral(&r), r.time.plus_millis(YEAR_MS)).unwrap_err();
    assert!(
        matches!(&e, HwError::CertificateExpired { which, .. } if which == "VLEK"),
        "{e}"
    );
    let r = row("snp/trustee-milan-vcek");
    let e = verify(&evidence(&r), &collateral(&r), UnixTime(0)).unwrap_err();
    assert!(matches!(e, HwError::CertificateExpired { .. }), "{e}");
}

#[test]
fn the_tcb_info_freshness_is_its_own_error() {
    let r = row("sgx/occlum-platform-quote");
    // 2025-07-07: after the window's end (the CRLs and QE identity run out first or the TCB
    // info does; both are "not valid at the given time").
    let e = verify(
        &evidence(&r),
        &collateral(&r),
        rfc3339("2025-07-20T00:00:00Z"),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            HwError::CollateralNotFresh { .. } | HwError::CrlNotFresh { .. }
        ),
        "{e}"
    );
}

#[test]
fn a_wrong_report_data_is_refused() {
    for dir in [
        "sgx/mobilecoin-hw-quote",
        "tdx/gotdx-v5",
        "snp/trustee-milan-vcek",
    ] {
        let r = row(dir);
        let ev = evidence(&r);
        let col = collateral(&r);
        let good: [u8; 64] = hex::decode(&r.claims["report_data"])
            .unwrap()
            .try_into()
            .unwrap();
        verify_bound(&ev, &col, r.time, &good).unwrap();
        let mut bad = good;
        bad[63] ^= 0xff;
        let e = verify_bound(&ev, &col, r.time, &bad).unwrap_err();
        assert!(
            matches!(e, HwError::ReportDataMismatch { .. }),
            "{dir}: {e}"
        );
    }
}

#[test]
fn trailing_bytes_after_a_quote_are_counted_not_signed() {
    let r = row("tdx/trustee-quote6");
    let c = verify(&evidence(&r), &collateral(&r), r.time).unwrap();
    assert_eq!(c.trailing_bytes, 70);
    let r = row("tdx/gotdx-spr-e4");
    let c = inspect(&evidence(&r)).unwrap();
    assert_eq!(
        c.unverified_claims().trailing_bytes,
        b"\nextra bytes(only for testing purpose)\n".len()
    );
    // Trailing bytes change neither the claims nor the verdict; an SNP report has none.
    let r = row("tdx/trustee-quote4");
    let mut ev = evidence(&r);
    let plain = verify(&ev, &collateral(&r), r.time).unwrap();
    ev.extend_from_slice(&[0xAA; 33]);
    let padded = verify(&ev, &collateral(&r), r.time).unwrap();
    assert_eq!(padded.trailing_bytes, 33);
    assert_eq!(padded.evidence_digest, plain.evidence_digest);
    let r = row("snp/trustee-milan-vcek");
    let mut ev = evidence(&r);
    ev.push(0);
    let e = verify(&ev, &collateral(&r), r.time).unwrap_err();
    assert!(
        matches!(
            e,
            HwError::Malformed {
                tier: HwTier::Snp,
                ..
            }
        ),
        "{e}"
    );
}

fn files_of(dir: &str) -> Vec<(String, Vec<u8>)> {
    collateral::KNOWN_FILES
        .iter()
        .filter_map(|n| {
            std::fs::read(vectors().join(dir).join(n))
                .ok()
                .map(|b| (n.to_string(), b))
        })
        .collect()
}

#[test]
fn collateral_for_another_fmspc_is_refused() {
    let r = row("sgx/mobilecoin-hw-quote");
    let mut files = files_of(&r.dir);
    let other = std::fs::read(vectors().join("sgx/occlum-platform-quote/tcb_info.json")).unwrap();
    for (n, b) in &mut files {
        if n == "tcb_info.json" {
            *b = other.clone();
        }
    }
    let col = HwCollateral::from_files(&files).unwrap();
    let e = verify(&evidence(&r), &col, r.time).unwrap_err();
    assert!(
        matches!(&e, HwError::FmspcMismatch { collateral, quote } if collateral == "00606a000000" && quote == "00906ed50000"),
        "{e}"
    );
}

#[test]
fn sgx_collateral_does_not_verify_a_tdx_quote_and_vice_versa() {
    let sgx = row("sgx/mobilecoin-hw-quote");
    let tdx = row("tdx/trustee-quote4");
    assert!(verify(&evidence(&tdx), &collateral(&sgx), sgx.time).is_err());
    assert!(verify(&evidence(&sgx), &collateral(&tdx), tdx.time).is_err());
    // SNP collateral for a quote, Intel collateral for a report: missing.
    let snp = row("snp/trustee-milan-vcek");
    let e = verify(&evidence(&sgx), &collateral(&snp), sgx.time).unwrap_err();
    assert!(matches!(e, HwError::MissingCollateral { .. }), "{e}");
    let e = verify(&evidence(&snp), &collateral(&sgx), snp.time).unwrap_err();
    assert!(matches!(e, HwError::MissingCollateral { .. }), "{e}");
}

#[test]
fn a_tampered_collateral_signature_is_refused() {
    let r = row("tdx/gotdx-v5");
    let mut files = files_of(&r.dir);
    for (n, b) in &mut files {
        if n == "tcb_info.json" {
            // Change one digit of the evaluation data number inside the signed value.
            let s = String::from_utf8(b.clone()).unwrap();
            let s = s.replacen(
                "\"tcbEvaluationDataNumber\":",
                "\"tcbEvaluationDataNumber\":1",
                1,
            );
            *b = s.into_bytes();
        }
    }
    let e = verify(
        &evidence(&r),
        &HwCollateral::from_files(&files).unwrap(),
        r.time,
    )
    .unwrap_err();
    assert!(
        matches!(e, HwError::CollateralSignature { what: "TCB info" }),
        "{e}"
    );
}

#[test]
fn snp_chains_of_the_wrong_shape_are_refused() {
    let r = row("snp/trustee-milan-vcek");
    let ev = evidence(&r);
    let good = collateral(&r);
    let amd = good.amd.clone().unwrap();
    let with = |amd: AmdCollateral| HwCollateral {
        amd: Some(amd),
        ..good.clone()
    };
    // ASK in place of the ARK: not a pinned root.
    let e = verify(
        &ev,
        &with(AmdCollateral {
            ark_der: amd.intermediate_der.clone(),
            ..amd.clone()
        }),
        r.time,
    )
    .unwrap_err();
    assert!(matches!(e, HwError::UntrustedChain { .. }), "{e}");
    // The Genoa ARK/ASK above a Milan VCEK: the ASK does not sign the VCEK.
    let genoa = collateral(&row("snp/azure-genoa-hcl")).amd.unwrap();
    let e = verify(
        &ev,
        &with(AmdCollateral {
            ark_der: genoa.ark_der.clone(),
            intermediate_der: genoa.intermediate_der.clone(),
            ..amd.clone()
        }),
        r.time,
    )
    .unwrap_err();
    assert!(matches!(e, HwError::UntrustedChain { .. }), "{e}");
    // A VLEK where the report names its VCEK.
    let vlek = collateral(&row("snp/trustee-milan-vlek")).amd.unwrap();
    let e = verify(&ev, &with(vlek), r.time).unwrap_err();
    assert!(matches!(e, HwError::VekMismatch { key: "VLEK", .. }), "{e}");
    // Another chip's VCEK under the right chain.
    let other = collateral(&row("snp/gosev-milan-debug")).amd.unwrap();
    let e = verify(&ev, &with(other), r.time).unwrap_err();
    assert!(matches!(e, HwError::VekMismatch { key: "VCEK", .. }), "{e}");
}

#[test]
fn refusals_have_distinct_messages() {
    let mut seen = BTreeMap::new();
    let mut add = |what: &str, e: HwError| {
        eprintln!("{what}: {e}");
        let kind = format!("{e}").split(':').next().unwrap().to_string();
        if let Some(prev) = seen.insert(kind.clone(), what.to_string()) {
            panic!("{what} and {prev} share the message {kind}");
        }
    };
    let r = row("sgx/mobilecoin-hw-quote");
    let ev = evidence(&r);
    add(
        "tampered",
        verify(&tamper(&ev, r.tamper_offset), &collateral(&r), r.time).unwrap_err(),
    );
    add(
        "stale",
        verify(&ev, &collateral(&r), r.time.plus_millis(YEAR_MS)).unwrap_err(),
    );
    add(
        "report data",
        verify_bound(&ev, &collateral(&r), r.time, &[1; 64]).unwrap_err(),
    );
    let t = row("tdx/gotdx-spr-e4");
    add(
        "tcb level",
        verify(&evidence(&t), &collateral(&t), t.time).unwrap_err(),
    );
    let w = row("snp/azcvm-milan-wrong-vcek");
    add(
        "wrong vcek",
        verify(&evidence(&w), &collateral(&w), w.time).unwrap_err(),
    );
    let v = row("snp/trustee-milan-vlek");
    add(
        "expired cert",
        verify(&evidence(&v), &collateral(&v), v.time.plus_millis(YEAR_MS)).unwrap_err(),
    );
    add(
        "truncated",
        verify(&ev[..100], &collateral(&r), r.time).unwrap_err(),
    );
    add(
        "garbage",
        verify(&[0xffu8; 64], &collateral(&r), r.time).unwrap_err(),
    );
}

#[test]
fn truncated_and_malformed_evidence_is_an_error_not_a_panic() {
    for row in manifest() {
        let ev = evidence(&row);
        let col = collateral_or_default(&row);
        let step = 7;
        for len in (0..ev.len().min(5000)).step_by(step) {
            if row.kind == "snp" || len < ev.len() - row_trailing(&ev) {
                assert!(
                    verify(&ev[..len], &col, row.time).is_err(),
                    "{} len {len}",
                    row.dir
                );
            }
            let _ = inspect(&ev[..len]);
        }
        // Unknown versions.
        let mut v = ev.clone();
        v[0] = 9;
        v[1] = 0;
        assert!(
            matches!(
                inspect(&v).unwrap_err(),
                HwError::UnsupportedVersion { version: 9, .. } | HwError::UnknownFormat { .. }
            ),
            "{}",
            row.dir
        );
        // Every single-byte corruption of the first 64 bytes: an error or claims, never a panic.
        for i in 0..64 {
            let mut c = ev.clone();
            c[i] ^= 0x80;
            let _ = verify(&c, &col, row.time);
        }
    }
}

fn collateral_or_default(row: &Row) -> HwCollateral {
    HwCollateral::from_dir(&vectors().join(&row.dir)).unwrap_or_default()
}

fn row_trailing(ev: &[u8]) -> usize {
    inspect(ev)
        .map(|c| c.unverified_claims().trailing_bytes)
        .unwrap_or(0)
}

#[test]
fn an_sgx_quote_with_incomplete_collateral_says_what_is_missing() {
    // fortanix-pcs-2020 has no Root CA CRL: claims only.
    let r = row("sgx/fortanix-pcs-2020");
    let e = verify(&evidence(&r), &collateral(&r), r.time).unwrap_err();
    assert!(
        matches!(&e, HwError::BadCollateral { detail } if detail.contains("root_ca_crl.der")),
        "{e}"
    );
}

/// An SGX quote v4 laid out by hand from Intel's "Intel SGX and TDX ECDSA Quote Library API"
/// (quote format v4: header, ISV enclave report body, signature data with certification data
/// type 6 wrapping the QE report certification data, which wraps type 5 PEM data). There is
/// no recorded SGX v4 quote.
fn sgx_v4_quote(attributes0: u8, trailing: usize) -> Vec<u8> {
    let mut q = Vec::new();
    // Header (48 bytes).
    q.extend_from_slice(&4u16.to_le_bytes()); // version
    q.extend_from_slice(&2u16.to_le_bytes()); // attestation key type: ECDSA-256-with-P-256
    q.extend_from_slice(&0u32.to_le_bytes()); // TEE type: SGX
    q.extend_from_slice(&7u16.to_le_bytes()); // QE SVN
    q.extend_from_slice(&13u16.to_le_bytes()); // PCE SVN
    q.extend_from_slice(&hex::decode("939a7233f79c4ca9940a0db3957f0607").unwrap()); // QE vendor
    q.extend_from_slice(&[0u8; 20]); // user data
    assert_eq!(q.len(), 48);
    // ISV enclave report body (384 bytes).
    q.extend_from_slice(&[0x11; 16]); // CPUSVN
    q.extend_from_slice(&0u32.to_le_bytes()); // MISCSELECT
    q.extend_from_slice(&[0; 28]);
    let mut attributes = [0u8; 16];
    attributes[0] = attributes0;
    attributes[8] = 0x03;
    q.extend_from_slice(&attributes);
    q.extend_from_slice(&[0xAA; 32]); // MRENCLAVE
    q.extend_from_slice(&[0; 32]);
    q.extend_from_slice(&[0xBB; 32]); // MRSIGNER
    q.extend_from_slice(&[0; 96]);
    q.extend_from_slice(&0x1234u16.to_le_bytes()); // ISVPRODID
    q.extend_from_slice(&0x0102u16.to_le_bytes()); // ISVSVN
    q.extend_from_slice(&[0; 60]);
    q.extend_from_slice(&[0xCC; 64]); // REPORTDATA
    assert_eq!(q.len(), 48 + 384);
    // QE report certification data (the body of certification data type 6).
    let pem = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
    let mut qe = Vec::new();
    qe.extend_from_slice(&[0x22; 384]); // QE report
    qe.extend_from_slice(&[0x33; 64]); // QE report signature
    qe.extend_from_slice(&32u16.to_le_bytes()); // QE authentication data
    qe.extend_from_slice(&[0x44; 32]);
    qe.extend_from_slice(&5u16.to_le_bytes()); // type 5: PCK chain (PEM)
    qe.extend_from_slice(&u32::try_from(pem.len()).unwrap().to_le_bytes());
    qe.extend_from_slice(pem);
    let mut sig = Vec::new();
    sig.extend_from_slice(&[0x55; 64]); // ECDSA signature
    sig.extend_from_slice(&[0x66; 64]); // attestation public key
    sig.extend_from_slice(&6u16.to_le_bytes()); // type 6: QE report certification data
    sig.extend_from_slice(&u32::try_from(qe.len()).unwrap().to_le_bytes());
    sig.extend_from_slice(&qe);
    q.extend_from_slice(&u32::try_from(sig.len()).unwrap().to_le_bytes());
    q.extend_from_slice(&sig);
    q.extend(std::iter::repeat_n(0u8, trailing));
    q
}

#[test]
fn an_sgx_v4_quote_from_the_specification_parses_but_does_not_verify() {
    let q = sgx_v4_quote(0x05, 0);
    let claims = inspect(&q).unwrap();
    let c = claims.unverified_claims();
    assert_eq!((c.tier, c.version), (HwTier::Sgx, 4));
    let Measurements::Sgx(m) = &c.measurements else {
        panic!("not SGX: {:?}", c.measurements)
    };
    assert_eq!(m.mrenclave, [0xAA; 32]);
    assert_eq!(m.mrsigner, [0xBB; 32]);
    assert_eq!((m.isv_prod_id, m.isv_svn), (0x1234, 0x0102));
    assert_eq!(c.report_data, [0xCC; 64]);
    assert!(!c.debug, "attributes 0x05: INIT | MODE64BIT, not DEBUG");
    assert_eq!(c.trailing_bytes, 0);
    assert_eq!(c.evidence_digest, Digest32::of(&q[..48 + 384]));

    // The DEBUG attribute (bit 1) is flagged; padding is counted.
    let q = sgx_v4_quote(0x07, 12);
    let c = inspect(&q).unwrap();
    assert!(c.unverified_claims().debug);
    assert_eq!(c.unverified_claims().trailing_bytes, 12);

    // dcap-qvl verifies SGX quotes of version 3 only: a v4 quote is refused as such, before
    // any collateral is looked at.
    let r = row("sgx/mobilecoin-hw-quote");
    let e = verify(&q, &collateral(&r), r.time).unwrap_err();
    assert!(
        matches!(
            e,
            HwError::UnsupportedVersion {
                tier: HwTier::Sgx,
                version: 4
            }
        ),
        "{e}"
    );
    // Cut inside the certification data: malformed.
    let e = inspect(&q[..q.len() - 40]).unwrap_err();
    assert!(
        matches!(
            e,
            HwError::Malformed {
                tier: HwTier::Sgx,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn the_crl_of_another_pck_ca_is_refused() {
    // MobileCoin's PCK cert is issued by the Processor CA; Occlum's CRL is the Platform CA's.
    let r = row("sgx/mobilecoin-hw-quote");
    let mut files = files_of(&r.dir);
    let other = std::fs::read(vectors().join("sgx/occlum-platform-quote/pck_crl.der")).unwrap();
    for (n, b) in &mut files {
        if n == "pck_crl.der" {
            *b = other.clone();
        }
    }
    let e = verify(
        &evidence(&r),
        &HwCollateral::from_files(&files).unwrap(),
        r.time,
    )
    .unwrap_err();
    assert!(
        matches!(&e, HwError::BadCollateral { detail } if detail.contains("no CRL covers")),
        "{e}"
    );
}
