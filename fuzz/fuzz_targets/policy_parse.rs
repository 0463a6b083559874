//! Fuzz the policy parser: arbitrary bytes through template substitution, parsing and
//! validation must never panic; whatever parses must round-trip through the normalised YAML
//! with the same hash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let vars = veil_policy::Vars {
        explicit: [("A".to_string(), "x: [1".to_string())]
            .into_iter()
            .collect(),
        use_env: false,
    };
    let _ = veil_policy::load("fuzz.yaml", &text, &vars, None);
    if let Ok(s) = veil_policy::parse("fuzz.yaml", &text) {
        let y = s.to_yaml();
        let back = veil_policy::parse("again.yaml", &y)
            .unwrap_or_else(|e| panic!("normalised output does not parse: {e}\n{y}"));
        assert_eq!(back, s, "round trip changed the session:\n{y}");
        assert_eq!(back.hash(None), s.hash(None));
    }
    let _ = veil_policy::find_placeholders(&text);
});
