//! Writing layers: a source layer with the `--dir` content removed, and the layer veil adds
//! (launcher, baked files, code region). Both are written reproducibly and gzip-compressed.

use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use oci_spec::image::MediaType;

use crate::error::{ConvertError, io};
use crate::hashio::HashWriter;
use crate::image::Blob;
use crate::rootfs::{is_under, normalize};

/// A layer written by the converter.
pub struct Written {
    /// The blob (gzip).
    pub blob: Blob,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
}

type Sink = tar::Builder<HashWriter<flate2::write::GzEncoder<HashWriter<BufWriter<fs::File>>>>>;

fn start(path: &Path) -> Result<Sink, ConvertError> {
    let f = fs::File::create(path).map_err(io(path))?;
    let gz = flate2::GzBuilder::new().mtime(0).write(
        HashWriter::new(BufWriter::with_capacity(1 << 20, f)),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(HashWriter::new(gz));
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    Ok(b)
}

fn finish(b: Sink, path: &Path) -> Result<Written, ConvertError> {
    let inner = b.into_inner().map_err(io(path))?;
    let (gz, diff_id, _) = inner.finish();
    let hw = gz.finish().map_err(io(path))?;
    let (mut w, digest, size) = hw.finish();
    w.flush().map_err(io(path))?;
    Ok(Written {
        blob: Blob {
            media_type: MediaType::ImageLayerGzip,
            digest,
            size,
            path: path.to_path_buf(),
        },
        diff_id,
    })
}

/// True when the layer entry at `path` must go because it is, or acts on, content of a `--dir`.
pub fn dropped(path: &str, dirs: &[String]) -> bool {
    dirs.iter().any(|d| is_under(path, d))
}

/// Copy the uncompressed layer `src` to a new gzip blob at `out`, without the entries under
/// `dirs` (whiteouts and opaque markers inside them included). A kept hard link whose target is
/// dropped becomes a regular file with the link's content, taken from the applied image `root`
/// (empty when a later layer removed the file: that layer hides it anyway).
pub fn rewrite<R: Read>(
    src: R,
    dirs: &[String],
    root: &Path,
    out: &Path,
) -> Result<Written, String> {
    let mut b = start(out).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(src);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| format!("corrupt tar: {e}"))?;
        let raw = entry.path().map_err(|e| e.to_string())?.into_owned();
        let path = normalize(&raw)?;
        if dropped(&path, dirs) {
            continue;
        }
        let mut h = entry.header().clone();
        let kind = h.entry_type();
        let err = |e: std::io::Error| format!("{path}: {e}");
        match kind {
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(err)?
                    .ok_or_else(|| format!("{path}: link without a target"))?
                    .into_owned();
                if kind == tar::EntryType::Link && dropped(&normalize(&target)?, dirs) {
                    let real = crate::rootfs::resolve(root, &path, false)?;
                    let hp = crate::rootfs::host(root, &real);
                    let data = match std::fs::symlink_metadata(&hp) {
                        Ok(m) if m.is_file() => std::fs::read(&hp).map_err(err)?,
                        _ => Vec::new(),
                    };
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, &raw, &data[..]).map_err(err)?;
                } else {
                    b.append_link(&mut h, &raw, &target).map_err(err)?;
                }
            }
            _ => {
                b.append_data(&mut h, &raw, &mut entry).map_err(err)?;
            }
        }
    }
    finish(b, out).map_err(|e| e.to_string())
}

/// What veil adds to an image, as one layer.
pub struct VeilLayer<'a> {
    /// The static launcher to copy to `/usr/lib/veil/veil-launcher`.
    pub launcher: &'a Path,
    /// The text of `/etc/veil/program`.
    pub program_file: &'a str,
    /// The text of `/etc/veil/cas-key-hash`.
    pub cas_key_hash_file: &'a str,
    /// The code region's backing store, copied to this image path (`/fspf/fs.fspf`).
    pub region: Option<(&'a Path, &'a str)>,
    /// Directories the image already has (no entry is written for them).
    pub existing_dir: &'a dyn Fn(&str) -> bool,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn add_dirs(
    b: &mut Sink,
    image_path: &str,
    l: &VeilLayer<'_>,
    done: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let mut cur = String::new();
    let parts: Vec<&str> = image_path.trim_matches('/').split('/').collect();
    for p in parts.iter().take(parts.len().saturating_sub(1)) {
        cur = format!("{cur}/{p}");
        if (l.existing_dir)(&cur) || done.contains(&cur) {
            continue;
        }
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, cur.trim_start_matches('/'), std::io::empty())
            .map_err(io(&cur))?;
        done.push(cur.clone());
    }
    Ok(())
}

fn add_file(
    b: &mut Sink,
    image_path: &str,
    mode: u32,
    data: &mut dyn Read,
    size: u64,
    l: &VeilLayer<'_>,
    done: &mut Vec<String>,
) -> Result<(), ConvertError> {
    add_dirs(b, image_path, l, done)?;
    let mut h = header(tar::EntryType::Regular, mode, size);
    b.append_data(&mut h, image_path.trim_start_matches('/'), data)
        .map_err(io(image_path))
}

fn add_tree(
    b: &mut Sink,
    host: &Path,
    image_path: &str,
    l: &VeilLayer<'_>,
    done: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let mut entries: Vec<_> = fs::read_dir(host)
        .map_err(io(host))?
        .collect::<Result<_, _>>()
        .map_err(io(host))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let ip = format!("{image_path}/{name}");
        let md = fs::symlink_metadata(e.path()).map_err(io(e.path()))?;
        if md.is_dir() {
            add_dirs(b, &format!("{ip}/x"), l, done)?;
            add_tree(b, &e.path(), &ip, l, done)?;
        } else if md.is_file() {
            let mut f = fs::File::open(e.path()).map_err(io(e.path()))?;
            // The store holds only ciphertext and sealed metadata, and the launcher may run as
            // the image's non-root User: readable by all.
            add_file(b, &ip, 0o644, &mut f, md.len(), l, done)?;
        } else {
            return Err(ConvertError::Image(format!(
                "code region store {}: unexpected file type",
                e.path().display()
            )));
        }
    }
    Ok(())
}

/// Write veil's layer to `out`.
pub fn veil_layer(l: &VeilLayer<'_>, out: &Path) -> Result<Written, ConvertError> {
    let mut b = start(out)?;
    let mut done = Vec::new();
    let mut f = fs::File::open(l.launcher).map_err(io(l.launcher))?;
    let size = f.metadata().map_err(io(l.launcher))?.len();
    add_file(
        &mut b,
        crate::LAUNCHER_PATH,
        0o755,
        &mut f,
        size,
        l,
        &mut done,
    )?;
    let p = l.program_file.as_bytes();
    add_file(
        &mut b,
        crate::PROGRAM_FILE,
        0o644,
        &mut &p[..],
        p.len() as u64,
        l,
        &mut done,
    )?;
    let k = l.cas_key_hash_file.as_bytes();
    add_file(
        &mut b,
        crate::CAS_KEY_HASH_FILE,
        0o644,
        &mut &k[..],
        k.len() as u64,
        l,
        &mut done,
    )?;
    if let Some((host, image_path)) = l.region {
        add_dirs(&mut b, &format!("{image_path}/x"), l, &mut done)?;
        add_tree(&mut b, host, image_path, l, &mut done)?;
    }
    finish(b, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::RootFs;

    /// A layer tar built entry by entry.
    pub(crate) struct TarBuilder(tar::Builder<Vec<u8>>);

    impl TarBuilder {
        pub(crate) fn new() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }
        pub(crate) fn dir(mut self, p: &str) -> Self {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            self.0.append_data(&mut h, p, std::io::empty()).unwrap();
            self
        }
        pub(crate) fn file(mut self, p: &str, data: &[u8]) -> Self {
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            self.0.append_data(&mut h, p, data).unwrap();
            self
        }
        pub(crate) fn link(mut self, kind: tar::EntryType, p: &str, target: &str) -> Self {
            let mut h = header(kind, 0o777, 0);
            self.0.append_link(&mut h, p, target).unwrap();
            self
        }
        pub(crate) fn device(mut self, p: &str) -> Self {
            let mut h = header(tar::EntryType::Char, 0o666, 0);
            self.0.append_data(&mut h, p, std::io::empty()).unwrap();
            self
        }
        pub(crate) fn done(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn entries(gz: &Path) -> Vec<String> {
        let f = fs::File::open(gz).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        a.entries()
            .unwrap()
            .map(|e| normalize(&e.unwrap().path().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn layers_apply_with_whiteouts_opaque_dirs_links_and_devices() {
        let d = tempfile::tempdir().unwrap();
        let mut fs_ = RootFs::new(d.path().join("root")).unwrap();
        let l1 = TarBuilder::new()
            .dir("usr/bin")
            .file("usr/bin/busybox", b"bb")
            .link(tar::EntryType::Symlink, "bin", "usr/bin")
            .link(tar::EntryType::Link, "usr/bin/sh", "usr/bin/busybox")
            .dir("code")
            .file("code/a.py", b"a")
            .file("code/old.py", b"old")
            .dir("keep")
            .file("keep/x", b"x")
            .device("dev/null")
            .done();
        let l2 = TarBuilder::new()
            .file("code/.wh.old.py", b"")
            .file("keep/.wh..wh..opq", b"")
            .file("keep/y", b"y")
            .file("dev/.wh.null", b"")
            .device("dev/zero")
            .done();
        fs_.apply(&l1[..]).unwrap();
        fs_.apply(&l2[..]).unwrap();
        let r = fs_.root().to_path_buf();
        let r = r.as_path();
        assert_eq!(fs::read(r.join("bin/busybox")).unwrap(), b"bb");
        assert_eq!(fs::read(r.join("usr/bin/sh")).unwrap(), b"bb");
        assert!(r.join("code/a.py").exists());
        assert!(!r.join("code/old.py").exists(), "a whiteout deletes");
        assert!(
            !r.join("keep/x").exists(),
            "an opaque directory hides lower content"
        );
        assert!(r.join("keep/y").exists());
        assert_eq!(
            fs_.specials.iter().cloned().collect::<Vec<_>>(),
            vec!["/dev/zero".to_string()]
        );
        // A symlink into the host and a path with .. never leave the root.
        let evil = TarBuilder::new()
            .link(
                tar::EntryType::Symlink,
                "etc",
                "/../../../../tmp/veil-escape-test",
            )
            .file("etc/passwd", b"pwned")
            .done();
        fs_.apply(&evil[..]).unwrap();
        assert!(r.join("tmp/veil-escape-test/passwd").exists());
        assert!(!Path::new("/tmp/veil-escape-test").exists());
        let mut raw = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        // append_data refuses "..", so write the name into the header directly.
        h.as_old_mut().name[..6].copy_from_slice(b"../etc");
        h.set_cksum();
        raw.append(&h, &b"x"[..]).unwrap();
        let e = fs_.apply(&raw.into_inner().unwrap()[..]).unwrap_err();
        assert!(e.contains("leaves the image root"), "{e}");
    }

    #[test]
    fn rewrite_drops_dir_content_and_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let layer = TarBuilder::new()
            .dir("code")
            .file("code/a.py", b"a")
            .dir("code/sub")
            .file("code/sub/.wh..wh..opq", b"")
            .file("code/.wh.gone", b"")
            .file("codex", b"not under /code")
            .link(tar::EntryType::Symlink, "code-link", "code/a.py")
            .link(tar::EntryType::Link, "hard", "codex")
            .file(".wh.code2", b"")
            .link(tar::EntryType::Link, "into-code", "code/a.py")
            .done();
        let out = d.path().join("out.tar.gz");
        let root = d.path().join("root");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("into-code"), b"a").unwrap();
        let w = rewrite(&layer[..], &["/code".into()], &root, &out).unwrap();
        assert_eq!(
            entries(&out),
            vec![
                "/code",
                "/codex",
                "/code-link",
                "/hard",
                "/.wh.code2",
                "/into-code"
            ]
        );
        // The hard link into /code became a regular file with the content; the other stays a link.
        let f = fs::File::open(&out).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().into_owned();
            if p == Path::new("into-code") {
                assert_eq!(e.header().entry_type(), tar::EntryType::Regular);
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert_eq!(s, "a");
            }
            if p == Path::new("hard") {
                assert_eq!(e.header().entry_type(), tar::EntryType::Link);
            }
        }
        assert!(w.blob.digest.starts_with("sha256:"));
        // Same input, same output.
        let out2 = d.path().join("out2.tar.gz");
        let w2 = rewrite(&layer[..], &["/code".into()], &root, &out2).unwrap();
        assert_eq!(w.blob.digest, w2.blob.digest);
        assert_eq!(w.diff_id, w2.diff_id);
    }

    #[test]
    fn what_is_dropped() {
        let dirs = vec!["/code".to_string(), "/usr/lib/py".to_string()];
        assert!(dropped("/code/a", &dirs));
        assert!(dropped("/code/.wh.a", &dirs));
        assert!(dropped("/code/sub/.wh..wh..opq", &dirs));
        assert!(dropped("/code/.wh..wh..opq", &dirs));
        assert!(!dropped("/code", &dirs));
        assert!(!dropped("/.wh.code", &dirs));
        assert!(!dropped("/usr/lib/.wh..wh..opq", &dirs));
        assert!(dropped("/usr/lib/py/x", &dirs));
    }
}
