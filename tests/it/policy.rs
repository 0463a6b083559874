//! `veil session check` / `calculate-hash` driven through the real binary: the two example
//! policies, golden normalised output, template variables, warnings, hashes, and a table of
//! invalid documents (each asserting position, field path and message).

use std::path::Path;
use std::process::Output;

use crate::support::{data, veil};

const MRENCLAVE: &str = "abababababababababababababababababababababababababababababababab";
const HEX64: &str = "e2f7cb1c13fa16d2a48f1727ebf1c20ac8185e72e14f647e876072e1f006377d";

fn run(dir: &Path, args: &[&str]) -> Output {
    veil(dir)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run veil")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn golden(name: &str, actual: &str) {
    let path = data("policy").join(name);
    if std::env::var_os("VEIL_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with VEIL_BLESS=1 to create)", path.display()));
    assert_eq!(actual, want, "output differs from {}", path.display());
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    std::fs::write(dir.join(name), body).unwrap();
    name.to_string()
}

#[test]
fn counter_example_checks_and_matches_golden() {
    let t = tempfile::tempdir().unwrap();
    let f = data("counter-session-seed.yaml");
    let out = run(t.path(), &["session", "check", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "no warnings expected");
    let y = text(&out.stdout);
    golden("counter-session-seed.normalised.yaml", &y);

    // The normalised output is itself a valid session with the same hash.
    let n = write(t.path(), "normalised.yaml", &y);
    let again = run(t.path(), &["session", "check", &n]);
    assert!(again.status.success());
    assert_eq!(text(&again.stdout), y, "normalisation is idempotent");
    let h1 = run(
        t.path(),
        &["session", "calculate-hash", f.to_str().unwrap()],
    );
    let h2 = run(t.path(), &["session", "calculate-hash", &n]);
    assert!(h1.status.success() && h2.status.success());
    let h1 = text(&h1.stdout);
    assert_eq!(h1.trim().len(), 64);
    assert!(
        h1.trim()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(h1, text(&h2.stdout));
}

#[test]
fn envcas_example_with_variables_keeps_placeholders() {
    let t = tempfile::tempdir().unwrap();
    let f = data("envcas-session.yaml");
    let mr = format!("MRENCLAVE={MRENCLAVE}");
    let out = run(
        t.path(),
        &[
            "session",
            "check",
            "-e",
            "SESSION=s",
            "-e",
            &mr,
            f.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let y = text(&out.stdout);
    assert!(y.contains("$$SCONE::example_secret$$"), "{y}");
    assert!(y.starts_with("name: s\n"));
    golden("envcas-session.normalised.yaml", &y);

    let json = run(
        t.path(),
        &[
            "session",
            "check",
            "--json",
            "-e",
            "SESSION=s",
            "-e",
            &mr,
            f.to_str().unwrap(),
        ],
    );
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["name"], "s");
    assert_eq!(
        v["services"][1]["attestation"][0]["mrenclave"][0],
        MRENCLAVE
    );
    assert_eq!(
        v["services"][0]["environment"]["SECRET_ENV"],
        "$$SCONE::example_secret$$"
    );
}

#[test]
fn missing_variable_is_reported_with_position() {
    let t = tempfile::tempdir().unwrap();
    let f = write(
        t.path(),
        "session.yaml",
        "name: $SESSION\nversion: \"0.3\"\n",
    );
    let out = run(t.path(), &["session", "check", &f]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "session.yaml:1:7: value for variable $SESSION is missing"
    );
}

#[test]
fn explicit_variables_win_over_environment_and_name_override() {
    let t = tempfile::tempdir().unwrap();
    let body = "name: $SESS\nversion: \"0.3\"\nsecurity: {attestation: {mode: none}}\n";
    let f = write(t.path(), "s.yaml", body);
    let out = veil(t.path())
        .current_dir(t.path())
        .env("SESS", "fromenv")
        .args(["session", "check", "--use-env", &f])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("name: fromenv\n"));
    let out = veil(t.path())
        .current_dir(t.path())
        .env("SESS", "fromenv")
        .args(["session", "check", "--use-env", "-e", "SESS=explicit", &f])
        .output()
        .unwrap();
    assert!(text(&out.stdout).starts_with("name: explicit\n"));
    // Without --use-env the environment is not consulted.
    let out = veil(t.path())
        .current_dir(t.path())
        .env("SESS", "fromenv")
        .args(["session", "check", &f])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // --name overrides after substitution, and is validated.
    let out = run(
        t.path(),
        &["session", "check", "-e", "SESS=x", "--name", "ns/other", &f],
    );
    assert!(text(&out.stdout).starts_with("name: ns/other\n"));
    let out = run(
        t.path(),
        &["session", "check", "-e", "SESS=x", "--name", "bad name", &f],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("s.yaml:1:7: name: invalid session name"));
}

#[test]
fn unsupported_keys_warn_and_fail_on_warning() {
    let t = tempfile::tempdir().unwrap();
    let body = format!(
        "name: w\nversion: \"0.3\"\nservices:\n  - name: a\n    mrenclaves: [{HEX64}]\n    platforms: [{HEX64}]\nsecurity:\n  singleton_enclaves: true\n"
    );
    let f = write(t.path(), "w.yaml", &body);
    let out = run(t.path(), &["session", "check", &f]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("w.yaml:6:16: warning: services[0].platforms: `services[0].platforms` is not supported yet"),
        "{err}"
    );
    assert!(
        err.contains("w.yaml:8:23: warning: security.singleton_enclaves: `security.singleton_enclaves` is not supported yet"),
        "{err}"
    );
    let out = run(t.path(), &["session", "check", "--fail-on-warning", &f]);
    assert!(!out.status.success());
    let out = run(
        t.path(),
        &["session", "calculate-hash", "--fail-on-warning", &f],
    );
    assert!(!out.status.success());
}

#[test]
fn hash_depends_on_creator_and_semantics_not_formatting() {
    let t = tempfile::tempdir().unwrap();
    let a = format!(
        "name: h\nversion: \"0.3\"\nservices:\n  - name: a\n    mrenclaves: [{HEX64}]\n    command: prog --flag 'two words'\n"
    );
    // Same session: flow style, other key order, comments, command as a list, attestation form.
    let b = format!(
        "# a comment\nservices: [{{command: [prog, --flag, two words], attestation: {{mrenclave: {HEX64}}}, name: a}}]\nversion: '0.3'   # trailing\nname: \"h\"\n"
    );
    let c = a.replace("two words", "two  words");
    let fa = write(t.path(), "a.yaml", &a);
    let fb = write(t.path(), "b.yaml", &b);
    let fc = write(t.path(), "c.yaml", &c);
    let hash = |args: &[&str]| {
        let out = run(t.path(), args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    let ha = hash(&["session", "calculate-hash", &fa]);
    assert_eq!(ha, hash(&["session", "calculate-hash", &fb]));
    assert_ne!(ha, hash(&["session", "calculate-hash", &fc]));
    let k1 = "11".repeat(32);
    let k2 = "22".repeat(32);
    let h1 = hash(&["session", "calculate-hash", "--creator-key-hash", &k1, &fa]);
    let h2 = hash(&["session", "calculate-hash", "--creator-key-hash", &k2, &fa]);
    assert_ne!(h1, ha);
    assert_ne!(h1, h2);
    let bad = run(
        t.path(),
        &[
            "session",
            "calculate-hash",
            "--creator-key-hash",
            "xyz",
            &fa,
        ],
    );
    assert!(!bad.status.success());
}

#[test]
fn oversized_document_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut body = String::from("name: big\nversion: \"0.3\"\n");
    while body.len() <= 1 << 20 {
        body.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let f = write(t.path(), "big.yaml", &body);
    let out = run(t.path(), &["session", "check", &f]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("more than the limit of 1048576 bytes"));
}

/// A valid service body to build invalid documents from (line 4 is `  - name: a`).
fn svc() -> String {
    format!("name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    mrenclaves: [{HEX64}]\n")
}

fn invalid_cases() -> Vec<(String, &'static str, &'static str, &'static str)> {
    let s = svc();
    let h = HEX64;
    vec![
        // --- top level
        ("name: \"a b\"\nversion: \"0.3\"\n".into(), "1:7", "name", "invalid session name `a b`"),
        (format!("name: {}\nversion: \"0.3\"\n", "a".repeat(600)), "1:7", "name", "session name is longer than 512"),
        ("name: a//b\nversion: \"0.3\"\n".into(), "1:7", "name", "invalid session name"),
        (format!("name: {}\nversion: \"0.3\"\n", "a".repeat(129)), "1:7", "name", "each `/`-separated part must be 1 to 128"),
        ("version: \"0.3\"\n".into(), "1:1", "", "missing required key `name`"),
        ("name: t\nversion: \"0.3\"\nservces: []\n".into(), "3:1", "servces", "unknown key `servces`; did you mean `services`?"),
        ("name: t\nversion: \"0.3\"\npredecessor: abc\n".into(), "3:14", "predecessor", "expected 64 hex characters, found `abc`"),
        (format!("name: t\nversion: \"0.3\"\npredecessor: {h}\nnamespace_hash: {h}\n"), "4:17", "namespace_hash", "`predecessor` and `namespace_hash` are mutually exclusive"),
        (format!("name: t\nversion: \"0.3\"\nsalt: {h}\n"), "3:7", "salt", "expected 32 hex characters"),
        ("name: t\nversion: \"0.2\"\n".into(), "2:10", "version", "language version `0.2` is not supported yet"),
        ("name: t\nname: u\nversion: \"0.3\"\n".into(), "2:1", "name", "duplicate key `name`"),
        ("- a\n- b\n".into(), "1:1", "", "expected a map, found a list"),
        ("name: [t]\nversion: \"0.3\"\n".into(), "1:7", "name", "expected a string, found a list"),
        // --- services
        ("name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    command: x\n".into(), "4:5", "services[0]", "service `a` has no attestation factor"),
        ("name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    attestation:\n      mrenclave: abcd\n".into(), "6:18", "services[0].attestation.mrenclave", "expected 64 hex characters, found `abcd`"),
        (format!("name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    attestation:\n      - mrenclave: {h}\n      - mrenclave: [{h}, 12]\n"), "7:87", "services[0].attestation[1].mrenclave[1]", "expected 64 hex characters, found `12`"),
        ("name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    mrenclaves: [xyz]\n".into(), "5:18", "services[0].mrenclaves[0]", "expected 64 hex characters, found `xyz`"),
        (format!("name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    mrenclve: [{h}]\n"), "5:5", "services[0].mrenclve", "unknown key `mrenclve`; did you mean `mrenclaves`?"),
        (format!("{s}  - name: a\n    mrenclaves: [{h}]\n"), "6:11", "services[1].name", "duplicate service name `a` (first defined at line 4)"),
        (format!("{s}    image_name: img\n"), "6:17", "services[0].image_name", "image `img` is not defined in `images`"),
        (format!("{s}    fspf_key: 1234\n"), "6:15", "services[0].fspf_key", "placeholder (value not shown: it is a key)"),
        (format!("{s}    fspf_tag: {h}\n"), "6:15", "services[0].fspf_tag", "expected 32 hex characters"),
        (format!("{s}    fspf_update_policy: rollback\n"), "6:25", "services[0].fspf_update_policy", "invalid value `rollback`"),
        (format!("{s}    command: \"prog 'open\"\n"), "6:14", "services[0].command", "unbalanced quotes"),
        (format!("{s}    command: prog $$SCONE::nope$$\n"), "6:14", "services[0].command", "placeholder `$$SCONE::nope$$` refers to unknown secret `nope`"),
        (format!("{s}    environment:\n      K: $$SCONE::b$$\nsecrets:\n  - name: b\n    kind: binary\n"), "7:10", "services[0].environment.K", "expands to raw binary"),
        (format!("{s}    attestation: {{mrenclave: {h}}}\n"), "5:17", "services[0].mrenclaves", "use either `attestation` or the legacy `mrenclaves`, not both"),
        ("name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    attestation: {}\n".into(), "5:18", "services[0].attestation", "attestation variant has no factor"),
        (format!("name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    attestation:\n      signer: {{mrsigner: {h}, isvprodid: 1, isvsvn: 2, isvsvn_min: 1}}\n"), "6:15", "services[0].attestation.signer.isvsvn", "mutually exclusive"),
        (format!("{s}    platforms: [nothex]\n"), "6:17", "services[0].platforms[0]", "expected 64 hex characters, `INTEL_QE_ID:<32 hex>` or a placeholder"),
        (format!("{s}    one_time_password_shared_secret: short\n"), "6:38", "services[0].one_time_password_shared_secret", "expected a base32 secret"),
        ("name: t\nversion: \"0.3\"\nservices:\n  - name: a\n    attestation: $$SCONE::frag$$\n".into(), "5:18", "services[0].attestation", "is not supported yet"),
        (format!("name: t\nversion: \"0.3\"\nservices:\n  - name: a/b\n    mrenclaves: [{h}]\n"), "4:11", "services[0].name", "invalid name `a/b`"),
        // --- secrets
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: p\n    kind: pgp-key\n".into(), "5:11", "secrets[0].kind", "kind `pgp-key` is not supported yet"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: j\n    kind: jwt\n    signer: k\n".into(), "5:11", "secrets[0].kind", "kind `jwt` is not supported yet"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: x\n    kind: asci\n".into(), "5:11", "secrets[0].kind", "invalid value `asci`; did you mean `ascii`?"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: x\n".into(), "4:5", "secrets[0]", "missing required key `kind`"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: x\n    kind: binary\n    value: xyz\n".into(), "6:12", "secrets[0].value", "a binary secret's value must be non-empty hex"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: k\n    kind: private-key\n  - name: c\n    kind: x509\n    private_key: k\n    size: 3\n".into(), "9:11", "secrets[1].size", "`size` applies only to ascii/binary secrets, not `x509`"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: c\n    kind: x509\n    private_key: k\n".into(), "6:18", "secrets[0].private_key", "secret `k` is not defined"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: k\n    kind: ascii\n  - name: c\n    kind: public-key\n    private_key: k\n".into(), "8:18", "secrets[1].private_key", "`k` is a ascii secret, not a private-key secret"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: k\n    kind: private-key\n  - name: c\n    kind: x509\n    private_key: k\n    issuer: k\n".into(), "9:13", "secrets[1].issuer", "`k` is a private-key secret, not an x509-ca secret"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: c\n    kind: x509\n".into(), "4:5", "secrets[0]", "a x509 secret needs `private_key`"),
        (format!("{s}    environment: {{X: $$SCONE::s:hex$$}}\nsecrets:\n  - name: s\n    kind: ascii\n"), "6:22", "services[0].environment.X", "a ascii secret takes no format"),
        (format!("{s}    environment: {{X: $$SCONE::b:pem$$}}\nsecrets:\n  - name: b\n    kind: binary\n"), "6:22", "services[0].environment.X", "format `pem` is not valid for a binary secret"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: s\n    kind: ascii\n  - name: s\n    kind: binary\n".into(), "6:11", "secrets[1].name", "duplicate secret name `s`"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: k\n    kind: private-key\n  - name: c\n    kind: x509\n    private_key: k\n    san: [\"host:x\"]\n".into(), "9:11", "secrets[1].san[0]", "expected `dns:NAME` or `ip:ADDRESS`"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: k\n    kind: private-key\n  - name: c\n    kind: x509\n    private_key: k\n    valid_for: forever\n".into(), "9:16", "secrets[1].valid_for", "invalid duration `forever`"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: k\n    kind: private-key\n    key_type: P-255\n".into(), "6:15", "secrets[0].key_type", "invalid value `P-255`; did you mean `P-256`?"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: f\n    kind: config-fragment\n".into(), "4:5", "secrets[0]", "a config-fragment secret needs `value` or `import`"),
        ("name: t\nversion: \"0.3\"\nsecrets:\n  - name: k\n    kind: private-key\n    value: not a key\n".into(), "6:12", "secrets[0].value", "expected a PEM `PRIVATE KEY` block"),
        // --- images and volumes
        ("name: t\nversion: \"0.3\"\nimages:\n  - name: i\n    volumes: [{name: V2, path: /v}]\n".into(), "5:22", "images[0].volumes[0].name", "volume `V2` is not defined in `volumes`"),
        ("name: t\nversion: \"0.3\"\nimages:\n  - name: i\n    injection_files: [etc/x]\n".into(), "5:23", "images[0].injection_files[0]", "injection file path `etc/x` is not absolute"),
        ("name: t\nversion: \"0.3\"\nimages:\n  - name: i\n    provide_secrets: [nope]\n".into(), "5:23", "images[0].provide_secrets[0]", "secret `nope` is not defined"),
        ("name: t\nversion: \"0.3\"\nvolumes: [{name: V}]\nimages:\n  - name: i\n    volumes: [{name: V, path: /v, update_policy: sometimes}]\n".into(), "6:50", "images[0].volumes[0].update_policy", "invalid value `sometimes`"),
        ("name: t\nversion: \"0.3\"\nvolumes:\n  - name: V\n    fspf_tag: 849565fe4a941e2be3bcc3c9d46f40c1\n".into(), "5:15", "volumes[0].fspf_tag", "`fspf_tag` needs `fspf_key`"),
        (format!("name: t\nversion: \"0.3\"\nvolumes:\n  - name: V\n    import: {{session: o, volume: V}}\n    fspf_key: {h}\n    fspf_tag: 849565fe4a941e2be3bcc3c9d46f40c1\n"), "6:15", "volumes[0].fspf_key", "an imported volume cannot have `fspf_key`"),
        ("name: t\nversion: \"0.3\"\nimages:\n  - name: i\n    injection_files:\n      - {path: /x, content: y, permission: rwx}\n".into(), "6:44", "images[0].injection_files[0].permission", "expected a file mode"),
        // --- access policy and security
        ("name: t\nversion: \"0.3\"\naccess_policy:\n  read: [ANY, CREATOR]\n".into(), "4:9", "access_policy.read", "`ANY` must be the only entry of its list"),
        ("name: t\nversion: \"0.3\"\naccess_policy:\n  update: [CREATOR, NONE]\n".into(), "4:11", "access_policy.update", "`NONE` must be the only entry of its list"),
        ("name: t\nversion: \"0.3\"\naccess_policy:\n  read: [CREATR]\n".into(), "4:10", "access_policy.read[0]", "invalid entry `CREATR`; did you mean `CREATOR`?"),
        ("name: t\nversion: \"0.3\"\naccess_policy:\n  read: [{require-all: [CREATOR]}]\n".into(), "4:11", "access_policy.read[0].require-all", "allowed only in `update` and `create_sessions`"),
        ("name: t\nversion: \"0.3\"\nsecurity:\n  attestation:\n    mode: none\n    tolerate: [debug]\n".into(), "6:16", "security.attestation.tolerate[0]", "unknown value `debug`; did you mean `debug-mode`?"),
        ("name: t\nversion: \"0.3\"\nsecurity:\n  attestation:\n    mode: none\n    ignore_advisories: \"*\"\n".into(), "6:24", "security.attestation.ignore_advisories", "allowed only together with `tolerate: [debug-mode]`"),
        ("name: t\nversion: \"0.3\"\nsecurity:\n  attestation:\n    mode: hw\n".into(), "5:11", "security.attestation.mode", "invalid value `hw`"),
        ("name: t\nversion: \"0.3\"\nsecurity:\n  singleton_enclave: true\n".into(), "4:3", "security.singleton_enclave", "did you mean `singleton_enclaves`?"),
        ("name: t\nversion: \"0.3\"\nsecret_config:\n  store_in: cas\n".into(), "4:13", "secret_config.store_in", "expected `!cas` or `!akv {token, vault}`"),
        ("name: t\nversion: \"0.3\"\naccess_policy:\n  read: [$$SCONE::who$$]\n".into(), "4:10", "access_policy.read[0]", "refers to unknown secret `who`"),
        // --- YAML level
        ("name: t\nversion: [\"0.3\"\n".into(), "3:1", "", "YAML syntax error"),
        ("name: t\n---\nname: u\n".into(), "2:1", "", "only one YAML document is allowed"),
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n".into(), "6:5", "", "more than 200000 YAML nodes"),
    ]
}

#[test]
fn invalid_documents_report_position_path_and_message() {
    let t = tempfile::tempdir().unwrap();
    let cases = invalid_cases();
    assert!(cases.len() >= 40, "the table must keep at least 40 cases");
    let mut failures = Vec::new();
    for (i, (doc, pos, path, msg)) in cases.iter().enumerate() {
        let f = write(t.path(), "policy.yaml", doc);
        let out = run(t.path(), &["session", "check", &f]);
        let err = text(&out.stderr);
        let prefix = if path.is_empty() {
            format!("policy.yaml:{pos}: ")
        } else {
            format!("policy.yaml:{pos}: {path}: ")
        };
        let ok = !out.status.success()
            && err
                .lines()
                .any(|l| l.starts_with(&prefix) && l[prefix.len()..].contains(msg));
        if !ok {
            failures.push(format!(
                "case {i}: want `{prefix}…{msg}…`, got (exit {:?}):\n{err}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
