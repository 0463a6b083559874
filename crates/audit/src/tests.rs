//! Unit tests of the audit log: chaining across restarts, tamper detection, foreign signers,
//! torn tails and flushing.

use super::*;

fn new_key() -> Vec<u8> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn signer(k: &[u8]) -> Box<dyn AuditSigner> {
    Box::new(EcdsaP256Signer::from_pkcs8(k).unwrap())
}

fn hash_of(k: &[u8]) -> String {
    veil_types::key_hash(EcdsaP256Signer::from_pkcs8(k).unwrap().public_key_spki())
}

fn read(e: &str) -> Event {
    Event::SessionRead {
        session: e.into(),
        hash: "h".into(),
        by: "c".into(),
    }
}

/// A log with two starts and some events; returns (file contents, key hash).
fn sample(dir: &Path) -> (Vec<u8>, String, Vec<u8>) {
    let k = new_key();
    let p = dir.join("audit.log");
    let (mut w, r) = AuditWriter::open(&p, signer(&k), 7, 100).unwrap();
    assert_eq!(r.seq, 1);
    w.append(read("a"), 101).unwrap();
    w.append_group([read("b"), read("c")], 102).unwrap();
    w.close(8, 103).unwrap();
    let (mut w, r) = AuditWriter::open(&p, signer(&k), 8, 200).unwrap();
    assert_eq!(r.seq, 6);
    w.append(
        Event::ServiceAttested {
            session: "s".into(),
            service: "x".into(),
            tier: "node".into(),
            measurement: "00".repeat(32),
            node: None,
        },
        201,
    )
    .unwrap();
    (std::fs::read(&p).unwrap(), hash_of(&k), k)
}

fn lines(d: &[u8]) -> Vec<Vec<u8>> {
    d.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.to_vec())
        .collect()
}

fn join(ls: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in ls {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

#[test]
fn intact_log_verifies_and_chains_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (d, h, _) = sample(dir.path());
    let rep = verify(&d, &h, None).unwrap();
    assert_eq!(rep.entries, 7);
    assert_eq!(rep.starts, 2);
    assert_eq!(rep.last.seq, 7);
    let entries = read_entries(&d).unwrap();
    assert_eq!(entries.len(), 7);
    assert!(matches!(
        entries[5].event,
        Event::CasStarted { counter: 8, .. }
    ));
    // --last with the real head passes; with an earlier entry too.
    verify(&d, &h, Some((7, &rep.last.hash))).unwrap();
    verify(&d, &h, Some((3, &entries[2].hash))).unwrap();
}

#[test]
fn tampering_gives_the_documented_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (d, h, _) = sample(dir.path());
    let ls = lines(&d);
    let code =
        |data: &[u8], last: Option<(u64, &str)>| verify(data, &h, last).unwrap_err().exit_code();

    // Modify one entry's content.
    let mut m = ls.clone();
    let s = String::from_utf8(m[1].clone()).unwrap();
    assert!(s.contains("\"a\""));
    m[1] = s.replace("\"a\"", "\"z\"").into_bytes();
    assert_eq!(code(&join(&m), None), 20);
    // Change spacing only: not canonical.
    let mut m = ls.clone();
    m[2] = String::from_utf8(m[2].clone())
        .unwrap()
        .replacen(":", ": ", 1)
        .into_bytes();
    assert_eq!(code(&join(&m), None), 20);
    // Garbage line.
    let mut m = ls.clone();
    m[3] = b"{not json".to_vec();
    assert_eq!(code(&join(&m), None), 20);

    // Delete a middle entry.
    let mut m = ls.clone();
    m.remove(2);
    assert_eq!(code(&join(&m), None), 17);
    // Reorder two entries.
    let mut m = ls.clone();
    m.swap(2, 3);
    assert_eq!(code(&join(&m), None), 17);
    // Duplicate an entry (replay).
    let mut m = ls.clone();
    m.insert(3, m[2].clone());
    assert_eq!(code(&join(&m), None), 17);

    // Remove the first entry.
    assert_eq!(code(&join(&ls[1..]), None), 15);
    assert_eq!(code(b"", None), 15);

    // Torn last line.
    let mut t = d.clone();
    t.truncate(t.len() - 10);
    assert_eq!(code(&t, None), 14);
    // Whole last entries removed: only visible with --last.
    let head = verify(&d, &h, None).unwrap().last;
    let cut = join(&ls[..5]);
    verify(&cut, &h, None).unwrap();
    assert_eq!(code(&cut, Some((head.seq, &head.hash))), 14);
    // --last entry present but different.
    assert_eq!(code(&d, Some((head.seq, &"ab".repeat(32)))), 18);

    // Wrong expected CAS key.
    let other = hash_of(&new_key());
    assert_eq!(verify(&d, &other, None).unwrap_err().exit_code(), 19);
}

#[test]
fn foreign_signer_appending_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, h, _) = sample(dir.path());
    let p = dir.path().join("audit.log");
    // Another key continues the same file: its cas_started names a foreign key.
    let (mut w, _) = AuditWriter::open(&p, signer(&new_key()), 9, 300).unwrap();
    w.append(read("evil"), 301).unwrap();
    let d = std::fs::read(&p).unwrap();
    let e = verify(&d, &h, None).unwrap_err();
    assert_eq!(e.exit_code(), 19, "{e}");
}

#[test]
fn entry_signed_by_other_key_without_start_is_integrity() {
    let dir = tempfile::tempdir().unwrap();
    let (d, h, _) = sample(dir.path());
    let mut ls = lines(&d);
    let last = read_entries(&d).unwrap().pop().unwrap();
    let forged = make_line(signer(&new_key()).as_ref(), 8, 400, &read("x"), &last.hash).unwrap();
    ls.push(forged);
    assert_eq!(verify(&join(&ls), &h, None).unwrap_err().exit_code(), 20);
}

#[test]
fn reopen_cuts_a_torn_tail_and_refuses_a_corrupt_head() {
    let dir = tempfile::tempdir().unwrap();
    let (d, h, k) = sample(dir.path());
    let p = dir.path().join("audit.log");
    let mut torn = d.clone();
    torn.extend_from_slice(b"{\"seq\":8,\"ti");
    std::fs::write(&p, &torn).unwrap();
    let (_w, r) = AuditWriter::open(&p, signer(&k), 9, 500).unwrap();
    assert_eq!(r.seq, 8);
    verify(&std::fs::read(&p).unwrap(), &h, None).unwrap();

    let mut bad = d.clone();
    bad.extend_from_slice(b"garbage\n");
    std::fs::write(&p, &bad).unwrap();
    let e = AuditWriter::open(&p, signer(&k), 9, 500).unwrap_err();
    assert!(matches!(e, AuditError::Corrupt { line: 8, .. }), "{e}");
    assert_eq!(
        std::fs::read(&p).unwrap(),
        bad,
        "a refused open leaves the file unchanged"
    );
}

#[test]
fn staged_entries_become_durable_on_flush() {
    let dir = tempfile::tempdir().unwrap();
    let k = new_key();
    let p = dir.path().join("a.log");
    let (mut w, _) = AuditWriter::open(&p, signer(&k), 0, 1).unwrap();
    let r = w.stage(read("q"), 2).unwrap();
    assert_eq!(r.seq, 2);
    assert_eq!(lines(&std::fs::read(&p).unwrap()).len(), 1);
    assert_eq!(w.flush().unwrap().len(), 1);
    assert_eq!(lines(&std::fs::read(&p).unwrap()).len(), 2);
    assert_eq!(w.head(), r);
}

#[test]
fn debug_of_signer_shows_no_key() {
    let k = new_key();
    let s = EcdsaP256Signer::from_pkcs8(&k).unwrap();
    let dbg = format!("{s:?}");
    assert!(dbg.contains(&hash_of(&k)));
    assert!(!dbg.contains(&hex::encode(&k[k.len() - 16..])));
}

mod mutation {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn fixture() -> &'static (Vec<u8>, String) {
        static F: OnceLock<(Vec<u8>, String)> = OnceLock::new();
        F.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let (d, h, _) = sample(dir.path());
            (d, h)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any single changed byte anywhere in the log is detected.
        #[test]
        fn any_byte_change_is_detected(pos in any::<proptest::sample::Index>(), x in 1u8..=255) {
            let (d, h) = fixture();
            let mut m = d.clone();
            let i = pos.index(m.len());
            m[i] ^= x;
            let r = verify(&m, h, None);
            prop_assert!(r.is_err(), "flip at {} by {:#x} verified", i, x);
        }
    }
}
