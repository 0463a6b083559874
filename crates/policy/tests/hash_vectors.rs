//! Known-answer vectors for the session hash (`veil-session-v1`, see `veil_policy::canon`).
//!
//! Each vector is a small fixed session document and its expected session hash, computed once
//! and committed here. CHANGING A CONSTANT IS A CHANGE OF THE HASH FORMAT: every stored session,
//! every `predecessor` and every `session_hash` reference stops matching. Do it only together
//! with a new domain line (`CANONICAL_DOMAIN`) and a migration.
//!
//! Each vector also has hand-written reformattings (indentation, key order, flow vs block style,
//! comments, quoting, equivalent spellings the canonical form normalises) that must give the same
//! hash, and the normalised YAML and JSON output of the parsed session must too.
//!
//! The key material is in `testdata/` (public parts only; see its README for the key hashes,
//! computed independently with openssl).

use veil_policy::{Session, parse};

const CREATOR_CERT: &str = include_str!("../testdata/creator-cert.pem");
const MEMBER_CERT: &str = include_str!("../testdata/member-cert.pem");
const SIGNER_PUB: &str = include_str!("../testdata/signer-pub.pem");

/// Key hash of `creator-cert.pem` (SHA-256 of its DER SubjectPublicKeyInfo, from openssl).
const CREATOR_KEY_HASH: &str = "25014eda585a5a1a339a30287a12cd9bf6eaa1a79c6551ee5da6a5a8575e6401";
/// Key hash of `member-cert.pem`.
const MEMBER_KEY_HASH: &str = "db92d3007ac0277aa4ffcfd0d0ebaf5e9009bcccef47be86607ee564fee533be";

const MR_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const MR_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const MR_C: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const MR_D: &str = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";
const FSPF_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const FSPF_TAG: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

// The expected session hashes. Changing one is a change of the hash format (see above).
const HASH_MINIMAL: &str = "6a702e4f8accc25f73832d84f869c9a35dfc92aa1e956bbf30e610c73f8efe4d";
const HASH_MINIMAL_WITH_CREATOR_KEY_HASH: &str =
    "87cc4fbe117314572f15a27963debdb44b462730b3e2c5df0e94c56566959aee";
const HASH_SERVICES: &str = "57bcad63e02829873ef9a24d1436692dac5e3fe28431b7b36f8a68ef71c41221";
const HASH_SECRETS: &str = "d1724893523c72eb746115b77dd82a80877c248da5e849b0f3d5c703f0402a4c";
const HASH_ACCESS: &str = "fc9b614081baa1f9ffe1a7d91c23e72a76aced79913527f0fd5ff7bc65e9eaff";
const HASH_VOLUMES: &str = "ea0d56d846695d0bc9bb9afaf6246c68025ffa3b6499cc0c49480d8a0d65383c";

/// The canonical bytes of the minimal vector, spelled out: `HASH_MINIMAL` is their SHA-256
/// (checked with `sha256sum` too).
const CANONICAL_MINIMAL: &str = concat!(
    "veil-session-v1\n",
    r#"{"access_policy":{"create_sessions":null,"list_sessions":null,"read":null,"update":null},"#,
    r#""creator":null,"images":[],"name":"kat-minimal","namespace_hash":null,"predecessor":null,"#,
    r#""salt":null,"secret_config":null,"secrets":[],"security":{"attestation":null,"#,
    r#""service_access_token":null,"singleton_enclaves":false},"services":[],"version":"0.3","#,
    r#""volumes":[]}"#,
);

struct Vector {
    name: &'static str,
    doc: String,
    hash: &'static str,
    /// The same session written differently.
    reformatted: Vec<String>,
}

/// `pem` as the lines of a YAML block scalar indented by `indent` spaces.
fn block(pem: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    pem.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// `pem` as a YAML double-quoted scalar.
fn quoted(pem: &str) -> String {
    format!("\"{}\"", pem.replace('\n', "\\n"))
}

fn minimal() -> Vector {
    Vector {
        name: "minimal",
        doc: "name: kat-minimal\nversion: \"0.3\"\n".to_string(),
        hash: HASH_MINIMAL,
        reformatted: vec![
            "# a comment before everything\nversion: '0.3'   # trailing comment\nname: \"kat-minimal\"\n"
                .to_string(),
            "{version: \"0.3\", name: kat-minimal}\n".to_string(),
            "---\nname:    kat-minimal\n\nversion:   \"0.3\"\n...\n".to_string(),
        ],
    }
}

fn services() -> Vector {
    let doc = format!(
        r#"name: kat-services
version: "0.3.2"
services:
  - name: app
    command: python3 /app/main.py --port 8080 "two words"
    mrenclaves: [{MR_A}, {MR_B}]
    environment:
      MODE: production
      EMPTY:
    pwd: /app
  - name: worker
    command: ["/bin/worker", "--once"]
    attestation:
      - mrenclave: {MR_C}
      - mrenclave: [{MR_D}]
security:
  attestation:
    mode: hardware
    tolerate: [outdated-tcb, debug-mode]
    ignore_advisories: [INTEL-SA-00615]
"#
    );
    let upper_a = MR_A.to_uppercase();
    let reformatted = vec![
        // Four-space indentation, other key order, comments, the command as a list and the
        // legacy `mrenclaves` as the `attestation` it stands for, uppercase hex.
        format!(
            r#"# services first
services:
    -   pwd: /app
        environment: {{EMPTY: "", MODE: 'production'}}
        attestation:
            -   mrenclave:
                    - {upper_a}
                    - {MR_B}   # second
        command:
            - python3
            - /app/main.py
            - --port
            - "8080"
            - two words
        name: app
    -   attestation: [{{mrenclave: [{MR_C}]}}, {{mrenclave: {MR_D}}}]
        name: worker
        command: /bin/worker --once
security: {{attestation: {{ignore_advisories: INTEL-SA-00615, tolerate: [outdated-tcb, debug-mode]}}}}
version: '0.3.2'
name: kat-services
"#
        ),
        // Everything in flow style on few lines.
        format!(
            "{{name: kat-services, version: \"0.3.2\", services: [{{name: app, command: 'python3 /app/main.py --port 8080 \"two words\"', mrenclaves: [{MR_A}, {MR_B}], environment: {{MODE: production, EMPTY: null}}, pwd: /app}}, {{name: worker, command: [/bin/worker, --once], attestation: [{{mrenclave: {MR_C}}}, {{mrenclave: [{MR_D}]}}]}}], security: {{attestation: {{mode: hardware, tolerate: [outdated-tcb, debug-mode], ignore_advisories: [INTEL-SA-00615]}}}}}}\n"
        ),
    ];
    Vector {
        name: "services",
        doc,
        hash: HASH_SERVICES,
        reformatted,
    }
}

fn secrets() -> Vector {
    let doc = format!(
        r#"name: kat-secrets
version: "0.3"
services:
  - name: app
    command: app --token $$SCONE::token$$
    environment:
      KEY: $$SCONE::key:hex$$
      DSN: "postgres://app:$$SCONE::db_pass$$@db/app"
    mrenclaves: [{MR_A}]
    fspf_path: /fspf/fs.fspf
    fspf_key: $$SCONE::fs_key$$
    fspf_tag: {FSPF_TAG}
secrets:
  - name: token
    kind: ascii
    size: 32
  - name: key
    kind: binary
    size: 32
  - name: fs_key
    kind: binary
    size: 32
  - name: db_pass
    kind: ascii
    value: "s3cr3t"
    migrate: true
  - name: tls_key
    kind: private-key
    key_type: P-256
  - name: tls
    kind: x509
    private_key: tls_key
    common_name: app.example
    valid_for: 90 days
    san: ["dns:app.example", "ip:10.0.0.1"]
    endpoint: server
  - name: settings
    kind: config-fragment
    value: {{port: 8080, debug: false, ratio: 0.5, label: "8080"}}
"#
    );
    let reformatted = vec![format!(
        r#"version: "0.3"
name: kat-secrets
secrets:   # in flow style, keys in another order
- {{kind: ascii, name: token, size: 32}}
- {{size: 32, kind: binary, name: key}}
- {{name: fs_key, size: 32, kind: binary}}
- {{value: s3cr3t, migrate: true, kind: ascii, name: db_pass}}
- {{key_type: P-256, kind: private-key, name: tls_key}}
- {{endpoint: server, san: [dns:app.example, ip:10.0.0.1], valid_for: 2160h, common_name: app.example, private_key: tls_key, kind: x509, name: tls}}
- name: settings
  kind: config-fragment
  value:
    label: '8080'
    ratio: 0.5
    port: 8080
    debug: false
services:
- fspf_tag: {FSPF_TAG_UPPER}
  fspf_key: "$$SCONE::fs_key$$"
  fspf_path: /fspf/fs.fspf
  mrenclaves:
  - {MR_A}
  environment:
    DSN: postgres://app:$$SCONE::db_pass$$@db/app
    KEY: "$$SCONE::key:hex$$"
  command: [app, --token, "$$SCONE::token$$"]
  name: app
"#,
        FSPF_TAG_UPPER = FSPF_TAG.to_uppercase(),
    )];
    Vector {
        name: "secrets",
        doc,
        hash: HASH_SECRETS,
        reformatted,
    }
}

fn access() -> Vector {
    let doc = format!(
        "name: kat-access
version: \"0.3\"
creator: |
{creator}access_policy:
  read:
    - CREATOR
    - |
{member}  update:
    - CREATOR
    - signer: |
{signer}  create_sessions:
    - require-all: [CREATOR, {MEMBER_KEY_HASH}]
  list_sessions: [ANY]
security:
  attestation:
    mode: none
",
        creator = block(CREATOR_CERT, 2),
        member = block(MEMBER_CERT, 6),
        signer = block(SIGNER_PUB, 8),
    );
    let reformatted = vec![format!(
        "# PEMs as quoted strings, flow style, uppercase key hash
security: {{attestation: {{mode: none}}}}
access_policy: {{list_sessions: [ANY], create_sessions: [{{require-all: [CREATOR, {member_upper}]}}], update: [CREATOR, {{signer: {signer}}}], read: [CREATOR, {member}]}}
creator: {creator}
version: \"0.3\"
name: kat-access
",
        member_upper = MEMBER_KEY_HASH.to_uppercase(),
        signer = quoted(SIGNER_PUB),
        member = quoted(MEMBER_CERT),
        creator = quoted(CREATOR_CERT),
    )];
    Vector {
        name: "access",
        doc,
        hash: HASH_ACCESS,
        reformatted,
    }
}

fn volumes() -> Vector {
    let doc = format!(
        r#"name: kat-volumes
version: "0.3"
services:
  - name: app
    image_name: app_image
    command: /bin/app
    mrenclaves: [{MR_A}]
images:
  - name: app_image
    injection_files:
      - /etc/from-the-file-system
      - path: /etc/app.conf
        content: "port: 8080\n"
        permission: 0o640
    volumes:
      - name: data
        path: /data
      - name: cache
        path: /cache
        update_policy: ephemeral
volumes:
  - name: data
  - name: cache
    files: authenticated-only
  - name: prebuilt
    fspf_key: {FSPF_KEY}
    fspf_tag: {FSPF_TAG}
    export:
      - session: consumer
        update_policy: no_rollback_protection
  - name: shared
    import:
      session: producer
      volume: out
"#
    );
    let reformatted = vec![format!(
        r#"name: kat-volumes   # defaults written out, other spellings
version: "0.3"
volumes:
- {{name: data, files: encrypted}}
- {{files: authenticated-only, name: cache}}
- fspf_tag: {FSPF_TAG}
  fspf_key: {FSPF_KEY}
  export: {{update_policy: no_rollback_protection, session: consumer}}
  name: prebuilt
- {{import: {{volume: out, session: producer}}, name: shared}}
images:
- volumes:
  - {{path: /data, name: data, update_policy: rollback_protected}}
  - {{update_policy: ephemeral, path: /cache, name: cache}}
  injection_files:
  - path: /etc/from-the-file-system
  - permission: 0640
    content: |
      port: 8080
    path: /etc/app.conf
  name: app_image
services:
- {{mrenclaves: [{MR_A}], command: [/bin/app], image_name: app_image, name: app}}
"#
    )];
    Vector {
        name: "volumes",
        doc,
        hash: HASH_VOLUMES,
        reformatted,
    }
}

fn vectors() -> Vec<Vector> {
    vec![minimal(), services(), secrets(), access(), volumes()]
}

fn parsed(what: &str, doc: &str) -> Session {
    parse(what, doc).unwrap_or_else(|e| panic!("{what} does not parse: {e}\n{doc}"))
}

#[test]
fn session_hash_known_answers() {
    let mut wrong = Vec::new();
    for v in vectors() {
        let s = parsed(v.name, &v.doc);
        let got = s.hash(None);
        if got != v.hash {
            wrong.push(format!(
                "{}: expected {}, got {got}\ncanonical bytes: {}",
                v.name,
                v.hash,
                String::from_utf8_lossy(&s.canonical_bytes(None))
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "the session hash changed; that is a change of the hash format:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn canonical_bytes_known_answer() {
    let s = parsed("minimal", &minimal().doc);
    assert_eq!(
        String::from_utf8_lossy(&s.canonical_bytes(None)),
        CANONICAL_MINIMAL
    );
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, CANONICAL_MINIMAL.as_bytes());
    assert_eq!(hex::encode(d.as_ref()), HASH_MINIMAL);
}

#[test]
fn creator_key_hash_known_answer() {
    let s = parsed("minimal", &minimal().doc);
    assert_eq!(
        s.hash(Some(CREATOR_KEY_HASH)),
        HASH_MINIMAL_WITH_CREATOR_KEY_HASH
    );
    assert_ne!(HASH_MINIMAL_WITH_CREATOR_KEY_HASH, HASH_MINIMAL);
    // The document's `creator` certificate is hashed as its key hash, which openssl computed
    // independently: the access vector without its `creator` but with the caller's key hash
    // given has the same hash.
    let with = access().doc;
    let creator = format!("creator: |\n{}", block(CREATOR_CERT, 2));
    assert!(with.contains(&creator));
    let without = with.replacen(&creator, "", 1);
    let s = parsed("access without creator", &without);
    assert!(s.creator.is_none());
    assert_eq!(s.hash(Some(CREATOR_KEY_HASH)), HASH_ACCESS);
    assert_ne!(s.hash(None), HASH_ACCESS);
    assert_ne!(s.hash(Some(MEMBER_KEY_HASH)), HASH_ACCESS);
}

#[test]
fn hash_does_not_depend_on_formatting() {
    for v in vectors() {
        let base = parsed(v.name, &v.doc);
        assert!(!v.reformatted.is_empty());
        for (i, r) in v.reformatted.iter().enumerate() {
            let what = format!("{} reformatted #{i}", v.name);
            let s = parsed(&what, r);
            assert_eq!(
                String::from_utf8_lossy(&s.canonical_bytes(None)),
                String::from_utf8_lossy(&base.canonical_bytes(None)),
                "{what}:\n{r}"
            );
            assert_eq!(s.hash(None), v.hash, "{what}");
        }
        // The normalised outputs, in block style with several indentations and in JSON (flow
        // style), parse back to the same hash.
        for step in [2, 3, 4, 8] {
            let y = base.to_yaml_indented(step);
            let s = parsed(&format!("{} indented by {step}", v.name), &y);
            assert_eq!(s.hash(None), v.hash, "{} indented by {step}:\n{y}", v.name);
        }
        let json = base.to_json().to_string();
        let s = parsed(&format!("{} as JSON", v.name), &json);
        assert_eq!(s.hash(None), v.hash, "{} as JSON:\n{json}", v.name);
    }
}

#[test]
fn the_vectors_differ() {
    let mut hashes: Vec<&str> = vectors().iter().map(|v| v.hash).collect();
    hashes.push(HASH_MINIMAL_WITH_CREATOR_KEY_HASH);
    for h in &hashes {
        assert!(
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "`{h}` is not a lowercase SHA-256 hex digest"
        );
    }
    let n = hashes.len();
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), n, "two vectors have the same hash");
}
