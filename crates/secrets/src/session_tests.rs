//! Tests of materialisation, migration, formats, sharing and public values against real
//! policies parsed by veil-policy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use veil_policy::{ImportSource, Session};

use crate::model::{Context, KeyAlg, Kind, SecretMaterial, SecretValues, StoredSecret};
use crate::session::*;
use crate::{SecretsError, format_secret};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
const NOW: u64 = 1_790_000_000;

fn parse(yaml: &str) -> Session {
    match veil_policy::parse("test.yaml", yaml) {
        Ok(s) => s,
        Err(e) => panic!("policy does not parse: {e}\n{yaml}"),
    }
}

fn session(name: &str, secrets: &str) -> Session {
    parse(&format!(
        "name: {name}\nversion: \"0.3.10\"\nsecrets:\n{secrets}"
    ))
}

fn mat(s: &Session) -> SecretValues {
    materialize(s, None, &NoImports, at(NOW)).unwrap()
}

const ALL_KINDS: &str = r#"
  - name: a
    kind: ascii
    size: 32
  - name: b
    kind: binary
    size: 64
  - name: k256
    kind: private-key
  - name: k384
    kind: private-key
    key_type: P-384
  - name: ked
    kind: private-key
    key_type: Ed25519
  - name: krsa
    kind: private-key
    key_type: RSA-2048
  - name: pub
    kind: public-key
    private_key: k384
  - name: ca_key
    kind: private-key
  - name: ca
    kind: x509-ca
    private_key: ca_key
    common_name: Test Root
  - name: int_key
    kind: private-key
    key_type: Ed25519
  - name: int
    kind: x509-ca
    private_key: int_key
    issuer: ca
  - name: srv
    kind: x509
    private_key: krsa
    issuer: int
    endpoint: server
    san: ["dns:svc.example", "ip:127.0.0.1"]
    valid_for: 30 days
  - name: cli
    kind: x509
    private_key: k256
    endpoint: client
"#;

fn text(s: &SecretValues, name: &str, f: Option<&str>) -> String {
    String::from_utf8(format_secret(name, s.get(name).unwrap(), f, Context::Argument).unwrap())
        .unwrap()
}

fn bytes(s: &SecretValues, name: &str, f: Option<&str>) -> Vec<u8> {
    format_secret(name, s.get(name).unwrap(), f, Context::File).unwrap()
}

#[test]
fn ascii_and_binary_generation_and_formats() {
    let s = session("t", ALL_KINDS);
    let v = mat(&s);
    let a = text(&v, "a", None);
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)));
    let raw = bytes(&v, "b", None);
    assert_eq!(raw.len(), 64);
    assert_eq!(bytes(&v, "b", Some("bin")), raw);
    assert_eq!(hex::decode(text(&v, "b", Some("hex"))).unwrap(), raw);
    use data_encoding::*;
    assert_eq!(
        BASE64
            .decode(text(&v, "b", Some("base64")).as_bytes())
            .unwrap(),
        raw
    );
    assert_eq!(
        BASE64URL
            .decode(text(&v, "b", Some("base64url")).as_bytes())
            .unwrap(),
        raw
    );
    assert_eq!(
        BASE32
            .decode(text(&v, "b", Some("base32")).as_bytes())
            .unwrap(),
        raw
    );
    let nopad = text(&v, "b", Some("base32nopad"));
    assert!(!nopad.contains('='));
    assert_eq!(BASE32_NOPAD.decode(nopad.as_bytes()).unwrap(), raw);
    // Two materialisations differ (fresh randomness).
    let v2 = mat(&s);
    assert_ne!(text(&v2, "a", None), a);
}

#[test]
fn raw_binary_is_refused_outside_files_naming_the_secret() {
    let v = mat(&session("t", ALL_KINDS));
    for (name, f) in [
        ("b", None),
        ("b", Some("bin")),
        ("k256", Some("der")),
        ("pub", Some("spki:der")),
        ("srv", Some("crt:der")),
        ("srv", Some("privatekey:der")),
    ] {
        for ctx in [Context::Argument, Context::Environment, Context::Config] {
            let e = format_secret(name, v.get(name).unwrap(), f, ctx).unwrap_err();
            assert!(matches!(e, SecretsError::BinaryNotAllowed { .. }), "{e}");
            assert!(e.to_string().contains(&format!("`{name}`")), "{e}");
        }
        format_secret(name, v.get(name).unwrap(), f, Context::File).unwrap();
    }
}

#[test]
fn unknown_format_is_refused_with_the_valid_list() {
    let v = mat(&session("t", ALL_KINDS));
    let e = format_secret("a", v.get("a").unwrap(), Some("hex"), Context::File).unwrap_err();
    assert!(
        e.to_string()
            .contains("secret `a` (kind ascii) has no format `:hex`"),
        "{e}"
    );
    let e = format_secret("b", v.get("b").unwrap(), Some("crt"), Context::File).unwrap_err();
    assert!(e.to_string().contains("base32nopad"), "{e}");
}

#[test]
fn keys_parse_in_every_format() {
    use aws_lc_rs::signature::*;
    let v = mat(&session("t", ALL_KINDS));
    let check = |name: &str, alg: KeyAlg| {
        let pem_text = text(&v, name, None);
        assert!(
            pem_text.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{pem_text}"
        );
        assert_eq!(pem_text, text(&v, name, Some("pkcs8:pem")));
        assert_eq!(pem_text, text(&v, name, Some("pem")));
        let der = bytes(&v, name, Some("der"));
        assert_eq!(der, bytes(&v, name, Some("pkcs8:der")));
        assert_eq!(::pem::parse(&pem_text).unwrap().contents(), der.as_slice());
        assert_eq!(crate::generate::detect_key_alg(name, &der).unwrap(), alg);
    };
    check("k256", KeyAlg::P256);
    check("k384", KeyAlg::P384);
    check("ked", KeyAlg::Ed25519);
    check("krsa", KeyAlg::Rsa2048);
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &bytes(&v, "k256", None)[..0],
    )
    .unwrap_err();
    // The public key is the one of k384.
    let spki = bytes(&v, "pub", Some("spki:der"));
    assert!(text(&v, "pub", None).starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(text(&v, "pub", None), text(&v, "pub", Some("spki:pem")));
    let kp = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P384_SHA384_ASN1_SIGNING,
        &bytes(&v, "k384", Some("der")),
    )
    .unwrap();
    let (_, parsed) = <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<
        _,
    >>::from_der(&spki)
    .unwrap();
    assert_eq!(
        parsed.subject_public_key.data.as_ref(),
        kp.public_key().as_ref()
    );
}

#[test]
fn rsa_3072_generates() {
    let v = mat(&session(
        "t",
        "  - name: k\n    kind: private-key\n    key_type: RSA-3072\n",
    ));
    let der = bytes(&v, "k", Some("der"));
    assert_eq!(
        crate::generate::detect_key_alg("k", &der).unwrap(),
        KeyAlg::Rsa3072
    );
}

#[test]
fn certificate_chain_verifies_with_san_eku_and_validity() {
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use x509_parser::prelude::*;
    let v = mat(&session("t", ALL_KINDS));
    let leaf = bytes(&v, "srv", Some("crt:der"));
    let leaf_pem = text(&v, "srv", None);
    assert_eq!(leaf_pem, text(&v, "srv", Some("crt")));
    assert_eq!(leaf_pem, text(&v, "srv", Some("crt:pem")));
    assert_eq!(::pem::parse(&leaf_pem).unwrap().contents(), leaf.as_slice());
    // :chain = intermediate then root, without the leaf.
    let chain = ::pem::parse_many(text(&v, "srv", Some("chain"))).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        chain[0].contents(),
        bytes(&v, "int", Some("crt:der")).as_slice()
    );
    assert_eq!(
        chain[1].contents(),
        bytes(&v, "ca", Some("crt:der")).as_slice()
    );
    assert!(text(&v, "ca", Some("chain")).is_empty());
    // The leaf's key is krsa's.
    assert_eq!(text(&v, "srv", Some("privatekey")), text(&v, "krsa", None));
    assert_eq!(
        text(&v, "srv", Some("privatekey:pkcs8:pem")),
        text(&v, "krsa", None)
    );
    assert_eq!(
        bytes(&v, "srv", Some("privatekey:pkcs8:der")),
        bytes(&v, "krsa", Some("der"))
    );

    // rustls-webpki: the chain verifies to the root for the DNS name and the IP, as a server.
    let root_der = bytes(&v, "ca", Some("crt:der"));
    let root_cert = CertificateDer::from(root_der.clone());
    let anchor = webpki::anchor_from_trusted_cert(&root_cert).unwrap();
    let leaf_cert = CertificateDer::from(leaf.clone());
    let ee = webpki::EndEntityCert::try_from(&leaf_cert).unwrap();
    let inter = [CertificateDer::from(chain[0].contents().to_vec())];
    let time = UnixTime::since_unix_epoch(Duration::from_secs(NOW + 60));
    let algs = webpki::ALL_VERIFICATION_ALGS;
    ee.verify_for_usage(
        algs,
        std::slice::from_ref(&anchor),
        &inter,
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .unwrap();
    ee.verify_is_valid_for_subject_name(&ServerName::try_from("svc.example").unwrap())
        .unwrap();
    ee.verify_is_valid_for_subject_name(&ServerName::try_from("127.0.0.1").unwrap())
        .unwrap();
    // Not valid as a client certificate (server EKU only), nor after 30 days.
    assert!(
        ee.verify_for_usage(
            algs,
            std::slice::from_ref(&anchor),
            &inter,
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None
        )
        .is_err()
    );
    let late = UnixTime::since_unix_epoch(Duration::from_secs(NOW + 31 * 86400));
    assert!(
        ee.verify_for_usage(
            algs,
            &[anchor],
            &inter,
            late,
            webpki::KeyUsage::server_auth(),
            None,
            None
        )
        .is_err()
    );

    // x509-parser: CN defaults to the first DNS SAN; CA flags; the self-signed client cert.
    let (_, c) = parse_x509_certificate(&leaf).unwrap();
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(cn, "svc.example");
    assert!(!c.is_ca());
    let (_, root) = parse_x509_certificate(&root_der).unwrap();
    assert!(root.is_ca());
    assert_eq!(
        root.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "Test Root"
    );
    assert_eq!(v.get("srv").unwrap().not_after, Some(NOW + 30 * 86400));
    let cli = bytes(&v, "cli", Some("crt:der"));
    let (_, cc) = parse_x509_certificate(&cli).unwrap();
    assert_eq!(
        cc.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "cli"
    );
    assert_eq!(cc.issuer(), cc.subject());
    let eku = cc.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert!(cc.verify_signature(None).is_ok());
}

#[test]
fn pkcs12_holds_certificate_chain_and_key() {
    let v = mat(&session("t", ALL_KINDS));
    let p12 = bytes(&v, "srv", Some("pkcs12-with-private-key"));
    let e = format_secret(
        "srv",
        v.get("srv").unwrap(),
        Some("pkcs12-with-private-key"),
        Context::Environment,
    )
    .unwrap_err();
    assert!(matches!(e, SecretsError::BinaryNotAllowed { .. }));
    let ks =
        p12_keystore::KeyStore::from_pkcs12(&p12, "", p12_keystore::Pkcs12ImportPolicy::Strict)
            .unwrap();
    let (_, chain) = ks.private_key_chain().unwrap();
    assert_eq!(
        chain.key().as_der(),
        bytes(&v, "krsa", Some("der")).as_slice()
    );
    let certs: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
    assert_eq!(certs[0], bytes(&v, "srv", Some("crt:der")).as_slice());
    assert_eq!(certs.len(), 3);
    // OpenSSL (installed on CI) reads it with the empty password.
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok()
    {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.p12");
        std::fs::write(&f, &p12).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["pkcs12", "-in"])
            .arg(&f)
            .args(["-passin", "pass:", "-nodes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 3);
        assert!(text.contains("BEGIN PRIVATE KEY"));
    }
}

#[test]
fn explicit_values() {
    let gen_v = mat(&session("g", ALL_KINDS));
    let key_pem = text(&gen_v, "k384", None);
    let cert_pem = text(&gen_v, "cli", None);
    let k256_pem = text(&gen_v, "k256", None);
    let indent = |s: &str| {
        s.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    };
    let yaml = format!(
        "  - name: a\n    kind: ascii\n    value: \"hello world\"\n\
         \x20 - name: b\n    kind: binary\n    value: \"00ff10\"\n\
         \x20 - name: k\n    kind: private-key\n    value: |\n{}\
         \x20 - name: ck\n    kind: private-key\n    value: |\n{}\
         \x20 - name: c\n    kind: x509\n    private_key: ck\n    value: |\n{}\
         \x20 - name: f\n    kind: config-fragment\n    value:\n      tolerate: [debug-mode]\n",
        indent(&key_pem),
        indent(&k256_pem),
        indent(&cert_pem)
    );
    let v = mat(&session("e", &yaml));
    assert_eq!(text(&v, "a", None), "hello world");
    assert_eq!(bytes(&v, "b", None), vec![0, 0xff, 0x10]);
    assert_eq!(text(&v, "k", None), key_pem);
    assert!(matches!(
        v.get("k").unwrap().value,
        SecretMaterial::PrivateKey {
            key_type: KeyAlg::P384,
            ..
        }
    ));
    assert_eq!(text(&v, "c", None), cert_pem);
    assert_eq!(text(&v, "c", Some("privatekey")), k256_pem);
    assert!(!v.get("a").unwrap().generated);
    let frag: serde_json::Value = serde_json::from_str(&text(&v, "f", None)).unwrap();
    assert_eq!(frag, serde_json::json!({"tolerate": ["debug-mode"]}));

    // A certificate whose key is not `private_key` is refused, naming the secret only.
    let bad = yaml.replace("private_key: ck", "private_key: k");
    let e = materialize(&session("e", &bad), None, &NoImports, at(NOW)).unwrap_err();
    assert!(e.to_string().contains("secret `c`"), "{e}");
    assert!(!e.to_string().contains("BEGIN"), "{e}");
}

/// Migration table (§1.5): (old secret yaml, new secret yaml, kept?).
#[test]
fn migration_table() {
    let cases: &[(&str, &str, &str, bool)] = &[
        ("ascii kept", "kind: ascii", "kind: ascii", true),
        (
            "ascii same size kept",
            "kind: ascii\n    size: 8",
            "kind: ascii\n    size: 8",
            true,
        ),
        (
            "ascii size change",
            "kind: ascii",
            "kind: ascii\n    size: 21",
            false,
        ),
        ("binary kept", "kind: binary", "kind: binary", true),
        (
            "binary size change",
            "kind: binary\n    size: 16",
            "kind: binary\n    size: 32",
            false,
        ),
        ("kind change", "kind: ascii", "kind: binary", false),
        (
            "key without migrate",
            "kind: private-key",
            "kind: private-key",
            false,
        ),
        (
            "key migrate only new",
            "kind: private-key",
            "kind: private-key\n    migrate: true",
            false,
        ),
        (
            "key migrate only old",
            "kind: private-key\n    migrate: true",
            "kind: private-key",
            false,
        ),
        (
            "key migrate both",
            "kind: private-key\n    migrate: true",
            "kind: private-key\n    migrate: true",
            true,
        ),
        (
            "key migrate both, type change",
            "kind: private-key\n    migrate: true",
            "kind: private-key\n    migrate: true\n    key_type: P-384",
            false,
        ),
        (
            "x509 regenerated",
            "kind: x509\n    private_key: pk",
            "kind: x509\n    private_key: pk",
            false,
        ),
        (
            "x509-ca regenerated",
            "kind: x509-ca\n    private_key: pk",
            "kind: x509-ca\n    private_key: pk",
            false,
        ),
    ];
    let pk = "  - name: pk\n    kind: private-key\n    migrate: true\n";
    for (what, old, new, kept) in cases {
        let s1 = session("m", &format!("  - name: x\n    {old}\n{pk}"));
        let s2 = session("m", &format!("  - name: x\n    {new}\n{pk}"));
        let v1 = materialize(&s1, None, &NoImports, at(NOW)).unwrap();
        let v2 = materialize(&s2, Some((&s1, &v1)), &NoImports, at(NOW + 10)).unwrap();
        let same = v1.get("x").unwrap().value == v2.get("x").unwrap().value;
        assert_eq!(same, *kept, "{what}");
        // The migrating private key used by certificates is kept.
        assert_eq!(v1.get("pk"), v2.get("pk"), "{what}");
    }
    // A removed secret disappears; an explicit previous value is not kept once removed.
    let s1 = session(
        "m",
        "  - name: x\n    kind: ascii\n    value: known\n  - name: y\n    kind: ascii\n",
    );
    let s2 = session("m", "  - name: x\n    kind: ascii\n");
    let v1 = mat(&s1);
    let v2 = materialize(&s2, Some((&s1, &v1)), &NoImports, at(NOW)).unwrap();
    assert!(v2.get("y").is_none());
    assert_ne!(text(&v2, "x", None), "known");
    // Public keys follow their migrated private key.
    let s = session(
        "m",
        "  - name: k\n    kind: private-key\n    migrate: true\n  - name: p\n    kind: public-key\n    private_key: k\n",
    );
    let v1 = mat(&s);
    let v2 = materialize(&s, Some((&s, &v1)), &NoImports, at(NOW)).unwrap();
    assert_eq!(v1.get("p").unwrap().value, v2.get("p").unwrap().value);
}

#[test]
fn renewal_before_expiry_reissues_dependents() {
    let s = session(
        "r",
        "  - name: k\n    kind: private-key\n\
         \x20 - name: ca\n    kind: x509-ca\n    private_key: k\n    valid_for: 90 days\n\
         \x20 - name: leaf\n    kind: x509\n    private_key: k\n    issuer: ca\n    valid_for: 900 days\n\
         \x20 - name: other\n    kind: x509\n    private_key: k\n    valid_for: 900 days\n\
         \x20 - name: a\n    kind: ascii\n",
    );
    let v = mat(&s);
    assert!(
        renew_expiring(&s, &v, &NoImports, at(NOW + 59 * 86400))
            .unwrap()
            .is_none()
    );
    let r = renew_expiring(&s, &v, &NoImports, at(NOW + 61 * 86400))
        .unwrap()
        .unwrap();
    assert_ne!(r.get("ca").unwrap().value, v.get("ca").unwrap().value);
    assert_eq!(
        r.get("ca").unwrap().not_after,
        Some(NOW + 61 * 86400 + 90 * 86400)
    );
    assert_ne!(r.get("leaf").unwrap().value, v.get("leaf").unwrap().value);
    assert_eq!(r.get("other"), v.get("other"));
    assert_eq!(r.get("a"), v.get("a"));
    assert_eq!(r.get("k"), v.get("k"));
}

#[test]
fn expansion_in_text_and_files() {
    let s = session(
        "x",
        "  - name: a\n    kind: ascii\n    value: 'q\"uote'\n  - name: b\n    kind: binary\n    value: \"0001\"\n",
    );
    let v = mat(&s);
    let out = expand_text(
        "A=$$SCONE::a$$ J=\"$$SCONE::a|escape(json)$$\" H=$$SCONE::b:hex$$",
        &v,
        Context::Argument,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "A=q\"uote J=\"q\\\"uote\" H=0001"
    );
    assert_eq!(
        expand_text("[$$SCONE::b$$]", &v, Context::File).unwrap(),
        b"[\x00\x01]"
    );
    let e = expand_text("$$SCONE::b$$", &v, Context::Environment).unwrap_err();
    assert!(e.to_string().contains("secret `b` is raw binary"), "{e}");
    let e = expand_text("$$SCONE::nope$$", &v, Context::File).unwrap_err();
    assert!(matches!(e, SecretsError::UnknownSecret(n) if n == "nope"));
    assert!(expand_text("$$SCONE::a", &v, Context::File).is_err());
}

#[test]
fn relative_references() {
    for (from, r, want) in [
        ("a/b/c", "../x", Some("a/b/x")),
        ("a/b/c", "./x", Some("a/b/c/x")),
        ("a/b/c", "../../x", Some("a/x")),
        ("a/b/c", "x/y", Some("x/y")),
        ("a/b/c", "./../x", Some("a/b/x")),
        ("top", "../x", None),
        ("a/b", "../../../x", None),
        ("a/b", "../", None),
        ("a/b", "./x/../y", None),
    ] {
        let got = resolve_session_reference(from, r).ok();
        assert_eq!(got.as_deref(), want, "{from} + {r}");
    }
}

struct Cas {
    sessions: Vec<(Session, String, SecretValues)>,
}

impl ImportResolver for Cas {
    fn resolve(&self, importer: &str, src: &ImportSource) -> Result<StoredSecret, SecretsError> {
        let (s, h, v) = self
            .sessions
            .iter()
            .find(|(s, _, _)| s.name == src.session)
            .ok_or_else(|| SecretsError::Import {
                secret: src.secret.clone(),
                source_session: src.session.clone(),
                source_secret: src.secret.clone(),
                reason: "no such session".into(),
            })?;
        check_export(
            s,
            h,
            &src.secret,
            importer,
            None,
            src.session_hash.as_deref(),
        )?;
        Ok(v.get(&src.secret).unwrap().clone())
    }
}

#[test]
fn export_and_import_across_sessions() {
    let exp = parse(
        "name: ns/exporter\nsecrets:\n\
         \x20 - name: db_key\n    kind: ascii\n    export:\n      - session: ../importer\n\
         \x20 - name: ns_key\n    kind: binary\n    export:\n      - namespace: other\n\
         \x20 - name: pinned\n    kind: ascii\n    export:\n      - session: ns/importer\n        session_hash: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n\
         \x20 - name: private\n    kind: ascii\n",
    );
    let ev = mat(&exp);
    let h = "e".repeat(64);
    let cas = Cas {
        sessions: vec![(exp.clone(), h.clone(), ev.clone())],
    };
    assert!(export_allows(&exp, &h, "db_key", "ns/importer"));
    assert!(!export_allows(&exp, &h, "db_key", "ns/other"));
    assert!(export_allows(&exp, &h, "ns_key", "other/deep/s"));
    assert!(!export_allows(&exp, &h, "ns_key", "otherx/s"));
    assert!(!export_allows(&exp, &h, "private", "ns/importer"));
    assert!(!export_allows(&exp, &h, "pinned", "ns/importer"));
    assert!(
        check_export(
            &exp,
            &h,
            "pinned",
            "ns/importer",
            Some(&"a".repeat(64)),
            None
        )
        .is_ok()
    );
    assert!(
        check_export(
            &exp,
            &h,
            "pinned",
            "ns/importer",
            Some(&"b".repeat(64)),
            None
        )
        .is_err()
    );

    let imp = parse(&format!(
        "name: ns/importer\nsecrets:\n  - name: mine\n    kind: ascii\n    import:\n      session: ./../exporter\n      secret: db_key\n      session_hash: \"{h}\"\n"
    ));
    let iv = materialize(&imp, None, &cas, at(NOW)).unwrap();
    assert_eq!(iv.get("mine"), ev.get("db_key"));
    // The exporter changed: the pinned hash no longer matches.
    let cas2 = Cas {
        sessions: vec![(exp.clone(), "f".repeat(64), ev.clone())],
    };
    let e = materialize(&imp, None, &cas2, at(NOW)).unwrap_err();
    assert!(
        e.to_string()
            .contains("pinned session_hash no longer matches"),
        "{e}"
    );
    // Not exported to this importer.
    let imp2 = parse(
        "name: ns/intruder\nsecrets:\n  - name: mine\n    kind: ascii\n    import:\n      session: ns/exporter\n      secret: db_key\n",
    );
    assert!(materialize(&imp2, None, &cas, at(NOW)).is_err());
    // Kind mismatch.
    let imp3 = parse(
        "name: other/x\nsecrets:\n  - name: mine\n    kind: ascii\n    import:\n      session: ns/exporter\n      secret: ns_key\n",
    );
    let e = materialize(&imp3, None, &cas, at(NOW)).unwrap_err();
    assert!(e.to_string().contains("kind binary"), "{e}");
}

#[test]
fn public_values() {
    let s = session(
        "pubs",
        "  - name: answer\n    kind: ascii\n    value: \"42\"\n    export_public: true\n\
         \x20 - name: hidden\n    kind: ascii\n\
         \x20 - name: k\n    kind: private-key\n\
         \x20 - name: ca\n    kind: x509-ca\n    private_key: k\n    export_public: true\n",
    );
    let v = mat(&s);
    let one = public_value_json(&s, &v, "answer").unwrap();
    assert_eq!(
        one,
        serde_json::json!({"kind":"string","value":"42","expires":null,"renew":null})
    );
    let all = public_values_json(&s, &v);
    let vals = all["values"].as_object().unwrap();
    assert_eq!(vals.len(), 2);
    assert_eq!(vals["answer"]["value"], "42");
    let ca = vals["ca"]["value"].as_str().unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!all.to_string().contains("PRIVATE KEY"));
    assert!(vals["ca"]["expires"].is_string());
    for name in ["hidden", "k", "nope"] {
        let e = public_value_json(&s, &v, name).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Secret does not exist or is not visible for a public client"
        );
    }
    assert_eq!(
        public_value_error_msg("pubs", "hidden"),
        vec![
            "Failed to read value 'hidden' of '/session=pubs' requested by a public client",
            "Secret does not exist or is not visible for a public client"
        ]
    );
}

#[test]
fn debug_output_never_shows_values() {
    let s = session(
        "d",
        "  - name: a\n    kind: ascii\n    value: \"SUPERSECRETVALUE\"\n  - name: b\n    kind: binary\n    value: \"deadbeefcafe\"\n  - name: k\n    kind: private-key\n",
    );
    let v = mat(&s);
    let dbg = format!("{v:?} {:?} {:?} {:?}", v.get("a"), v.get("b"), v.get("k"));
    assert!(!dbg.contains("SUPERSECRETVALUE"), "{dbg}");
    assert!(!dbg.to_lowercase().contains("deadbeef"), "{dbg}");
    assert!(!dbg.contains("222"), "{dbg}"); // no byte lists
    assert!(matches!(v.get("a").unwrap().kind, Kind::Ascii));
    // Serde round trip (the CAS seals the JSON).
    let json = serde_json::to_vec(&v).unwrap();
    let back: SecretValues = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, v);
}

#[test]
fn binary_keys_from_hex_or_placeholder() {
    let s = session(
        "k",
        "  - name: fk\n    kind: binary\n    size: 32\n  - name: a\n    kind: ascii\n",
    );
    let v = mat(&s);
    let raw = bytes(&v, "fk", None);
    assert_eq!(binary_key("fspf_key", "$$SCONE::fk$$", &v).unwrap(), raw);
    assert_eq!(
        binary_key("fspf_key", "$$SCONE::fk:hex$$", &v).unwrap(),
        raw
    );
    assert_eq!(
        binary_key("fspf_key", &"0f".repeat(32), &v).unwrap(),
        vec![0x0f; 32]
    );
    let e = binary_key("fspf_key", "$$SCONE::a$$", &v).unwrap_err();
    assert!(e.to_string().contains("fspf_key"), "{e}");
    assert!(binary_key("fspf_key", "xyz", &v).is_err());
    assert!(binary_key("fspf_key", "$$SCONE::nope$$", &v).is_err());
}
