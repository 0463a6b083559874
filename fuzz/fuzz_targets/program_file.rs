//! Fuzz the parser of a converted image's `/etc/veil/program` (decision 23): arbitrary text must
//! never panic, and a parsed file names an absolute program and at most
//! `MAX_LOADED_FILES` distinct absolute loaded files, whose measured list is those paths again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(f) = veil_launcher::program::ProgramFile::parse(&text, "fuzz") {
        assert!(f.program.starts_with('/'));
        assert!(f.loaded.len() <= veil_attest::measure::MAX_LOADED_FILES);
        let list = veil_attest::measure::loaded_list(&f.loaded);
        let again: Vec<&str> = std::str::from_utf8(&list)
            .map(|s| s.lines().collect())
            .unwrap_or_default();
        assert_eq!(again, f.loaded);
    }
});
