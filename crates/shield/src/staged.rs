//! Staged mode (decrypt a volume into a plain directory and encrypt a directory back) and
//! deterministic builds of read-only code regions.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::volume::{Ino, Kind, ROOT_INO, Volume, new_empty};
use crate::{Error, Options, Protection, Tag, VolumeId, VolumeKey};

const PIECE: usize = 1 << 20;

fn io_err(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let c = format!("{what} {}", p.display());
    move |e| Error::io(c, e)
}

fn mtime_of(md: &fs::Metadata) -> i64 {
    md.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(md.mtime_nsec())
}

impl Volume {
    /// Decrypt the whole volume into `dir` (created if missing; must be empty). Every chunk is
    /// verified; a file whose verification fails is removed again and the error returned.
    pub fn unpack(&self, dir: &Path) -> Result<(), Error> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        if fs::read_dir(dir)
            .map_err(io_err("reading", dir))?
            .next()
            .is_some()
        {
            return Err(Error::io(
                format!("unpacking into {}", dir.display()),
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "directory is not empty"),
            ));
        }
        let r = self.unpack_inner(dir);
        if r.is_err() {
            // All or nothing: a failed unpack leaves the (previously empty) directory empty.
            if let Ok(rd) = fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() && !p.is_symlink() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            }
        }
        r
    }

    fn unpack_inner(&self, dir: &Path) -> Result<(), Error> {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        if fs::read_dir(dir)
            .map_err(io_err("reading", dir))?
            .next()
            .is_some()
        {
            return Err(Error::io(
                format!("unpacking into {}", dir.display()),
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "directory is not empty"),
            ));
        }
        let mut dirs = Vec::new();
        for e in self.list() {
            let ino = self.resolve(&e.path)?;
            let rel = e.path.trim_start_matches('/');
            let target = if rel.is_empty() {
                dir.to_path_buf()
            } else {
                dir.join(os_path(rel))
            };
            let attr = self.getattr(ino)?;
            match e.kind {
                Kind::Dir => {
                    if !rel.is_empty() {
                        fs::create_dir(&target).map_err(io_err("creating", &target))?;
                    }
                    dirs.push((target, attr.mode, attr.mtime));
                }
                Kind::Symlink => {
                    std::os::unix::fs::symlink(os_path(&self.readlink(ino)?), &target)
                        .map_err(io_err("creating symlink", &target))?;
                }
                Kind::File => {
                    let tmp = target.with_file_name(format!(".veil-unpack-{}", std::process::id()));
                    let res = self.unpack_file(ino, &tmp, attr.mode, attr.mtime);
                    match res {
                        Ok(()) => fs::rename(&tmp, &target).map_err(io_err("renaming", &target))?,
                        Err(e) => {
                            let _ = fs::remove_file(&tmp);
                            return Err(e);
                        }
                    }
                }
            }
        }
        for (d, mode, mtime) in dirs.into_iter().rev() {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode))
                .map_err(io_err("setting mode of", &d))?;
            if let Ok(f) = File::open(&d) {
                let _ = f.set_modified(UNIX_EPOCH + Duration::from_nanos(mtime.max(0) as u64));
            }
        }
        Ok(())
    }

    fn unpack_file(&self, ino: Ino, out: &Path, mode: u32, mtime: i64) -> Result<(), Error> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .map_err(io_err("creating", out))?;
        self.stream(ino, &mut |piece| {
            f.write_all(piece).map_err(io_err("writing", out))
        })?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("setting mode of", out))?;
        f.set_modified(UNIX_EPOCH + Duration::from_nanos(mtime.max(0) as u64))
            .map_err(io_err("setting mtime of", out))?;
        Ok(())
    }

    /// Replace the volume's whole content with the tree at `dir` (files, directories, symlinks,
    /// modes, modification times). Commit afterwards to make it durable.
    pub fn pack_from(&mut self, dir: &Path) -> Result<(), Error> {
        let md = fs::symlink_metadata(dir).map_err(io_err("reading", dir))?;
        if !md.is_dir() {
            return Err(Error::NotDir {
                path: dir.display().to_string(),
            });
        }
        self.clear()?;
        self.import_dir(dir, ROOT_INO)?;
        self.set_mode(ROOT_INO, md.mode() & 0o7777)?;
        self.set_mtime(
            ROOT_INO,
            if self.is_deterministic() {
                0
            } else {
                mtime_of(&md)
            },
        )?;
        Ok(())
    }

    fn import_dir(&mut self, dir: &Path, at: Ino) -> Result<(), Error> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(io_err("reading", dir))?
            .collect::<Result<_, _>>()
            .map_err(io_err("reading", dir))?;
        entries.sort_by_key(|e| e.file_name());
        let mut buf = vec![0u8; PIECE];
        for e in entries {
            let p = e.path();
            let name = crate::name_from_bytes(e.file_name().as_bytes());
            let md = fs::symlink_metadata(&p).map_err(io_err("reading", &p))?;
            let mtime = if self.is_deterministic() {
                0
            } else {
                mtime_of(&md)
            };
            let ft = md.file_type();
            let ino = if ft.is_dir() {
                let i = self.mkdir(at, &name, md.mode())?;
                self.import_dir(&p, i)?;
                i
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).map_err(io_err("reading symlink", &p))?;
                let t = crate::name_from_bytes(t.as_os_str().as_bytes());
                self.symlink(at, &name, &t)?
            } else if ft.is_file() {
                let i = self.create_file(at, &name, md.mode())?;
                let mut f = File::open(&p).map_err(io_err("opening", &p))?;
                let mut off = 0u64;
                loop {
                    let mut got = 0;
                    while got < PIECE {
                        let n = f.read(&mut buf[got..]).map_err(io_err("reading", &p))?;
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    if got == 0 {
                        break;
                    }
                    self.write(i, off, &buf[..got])?;
                    off += got as u64;
                    if got < PIECE {
                        break;
                    }
                }
                self.finalize(i)?;
                i
            } else {
                return Err(Error::Unsupported {
                    what: format!("special file {}", p.display()),
                    volume: self.options().name.clone(),
                });
            };
            self.set_mtime(ino, mtime)?;
        }
        Ok(())
    }
}

/// Build a read-only code region from `src` into the empty directory `backing`, reproducibly:
/// file ids, object names and nonces are derived from the key and the content, times are 0, so the
/// same tree and key always give the same backing store and tag.
pub fn build_deterministic(
    src: &Path,
    backing: &Path,
    key: &VolumeKey,
    id: &VolumeId,
    protection: Protection,
) -> Result<Tag, Error> {
    let mut opts = Options::named(&id.volume);
    opts.protection = protection;
    let mut v = new_empty(backing, key, id, opts, true)?;
    v.pack_from(src)?;
    v.set_mtime(ROOT_INO, 0)?;
    let tag = v.commit()?;
    v.ack(tag)?;
    Ok(tag)
}

/// The plaintext path of a stored path or symlink target (names that are not UTF-8 get their
/// bytes back, see [`crate::name_from_bytes`]).
fn os_path(stored: &str) -> std::path::PathBuf {
    match crate::name_to_bytes(stored) {
        Some(b) => std::ffi::OsStr::from_bytes(&b).into(),
        None => stored.into(),
    }
}
