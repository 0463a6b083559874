//! `veil otp` and `veil audit verify` through the real binary: the OTP code for a known secret
//! and time, and an audit log written by the library, then damaged in each documented way.

use std::path::Path;
use std::process::Output;

use veil_audit::{AuditSigner, AuditWriter, EcdsaP256Signer, Event};

use crate::support::veil;

fn run(home: &Path, args: &[&str]) -> Output {
    veil(home).args(args).output().expect("run veil")
}

#[test]
fn otp_prints_the_rfc6238_code() {
    let home = tempfile::tempdir().unwrap();
    // RFC 6238 appendix B, SHA-1, last six digits.
    let out = run(
        home.path(),
        &[
            "otp",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
            "--at",
            "1111111109",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "081804\n");
    // Now: six digits.
    let out = run(home.path(), &["otp", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"]);
    assert!(out.status.success(), "{out:?}");
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    // A bad secret is a clear error that does not echo it.
    let out = run(home.path(), &["otp", "NOT-BASE32-SECRET!"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not base32"), "{err}");
    assert!(!err.contains("NOT-BASE32-SECRET"), "{err}");
}

fn key() -> Vec<u8> {
    veil_audit::generate_p256_pkcs8().unwrap()
}

fn signer(k: &[u8]) -> Box<dyn AuditSigner> {
    Box::new(EcdsaP256Signer::from_pkcs8(k).unwrap())
}

/// A log of two CAS runs; returns its path and the CAS key hash.
fn write_log(dir: &Path) -> (std::path::PathBuf, String) {
    let k = key();
    let hash = veil_identity::key_hash(signer(&k).public_key_spki());
    let p = dir.join("audit.log");
    let ev = |s: &str| Event::SessionCreated {
        session: s.into(),
        hash: "ab".repeat(32),
        by: "cd".repeat(32),
    };
    let (mut w, _) = AuditWriter::open(&p, signer(&k), 1, 1000).unwrap();
    w.append(ev("one"), 1001).unwrap();
    w.append_group([ev("two"), ev("three")], 1002).unwrap();
    w.close(2, 1003).unwrap();
    let (mut w, _) = AuditWriter::open(&p, signer(&k), 2, 2000).unwrap();
    w.append(
        Event::OtpFailure {
            session: "s".into(),
            service: "x".into(),
        },
        2001,
    )
    .unwrap();
    (p, hash)
}

fn verify(home: &Path, file: &Path, hash: &str, last: Option<&str>) -> (i32, String, String) {
    let mut args = vec![
        "audit",
        "verify",
        file.to_str().unwrap(),
        "--cas-key-hash",
        hash,
    ];
    if let Some(l) = last {
        args.extend(["--last", l]);
    }
    let out = run(home, &args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(p: &Path, ls: &[String]) {
    let mut s = ls.join("\n");
    s.push('\n');
    std::fs::write(p, s).unwrap();
}

#[test]
fn audit_verify_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (p, hash) = write_log(dir.path());
    let orig = lines(&p);
    assert_eq!(orig.len(), 7);

    let (code, out, err) = verify(home.path(), &p, &hash, None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact, 7 entries, 2 starts"), "{out}");
    let last = out.rsplit("last ").next().unwrap().trim().to_string();
    let (code, _, err) = verify(home.path(), &p, &hash, Some(&last));
    assert_eq!(code, 0, "{err}");

    let damaged = dir.path().join("damaged.log");
    let check = |ls: &[String], last: Option<&str>, want: i32, msg: &str| {
        write_lines(&damaged, ls);
        let (code, _, err) = verify(home.path(), &damaged, &hash, last);
        assert_eq!(code, want, "{err}");
        assert!(err.contains(msg), "want `{msg}` in: {err}");
    };

    // Modified entry -> 20.
    let mut m = orig.clone();
    m[2] = m[2].replace("\"two\"", "\"TWO\"");
    check(&m, None, 20, "signature does not verify");
    // Deleted entry -> 17.
    let mut m = orig.clone();
    m.remove(3);
    check(&m, None, 17, "removed or reordered");
    // Reordered entries -> 17.
    let mut m = orig.clone();
    m.swap(1, 2);
    check(&m, None, 17, "removed or reordered");
    // First entry removed -> 15.
    check(&orig[1..], None, 15, "truncated at its start");
    // Last entries cut off, detected against --last -> 14.
    check(&orig[..5], Some(&last), 14, "truncated at its end");
    // Torn last line -> 14.
    let mut torn = std::fs::read(&p).unwrap();
    torn.truncate(torn.len() - 20);
    std::fs::write(&damaged, &torn).unwrap();
    let (code, _, err) = verify(home.path(), &damaged, &hash, None);
    assert_eq!(code, 14, "{err}");
    assert!(err.contains("incomplete"), "{err}");
    // Wrong signer (the log is checked against another CAS's key hash) -> 19.
    let other = veil_identity::key_hash(signer(&key()).public_key_spki());
    let (code, _, err) = verify(home.path(), &p, &other, None);
    assert_eq!(code, 19, "{err}");
    assert!(err.contains("different CAS key"), "{err}");
    // A different history at the --last entry -> 18.
    let (seq, _) = last.split_once(':').unwrap();
    let fake = format!("{seq}:{}", "0".repeat(64));
    let (code, _, err) = verify(home.path(), &p, &hash, Some(&fake));
    assert_eq!(code, 18, "{err}");
    // Bad arguments -> 1 with a clear message.
    let (code, _, err) = verify(home.path(), &p, "nothex", None);
    assert_eq!(code, 1);
    assert!(err.contains("--cas-key-hash"), "{err}");
}
