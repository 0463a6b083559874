//! The file shield: attack table, crash safety, a model-based property test and FUSE end to end
//! through the real `veil volume` commands.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use veil_shield::{
    Access, Error, Expect, FaultInjector, Kind, Options, Protection, Tag, Volume, VolumeId,
    VolumeKey, XattrFlags,
};

use crate::support::veil;

const SECRET: &[u8] = b"SECRET-COUNTER-VALUE-4242";

fn id() -> VolumeId {
    VolumeId::new("cas-test", "session-test", "V1")
}

fn key() -> VolumeKey {
    VolumeKey::from_bytes([0x5a; 32])
}

fn opts() -> Options {
    Options::named("V1")
}

fn objects(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

fn open_rw(dir: &Path, tag: Tag) -> Result<Volume, Error> {
    veil_shield::open(
        dir,
        &key(),
        &id(),
        Expect::Tag(tag),
        Access::ReadWrite,
        opts(),
    )
}

fn open_ro(dir: &Path, tag: Tag) -> Result<Volume, Error> {
    veil_shield::open(
        dir,
        &key(),
        &id(),
        Expect::Tag(tag),
        Access::ReadOnly,
        opts(),
    )
}

fn commit_ack(v: &mut Volume) -> Tag {
    let t = v.commit().unwrap();
    v.ack(t).unwrap();
    t
}

/// A volume with `/num` (SECRET), `/other` and `/big` (3 chunks); returns the objects of each.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    tag: Tag,
    num: String,
    other: String,
    big: String,
    /// The object of `/num` before its last rewrite (content `old value`).
    num_old_bytes: Vec<u8>,
    /// A copy of the whole backing directory at an older tag.
    old_copy: PathBuf,
}

fn fixture_with(prot: Protection) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("V1");
    let mut o = opts();
    o.protection = prot;
    let (mut v, t0) = veil_shield::create(&dir, &key(), &id(), o).unwrap();
    v.ack(t0).unwrap();
    v.write_file("/num", b"old value", 0o644).unwrap();
    commit_ack(&mut v);
    let num_old = objects(&dir).into_iter().next().unwrap();
    let num_old_bytes = fs::read(dir.join(&num_old)).unwrap();
    let old_copy = tmp.path().join("old-copy");
    copy_dir(&dir, &old_copy);
    v.write_file("/num", SECRET, 0o644).unwrap();
    commit_ack(&mut v);
    let num = objects(&dir).into_iter().next().unwrap();
    let before = objects(&dir);
    v.write_file("/other", b"another file of the same size!!", 0o600)
        .unwrap();
    commit_ack(&mut v);
    let other = objects(&dir).difference(&before).next().unwrap().clone();
    let before = objects(&dir);
    let mut big = Vec::new();
    for i in 0..3 * 4096 {
        big.push(b"ABCDEFGH"[i % 8]);
    }
    big[0..SECRET.len()].copy_from_slice(SECRET);
    v.write_file("/big", &big, 0o644).unwrap();
    let tag = commit_ack(&mut v);
    let big_obj = objects(&dir).difference(&before).next().unwrap().clone();
    drop(v);
    Fixture {
        _tmp: tmp,
        dir,
        tag,
        num,
        other,
        big: big_obj,
        num_old_bytes,
        old_copy,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn cli(home: &Path, args: &[&str]) -> Output {
    veil(home).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn tree_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            tree_contains(&p, needle)
        } else {
            fs::read(&p).map(|b| contains(&b, needle)).unwrap_or(false)
        }
    })
}

/// Run verify and unpack through the CLI and the library read; all must fail with `want`, and no
/// secret may appear anywhere.
fn expect_attack(f: &Fixture, want: &str) {
    let home = tempfile::tempdir().unwrap();
    let k = key().to_hex();
    let tag = f.tag.to_string();
    let idarg = "cas-test:session-test:V1";
    let d = f.dir.to_str().unwrap();
    let out = cli(
        home.path(),
        &[
            "volume", "verify", d, "--key", &k, "--tag", &tag, "--id", idarg,
        ],
    );
    assert!(
        !out.status.success(),
        "verify accepted a tampered volume: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(want),
        "verify said {:?}, wanted {want:?}",
        text(&out)
    );
    assert!(!contains(text(&out).as_bytes(), SECRET));
    let plain = home.path().join("plain");
    let out = cli(
        home.path(),
        &[
            "volume",
            "unpack",
            d,
            plain.to_str().unwrap(),
            "--key",
            &k,
            "--tag",
            &tag,
            "--id",
            idarg,
        ],
    );
    assert!(
        !out.status.success(),
        "unpack accepted a tampered volume: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(want),
        "unpack said {:?}, wanted {want:?}",
        text(&out)
    );
    assert!(!contains(text(&out).as_bytes(), SECRET));
    assert!(
        !tree_contains(&plain, SECRET),
        "unpack left plaintext of a failed file behind"
    );
    // The library read path gives the same error and no data.
    if let Ok(v) = open_ro(&f.dir, f.tag) {
        let mut msgs = Vec::new();
        for p in ["/num", "/other", "/big"] {
            match v.read_file(p) {
                Ok(d) => assert!(
                    !(contains(&d, SECRET) && want.contains(p)),
                    "read of {p} returned data"
                ),
                Err(e) => msgs.push(e.to_string()),
            }
        }
        assert!(
            msgs.iter().any(|m| m.contains(want)),
            "reads said {msgs:?}, wanted {want:?}"
        );
    }
}

const CHUNK0_NUM: &str = "Verification of file chunk 0 (bytes 0 to 4095) of file /V1/num failed";

#[test]
fn attack_flip_a_byte() {
    for prot in [Protection::Encrypted, Protection::AuthenticatedOnly] {
        let f = fixture_with(prot);
        let p = f.dir.join(&f.num);
        let mut b = fs::read(&p).unwrap();
        b[20] ^= 0x01;
        fs::write(&p, b).unwrap();
        expect_attack(&f, CHUNK0_NUM);
    }
}

#[test]
fn attack_truncate_object() {
    let f = fixture_with(Protection::Encrypted);
    let p = f.dir.join(&f.big);
    let len = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    expect_attack(
        &f,
        "Verification of file chunk 2 (bytes 8192 to 12287) of file /V1/big failed",
    );
}

#[test]
fn attack_extend_object() {
    let f = fixture_with(Protection::Encrypted);
    let p = f.dir.join(&f.num);
    let mut b = fs::read(&p).unwrap();
    b.extend_from_slice(&[0u8; 100]);
    fs::write(&p, b).unwrap();
    expect_attack(
        &f,
        "Verification of file chunk 1 (bytes 4096 to 8191) of file /V1/num failed",
    );
}

#[test]
fn attack_delete_object() {
    let f = fixture_with(Protection::Encrypted);
    fs::remove_file(f.dir.join(&f.num)).unwrap();
    expect_attack(&f, "file /V1/num is missing from volume V1");
}

#[test]
fn attack_rename_object() {
    let f = fixture_with(Protection::Encrypted);
    fs::rename(
        f.dir.join(&f.num),
        f.dir.join("0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    expect_attack(&f, "file /V1/num is missing from volume V1");
}

#[test]
fn attack_swap_two_files_objects() {
    let f = fixture_with(Protection::Encrypted);
    let a = fs::read(f.dir.join(&f.num)).unwrap();
    let b = fs::read(f.dir.join(&f.other)).unwrap();
    assert_eq!(a.len(), b.len());
    fs::write(f.dir.join(&f.num), &b).unwrap();
    fs::write(f.dir.join(&f.other), &a).unwrap();
    expect_attack(&f, CHUNK0_NUM);
}

#[test]
fn attack_swap_two_chunks() {
    let f = fixture_with(Protection::Encrypted);
    let p = f.dir.join(&f.big);
    let mut b = fs::read(&p).unwrap();
    let r = veil_shield::RECORD;
    let first = b[..r].to_vec();
    let second = b[r..2 * r].to_vec();
    b[..r].copy_from_slice(&second);
    b[r..2 * r].copy_from_slice(&first);
    fs::write(&p, b).unwrap();
    expect_attack(
        &f,
        "Verification of file chunk 0 (bytes 0 to 4095) of file /V1/big failed",
    );
}

#[test]
fn attack_restore_older_object() {
    let f = fixture_with(Protection::Encrypted);
    fs::write(f.dir.join(&f.num), &f.num_old_bytes).unwrap();
    expect_attack(&f, CHUNK0_NUM);
}

#[test]
fn attack_restore_whole_backing_dir() {
    let f = fixture_with(Protection::Encrypted);
    fs::remove_dir_all(&f.dir).unwrap();
    copy_dir(&f.old_copy, &f.dir);
    let want = format!(
        "volume V1 does not match its recorded tag {} (modified or rolled back)",
        f.tag
    );
    expect_attack(&f, &want);
    // The old copy is authentic: it opens with its own (old) tag only.
    let e = open_ro(&f.dir, f.tag).unwrap_err();
    assert_eq!(e.to_string(), want);
}

#[test]
fn attack_delete_or_corrupt_metadata() {
    let want = |f: &Fixture| {
        format!(
            "volume V1 does not match its recorded tag {} (modified or rolled back)",
            f.tag
        )
    };
    let f = fixture_with(Protection::Encrypted);
    for slot in ["meta.0", "meta.1"] {
        let _ = fs::remove_file(f.dir.join(slot));
    }
    expect_attack(&f, &want(&f));
    let f = fixture_with(Protection::Encrypted);
    for slot in ["meta.0", "meta.1"] {
        let p = f.dir.join(slot);
        let Ok(mut b) = fs::read(&p) else { continue };
        let n = b.len();
        b[n / 2] ^= 0x80;
        fs::write(&p, b).unwrap();
    }
    expect_attack(&f, &want(&f));
}

#[test]
fn key_holder_cannot_reseal_to_the_recorded_tag() {
    // Decision 8: the tag commits to the sealed bytes, so re-sealed (even authentic) metadata with
    // different content never matches.
    let f = fixture_with(Protection::Encrypted);
    let mut v = open_rw(&f.dir, f.tag).unwrap();
    v.write_file("/num", b"forged", 0o644).unwrap();
    let forged = commit_ack(&mut v);
    drop(v);
    assert_ne!(forged, f.tag);
    let forged_slot = ["meta.0", "meta.1"]
        .into_iter()
        .find(|s| fs::read(f.dir.join(s)).is_ok_and(|b| tag_of(&b) == forged))
        .unwrap();
    let bytes = fs::read(f.dir.join(forged_slot)).unwrap();
    fs::write(f.dir.join("meta.0"), &bytes).unwrap();
    fs::write(f.dir.join("meta.1"), &bytes).unwrap();
    let e = open_ro(&f.dir, f.tag).unwrap_err();
    assert!(matches!(e, Error::TagMismatch { .. }), "{e}");
}

/// The tag of slot bytes, computed independently of the crate (decision 8).
fn tag_of(bytes: &[u8]) -> Tag {
    let d = sha256_of(bytes);
    let mut t = [0u8; 16];
    t.copy_from_slice(&d[..16]);
    Tag(t)
}

fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    // sha256sum is part of coreutils; using it keeps the test independent of the crate's code.
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let hexs = String::from_utf8(out.stdout).unwrap();
    let mut d = [0u8; 32];
    for i in 0..32 {
        d[i] = u8::from_str_radix(&hexs[2 * i..2 * i + 2], 16).unwrap();
    }
    d
}

#[test]
fn the_tag_is_the_documented_commitment() {
    let f = fixture_with(Protection::Encrypted);
    let tags: Vec<Tag> = ["meta.0", "meta.1"]
        .iter()
        .filter_map(|s| fs::read(f.dir.join(s)).ok())
        .map(|b| tag_of(&b))
        .collect();
    assert!(tags.contains(&f.tag));
}

#[test]
fn wrong_key_foreign_id_and_lock() {
    let f = fixture_with(Protection::Encrypted);
    let e = veil_shield::open(
        &f.dir,
        &VolumeKey::from_bytes([1; 32]),
        &id(),
        Expect::Tag(f.tag),
        Access::ReadOnly,
        opts(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "volume V1 cannot be opened with this key (metadata authentication failed)"
    );
    let e = veil_shield::open(
        &f.dir,
        &key(),
        &VolumeId::new("cas-test", "other", "V1"),
        Expect::Tag(f.tag),
        Access::ReadOnly,
        opts(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ForeignVolume { .. }), "{e}");
    let _held = open_rw(&f.dir, f.tag).unwrap();
    let e = open_rw(&f.dir, f.tag).unwrap_err();
    assert!(e.to_string().starts_with("volume V1 is in use"), "{e}");
}

#[test]
fn backing_store_hides_names_sizes_and_content() {
    let f = fixture_with(Protection::Encrypted);
    for e in fs::read_dir(&f.dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert!(!name.contains("num") && !name.contains("big") && !name.contains("other"));
        let b = fs::read(e.path()).unwrap();
        assert!(!contains(&b, SECRET) && !contains(&b, b"/num") && !contains(&b, b"old value"));
        if name.len() == 32 {
            assert_eq!(
                b.len() % veil_shield::RECORD,
                0,
                "object sizes are whole chunks"
            );
        }
    }
    assert!(
        fs::read_dir(&f.dir)
            .unwrap()
            .all(|e| e.unwrap().file_type().unwrap().is_file()),
        "flat: no structure"
    );
}

#[test]
fn authenticated_only_stores_plaintext_but_detects_tampering() {
    let f = fixture_with(Protection::AuthenticatedOnly);
    assert!(contains(&fs::read(f.dir.join(&f.num)).unwrap(), SECRET));
    assert_eq!(
        open_ro(&f.dir, f.tag).unwrap().read_file("/num").unwrap(),
        SECRET
    );
}

#[test]
fn old_objects_are_kept_until_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("V1");
    let (mut v, t0) = veil_shield::create(&dir, &key(), &id(), opts()).unwrap();
    v.ack(t0).unwrap();
    v.write_file("/num", b"1", 0o644).unwrap();
    let t1 = commit_ack(&mut v);
    v.write_file("/num", b"2", 0o644).unwrap();
    let t2 = v.commit().unwrap();
    // Not acknowledged: the state of t1 must still open (the caller may hold t1).
    drop(v);
    assert_eq!(open_ro(&dir, t1).unwrap().read_file("/num").unwrap(), b"1");
    assert_eq!(open_ro(&dir, t2).unwrap().read_file("/num").unwrap(), b"2");
    // Opening at t1 (the caller never recorded t2) discards t2's objects; t1 stays intact.
    let mut v = open_rw(&dir, t1).unwrap();
    v.write_file("/num", b"3", 0o644).unwrap();
    let t3 = commit_ack(&mut v);
    drop(v);
    assert!(open_ro(&dir, t2).is_err());
    assert_eq!(open_ro(&dir, t3).unwrap().read_file("/num").unwrap(), b"3");
    assert_eq!(objects(&dir).len(), 1, "garbage collected after the ack");
}

#[test]
fn deterministic_build_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("bin/app"), vec![7u8; 10000]).unwrap();
    fs::write(src.join("README"), b"hello").unwrap();
    std::os::unix::fs::symlink("bin/app", src.join("app")).unwrap();
    let a = veil_shield::build_deterministic(
        &src,
        &tmp.path().join("a"),
        &key(),
        &id(),
        Protection::Encrypted,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let b = veil_shield::build_deterministic(
        &src,
        &tmp.path().join("b"),
        &key(),
        &id(),
        Protection::Encrypted,
    )
    .unwrap();
    assert_eq!(a, b);
    for n in objects(&tmp.path().join("a")).iter().chain(
        ["meta.0"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .iter(),
    ) {
        assert_eq!(
            fs::read(tmp.path().join("a").join(n)).unwrap(),
            fs::read(tmp.path().join("b").join(n)).unwrap(),
            "{n}"
        );
    }
    let v = open_ro(&tmp.path().join("a"), a).unwrap();
    assert_eq!(v.read_file("/bin/app").unwrap(), vec![7u8; 10000]);
    v.verify().unwrap();
}

// ----- crash safety ---------------------------------------------------------------------------------

type Model = BTreeMap<String, Option<Vec<u8>>>; // path -> Some(content) for files, None for dirs

fn snapshot(v: &Volume) -> Model {
    let mut m = Model::new();
    for e in v.list() {
        match e.kind {
            Kind::Dir => {
                m.insert(e.path, None);
            }
            Kind::File => {
                let d = v.read_file(&e.path).unwrap();
                let ino = v.resolve(&e.path).unwrap();
                let a = v.getattr(ino).unwrap();
                let xa: Vec<(String, Vec<u8>)> = v
                    .list_xattr(ino)
                    .unwrap()
                    .into_iter()
                    .map(|n| (n.clone(), v.get_xattr(ino, &n).unwrap()))
                    .collect();
                m.insert(
                    format!("{}#meta", e.path),
                    Some(format!("nlink={} xa={xa:?}", a.nlink).into_bytes()),
                );
                m.insert(e.path, Some(d));
            }
            Kind::Symlink => {
                m.insert(
                    e.path.clone(),
                    Some(
                        format!("-> {}", v.readlink(v.resolve(&e.path).unwrap()).unwrap())
                            .into_bytes(),
                    ),
                );
            }
        }
    }
    m
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 7 % 251) as u8))
        .collect()
}

/// A batch of changes exercising every kind of write; `k` varies it.
fn batch(v: &mut Volume, k: u8) -> Result<(), Error> {
    v.write_file("/a", &pattern(k, 10_000), 0o644)?;
    let ino = v.resolve("/b")?;
    v.write(ino, 3000 + k as u64, &pattern(k ^ 0x55, 5000))?;
    v.truncate(v.resolve("/c")?, 100 + k as u64)?;
    v.mkdir_all(&format!("/d{k}/e"))?;
    v.write_file(&format!("/d{k}/e/f"), &pattern(k, 300), 0o600)?;
    v.rename_path("/old", &format!("/renamed{k}"))?;
    v.remove("/gone")?;
    v.symlink_path(&format!("/l{k}"), "a")?;
    // Version 2 metadata: a hard link, an extended attribute.
    v.link_path("/b", &format!("/hl{k}"))?;
    v.set_xattr(v.resolve("/a")?, "user.k", &[k; 3], XattrFlags::Any)?;
    // A file unlinked while open (written before and after): never committed, reclaimed.
    let t = v.create_file(veil_shield::ROOT_INO, &format!("tmp{k}"), 0o600)?;
    v.open_handle(t)?;
    v.write(t, 0, &pattern(k, 9000))?;
    v.unlink(veil_shield::ROOT_INO, &format!("tmp{k}"))?;
    v.write(t, 9000, &pattern(k, 5000))?;
    Ok(())
}

/// Objects a volume's named files need: one per distinct non-empty file.
fn needed_objects(v: &Volume) -> usize {
    let mut inos = BTreeSet::new();
    for e in v.list() {
        if e.kind == Kind::File && e.size > 0 {
            inos.insert(v.resolve(&e.path).unwrap());
        }
    }
    inos.len()
}

fn base(dir: &Path) -> (Tag, Model) {
    let (mut v, t0) = veil_shield::create(dir, &key(), &id(), opts()).unwrap();
    v.ack(t0).unwrap();
    v.write_file("/a", &pattern(1, 9000), 0o644).unwrap();
    v.write_file("/b", &pattern(2, 20000), 0o644).unwrap();
    v.write_file("/c", &pattern(3, 9000), 0o644).unwrap();
    v.write_file("/old", b"old", 0o644).unwrap();
    v.write_file("/gone", b"gone", 0o644).unwrap();
    let t = commit_ack(&mut v);
    (t, snapshot(&v))
}

#[test]
fn crash_safety_with_injected_faults() {
    let tmp = tempfile::tempdir().unwrap();
    // Count the mutating I/O operations of one batch + commit + ack.
    let count_dir = tmp.path().join("count");
    let (t, _) = base(&count_dir);
    let mut v = open_rw(&count_dir, t).unwrap();
    let counter = FaultInjector::fail_at(0);
    v.set_fault_injector(Some(counter.clone()));
    batch(&mut v, 1).unwrap();
    let t2 = v.commit().unwrap();
    v.ack(t2).unwrap();
    let ops = counter.ops_seen();
    assert!(ops >= 15, "only {ops} I/O operations counted");
    drop(v);

    let mut injections = 0;
    let mut outcomes = (0, 0);
    for round in 0..12u8 {
        if injections >= 220 {
            break;
        }
        for n in 1..=ops + 1 {
            let dir = tmp.path().join(format!("r{round}-{n}"));
            let (t_old, m_old) = base(&dir);
            let mut v = open_rw(&dir, t_old).unwrap();
            let fault = FaultInjector::fail_at(n);
            v.set_fault_injector(Some(fault.clone()));
            // Round parity: a second commit on top of an unacknowledged one.
            let mut held = t_old;
            let mut expect = m_old.clone();
            let r = (|| -> Result<(), Error> {
                batch(&mut v, round + 1)?;
                let t = v.commit()?;
                held = t; // the caller recorded it
                expect = snapshot(&v);
                v.ack(t)?;
                if round % 2 == 1 {
                    v.write_file("/a", b"second", 0o644)?;
                    v.remove("/c")?;
                    let t = v.commit()?;
                    held = t;
                    expect = snapshot(&v);
                    v.ack(t)?;
                }
                Ok(())
            })();
            if fault.tripped() {
                injections += 1;
                assert!(r.is_err(), "a tripped fault must surface as an error");
            }
            drop(v); // the "crash": nothing else reaches the disk
            let v = open_rw(&dir, held).unwrap_or_else(|e| panic!("round {round} fault {n}: {e}"));
            assert_eq!(snapshot(&v), expect, "round {round} fault {n}");
            v.verify().unwrap();
            assert_eq!(
                objects(&dir).len(),
                needed_objects(&v),
                "round {round} fault {n}: objects of unlinked-while-open files are reclaimed"
            );
            if held == t_old {
                outcomes.0 += 1
            } else {
                outcomes.1 += 1
            }
            drop(v);
            fs::remove_dir_all(&dir).unwrap();
        }
    }
    assert!(injections >= 200, "only {injections} faults injected");
    assert!(
        outcomes.0 > 0 && outcomes.1 > 0,
        "both outcomes must occur: {outcomes:?}"
    );
}

#[test]
fn crash_safety_sigkill_of_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let src1 = tmp.path().join("src1");
    let src2 = tmp.path().join("src2");
    for (s, seed) in [(&src1, 1u8), (&src2, 2u8)] {
        for i in 0..40 {
            fs::create_dir_all(s.join(format!("d{}", i % 5))).unwrap();
            fs::write(
                s.join(format!("d{}/f{i}", i % 5)),
                pattern(seed.wrapping_add(i as u8), 20_000 + i * 1000),
            )
            .unwrap();
        }
    }
    let k = key().to_hex();
    let mut killed_states = (0, 0);
    for i in 0..12u64 {
        let bk = tmp.path().join(format!("bk{i}"));
        let out = cli(
            &home,
            &[
                "volume",
                "pack",
                src1.to_str().unwrap(),
                bk.to_str().unwrap(),
                "--key",
                &k,
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        let t1 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("tag: ")
            .to_string();
        let mut child = veil(&home)
            .args([
                "volume",
                "pack",
                src2.to_str().unwrap(),
                bk.to_str().unwrap(),
                "--key",
                &k,
                "--tag",
                &t1,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(2000 + i * 3000));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let printed = String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("tag: ")
            .to_string();
        let (held, src) = if printed.len() == 32 {
            (printed, &src2)
        } else {
            (t1, &src1)
        };
        if src == &src1 {
            killed_states.0 += 1
        } else {
            killed_states.1 += 1
        }
        let plain = tmp.path().join(format!("plain{i}"));
        let out = cli(
            &home,
            &[
                "volume",
                "unpack",
                bk.to_str().unwrap(),
                plain.to_str().unwrap(),
                "--key",
                &k,
                "--tag",
                &held,
            ],
        );
        assert!(out.status.success(), "kill {i}: {}", text(&out));
        let diff = Command::new("diff")
            .arg("-r")
            .arg(src)
            .arg(&plain)
            .output()
            .unwrap();
        assert!(diff.status.success(), "kill {i}: {}", text(&diff));
    }
    assert!(
        killed_states.0 > 0,
        "no kill landed before the commit: {killed_states:?}"
    );
}

// ----- property test against a model ------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Write {
        file: usize,
        off: u16,
        len: u16,
        seed: u8,
    },
    Truncate {
        file: usize,
        len: u16,
    },
    Remove {
        file: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Mkdir,
    Commit,
    Reopen,
}

const FILES: [&str; 5] = ["/f0", "/f1", "/dir/f2", "/dir/f3", "/f4"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..FILES.len(), 0u16..20000, 1u16..9000, any::<u8>()).prop_map(|(file, off, len, seed)| Op::Write { file, off, len, seed }),
        2 => (0..FILES.len(), 0u16..20000).prop_map(|(file, len)| Op::Truncate { file, len }),
        1 => (0..FILES.len()).prop_map(|file| Op::Remove { file }),
        1 => (0..FILES.len(), 0..FILES.len()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => Just(Op::Mkdir),
        2 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_match_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("V1");
        let (mut v, t0) = veil_shield::create(&dir, &key(), &id(), opts()).unwrap();
        v.ack(t0).unwrap();
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut has_dir = false;
        let mut tag = t0;
        for op in ops {
            match op {
                Op::Write { file, off, len, seed } => {
                    let p = FILES[file];
                    if p.starts_with("/dir/") && !has_dir { continue; }
                    let ino = match v.resolve(p) { Ok(i) => i, Err(_) => v.write_file(p, b"", 0o644).unwrap() };
                    let data = pattern(seed, len as usize);
                    v.write(ino, off as u64, &data).unwrap();
                    let m = model.entry(p.to_string()).or_default();
                    let end = off as usize + data.len();
                    if m.len() < end { m.resize(end, 0); }
                    m[off as usize..end].copy_from_slice(&data);
                }
                Op::Truncate { file, len } => {
                    let p = FILES[file];
                    if let Some(m) = model.get_mut(p) {
                        v.truncate(v.resolve(p).unwrap(), len as u64).unwrap();
                        m.resize(len as usize, 0);
                    }
                }
                Op::Remove { file } => {
                    let p = FILES[file];
                    if model.remove(p).is_some() { v.remove(p).unwrap(); }
                }
                Op::Rename { from, to } => {
                    let (a, b) = (FILES[from], FILES[to]);
                    if b.starts_with("/dir/") && !has_dir { continue; }
                    if let Some(m) = model.get(a).cloned() {
                        v.rename_path(a, b).unwrap();
                        if a != b { model.remove(a); model.insert(b.to_string(), m); }
                    }
                }
                Op::Mkdir => {
                    if !has_dir { v.mkdir_all("/dir").unwrap(); has_dir = true; }
                }
                Op::Commit => { tag = commit_ack(&mut v); }
                Op::Reopen => {
                    tag = commit_ack(&mut v);
                    drop(v);
                    v = open_rw(&dir, tag).unwrap();
                }
            }
            for (p, m) in &model {
                prop_assert_eq!(&v.read_file(p).unwrap(), m, "{}", p);
            }
        }
        let t = commit_ack(&mut v);
        let _ = tag;
        drop(v);
        let v = open_ro(&dir, t).unwrap();
        v.verify().unwrap();
        let files: BTreeMap<String, Vec<u8>> = v.list().into_iter().filter(|e| e.kind == Kind::File).map(|e| { let d = v.read_file(&e.path).unwrap(); (e.path, d) }).collect();
        prop_assert_eq!(files, model);
        let garbage = objects(&dir).len();
        let live = v.list().iter().filter(|e| e.kind == Kind::File && e.size > 0).count();
        prop_assert_eq!(garbage, live, "no leftover objects after the ack");
    }
}

// ----- CLI and FUSE end to end --------------------------------------------------------------------------

fn kv(out: &Output, key: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
        .next_back()
        .unwrap_or_else(|| panic!("no {key}: line in {}", text(out)))
}

#[test]
fn cli_create_pack_unpack_ls_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let src = home.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("num"), b"41").unwrap();
    fs::write(src.join("sub/data"), pattern(9, 70_000)).unwrap();
    let bk = home.join("V1");
    let out = cli(
        home,
        &[
            "volume",
            "create",
            bk.to_str().unwrap(),
            "--from",
            src.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let k = kv(&out, "key");
    let t = kv(&out, "tag");
    assert_eq!(k.len(), 64);
    assert_eq!(t.len(), 32);
    fs::write(home.join("key"), &k).unwrap();
    fs::write(home.join("tag"), format!("{t}\n")).unwrap();
    let out = cli(
        home,
        &[
            "volume",
            "ls",
            bk.to_str().unwrap(),
            "--key-file",
            home.join("key").to_str().unwrap(),
            "--tag-file",
            home.join("tag").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ls = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        ls.contains(" 2 /num") && ls.contains("70000 /sub/data"),
        "{ls}"
    );
    fs::write(src.join("num"), b"42").unwrap();
    let out = cli(
        home,
        &[
            "volume",
            "pack",
            src.to_str().unwrap(),
            bk.to_str().unwrap(),
            "--key",
            &k,
        ],
    );
    assert!(
        !out.status.success(),
        "pack over an existing volume without --tag must fail"
    );
    let out = cli(
        home,
        &[
            "volume",
            "pack",
            src.to_str().unwrap(),
            bk.to_str().unwrap(),
            "--key",
            &k,
            "--tag",
            &t,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let t2 = kv(&out, "tag");
    assert_ne!(t, t2);
    let out = cli(
        home,
        &[
            "volume",
            "verify",
            bk.to_str().unwrap(),
            "--key",
            &k,
            "--tag",
            &t,
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!(
            "volume V1 does not match its recorded tag {t} (modified or rolled back)"
        )),
        "{}",
        text(&out)
    );
    let plain = home.join("plain");
    let out = cli(
        home,
        &[
            "volume",
            "unpack",
            bk.to_str().unwrap(),
            plain.to_str().unwrap(),
            "--key",
            &k,
            "--tag",
            &t2,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(plain.join("num")).unwrap(), b"42");
    assert_eq!(
        fs::read(plain.join("sub/data")).unwrap(),
        pattern(9, 70_000)
    );
}

struct MountProc {
    child: Option<std::process::Child>,
    mnt: PathBuf,
}

impl Drop for MountProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_mounted(p: &Path) -> bool {
    let m = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let p = fs::canonicalize(p).unwrap_or(p.to_path_buf());
    m.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap_or("")))
}

fn sh(cmd: &str, cwd: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(out.status.success(), "`{cmd}` failed: {}", text(&out));
}

#[test]
fn fuse_end_to_end_with_real_tools() {
    if !crate::support::require("fuse", crate::support::fuse_unusable()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    // A source tree: this crate's sources plus generated files of many sizes and a symlink.
    let src = home.join("src");
    fs::create_dir_all(src.join("gen/deep/er")).unwrap();
    for i in 0..60usize {
        fs::write(
            src.join(format!("gen/f{i}")),
            pattern(i as u8, i * 1531 % 70_000),
        )
        .unwrap();
    }
    fs::write(src.join("gen/deep/er/big"), pattern(3, 3_000_000)).unwrap();
    std::os::unix::fs::symlink("../f1", src.join("gen/deep/link")).unwrap();
    sh(
        &format!(
            "cp -r {} {}/shield",
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shield/src")
                .display(),
            src.display()
        ),
        home,
    );
    sh("tar cf ../tree.tar .", &src);
    sh(
        "find . -type f -print0 | sort -z | xargs -0 sha256sum > ../sums",
        &src,
    );

    let bk = home.join("V1");
    let out = cli(home, &["volume", "create", bk.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let k = kv(&out, "key");
    let t0 = kv(&out, "tag");
    let mnt = home.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let tag_out = home.join("tag-out");
    let child = veil(home)
        .args([
            "volume",
            "mount",
            bk.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "--key",
            &k,
            "--tag",
            &t0,
            "--tag-out",
            tag_out.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut mp = MountProc {
        child: Some(child),
        mnt: mnt.clone(),
    };
    let start = Instant::now();
    while !is_mounted(&mnt) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mount did not appear"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = mnt.display().to_string();
    let s = src.display().to_string();
    sh(&format!("cp -r {s} {m}/copy"), home);
    sh(
        &format!(
            "mkdir {m}/untar && tar xf {}/tree.tar -C {m}/untar",
            home.display()
        ),
        home,
    );
    sh(
        &format!("sha256sum --quiet -c {}/sums", home.display()),
        &mnt.join("untar"),
    );
    sh(
        &format!("sha256sum --quiet -c {}/sums", home.display()),
        &mnt.join("copy"),
    );
    sh(
        &format!("mv {m}/copy/gen {m}/moved && rm -r {m}/copy && mv {m}/untar/shield {m}/moved/"),
        home,
    );
    sh(
        &format!("echo 42 > {m}/num && chmod 600 {m}/num && sync {m}/num"),
        home,
    );
    // fsync committed: the tag file holds a tag that opens.
    let recorded = fs::read_to_string(&tag_out).unwrap();
    assert_eq!(recorded.len(), 33, "{recorded:?}");
    assert!(recorded.ends_with('\n'));
    // Unmount with SIGTERM: the final tag is printed and recorded.
    let child = mp.child.take().unwrap();
    nix_kill(child.id());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!is_mounted(&mnt));
    let t_final = kv(&out, "tag");
    assert_eq!(fs::read_to_string(&tag_out).unwrap().trim(), t_final);
    drop(mp);
    // Reopen with the tag and compare with what the tools should have produced.
    let plain = home.join("plain");
    let out = cli(
        home,
        &[
            "volume",
            "unpack",
            bk.to_str().unwrap(),
            plain.to_str().unwrap(),
            "--key",
            &k,
            "--tag",
            &t_final,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let expect = home.join("expect");
    sh(
        &format!(
            "mkdir {e} && cp -a {s}/gen {e}/moved && cp -a {s}/shield {e}/moved/shield && mkdir {e}/untar && tar xf ../tree.tar -C {e}/untar && rm -r {e}/untar/shield && echo 42 > {e}/num",
            e = expect.display()
        ),
        &src,
    );
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(&expect)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(diff.status.success(), "{}", text(&diff));
    let mode = fs::metadata(plain.join("num")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    let out = cli(
        home,
        &[
            "volume",
            "verify",
            bk.to_str().unwrap(),
            "--key",
            &k,
            "--tag",
            &t_final,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

fn nix_kill(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// A sink that refuses every tag (the CAS is unreachable).
struct RefusingSink;

impl veil_shield::TagSink for RefusingSink {
    fn record(&mut self, _tag: &Tag) -> Result<(), String> {
        Err("CAS unreachable".into())
    }
}

#[test]
fn fuse_fsync_fails_with_eio_when_the_tag_cannot_be_recorded() {
    if !crate::support::require("fuse", crate::support::fuse_unusable()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("V1");
    let (mut v, t0) = veil_shield::create(&dir, &key(), &id(), opts()).unwrap();
    v.ack(t0).unwrap();
    v.write_file("/num", b"1", 0o644).unwrap();
    let t1 = commit_ack(&mut v);
    let mnt = tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let m = veil_shield::fuse::mount(
        v,
        &mnt,
        Box::new(RefusingSink),
        veil_shield::fuse::MountOptions::default(),
    )
    .unwrap();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(mnt.join("num"))
        .unwrap();
    use std::io::Write;
    f.write_all(b"2").unwrap();
    let e = f.sync_all().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_eio()), "{e}");
    drop(f);
    let r = m.unmount();
    assert!(r.is_err(), "the final commit cannot be recorded either");
    // The recorded tag still opens, with the recorded content.
    assert_eq!(open_ro(&dir, t1).unwrap().read_file("/num").unwrap(), b"1");
}

fn libc_eio() -> i32 {
    5
}

// ----- POSIX semantics through FUSE, with programs nobody here wrote (issue 21) ------------------

/// Python: open-unlinked files (`tempfile.TemporaryFile` and by hand), rename over an open file,
/// hard links, extended attributes, ns times, renameat2, statfs, errnos, `shutil`.
const POSIX_PY: &str = r#"import ctypes, errno, os, shutil, sys, tempfile

m = sys.argv[1]
def expect_errno(want, f, *a):
    try:
        f(*a)
    except OSError as e:
        assert e.errno == want, (f.__name__, a, errno.errorcode.get(e.errno), errno.errorcode[want])
        return
    raise AssertionError(f"{f.__name__}{a} succeeded, wanted {errno.errorcode[want]}")

# 1. tempfile.TemporaryFile: created, unlinked at once, used through its descriptor.
with tempfile.TemporaryFile(dir=m) as t:
    blob = os.urandom(3 << 20)
    t.write(blob)
    t.flush()
    assert os.fstat(t.fileno()).st_nlink == 0
    assert os.fstat(t.fileno()).st_size == len(blob)
    t.seek(0)
    assert t.read() == blob
    os.ftruncate(t.fileno(), 5000)
    t.seek(0)
    assert t.read() == blob[:5000]
    assert os.listdir(m) == [], os.listdir(m)

# 2. create, open, unlink, then write/read/fstat/ftruncate on the descriptor.
p = os.path.join(m, "gone")
fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o600)
os.write(fd, b"before")
os.unlink(p)
assert not os.path.exists(p)
os.pwrite(fd, b" and after", 6)
assert os.pread(fd, 100, 0) == b"before and after"
st = os.fstat(fd)
assert (st.st_nlink, st.st_size) == (0, 16), st
os.ftruncate(fd, 6)
assert os.pread(fd, 100, 0) == b"before"
os.fsync(fd)
os.close(fd)
expect_errno(errno.ENOENT, os.stat, p)

# 3. rename over an open file keeps it readable.
with open(os.path.join(m, "db"), "wb") as f:
    f.write(b"old content")
old = open(os.path.join(m, "db"), "rb")
with open(os.path.join(m, "db.tmp"), "wb") as f:
    f.write(b"new content")
os.rename(os.path.join(m, "db.tmp"), os.path.join(m, "db"))
assert old.read() == b"old content"
assert os.fstat(old.fileno()).st_nlink == 0
old.close()
assert open(os.path.join(m, "db"), "rb").read() == b"new content"

# 4. hard links.
os.mkdir(os.path.join(m, "d"))
a, b = os.path.join(m, "hl-a"), os.path.join(m, "d", "hl-b")
with open(a, "wb") as f:
    f.write(b"linked")
os.link(a, b)
sa, sb = os.stat(a), os.stat(b)
assert sa.st_ino == sb.st_ino and sa.st_nlink == 2 == sb.st_nlink, (sa, sb)
with open(b, "r+b") as f:
    f.write(b"LINK")
assert open(a, "rb").read() == b"LINKed"
expect_errno(errno.EEXIST, os.link, a, b)
expect_errno(errno.EPERM, os.link, os.path.join(m, "d"), os.path.join(m, "d2"))
os.link(a, os.path.join(m, "hl-c"))
assert os.stat(b).st_nlink == 3
os.unlink(os.path.join(m, "hl-c"))
assert os.stat(a).st_nlink == 2
assert os.stat(m).st_nlink == 3  # 2 + the subdirectory d

# 5. extended attributes.
os.setxattr(a, "user.mime", b"text/plain")
os.setxattr(a, "user.bin", bytes(range(256)))
assert os.getxattr(b, "user.mime") == b"text/plain"  # an attribute of the inode
assert sorted(os.listxattr(a)) == ["user.bin", "user.mime"]
expect_errno(errno.EEXIST, os.setxattr, a, "user.mime", b"x", os.XATTR_CREATE)
expect_errno(errno.ENODATA, os.setxattr, a, "user.none", b"x", os.XATTR_REPLACE)
expect_errno(errno.ENODATA, os.getxattr, a, "user.none")
expect_errno(errno.EOPNOTSUPP, os.setxattr, a, "system.posix_acl_access", b"")
expect_errno(errno.E2BIG, os.setxattr, a, "user.big", b"x" * 65537)
os.removexattr(a, "user.bin")
expect_errno(errno.ENODATA, os.removexattr, a, "user.bin")
os.setxattr(os.path.join(m, "d"), "user.dir", b"1")

# 6. nanosecond times, utimensat; chown as root; long names.
os.utime(a, ns=(1_234_567_890_123_456_789, 1_500_000_000_987_654_321))
st = os.stat(b)
assert (st.st_atime_ns, st.st_mtime_ns) == (1_234_567_890_123_456_789, 1_500_000_000_987_654_321), st

os.chown(b, 1234, 5678)
st = os.stat(a)
assert (st.st_uid, st.st_gid) == (1234, 5678), st
expect_errno(errno.ENAMETOOLONG, open, os.path.join(m, "n" * 256), "w")

raw = os.fsencode(m) + b"/caf\xe9-\xff"
with open(raw, "wb") as f:
    f.write(b"latin-1 name")
assert b"caf\xe9-\xff" in os.listdir(os.fsencode(m))
os.rename(raw, raw + b"\xfe")
os.symlink(b"caf\xe9-\xff\xfe", os.fsencode(m) + b"/raw-link")
assert os.readlink(os.fsencode(m) + b"/raw-link") == b"caf\xe9-\xff\xfe"
assert open(os.fsencode(m) + b"/raw-link", "rb").read() == b"latin-1 name"

# 7. renameat2: RENAME_NOREPLACE, RENAME_EXCHANGE.
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
def renameat2(x, y, flags):
    if libc.renameat2(AT_FDCWD, x.encode(), AT_FDCWD, y.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
x, y = os.path.join(m, "x"), os.path.join(m, "y")
open(x, "w").write("X")
open(y, "w").write("Y")
expect_errno(errno.EEXIST, renameat2, x, y, 1)
renameat2(x, y, 2)
assert open(x).read() == "Y" and open(y).read() == "X"
expect_errno(errno.ENOENT, renameat2, x, os.path.join(m, "none"), 2)
renameat2(x, os.path.join(m, "z"), 1)

# fallocate: size grows; punch hole and zero range read back as zeros; others EOPNOTSUPP.
fa = os.path.join(m, "falloc")
with open(fa, "wb") as f:
    f.write(b"\x01" * 10000)
fd = os.open(fa, os.O_RDWR)
os.posix_fallocate(fd, 0, 20000)
assert os.fstat(fd).st_size == 20000 and os.pread(fd, 4, 9998) == b"\x01\x01\x00\x00"
def fallocate(mode, off, ln):
    if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(ln)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
fallocate(3, 100, 5000)  # PUNCH_HOLE | KEEP_SIZE
assert os.pread(fd, 5002, 99) == b"\x01" + bytes(5000) + b"\x01"
fallocate(0x10, 19000, 2000)  # ZERO_RANGE past the end
assert os.fstat(fd).st_size == 21000
expect_errno(errno.EOPNOTSUPP, fallocate, 8, 0, 4096)  # COLLAPSE_RANGE
os.close(fd)
os.unlink(fa)

# 8. statfs; special files; directories.
sv = os.statvfs(m)
assert sv.f_bsize > 0 and sv.f_namemax == 255 and sv.f_blocks > 0, sv
expect_errno(errno.EPERM, os.mkfifo, os.path.join(m, "fifo"))
expect_errno(errno.ENOTEMPTY, os.rmdir, os.path.join(m, "d"))
expect_errno(errno.EISDIR, os.unlink, os.path.join(m, "d"))
expect_errno(errno.ENOTDIR, os.listdir, a)

# 9. shutil: copytree with copy2 (data, times, attributes), move, rmtree.
shutil.copytree(os.path.join(m, "d"), os.path.join(m, "d-copy"))
c = os.path.join(m, "d-copy", "hl-b")
assert open(c, "rb").read() == b"LINKed"
assert os.getxattr(c, "user.mime") == b"text/plain"
assert os.stat(c).st_mtime_ns == 1_500_000_000_987_654_321
assert os.stat(c).st_nlink == 1
shutil.move(os.path.join(m, "d-copy"), os.path.join(m, "moved"))
shutil.rmtree(os.path.join(m, "moved"))
print("ok")
"#;

/// Python's sqlite3 in WAL, DELETE and TRUNCATE journal modes; phase 1 creates (with temp files
/// from a spilled sort and a VACUUM, on the volume through `SQLITE_TMPDIR`), later phases check
/// integrity after a remount and add a row.
const SQLITE_PY: &str = r#"import os, sqlite3, sys

m, phase = sys.argv[1], sys.argv[2]
for mode in ("wal", "delete", "truncate"):
    path = os.path.join(m, f"{mode}.db")
    c = sqlite3.connect(path)
    c.execute("pragma temp_store=file")
    c.execute("pragma cache_size=20")
    if phase == "1":
        assert c.execute(f"pragma journal_mode={mode}").fetchone()[0] == mode
        c.execute("create table t(k integer primary key, v text)")
        with c:
            c.executemany("insert into t(v) values (?)", ((f"row {i:05} " * 20,) for i in range(5000)))
        # A sort larger than the cache spills to temporary files (opened, then unlinked).
        rows = c.execute("select v from t order by v desc").fetchall()
        assert len(rows) == 5000 and rows[0][0].startswith("row 04999")
        with c:
            c.execute("delete from t where k % 2 = 0")
        c.execute("vacuum")
        c.execute("create index tv on t(v)")
    else:
        # WAL is a property of the database file; the rollback journal modes are per connection.
        q = "pragma journal_mode" if mode == "wal" else f"pragma journal_mode={mode}"
        assert c.execute(q).fetchone()[0] == mode
        assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert c.execute("select count(*) from t").fetchone()[0] == 2500 + int(phase) - 2
        with c:
            c.execute("insert into t(v) values ('after remount')")
    c.close()
print("ok")
"#;

/// Writes a file unlinked while open, commits (fsync) with it open, makes a hard link without a
/// commit, then waits to be killed with the mount.
const CRASH_PY: &str = r#"import os, sys, time

m = sys.argv[1]
with open(os.path.join(m, "keep"), "wb") as f:
    f.write(b"k" * 100000)
    os.fsync(f.fileno())
fd = os.open(os.path.join(m, "tmp"), os.O_CREAT | os.O_RDWR, 0o600)
os.write(fd, os.urandom(2 << 20))
os.unlink(os.path.join(m, "tmp"))
os.write(fd, os.urandom(1 << 20))
os.fsync(fd)  # a commit while the unlinked file is open
os.link(os.path.join(m, "keep"), os.path.join(m, "keep-link"))
print("ready", flush=True)
time.sleep(60)
"#;

fn python(script: &str, args: &[&str]) -> Output {
    Command::new("python3")
        .env("SQLITE_TMPDIR", args[0])
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 (a Debian package the CI image has) runs")
}

/// A new volume at `dir` with its first state acknowledged.
fn new_volume(dir: &Path) -> Tag {
    let (mut v, t0) = veil_shield::create(dir, &key(), &id(), opts()).unwrap();
    v.ack(t0).unwrap();
    t0
}

/// Mount the volume at `dir` (state `tag`) on `mnt` in this process.
fn lib_mount(dir: &Path, tag: Tag, mnt: &Path) -> veil_shield::fuse::Mounted {
    fs::create_dir_all(mnt).unwrap();
    veil_shield::fuse::mount(
        open_rw(dir, tag).unwrap(),
        mnt,
        Box::new(veil_shield::fuse::TagFile::new(None)),
        veil_shield::fuse::MountOptions::default(),
    )
    .unwrap()
}

#[test]
fn fuse_posix_semantics_for_python_programs() {
    if !crate::support::require("fuse", crate::support::fuse_unusable()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("V1");
    let t0 = new_volume(&dir);
    let mnt = tmp.path().join("mnt");
    let m = lib_mount(&dir, t0, &mnt);
    let out = python(POSIX_PY, &[mnt.to_str().unwrap()]);
    let t = m.unmount().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // Nothing of the temporary files is left, not even before a writer's open cleans up.
    let v = open_ro(&dir, t).unwrap();
    assert_eq!(objects(&dir).len(), needed_objects(&v), "{:?}", v.list());
    v.verify().unwrap();
    // What the program did is in the committed state.
    let a = v.resolve("/hl-a").unwrap();
    assert_eq!(v.resolve("/d/hl-b").unwrap(), a);
    let attr = v.getattr(a).unwrap();
    assert_eq!(attr.nlink, 2);
    assert_eq!(
        (attr.atime, attr.mtime),
        (1_234_567_890_123_456_789, 1_500_000_000_987_654_321)
    );
    assert_eq!((attr.uid, attr.gid), (Some(1234), Some(5678)));
    assert_eq!(v.read_file("/d/hl-b").unwrap(), b"LINKed");
    assert_eq!(v.list_xattr(a).unwrap(), ["user.mime"]);
    assert_eq!(v.get_xattr(a, "user.mime").unwrap(), b"text/plain");
    assert_eq!(
        v.get_xattr(v.resolve("/d").unwrap(), "user.dir").unwrap(),
        b"1"
    );
    assert_eq!(v.read_file("/y").unwrap(), b"X");
    assert_eq!(v.read_file("/z").unwrap(), b"Y");
    assert_eq!(v.read_file("/db").unwrap(), b"new content");
    let raw = veil_shield::name_from_bytes(b"caf\xe9-\xff\xfe");
    assert_eq!(v.read_file(&format!("/{raw}")).unwrap(), b"latin-1 name");
    let names: Vec<String> = v.list().into_iter().map(|e| e.path).collect();
    assert_eq!(
        names,
        [
            "/",
            "/caf\0e9-\0ff\0fe",
            "/d",
            "/d/hl-b",
            "/db",
            "/hl-a",
            "/raw-link",
            "/y",
            "/z"
        ],
        "no temporary file, no copy left"
    );
}

#[test]
fn fuse_writes_by_others_clear_set_id_bits() {
    if !crate::support::require("fuse", crate::support::fuse_unusable()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("V1");
    let t0 = new_volume(&dir);
    let mnt = tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let m = veil_shield::fuse::mount(
        open_rw(&dir, t0).unwrap(),
        &mnt,
        Box::new(veil_shield::fuse::TagFile::new(None)),
        veil_shield::fuse::MountOptions {
            allow_other: true,
            ..Default::default()
        },
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    // nobody must reach the mount point: the temp dir is 0700.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let (a, b) = (mnt.join("a"), mnt.join("b"));
    fs::write(&a, b"a").unwrap();
    fs::write(&b, b"b").unwrap();
    fs::set_permissions(&a, fs::Permissions::from_mode(0o6777)).unwrap();
    fs::set_permissions(&b, fs::Permissions::from_mode(0o6777)).unwrap();
    // Root (CAP_FSETID) keeps them.
    sh(&format!("echo root >> {}", a.display()), tmp.path());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&a), 0o6777);
    // Anyone else's write or truncate clears them.
    let nobody = |cmd: String| {
        sh(
            &format!("setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{cmd}'"),
            tmp.path(),
        )
    };
    nobody(format!("echo nobody >> {}", a.display()));
    nobody(format!(": > {}", b.display()));
    let t = m.unmount().unwrap();
    let v = open_ro(&dir, t).unwrap();
    for (p, content) in [("/a", &b"aroot\nnobody\n"[..]), ("/b", b"")] {
        let at = v.getattr(v.resolve(p).unwrap()).unwrap();
        assert_eq!(at.mode, 0o777, "{p}");
        assert_eq!(v.read_file(p).unwrap(), content);
    }
}

#[test]
fn fuse_sqlite_wal_and_journal_modes_across_remounts() {
    if !crate::support::require("fuse", crate::support::fuse_unusable()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("V1");
    let mut t = new_volume(&dir);
    let mnt = tmp.path().join("mnt");
    for phase in ["1", "2", "3"] {
        let m = lib_mount(&dir, t, &mnt);
        let out = python(SQLITE_PY, &[mnt.to_str().unwrap(), phase]);
        t = m.unmount().unwrap();
        assert!(out.status.success(), "phase {phase}: {}", text(&out));
        let v = open_ro(&dir, t).unwrap();
        assert_eq!(objects(&dir).len(), needed_objects(&v), "phase {phase}");
        v.verify().unwrap();
    }
    let v = open_ro(&dir, t).unwrap();
    let names: Vec<String> = v.list().into_iter().map(|e| e.path).collect();
    for db in ["/wal.db", "/delete.db", "/truncate.db"] {
        assert!(names.iter().any(|n| n == db), "{names:?}");
    }
}

#[test]
fn fuse_git_commit_gc_fsck_across_a_remount() {
    if !crate::support::require("fuse", crate::support::fuse_unusable()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("V1");
    let t0 = new_volume(&dir);
    let mnt = tmp.path().join("mnt");
    let git = |args: &str, cwd: &Path| {
        let home = tmp.path().display();
        sh(
            &format!(
                "HOME={home} GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t \
                 GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t {args}"
            ),
            cwd,
        )
    };
    let m = lib_mount(&dir, t0, &mnt);
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shield/src");
    git(
        &format!(
            "git init -q repo && cd repo && cp -r {} src && git add . && git commit -qm one \
             && echo '// two' >> src/lib.rs && git commit -qam two && git gc -q \
             && git fsck --strict --no-progress && git repack -adq && git fsck --no-progress",
            src.display()
        ),
        &mnt,
    );
    let t = m.unmount().unwrap();
    let m = lib_mount(&dir, t, &mnt);
    let repo = mnt.join("repo");
    git("git fsck --full --strict --no-progress", &repo);
    git(
        "test \"$(git rev-list --count HEAD)\" = 2 && test -z \"$(git status --porcelain)\"",
        &repo,
    );
    git(
        "echo three > f && git add f && git commit -qm three && git gc -q --prune=now && git fsck --no-progress",
        &repo,
    );
    let t = m.unmount().unwrap();
    let v = open_ro(&dir, t).unwrap();
    assert_eq!(objects(&dir).len(), needed_objects(&v));
    v.verify().unwrap();
}

#[test]
fn fuse_kill_9_with_a_file_unlinked_while_open_and_an_uncommitted_link() {
    if !crate::support::require("fuse", crate::support::fuse_unusable()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let bk = home.join("V1");
    let out = cli(home, &["volume", "create", bk.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let k = kv(&out, "key");
    let t0 = kv(&out, "tag");
    let mnt = home.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let tag_out = home.join("tag-out");
    let child = veil(home)
        .args([
            "volume",
            "mount",
            bk.to_str().unwrap(),
            mnt.to_str().unwrap(),
            "--key",
            &k,
            "--tag",
            &t0,
            "--tag-out",
            tag_out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut mp = MountProc {
        child: Some(child),
        mnt: mnt.clone(),
    };
    let start = Instant::now();
    while !is_mounted(&mnt) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mount did not appear"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut py = Command::new("python3")
        .arg("-c")
        .arg(CRASH_PY)
        .arg(&mnt)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(py.stdout.take().unwrap());
        r.read_line(&mut line).unwrap();
    }
    assert_eq!(line.trim(), "ready");
    // kill -9 of the mount process while the unlinked file is open and the link is uncommitted.
    let mut child = mp.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    py.kill().unwrap();
    py.wait().unwrap();
    drop(mp);
    let _ = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(&mnt)
        .status();
    let held: Tag = fs::read_to_string(&tag_out)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let vk = VolumeKey::from_hex(&k).unwrap();
    let open = |access| {
        veil_shield::open(
            &bk,
            &vk,
            &VolumeId::default(),
            Expect::Tag(held),
            access,
            Options::named("V1"),
        )
        .unwrap()
    };
    let v = open(Access::ReadOnly);
    let keep = v.resolve("/keep").unwrap();
    assert_eq!(v.read_file("/keep").unwrap(), vec![b'k'; 100_000]);
    assert!(v.resolve("/tmp").is_err());
    // The link is in the state the caller holds exactly when that state's commit came after it.
    let linked = v.resolve("/keep-link").ok();
    assert_eq!(
        v.getattr(keep).unwrap().nlink,
        if linked.is_some() { 2 } else { 1 }
    );
    if let Some(l) = linked {
        assert_eq!(l, keep);
    }
    assert!(
        objects(&bk).len() > needed_objects(&v),
        "the unlinked file's 3 MiB were on disk when the mount died"
    );
    drop(v);
    let v = open(Access::ReadWrite);
    assert_eq!(
        objects(&bk).len(),
        needed_objects(&v),
        "reclaimed at the next open"
    );
    assert_eq!(v.tag(), Some(held));
    v.verify().unwrap();
}
