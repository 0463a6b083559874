//! Extended attributes: stored per node in the sealed metadata (so the tag covers them), with the
//! rules a local Linux file system applies: names in the `user.`, `security.` or `trusted.`
//! namespace (others, including `system.` ACLs, are `EOPNOTSUPP`), at most 255 bytes
//! (`ERANGE`); values at most 64 KiB (`E2BIG`); `user.` attributes only on files and directories
//! (`EPERM` on symlinks).

use super::{Ino, NodeKind, Volume};
use crate::Error;

/// Largest value of one attribute (the Linux VFS limit, `XATTR_SIZE_MAX`).
pub const MAX_VALUE: usize = 65536;
/// Longest attribute name (`XATTR_NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// How [`Volume::set_xattr`] treats an existing attribute (`setxattr` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrFlags {
    /// Create or replace.
    Any,
    /// Fail with `EEXIST` when it exists (`XATTR_CREATE`).
    Create,
    /// Fail with `ENODATA` when it does not exist (`XATTR_REPLACE`).
    Replace,
}

/// Whether `name` is an attribute name a volume stores (namespace and length).
pub(crate) fn check_xattr_name(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_NAME {
        return Err("too long");
    }
    let ok = ["user.", "security.", "trusted."]
        .iter()
        .any(|ns| name.len() > ns.len() && name.starts_with(ns));
    if ok && !name.contains('\0') {
        Ok(())
    } else {
        Err("not in a supported namespace")
    }
}

impl Volume {
    fn xattr_name_ok(&self, ino: Ino, name: &str) -> Result<(), Error> {
        match check_xattr_name(name) {
            Ok(()) => {}
            Err("too long") => {
                return Err(Error::XattrTooLarge {
                    path: self.display_path(ino),
                    name: name.chars().take(64).collect(),
                    what: "name",
                });
            }
            Err(_) => {
                return Err(Error::XattrNotSupported {
                    path: self.display_path(ino),
                    name: name.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The value of attribute `name` of `ino`.
    pub fn get_xattr(&self, ino: Ino, name: &str) -> Result<Vec<u8>, Error> {
        let n = self.node(ino)?;
        match n.xattrs.get(name) {
            Some(v) => Ok(v.clone()),
            None => {
                self.xattr_name_ok(ino, name)?;
                Err(Error::NoXattr {
                    path: self.display_path(ino),
                    name: name.to_string(),
                })
            }
        }
    }

    /// The attribute names of `ino`, sorted.
    pub fn list_xattr(&self, ino: Ino) -> Result<Vec<String>, Error> {
        Ok(self.node(ino)?.xattrs.keys().cloned().collect())
    }

    /// Set attribute `name` of `ino` to `value`.
    pub fn set_xattr(
        &mut self,
        ino: Ino,
        name: &str,
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<(), Error> {
        self.writable()?;
        self.xattr_name_ok(ino, name)?;
        if value.len() > MAX_VALUE {
            return Err(Error::XattrTooLarge {
                path: self.display_path(ino),
                name: name.to_string(),
                what: "value",
            });
        }
        let n = self.node(ino)?;
        if name.starts_with("user.") && matches!(n.kind, NodeKind::Link(_)) {
            return Err(Error::Unsupported {
                what: format!(
                    "user extended attributes on the symlink {}",
                    self.display_path(ino)
                ),
                volume: self.opts.name.clone(),
            });
        }
        let exists = n.xattrs.contains_key(name);
        match flags {
            XattrFlags::Create if exists => {
                return Err(Error::Exists {
                    path: format!("{} (attribute {name})", self.display_path(ino)),
                });
            }
            XattrFlags::Replace if !exists => {
                return Err(Error::NoXattr {
                    path: self.display_path(ino),
                    name: name.to_string(),
                });
            }
            _ => {}
        }
        let now = self.now();
        let n = self.node_mut(ino)?;
        n.xattrs.insert(name.to_string(), value.to_vec());
        n.ctime = now;
        self.meta_dirty = true;
        Ok(())
    }

    /// Remove attribute `name` of `ino`.
    pub fn remove_xattr(&mut self, ino: Ino, name: &str) -> Result<(), Error> {
        self.writable()?;
        let now = self.now();
        if self.node_mut(ino)?.xattrs.remove(name).is_none() {
            self.xattr_name_ok(ino, name)?;
            return Err(Error::NoXattr {
                path: self.display_path(ino),
                name: name.to_string(),
            });
        }
        self.node_mut(ino)?.ctime = now;
        self.meta_dirty = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::testutil::{commit_ack, new_volume, reopen};
    use crate::{Access, ROOT_INO};

    #[test]
    fn attributes_follow_linux_rules_and_survive_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut v = new_volume(d.path());
        let f = v.write_file("/f", b"x", 0o644).unwrap();
        let l = v.symlink_path("/l", "f").unwrap();
        v.set_xattr(f, "user.a", b"1", XattrFlags::Any).unwrap();
        v.set_xattr(f, "user.b", &[0, 255, 7], XattrFlags::Create)
            .unwrap();
        v.set_xattr(ROOT_INO, "security.x", b"", XattrFlags::Any)
            .unwrap();
        let errno = |r: Result<(), Error>| r.map_err(|e| e.errno()).err();
        assert_eq!(
            errno(v.set_xattr(f, "user.a", b"2", XattrFlags::Create)),
            Some(libc::EEXIST)
        );
        assert_eq!(
            errno(v.set_xattr(f, "user.zz", b"2", XattrFlags::Replace)),
            Some(libc::ENODATA)
        );
        assert_eq!(
            errno(v.set_xattr(f, "system.posix_acl_access", b"", XattrFlags::Any)),
            Some(libc::EOPNOTSUPP)
        );
        assert_eq!(
            errno(v.set_xattr(f, "user.", b"", XattrFlags::Any)),
            Some(libc::EOPNOTSUPP)
        );
        assert_eq!(
            errno(v.set_xattr(
                f,
                &format!("user.{}", "n".repeat(251)),
                b"",
                XattrFlags::Any
            )),
            Some(libc::ERANGE)
        );
        assert_eq!(
            errno(v.set_xattr(f, "user.big", &vec![0; MAX_VALUE + 1], XattrFlags::Any)),
            Some(libc::E2BIG)
        );
        assert_eq!(
            errno(v.set_xattr(l, "user.a", b"", XattrFlags::Any)),
            Some(libc::EPERM)
        );
        v.set_xattr(f, "user.a", b"one", XattrFlags::Replace)
            .unwrap();
        assert_eq!(v.get_xattr(f, "user.a").unwrap(), b"one");
        assert_eq!(
            v.get_xattr(f, "user.nope").map_err(|e| e.errno()).err(),
            Some(libc::ENODATA)
        );
        assert_eq!(v.list_xattr(f).unwrap(), ["user.a", "user.b"]);
        v.remove_xattr(f, "user.a").unwrap();
        assert_eq!(errno(v.remove_xattr(f, "user.a")), Some(libc::ENODATA));
        let t = commit_ack(&mut v);
        drop(v);
        let v = reopen(d.path(), t, Access::ReadOnly).unwrap();
        let f = v.resolve("/f").unwrap();
        assert_eq!(v.list_xattr(f).unwrap(), ["user.b"]);
        assert_eq!(v.get_xattr(f, "user.b").unwrap(), [0, 255, 7]);
        assert_eq!(v.get_xattr(ROOT_INO, "security.x").unwrap(), b"");
    }
}
