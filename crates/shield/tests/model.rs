//! Model-based test of a volume's namespace against a plaintext model: random sequences of
//! create, write, truncate, unlink (also of open files), hard links, renames (plain, no-replace,
//! exchange), opens and closes, commits and reopens. After every step every name must show the
//! model's content and link count, names of one file must share one inode, open handles must
//! still read the content of files unlinked while open, and after a reopen (handles gone, as after
//! a crash) only named files remain and no object of a dropped file is left in the backing store.
// Test code: a failed unwrap is a test failure with its location.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use veil_shield::{
    Access, Expect, Ino, Kind, Options, ROOT_INO, RenameMode, Tag, Volume, VolumeId, VolumeKey,
};

const NAMES: [&str; 5] = ["/a", "/b", "/d/c", "/d/e", "/d/f"];

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Write(usize, u16, u16, u8),
    Truncate(usize, u16),
    Unlink(usize),
    Link(usize, usize),
    Rename(usize, usize, u8),
    Open(usize),
    Close(usize),
    WriteHandle(usize, u16, u16, u8),
    Commit,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let n = || 0..NAMES.len();
    prop_oneof![
        3 => n().prop_map(Op::Create),
        3 => (n(), 0..9000u16, 1..5000u16, any::<u8>()).prop_map(|(a, b, c, d)| Op::Write(a, b, c, d)),
        1 => (n(), 0..9000u16).prop_map(|(a, b)| Op::Truncate(a, b)),
        2 => n().prop_map(Op::Unlink),
        2 => (n(), n()).prop_map(|(a, b)| Op::Link(a, b)),
        2 => (n(), n(), 0..3u8).prop_map(|(a, b, m)| Op::Rename(a, b, m)),
        2 => n().prop_map(Op::Open),
        2 => (0..4usize).prop_map(Op::Close),
        2 => (0..4usize, 0..9000u16, 1..5000u16, any::<u8>()).prop_map(|(a, b, c, d)| Op::WriteHandle(a, b, c, d)),
        1 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

/// The model: names → model inode, inode contents, open handles (model inode, volume inode).
#[derive(Default)]
struct Model {
    names: BTreeMap<&'static str, usize>,
    content: BTreeMap<usize, Vec<u8>>,
    handles: Vec<(usize, Ino)>,
    next: usize,
}

impl Model {
    fn nlink(&self, m: usize) -> u32 {
        self.names.values().filter(|x| **x == m).count() as u32
    }

    /// Drop inodes without names or handles.
    fn gc(&mut self) {
        let live: Vec<usize> = self
            .names
            .values()
            .copied()
            .chain(self.handles.iter().map(|h| h.0))
            .collect();
        self.content.retain(|m, _| live.contains(m));
    }
}

fn key() -> VolumeKey {
    VolumeKey::from_bytes([9; 32])
}

fn id() -> VolumeId {
    VolumeId::new("cas", "s", "M")
}

fn split(p: &str) -> (&str, &str) {
    p.rsplit_once('/')
        .map(|(d, n)| (if d.is_empty() { "/" } else { d }, n))
        .unwrap()
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

fn apply(v: &mut Volume, m: &mut Model, op: &Op, dir: &Path) {
    let ino = |v: &Volume, p: &str| v.resolve(p).ok();
    match *op {
        Op::Create(n) => {
            let p = NAMES[n];
            if m.names.contains_key(p) {
                return;
            }
            let (d, name) = split(p);
            let parent = v.resolve(d).unwrap();
            v.create_file(parent, name, 0o644).unwrap();
            m.names.insert(p, m.next);
            m.content.insert(m.next, Vec::new());
            m.next += 1;
        }
        Op::Write(n, off, len, seed) => {
            let Some(&mi) = m.names.get(NAMES[n]) else {
                return;
            };
            let i = ino(v, NAMES[n]).unwrap();
            write_both(v, m, i, mi, off, len, seed);
        }
        Op::WriteHandle(h, off, len, seed) => {
            let Some(&(mi, i)) = m.handles.get(h) else {
                return;
            };
            write_both(v, m, i, mi, off, len, seed);
        }
        Op::Truncate(n, size) => {
            let Some(&mi) = m.names.get(NAMES[n]) else {
                return;
            };
            v.truncate(ino(v, NAMES[n]).unwrap(), size as u64).unwrap();
            m.content.get_mut(&mi).unwrap().resize(size as usize, 0);
        }
        Op::Unlink(n) => {
            let p = NAMES[n];
            let (d, name) = split(p);
            let r = v.unlink(v.resolve(d).unwrap(), name);
            assert_eq!(r.is_ok(), m.names.remove(p).is_some(), "unlink {p}: {r:?}");
            m.gc();
        }
        Op::Link(a, b) => {
            let (pa, pb) = (NAMES[a], NAMES[b]);
            let r = v.link_path(pa, pb);
            match (m.names.get(pa).copied(), m.names.contains_key(pb)) {
                (Some(mi), false) => {
                    r.unwrap();
                    m.names.insert(pb, mi);
                }
                (None, _) => assert_eq!(r.map_err(|e| e.errno()).err(), Some(libc::ENOENT)),
                (Some(_), true) => assert_eq!(r.map_err(|e| e.errno()).err(), Some(libc::EEXIST)),
            }
        }
        Op::Rename(a, b, mode) => {
            let (pa, pb) = (NAMES[a], NAMES[b]);
            let mode = [
                RenameMode::Replace,
                RenameMode::NoReplace,
                RenameMode::Exchange,
            ][mode as usize];
            let ((da, na), (db, nb)) = (split(pa), split(pb));
            let r = v.rename_with(v.resolve(da).unwrap(), na, v.resolve(db).unwrap(), nb, mode);
            let (sa, sb) = (m.names.get(pa).copied(), m.names.get(pb).copied());
            let errno = r.map_err(|e| e.errno()).err();
            match (sa, sb, mode) {
                (None, _, _) => assert_eq!(errno, Some(libc::ENOENT)),
                (Some(x), Some(y), _) if x == y => assert_eq!(errno, None),
                (Some(_), None, RenameMode::Exchange) => assert_eq!(errno, Some(libc::ENOENT)),
                (Some(_), Some(_), RenameMode::NoReplace) => {
                    assert_eq!(errno, Some(libc::EEXIST))
                }
                (Some(x), Some(y), RenameMode::Exchange) => {
                    assert_eq!(errno, None);
                    m.names.insert(pa, y);
                    m.names.insert(pb, x);
                }
                (Some(x), _, _) => {
                    assert_eq!(errno, None);
                    m.names.remove(pa);
                    m.names.insert(pb, x);
                    m.gc();
                }
            }
        }
        Op::Open(n) => {
            if m.handles.len() >= 4 {
                return;
            }
            let Some(&mi) = m.names.get(NAMES[n]) else {
                return;
            };
            let i = ino(v, NAMES[n]).unwrap();
            v.open_handle(i).unwrap();
            m.handles.push((mi, i));
        }
        Op::Close(h) => {
            if h >= m.handles.len() {
                return;
            }
            let (_, i) = m.handles.remove(h);
            v.close_handle(i).unwrap();
            m.gc();
        }
        Op::Commit => {
            let t = v.commit().unwrap();
            v.ack(t).unwrap();
        }
        Op::Reopen => {
            let t = v.commit().unwrap();
            v.ack(t).unwrap();
            // Handles vanish as in a crash of the mount: the volume is dropped with them open.
            let placeholder = reopen_ro_placeholder(dir);
            let old = std::mem::replace(v, placeholder);
            drop(old);
            *v = reopen(dir, t);
            m.handles.clear();
            m.gc();
            // Nothing of a dropped file is left: one object per non-empty named file.
            let mut live: Vec<usize> = m.names.values().copied().collect();
            live.sort();
            live.dedup();
            let want = live.iter().filter(|mi| !m.content[mi].is_empty()).count();
            assert_eq!(objects(dir), want, "objects after reopen");
        }
    }
}

fn write_both(v: &mut Volume, m: &mut Model, i: Ino, mi: usize, off: u16, len: u16, seed: u8) {
    let d = data(seed, len as usize);
    v.write(i, off as u64, &d).unwrap();
    let c = m.content.get_mut(&mi).unwrap();
    let end = off as usize + d.len();
    if c.len() < end {
        c.resize(end, 0);
    }
    c[off as usize..end].copy_from_slice(&d);
}

fn objects(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("bk"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().len() == 32)
        .count()
}

fn reopen(dir: &Path, t: Tag) -> Volume {
    veil_shield::open(
        &dir.join("bk"),
        &key(),
        &id(),
        Expect::Tag(t),
        Access::ReadWrite,
        Options::named("M"),
    )
    .unwrap()
}

/// A throwaway volume to hold while the real one is closed and reopened.
fn reopen_ro_placeholder(dir: &Path) -> Volume {
    let p = dir.join(format!("placeholder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    veil_shield::create(&p, &key(), &id(), Options::named("P"))
        .unwrap()
        .0
}

fn check(v: &Volume, m: &Model) {
    let mut inode_of: BTreeMap<usize, Ino> = BTreeMap::new();
    for (p, mi) in &m.names {
        let i = v.resolve(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(
            *inode_of.entry(*mi).or_insert(i),
            i,
            "{p}: names of one file share its inode"
        );
        let a = v.getattr(i).unwrap();
        assert_eq!(a.kind, Kind::File);
        assert_eq!(a.nlink, m.nlink(*mi), "{p}: nlink");
        assert_eq!(a.size, m.content[mi].len() as u64, "{p}: size");
        assert_eq!(&v.read_file(p).unwrap(), &m.content[mi], "{p}: content");
    }
    for (mi, i) in &m.handles {
        let a = v.getattr(*i).unwrap();
        assert_eq!(a.nlink, m.nlink(*mi), "open handle: nlink");
        assert_eq!(
            &v.read_all(*i).unwrap(),
            &m.content[mi],
            "open handle: content"
        );
    }
    let files: Vec<String> = v
        .list()
        .into_iter()
        .filter(|e| e.kind == Kind::File)
        .map(|e| e.path)
        .collect();
    let want: Vec<String> = m.names.keys().map(|s| s.to_string()).collect();
    assert_eq!(files, want, "listing");
    assert_eq!(
        v.open_unlinked(),
        {
            let mut o: Vec<usize> = m
                .handles
                .iter()
                .map(|h| h.0)
                .filter(|mi| m.nlink(*mi) == 0)
                .collect();
            o.sort();
            o.dedup();
            o.len()
        },
        "open unlinked files"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn namespace_matches_a_plaintext_model(ops in proptest::collection::vec(op(), 1..40)) {
        let d = tempfile::tempdir().unwrap();
        let (mut v, t) =
            veil_shield::create(&d.path().join("bk"), &key(), &id(), Options::named("M")).unwrap();
        v.ack(t).unwrap();
        v.mkdir(ROOT_INO, "d", 0o755).unwrap();
        let mut m = Model::default();
        for op in &ops {
            apply(&mut v, &mut m, op, d.path());
            check(&v, &m);
        }
        // Close everything: every file without a name is gone, and a final reopen agrees.
        for (_, i) in std::mem::take(&mut m.handles) {
            v.close_handle(i).unwrap();
        }
        m.gc();
        prop_assert_eq!(v.open_unlinked(), 0);
        apply(&mut v, &mut m, &Op::Reopen, d.path());
        check(&v, &m);
    }
}
