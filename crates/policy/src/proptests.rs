//! Property tests: the parser never panics; normalised output round-trips; redacted output reads
//! back and is refused for upload; the hash does not depend on formatting.

use proptest::prelude::*;
use std::collections::BTreeMap;

use super::*;

fn hex(n: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), n / 2).prop_map(hex::encode)
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.~-]{1,12}".prop_filter("`.` and `..` are not names", |n| n != "." && n != "..")
}

/// Any text without NUL and without `$` (so no placeholders or template variables).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 /._:#'\"{}\\[\\],&*!|>%@`-]{0,20}",
        "\\PC{0,16}",
        "[\\t\\n\\r a-z\u{85}\u{2028}\u{feff}\u{1F600}é]{0,12}",
    ]
    .prop_map(|s| s.replace(['\0', '$'], "x"))
}

fn service(image: Option<String>) -> impl Strategy<Value = Service> {
    (
        name(),
        proptest::collection::vec(text(), 0..4),
        proptest::collection::btree_map("[A-Za-z_\\\\@][A-Za-z0-9_@\\\\]{0,8}", text(), 0..4),
        proptest::option::of(text()),
        proptest::collection::vec(proptest::collection::vec(hex(64), 1..3), 1..3),
        proptest::option::of(hex(32)),
    )
        .prop_map(
            move |(name, command, environment, pwd, variants, tag)| Service {
                name,
                command,
                environment,
                pwd,
                image_name: image.clone(),
                fspf_tag: tag,
                attestation: variants
                    .into_iter()
                    .map(|mrenclave| AttestationVariant {
                        mrenclave,
                        signer: None,
                    })
                    .collect(),
                ..Service::default()
            },
        )
}

fn secret() -> impl Strategy<Value = Secret> {
    (
        name(),
        prop_oneof![
            proptest::option::of(text().prop_map(SecretValue::Text))
                .prop_map(|v| (SecretKind::Ascii, v)),
            proptest::option::of(
                proptest::collection::vec(any::<u8>(), 1..16).prop_map(SecretValue::Bytes)
            )
            .prop_map(|v| (SecretKind::Binary, v)),
        ],
        proptest::option::of(1usize..100),
        any::<bool>(),
    )
        .prop_map(|(name, (kind, value), size, migrate)| Secret {
            name,
            kind,
            value,
            size,
            migrate,
            key_type: None,
            private_key: None,
            issuer: None,
            common_name: None,
            endpoint: None,
            san: Vec::new(),
            dns: Vec::new(),
            valid_for: None,
            export: Vec::new(),
            export_public: false,
            import: None,
            import_akv: None,
        })
}

fn session() -> impl Strategy<Value = Session> {
    (
        "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
        proptest::option::of(prop_oneof![
            Just("0.3".to_string()),
            Just("0.3.10".to_string())
        ]),
        proptest::option::of(hex(32)),
        proptest::collection::vec(
            (
                "/[a-z/]{1,10}",
                proptest::option::of(text()),
                proptest::option::of(0u32..0o7777),
            ),
            0..3,
        ),
        proptest::collection::vec(
            (
                prop_oneof![
                    Just(UpdatePolicy::RollbackProtected),
                    Just(UpdatePolicy::Ephemeral),
                    Just(UpdatePolicy::NoRollbackProtection)
                ],
                any::<bool>(),
            ),
            0..3,
        ),
        proptest::collection::vec(secret(), 0..3),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![
                Just(AccessEntry::Creator),
                hex(64).prop_map(AccessEntry::KeyHash)
            ],
            0..3,
        )),
        proptest::option::of((
            prop_oneof![
                Just(AttestationMode::Hardware),
                Just(AttestationMode::None_)
            ],
            proptest::collection::vec(
                prop_oneof![Just("hyperthreading"), Just("outdated-tcb")],
                0..2,
            ),
        )),
    )
        .prop_flat_map(|(name, version, salt, files, vols, secrets, read, att)| {
            let image = Image {
                name: "img".into(),
                injection_files: files
                    .into_iter()
                    .map(|(path, content, permission)| InjectionFile {
                        path,
                        content,
                        permission,
                    })
                    .collect(),
                volumes: vols
                    .iter()
                    .enumerate()
                    .map(|(i, (p, _))| ImageVolume {
                        name: format!("V{i}"),
                        path: format!("/v{i}"),
                        update_policy: *p,
                    })
                    .collect(),
                provide_secrets: Vec::new(),
            };
            let volumes: Vec<Volume> = vols
                .iter()
                .enumerate()
                .map(|(i, (_, auth))| Volume {
                    name: format!("V{i}"),
                    files: if *auth {
                        FileProtection::AuthenticatedOnly
                    } else {
                        FileProtection::Encrypted
                    },
                    ..Volume::default()
                })
                .collect();
            let mut secrets = secrets;
            let mut seen = std::collections::HashSet::new();
            secrets.retain(|s| seen.insert(s.name.clone()));
            let security = Security {
                attestation: att.map(|(mode, tol)| AttestationPolicy {
                    mode,
                    tolerate: tol
                        .into_iter()
                        .map(str::to_string)
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    ..AttestationPolicy::default()
                }),
                ..Security::default()
            };
            proptest::collection::vec(service(Some("img".into())), 0..3).prop_map(
                move |mut services| {
                    let mut seen = std::collections::HashSet::new();
                    services.retain(|s| seen.insert(s.name.clone()));
                    Session {
                        name: name.clone(),
                        version: version.clone(),
                        salt: salt.clone(),
                        services,
                        secrets: secrets.clone(),
                        images: vec![image.clone()],
                        volumes: volumes.clone(),
                        access_policy: AccessPolicy {
                            read: read.clone().map(Rule),
                            ..AccessPolicy::default()
                        },
                        security: security.clone(),
                        ..Session::default()
                    }
                },
            )
        })
}

/// YAML-looking text: SCONE keys, indicators and values glued together.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("name: "),
        Just("services:"),
        Just("secrets:"),
        Just("  - "),
        Just("    "),
        Just("kind: "),
        Just("ascii"),
        Just("binary"),
        Just("mrenclave: "),
        Just("attestation: "),
        Just("access_policy: "),
        Just("[CREATOR, ANY]"),
        Just("{"),
        Just("}"),
        Just("["),
        Just("]"),
        Just(", "),
        Just("&a "),
        Just("*a"),
        Just("!cas "),
        Just("!!str "),
        Just("\"q\\\"\""),
        Just("'s'"),
        Just("|\n"),
        Just(">-\n"),
        Just("\n"),
        Just("# c\n"),
        Just("---\n"),
        Just("$$SCONE::x:hex$$"),
        Just("$$SCONE::"),
        Just("version: \"0.3\""),
        Just("ab12"),
        Just("security: {attestation: {mode: none}}"),
        Just("images: [{name: i}]"),
        Just("~"),
        Just("? "),
        Just(": "),
        Just("-1"),
        Just("0o7"),
        Just("\t"),
        Just("\u{feff}"),
        Just("%YAML 1.2\n"),
    ];
    proptest::collection::vec(token, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse("f", &text);
        let _ = load("f", &text, &Vars::default(), Some("n"));
    }

    #[test]
    fn parser_never_panics_on_yamlish(text in yamlish()) {
        if let Ok(s) = parse("f", &text) {
            // Whatever parses also round-trips.
            let back = parse("g", &s.to_yaml());
            prop_assert!(back.is_ok(), "{:?}\n{}", back, s.to_yaml());
            prop_assert_eq!(back.ok(), Some(s));
        }
    }

    #[test]
    fn normalised_yaml_round_trips(s in session()) {
        let y = s.to_yaml();
        let back = parse("f", &y);
        prop_assert!(back.is_ok(), "{}\n---\n{}", back.err().map(|e| e.to_string()).unwrap_or_default(), y);
        let back = back.ok().unwrap_or_default();
        prop_assert_eq!(&back, &s, "{}", y);
        prop_assert_eq!(back.hash(None), s.hash(None));
        prop_assert_eq!(back.canonical_bytes(None), s.canonical_bytes(None));
    }

    #[test]
    fn redacted_yaml_reads_back_and_is_refused_for_upload(s in session()) {
        let y = s.to_yaml_redacted();
        let back = parse_read_back("r", &y);
        prop_assert!(back.is_ok(), "{}\n---\n{}", back.err().map(|e| e.to_string()).unwrap_or_default(), y);
        prop_assert_eq!(back.ok(), Some(s.redacted()));
        let has_values = s.secrets.iter().any(|x| x.value.is_some());
        prop_assert_eq!(has_values, y.contains(REDACTED), "{}", y);
        prop_assert_eq!(parse("u", &y).is_ok(), !has_values, "{}", y);
    }

    #[test]
    fn hash_is_stable_under_reformatting(s in session(), pretty in any::<bool>()) {
        // JSON is YAML in flow style; serde_json's map sorts keys, so the key order differs too.
        let json = s.to_json();
        let text = if pretty {
            serde_json::to_string_pretty(&json).unwrap_or_default()
        } else {
            serde_json::to_string(&json).unwrap_or_default()
        };
        let text = format!("# leading comment\n{text}\n# trailing comment\n");
        let back = parse("f.json", &text);
        prop_assert!(back.is_ok(), "{}\n{}", back.err().map(|e| e.to_string()).unwrap_or_default(), text);
        let back = back.ok().unwrap_or_default();
        prop_assert_eq!(back.hash(None), s.hash(None));
        // Other indentation widths of the block style.
        for step in [3, 4, 7] {
            let y = s.to_yaml_indented(step);
            let b2 = parse("g", &y);
            prop_assert!(b2.is_ok(), "{}\n{}", b2.err().map(|e| e.to_string()).unwrap_or_default(), y);
            prop_assert_eq!(b2.ok().map(|b| b.hash(None)), Some(s.hash(None)));
        }
    }
}

#[test]
fn empty_environment_map_in_model_is_default() {
    let s = Session {
        name: "x".into(),
        security: Security {
            attestation: Some(AttestationPolicy {
                mode: AttestationMode::None_,
                ..AttestationPolicy::default()
            }),
            ..Security::default()
        },
        services: vec![Service {
            name: "a".into(),
            environment: BTreeMap::new(),
            ..Service::default()
        }],
        ..Session::default()
    };
    assert_eq!(parse("f", &s.to_yaml()).unwrap(), s);
}
