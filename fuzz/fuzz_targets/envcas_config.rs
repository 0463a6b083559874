//! Fuzz the envcas configuration parser (`/etc/envcas/config.yaml`): arbitrary text must never
//! panic, and a parsed configuration always names a program.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = veil_launcher::envcas::parse_config(&text, "fuzz.yaml") {
        let argv = veil_launcher::envcas::program_argv(&cfg, &["envcas".into(), "-c".into()]);
        assert!(argv.first().is_some_and(|p| p.starts_with('/')));
    }
});
