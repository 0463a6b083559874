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
