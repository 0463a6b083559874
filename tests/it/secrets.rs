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

/// The envcas seed's policy: its files, environment and OTP secret expand as the CAS would
/// serve them (ascii in a file and the environment, binary raw in a file, OTP from ascii).
#[test]
fn envcas_policy_secrets_expand() {
    use veil_secrets::{Context, NoImports};
    let text = std::fs::read_to_string(crate::support::data("envcas-session.yaml")).unwrap();
    let mut vars = veil_policy::Vars::default();
    vars.explicit.insert("SESSION".into(), "envcas-test".into());
    vars.explicit.insert("MRENCLAVE".into(), "ab".repeat(32));
    let s = veil_policy::load("envcas-session.yaml", &text, &vars, None).unwrap();
    let now = std::time::SystemTime::now();
    let v = veil_secrets::materialize(&s, None, &NoImports, now).unwrap();

    let img = s.images.iter().find(|i| i.name == "envcas_image").unwrap();
    let file = |path: &str| {
        let f = img.injection_files.iter().find(|f| f.path == path).unwrap();
        veil_secrets::expand_text(f.content.as_deref().unwrap(), &v, Context::File).unwrap()
    };
    let f1 = file("/etc/envcas/injected_file1");
    assert_eq!(f1.len(), 33, "32 ascii chars and the newline");
    assert!(f1[..32].iter().all(|b| (0x21..=0x7e).contains(b)));
    let f2 = file("/etc/envcas/injected_file2");
    assert_eq!(f2.len(), 65, "64 raw bytes and the newline");

    let svc = s.service("envcas").unwrap();
    let env =
        veil_secrets::expand_to_string(&svc.environment["SECRET_ENV"], &v, Context::Environment)
            .unwrap();
    assert_eq!(env.as_bytes(), &f1[..32]);
    // The raw binary secret cannot go into the environment.
    let e = veil_secrets::expand_text("$$SCONE::example2_secret$$", &v, Context::Environment)
        .unwrap_err();
    assert!(e.to_string().contains("example2_secret"), "{e}");

    // OTP: the with_otp service's secret, checked once per step.
    assert_eq!(
        veil_secrets::otp_secret_for_service(&s, "envcas", &v).unwrap(),
        None
    );
    let otp = veil_secrets::otp_secret_for_service(&s, "with_otp", &v)
        .unwrap()
        .unwrap();
    let t = 1_800_000_000;
    let code = veil_secrets::current_otp(&otp, t).unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = run(home.path(), &["otp", &otp, "--at", &t.to_string()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), code);
    let mut st = veil_secrets::OtpState::default();
    veil_secrets::check_otp(&otp, &code, t, &mut st).unwrap();
    let e = veil_secrets::check_otp(&otp, &code, t, &mut st).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("A One-time Password was already used")
    );
}

/// Sharing from tests/data/secrets/sharing.yaml: a sibling imports by relative name, a
/// namespace member imports, an outsider is refused, public values carry no private key.
#[test]
fn sharing_policy_exports_and_public_values() {
    use veil_policy::ImportSource;
    use veil_secrets::{SecretValues, SecretsError, StoredSecret};
    let text = std::fs::read_to_string(crate::support::data("secrets/sharing.yaml")).unwrap();
    let exporter = veil_policy::parse("sharing.yaml", &text).unwrap();
    let now = std::time::SystemTime::now();
    let ev = veil_secrets::materialize(&exporter, None, &veil_secrets::NoImports, now).unwrap();
    let hash = "1".repeat(64);

    struct Cas<'a>(&'a veil_policy::Session, &'a str, &'a SecretValues);
    impl veil_secrets::ImportResolver for Cas<'_> {
        fn resolve(
            &self,
            importer: &str,
            src: &ImportSource,
        ) -> Result<StoredSecret, SecretsError> {
            assert_eq!(src.session, self.0.name, "relative names arrive resolved");
            veil_secrets::check_export(
                self.0,
                self.1,
                &src.secret,
                importer,
                None,
                src.session_hash.as_deref(),
            )?;
            Ok(self.2.get(&src.secret).unwrap().clone())
        }
    }
    let cas = Cas(&exporter, &hash, &ev);
    let importer = |name: &str, secret: &str, kind: &str| {
        veil_policy::parse(
            "imp.yaml",
            &format!(
                "name: {name}\nsecrets:\n  - name: got\n    kind: {kind}\n    import:\n      session: ../backend\n      secret: {secret}\n"
            ),
        )
        .unwrap()
    };
    let fe = importer("shop/frontend", "tls", "x509");
    let got = veil_secrets::materialize(&fe, None, &cas, now).unwrap();
    assert_eq!(got.get("got"), ev.get("tls"));
    // The imported certificate brings its key.
    let key = veil_secrets::format_secret(
        "got",
        got.get("got").unwrap(),
        Some("privatekey"),
        veil_secrets::Context::File,
    )
    .unwrap();
    assert!(
        String::from_utf8(key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    // Not exported to shop/admin.
    let e = veil_secrets::materialize(
        &importer("shop/admin", "db_password", "ascii"),
        None,
        &cas,
        now,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not exported"), "{e}");
    // Namespace export.
    let p = veil_policy::parse(
        "p.yaml",
        "name: partners/acme\nsecrets:\n  - name: k\n    kind: binary\n    import:\n      session: shop/backend\n      secret: api_key\n",
    )
    .unwrap();
    let got = veil_secrets::materialize(&p, None, &cas, now).unwrap();
    assert_eq!(got.get("k"), ev.get("api_key"));

    let public = veil_secrets::public_values_json(&exporter, &ev);
    let names: Vec<&String> = public["values"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["ca", "greeting"]);
    assert!(!public.to_string().contains("PRIVATE"));
}
