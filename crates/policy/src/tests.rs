//! Unit tests over whole documents.

use super::*;

fn data(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

fn envcas_vars() -> Vars {
    Vars {
        explicit: [
            ("SESSION".to_string(), "s".to_string()),
            ("MRENCLAVE".to_string(), "ab".repeat(32)),
        ]
        .into_iter()
        .collect(),
        use_env: false,
    }
}

#[test]
fn counter_example_parses() {
    let s = parse("counter.yaml", &data("counter-session-seed.yaml")).unwrap();
    assert_eq!(s.name, "ns-8991241572316/python-session");
    assert_eq!(s.services[0].command, ["python3", "/code/app.py"]);
    assert_eq!(s.services[0].attestation.len(), 1);
    assert_eq!(s.images[0].volumes[0].path, "/V1");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let y = s.to_yaml();
    let back = parse("again.yaml", &y).unwrap();
    assert_eq!(s, back, "{y}");
    assert_eq!(s.hash(None), back.hash(None));
}

#[test]
fn envcas_example_loads() {
    let s = load(
        "envcas.yaml",
        &data("envcas-session.yaml"),
        &envcas_vars(),
        None,
    )
    .unwrap();
    assert_eq!(s.name, "s");
    assert_eq!(s.services.len(), 2);
    assert_eq!(s.services[0].command, ["envcas", "-c", "cat /work/out1"]);
    let y = s.to_yaml();
    assert!(y.contains("$$SCONE::example_secret$$"), "{y}");
    let back = parse("again.yaml", &y).unwrap();
    assert_eq!(s, back, "{y}");
}

#[test]
fn unsupported_kind_error_text() {
    let e = parse(
        "s.yaml",
        "name: t\nversion: \"0.3\"\nsecrets:\n  - name: p\n    kind: pgp-key\n",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "s.yaml:5:11: secrets[0].kind: kind `pgp-key` is not supported yet"
    );
}

#[test]
fn effective_access_policy_defaults() {
    let s = parse(
        "s.yaml",
        "name: t\nversion: \"0.3\"\naccess_policy: {read: [ANY]}\nsecurity: {attestation: {mode: none}}\n",
    )
    .unwrap();
    let ap = &s.access_policy;
    assert_eq!(ap.effective(Op::Read), Rule(vec![AccessEntry::Any]));
    assert_eq!(ap.effective(Op::Update), Rule(vec![AccessEntry::Creator]));
    assert_eq!(
        ap.effective(Op::CreateSessions),
        Rule(vec![AccessEntry::Creator])
    );
    assert_eq!(ap.effective(Op::ListSessions), Rule(vec![AccessEntry::Any]));
}

#[test]
fn secrets_are_not_in_debug_output() {
    let s = parse(
        "s.yaml",
        "name: t\nversion: \"0.3\"\nsecurity: {attestation: {mode: none}, service_access_token: tok-SECRET1}\nsecrets:\n  - {name: a, kind: ascii, value: SECRET2}\n  - {name: b, kind: binary, value: 5ec2e7}\n",
    )
    .unwrap();
    let d = format!("{s:?}");
    assert!(
        !d.contains("SECRET1") && !d.contains("SECRET2") && !d.contains("5ec2e7"),
        "{d}"
    );
}

#[test]
fn creator_is_hashed_as_key_hash() {
    // A fixed certificate; testdata/README.md gives its key hash as computed by openssl.
    let pem = include_str!("../testdata/creator-cert.pem");
    let spki = veil_types::spki_from_cert_pem(pem).unwrap();
    let kh = veil_types::key_hash(&spki);
    assert_eq!(
        kh,
        "25014eda585a5a1a339a30287a12cd9bf6eaa1a79c6551ee5da6a5a8575e6401"
    );
    let body = "name: t\nversion: \"0.3\"\nsecurity: {attestation: {mode: none}}\n";
    let plain = parse("s.yaml", body).unwrap();
    let with_creator = parse(
        "s.yaml",
        &format!("{body}creator: {}\n", serde_json::to_string(&pem).unwrap()),
    )
    .unwrap();
    assert_eq!(with_creator.hash(None), plain.hash(Some(&kh)));
    assert_ne!(plain.hash(None), plain.hash(Some(&kh)));
    let canon = String::from_utf8(with_creator.canonical_bytes(None)).unwrap();
    assert!(!canon.contains("BEGIN"), "PEM must not be hashed: {canon}");
    // A certificate in the access policy is compared (and hashed) by its public key.
    let ap = parse(
        "s.yaml",
        &format!(
            "{body}access_policy: {{read: [{}]}}\n",
            serde_json::to_string(&pem).unwrap()
        ),
    )
    .unwrap();
    let Some(Rule(entries)) = &ap.access_policy.read else {
        panic!()
    };
    assert!(matches!(&entries[0], AccessEntry::Certificate { spki_der, .. } if *spki_der == spki));
    assert!(
        String::from_utf8(ap.canonical_bytes(None))
            .unwrap()
            .contains(&kh)
    );
    assert_eq!(parse("again", &ap.to_yaml()).unwrap(), ap);
}

#[test]
fn every_key_round_trips() {
    let h = "ab".repeat(32);
    let doc = format!(
        r#"name: ns/full
version: "0.3.12"
namespace_hash: {h}
salt: 0123456789abcdef0123456789abcdef
services:
  - name: s1
    command: ["/bin/prog", "a b", "$$SCONE::bin:hex$$", "@@1"]
    environment: {{A: "1", "\\@\\@HOST": "", B: "x $$SCONE::txt$$ y"}}
    pwd: /w
    image_name: img
    fspf_path: /fspf/fs.fspf
    fspf_key: $$SCONE::bin$$
    fspf_tag: 0123456789abcdef0123456789abcdef
    fspf_update_policy: no_rollback_protection
    attestation:
      - mrenclave: [{h}, "$$SCONE::frag$$"]
      - signer: {{mrsigner: {h}, isvprodid: 7, isvsvn_min: 1, isvsvn_max: 3}}
    platforms: ["INTEL_QE_ID:0123456789abcdef0123456789abcdef"]
    one_time_password_shared_secret: JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
secrets:
  - {{name: txt, kind: ascii, size: 10, migrate: true}}
  - {{name: bin, kind: binary, value: 00ff}}
  - {{name: key, kind: private-key, key_type: Ed25519, migrate: true, export: [{{session: other}}, {{namespace: ns2, session_hash: {h}}}]}}
  - {{name: pub, kind: public-key, private_key: key, export_public: true}}
  - {{name: ca, kind: x509-ca, private_key: key, common_name: CA, valid_for: 90 days}}
  - {{name: crt, kind: x509, private_key: key, issuer: ca, endpoint: server, san: ["dns:a.example", "ip:10.0.0.1", "ip:::1"], dns: [b.example], valid_for: 59d}}
  - {{name: frag, kind: config-fragment, value: {{a: [1, 2.5, true, null, "1", x]}}}}
  - {{name: imp, kind: ascii, import: {{session: other, secret: s, session_hash: {h}}}}}
  - {{name: akv, kind: ascii, import_akv: {{vault: https://v, secret_name: n, token: t}}}}
images:
  - name: img
    injection_files:
      - /etc/from-fs
      - {{path: /etc/a, content: "k: $$SCONE::crt:crt$$\n", permission: 0o600}}
      - {{path: /etc/b, content: ""}}
    volumes: [{{name: V, path: /v, update_policy: ephemeral}}, {{name: W, path: /w}}]
    provide_secrets: [txt]
volumes:
  - {{name: V, files: authenticated-only, export: [{{session: x}}, {{to: {{session: y, session_hash: {h}}}, update_policy: ephemeral, volume_alias: VV}}]}}
  - {{name: W, fspf_key: {h}, fspf_tag: 0123456789abcdef0123456789abcdef}}
  - {{name: I, import: {{session: o, volume: V}}}}
access_policy:
  read: [CREATOR, {h}, "$$SCONE::frag$$"]
  update: [{{require-at-least-2: [CREATOR, {h}, {{require-all: [CREATOR]}}]}}]
  create_sessions: [NONE]
  list_sessions: [ANY]
security:
  singleton_enclaves: true
  service_access_token: tok
  attestation:
    mode: hardware
    tolerate: [debug-mode, outdated-tcb]
    ignore_advisories: [INTEL-SA-00161]
    one_time_password_shared_secret: $$SCONE::txt$$
    trusted_scone_qe_pubkeys: [{h}]
    must_be_sgx_local: true
secret_config:
  store_in: !akv {{token: t, vault: v}}
"#
    );
    let s = parse("full.yaml", &doc).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.services[0].attestation.len(), 2);
    assert_eq!(s.secrets.len(), 9);
    let unsupported: Vec<&str> = s
        .warnings
        .iter()
        .filter(|w| w.is_unsupported())
        .map(|w| w.path.as_str())
        .collect();
    for p in [
        "services[0].attestation[1].signer",
        "services[0].platforms",
        "secrets[8].import_akv",
        "access_policy.update[0].require-at-least-2",
        "security.singleton_enclaves",
        "security.attestation.trusted_scone_qe_pubkeys",
        "security.attestation.must_be_sgx_local",
        "secret_config.store_in",
    ] {
        assert!(unsupported.contains(&p), "{p} missing in {unsupported:?}");
    }
    let y = s.to_yaml();
    let back = parse("again.yaml", &y).unwrap_or_else(|e| panic!("{e}\n{y}"));
    assert_eq!(back, s, "{y}");
    assert_eq!(back.hash(None), s.hash(None));
    let cas = parse(
        "c.yaml",
        "name: t\nversion: \"0.3\"\nsecurity: {attestation: {mode: none}}\nsecret_config: {store_in: !cas }\n",
    )
    .unwrap();
    assert_eq!(cas.secret_config, Some(SecretConfig::Cas));
    assert_eq!(parse("again", &cas.to_yaml()).unwrap(), cas);
}

#[test]
fn semantic_changes_change_the_hash() {
    let base = format!(
        "name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    mrenclaves: [{}]\n    command: a b\n    environment: {{K: v}}\n",
        "ab".repeat(32)
    );
    let h = parse("b", &base).unwrap().hash(None);
    for (from, to) in [
        ("name: t", "name: u"),
        ("version: \"0.3\"", "version: \"0.3.1\""),
        ("command: a b", "command: a  c"),
        ("command: a b", "command: b a"),
        ("K: v", "K: w"),
        ("K: v", "L: v"),
        ("abab", "abac"),
    ] {
        let changed = base.replacen(from, to, 1);
        let h2 = parse("c", &changed).unwrap().hash(None);
        assert_ne!(h, h2, "{from} -> {to}");
    }
    let salted = format!("{base}salt: 0123456789abcdef0123456789abcdef\n");
    assert_ne!(h, parse("s", &salted).unwrap().hash(None));
}

/// The alias bomb of issue 16 item 3: one 200 KB anchored scalar and 5,000 aliases to it (a
/// 1.2 GB expansion in a 1 MB-limited document). Refused at the alias that crosses
/// `MAX_EXPANDED_BYTES`, with its position, before the expansion is allocated.
fn alias_bomb() -> String {
    let mut s = format!(
        "name: bomb\nversion: \"0.3\"\nbig: &a \"{}\"\nl: [",
        "A".repeat(200_000)
    );
    for i in 0..5_000 {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str("*a");
    }
    s.push_str("]\n");
    s
}

#[test]
fn alias_bomb_is_refused_by_bytes_with_its_position() {
    let doc = alias_bomb();
    assert!(doc.len() < MAX_DOCUMENT_BYTES);
    let t = std::time::Instant::now();
    let e = parse("bomb.yaml", &doc).unwrap_err();
    let elapsed = t.elapsed();
    let PolicyError::Invalid(d) = &e else {
        panic!("{e}")
    };
    assert_eq!(d.0.len(), 1, "{e}");
    // The anchored copy (200 000) + the scalar (200 000) + 18 aliases = 4 000 000 bytes fit in
    // 4 MiB (4 194 304); the 19th alias, at column 5 + 4 * 18 of line 4, does not.
    assert_eq!(
        d.0[0].to_string(),
        "bomb.yaml:4:77: the document expands to more than 4 MiB through aliases (scalar and tag bytes, every alias expansion counted); refusing it"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(5),
        "took {elapsed:?}"
    );
}

#[test]
fn aliases_below_the_byte_bound_are_expanded() {
    // 100 aliases of a 40 000-byte scalar: 4 080 000 bytes with the anchored copy, accepted;
    // the expansion is real (every alias is the full value).
    let mut s = format!(
        "name: ok\nversion: \"0.3\"\nsecrets:\n  - name: a\n    kind: ascii\n    value: &v \"{}\"\n",
        "B".repeat(40_000)
    );
    for i in 0..100 {
        s.push_str(&format!("  - name: a{i}\n    kind: ascii\n    value: *v\n"));
    }
    let sess = parse("ok.yaml", &s).unwrap();
    assert_eq!(sess.secrets.len(), 101);
    assert!(
        sess.secrets
            .iter()
            .all(|x| matches!(&x.value, Some(SecretValue::Text(t)) if t.len() == 40_000))
    );
}

const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYx/qsrfFtSC6y0af
sHbf+uXjwwaqUKXqrYniFx5V3zihRANCAAS9qbqj6oHzrdYyl3ET+KGeX9vwjH39
gm0erPuPYoIMT51vMvwtNZxH6fi/HiQiyhvj1IfQ/76N+rlVQnUeQ24j
-----END PRIVATE KEY-----
";

/// Every kind of secret material a document can carry, each value unique so that a leak is
/// found by a substring search.
fn secret_material_doc() -> (String, Vec<String>) {
    let ascii = "AsciiSecretValue4242";
    let binary = "b1aa".repeat(8);
    let fragment = "FragmentSecretValue77";
    let svc_key = "5e".repeat(32);
    let vol_key = "7f".repeat(32);
    let svc_otp = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let sess_otp = "KRUGS4ZANFZSAYJAORSXG5BAONSWG4TF";
    let token = "ServiceAccessTokenValue99";
    let akv_token = "AkvTokenValue31";
    let akv_key = "AkvDecryptionKey32";
    let store_token = "StoreInAkvToken33";
    let key_body = TEST_KEY_PEM.lines().nth(1).unwrap_or_default().to_string();
    let doc = format!(
        "name: redact
version: \"0.3.10\"
services:
  - name: app
    command: [app, \"$$SCONE::pw$$\"]
    attestation: {{mrenclave: [\"{mre}\"]}}
    fspf_path: /fspf/fs.fspf
    fspf_key: \"{svc_key}\"
    fspf_tag: \"{tag}\"
    one_time_password_shared_secret: {svc_otp}
  - name: other
    attestation: {{mrenclave: [\"{mre}\"]}}
    fspf_path: /fspf/fs.fspf
    fspf_key: \"$$SCONE::bin$$\"
    fspf_tag: \"{tag}\"
secrets:
  - name: pw
    kind: ascii
    value: {ascii}
  - name: bin
    kind: binary
    value: \"{binary}\"
  - name: key
    kind: private-key
    value: |
{key}
  - name: frag
    kind: config-fragment
    value:
      inner: [{fragment}, 1]
  - name: gen
    kind: ascii
    size: 16
  - name: vaulted
    kind: ascii
    import_akv: {{vault: \"https://v.example\", token: {akv_token}, decryption_key: {akv_key}}}
volumes:
  - name: data
    fspf_key: \"{vol_key}\"
    fspf_tag: \"{tag}\"
security:
  service_access_token: {token}
  attestation:
    mode: hardware
    one_time_password_shared_secret: {sess_otp}
secret_config:
  store_in: !akv {{token: {store_token}, vault: \"https://v.example\"}}
",
        mre = "ab".repeat(32),
        tag = "cd".repeat(16),
        key = TEST_KEY_PEM
            .lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let values = [
        ascii,
        &binary,
        fragment,
        &svc_key,
        &vol_key,
        svc_otp,
        sess_otp,
        token,
        akv_token,
        akv_key,
        store_token,
        &key_body,
    ]
    .iter()
    .map(|v| v.to_string())
    .collect();
    (doc, values)
}

#[test]
fn redacted_output_carries_no_secret_material() {
    let (doc, values) = secret_material_doc();
    let s = parse("r.yaml", &doc).unwrap();
    let hash = s.hash(None);
    let y = s.to_yaml_redacted();
    let j = s.to_json_redacted().to_string();
    for v in &values {
        assert!(doc.contains(v.as_str()), "{v} not in the document");
        assert!(
            s.to_yaml().contains(v.as_str()),
            "{v} not in the plain output"
        );
        assert!(!y.contains(v.as_str()), "{v} leaks into\n{y}");
        assert!(!j.contains(v.as_str()), "{v} leaks into\n{j}");
    }
    // Values, literal keys, OTP secrets, tokens: 12 places. The placeholder fspf_key, the
    // generated secret and the placeholder argument are kept as they are.
    assert_eq!(y.matches(REDACTED).count(), 12, "{y}");
    assert!(y.contains("fspf_key: \"$$SCONE::bin$$\""), "{y}");
    assert!(y.contains("- \"$$SCONE::pw$$\""), "{y}");
    assert!(y.contains("size: 16"), "{y}");
    // The hash is that of the unredacted form.
    assert_eq!(s.hash(None), hash);
    assert_ne!(s.redacted().hash(None), hash);
    // Read back for inspection: equal to the redacted session.
    let back = parse_read_back("read.yaml", &y).unwrap();
    assert_eq!(back, s.redacted());
    assert_eq!(back.services[1].fspf_key.as_deref(), Some("$$SCONE::bin$$"));
}

#[test]
fn uploading_the_redaction_marker_is_refused_naming_each_field() {
    let (doc, _) = secret_material_doc();
    let s = parse("r.yaml", &doc).unwrap();
    let y = s.to_yaml_redacted();
    let e = parse("update.yaml", &y).unwrap_err();
    let PolicyError::Invalid(d) = &e else {
        panic!("{e}")
    };
    let mut paths: Vec<&str> = d.0.iter().map(|d| d.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "secret_config.store_in.token",
            "secrets[0].value",
            "secrets[1].value",
            "secrets[2].value",
            "secrets[3].value",
            "secrets[5].import_akv.token",
            "secrets[5].import_akv.decryption_key",
            "security.attestation.one_time_password_shared_secret",
            "security.service_access_token",
            "services[0].fspf_key",
            "services[0].one_time_password_shared_secret",
            "volumes[0].fspf_key",
        ]
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "{e}"
    );
    let first = d.0.iter().find(|d| d.path == "secrets[0].value").unwrap();
    assert_eq!(
        first.message,
        "`secrets[0].value` holds the redaction marker of `session read` (`$$VEIL::REDACTED$$`), not a value: start updates from your own file, not from `session read` output"
    );
    // Also through template substitution (`veil session update FILE`), and when the marker
    // is embedded in a longer value.
    let e = load("u.yaml", &y, &Vars::default(), None).unwrap_err();
    assert!(e.to_string().contains("redaction marker"), "{e}");
    let e = parse(
        "u.yaml",
        "name: x\nversion: \"0.3\"\nsecrets:\n  - name: a\n    kind: ascii\n    value: \"x$$VEIL::REDACTED$$y\"\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains(
            "u.yaml:6:12: secrets[0].value: `secrets[0].value` holds the redaction marker"
        ),
        "{e}"
    );
}

#[test]
fn the_marker_is_refused_outside_redacted_fields_even_when_reading_back() {
    for (doc, path) in [
        (
            "name: x\nversion: \"0.3\"\nservices:\n  - name: s\n    attestation: {mrenclave: [\"$$VEIL::REDACTED$$\"]}\n",
            "services[0].attestation.mrenclave[0]",
        ),
        (
            "name: x\nversion: \"0.3\"\nsecurity: {attestation: {mode: none}}\nservices:\n  - name: s\n    environment: {A: \"$$VEIL::REDACTED$$\"}\n",
            "services[0].environment.A",
        ),
        (
            "name: x\nversion: \"0.3\"\nimages:\n  - name: i\n    injection_files:\n      - {path: /a, content: \"$$VEIL::REDACTED$$\"}\n",
            "images[0].injection_files[0].content",
        ),
        (
            "name: x\nversion: \"0.3\"\nsecrets:\n  - name: f\n    kind: config-fragment\n    value: {a: [\"$$VEIL::REDACTED$$\"]}\n",
            "secrets[0].value.a[0]",
        ),
    ] {
        for e in [
            parse("m.yaml", doc).unwrap_err(),
            parse_read_back("m.yaml", doc).unwrap_err(),
        ] {
            let PolicyError::Invalid(d) = &e else {
                panic!("{e}")
            };
            assert!(
                d.0.iter()
                    .any(|d| d.path == path && d.message.contains("redaction marker")),
                "{path}: {e}"
            );
        }
    }
}

/// Issue 16 item 5: `.` and `..` are refused as names of every named item, in references to
/// named items, as parts of the session's name and as path components, each with an error
/// naming the field.
#[test]
fn dot_names_are_refused_everywhere() {
    const HEAD: &str = "name: ok\nversion: \"0.3\"\nsecurity: {attestation: {mode: none}}\n";
    // (document body with `@` standing for the name under test, field path, message part)
    let table: &[(&str, &str, &str)] = &[
        (
            "services:\n  - name: \"@\"\n",
            "services[0].name",
            "are not names",
        ),
        (
            "secrets:\n  - name: \"@\"\n    kind: ascii\n",
            "secrets[0].name",
            "are not names",
        ),
        (
            "images:\n  - name: \"@\"\n",
            "images[0].name",
            "are not names",
        ),
        (
            "volumes:\n  - name: \"@\"\n",
            "volumes[0].name",
            "are not names",
        ),
        (
            "images:\n  - name: i\n    injection_files:\n      - path: \"/etc/@/passwd\"\n",
            "images[0].injection_files[0].path",
            "component",
        ),
        (
            "images:\n  - name: i\n    injection_files: [\"/@/x\"]\n",
            "images[0].injection_files[0].path",
            "component",
        ),
        (
            "volumes: [{name: v}]\nimages:\n  - name: i\n    volumes: [{name: v, path: \"/data/@\"}]\n",
            "images[0].volumes[0].path",
            "component",
        ),
        (
            "volumes: [{name: v}]\nimages:\n  - name: i\n    volumes: [{name: \"@\", path: /data}]\n",
            "images[0].volumes[0].name",
            "is not defined",
        ),
        (
            "services:\n  - name: s\n    image_name: \"@\"\n",
            "services[0].image_name",
            "is not defined",
        ),
        (
            "images:\n  - name: i\n    provide_secrets: [\"@\"]\n",
            "images[0].provide_secrets[0]",
            "is not defined",
        ),
        (
            "secrets:\n  - name: c\n    kind: x509\n    private_key: \"@\"\n",
            "secrets[0].private_key",
            "is not defined",
        ),
        (
            "secrets:\n  - name: c\n    kind: x509\n    private_key: k\n    issuer: \"@\"\n  - name: k\n    kind: private-key\n",
            "secrets[0].issuer",
            "is not defined",
        ),
        (
            "secrets:\n  - name: a\n    kind: ascii\n    import: {session: other, secret: \"@\"}\n",
            "secrets[0].import.secret",
            "are not names",
        ),
        (
            "volumes:\n  - name: v\n    export: [{session: other, volume_alias: \"@\"}]\n",
            "volumes[0].export[0].volume_alias",
            "are not names",
        ),
        (
            "volumes:\n  - name: v\n    import: {session: other, volume: \"@\"}\n",
            "volumes[0].import.volume",
            "are not names",
        ),
    ];
    for dot in [".", ".."] {
        for (body, path, part) in table {
            let doc = format!("{HEAD}{}", body.replace('@', dot));
            // The same document with an ordinary name is valid: the dot is what is refused.
            let fine = format!("{HEAD}{}", body.replace('@', "n"));
            let fine = fine.replace("\"/n/x\"", "\"/x\"");
            if let Err(e) = parse("fine.yaml", &fine) {
                let msg = e.to_string();
                assert!(
                    msg.contains("is not defined") && part.contains("is not defined"),
                    "{fine}\n{msg}"
                );
            }
            let e = parse("dot.yaml", &doc).unwrap_err();
            let PolicyError::Invalid(d) = &e else {
                panic!("{e}")
            };
            assert!(
                d.0.iter().any(|d| d.path == *path
                    && d.message.contains(part)
                    && d.message.contains(&format!("`{dot}"))),
                "{path} with `{dot}`: {e}\n{doc}"
            );
        }
        // Session names: the whole name and a part of it.
        for name in [dot.to_string(), format!("a/{dot}/b"), format!("a/{dot}")] {
            let e = parse("n.yaml", &format!("name: \"{name}\"\nversion: \"0.3\"\n")).unwrap_err();
            let PolicyError::Invalid(d) = &e else {
                panic!("{e}")
            };
            assert!(
                d.0.iter()
                    .any(|d| d.path == "name" && d.message.contains("are not names")),
                "{name}: {e}"
            );
        }
    }
    // Relative session names in imports and exports (SCONE: `../frontend` is a sibling) stay
    // allowed.
    parse(
        "rel.yaml",
        &format!("{HEAD}secrets:\n  - name: a\n    kind: ascii\n    export: [{{session: ../frontend}}]\n  - name: b\n    kind: ascii\n    import: {{session: ../backend, secret: x}}\n"),
    )
    .unwrap();
    // Dots inside names stay allowed.
    parse(
        "ok.yaml",
        &format!("{HEAD}volumes: [{{name: v.1}}, {{name: ...}}, {{name: .hidden}}]\n"),
    )
    .unwrap();
}

#[test]
fn veil_node_restriction_extension() {
    let base =
        "name: s\nversion: \"0.3\"\nservices:\n  - name: app\n    command: x\n    mrenclaves: [\"";
    let doc = |ext: &str| format!("{base}{}\"]\n{ext}", "ab".repeat(32));
    let plain = parse("s.yaml", &doc("")).unwrap();
    assert_eq!(plain.services[0].node_restriction, None);
    let ext = "    veil:\n      node:\n        uids: [0, 1000]\n        cgroups: [\"/kubepods.slice/\", \"/system.slice/app.service\"]\n";
    let s = parse("s.yaml", &doc(ext)).unwrap();
    let r = s.services[0].node_restriction.clone().unwrap();
    assert_eq!(r.uids, [0, 1000]);
    assert_eq!(r.cgroups, ["/kubepods.slice/", "/system.slice/app.service"]);
    // Covered by the hash and kept by the round trip.
    assert_ne!(s.hash(None), plain.hash(None));
    let back = parse("again.yaml", &s.to_yaml()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.hash(None), s.hash(None));
    // The check: uids and cgroup prefixes by whole components.
    assert!(r.check(1000, "/kubepods.slice/pod1/c").is_ok());
    assert!(r.check(1000, "/system.slice/app.service").is_ok());
    assert!(r.check(1000, "/system.slice/app.service2").is_err());
    assert!(
        r.check(65534, "/kubepods.slice/pod1")
            .unwrap_err()
            .contains("uid 65534")
    );
    assert!(r.check(0, "/user.slice").unwrap_err().contains("cgroup"));
    // Unknown fields and bad values are errors with line:column.
    for (bad, want) in [
        ("    veil:\n      nodes: {}\n", "unknown"),
        ("    veil:\n      node:\n        uid: [1]\n", "unknown"),
        (
            "    veil:\n      node:\n        uids: [-1]\n",
            "non-negative",
        ),
        (
            "    veil:\n      node:\n        uids: [4294967296]\n",
            "out of range",
        ),
        (
            "    veil:\n      node:\n        cgroups: [\"kubepods\"]\n",
            "absolute cgroup",
        ),
        (
            "    veil:\n      node:\n        cgroups: [\"/a/../b\"]\n",
            "absolute cgroup",
        ),
    ] {
        let e = parse("s.yaml", &doc(bad)).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("s.yaml:"), "{bad}: {e}");
    }
}
