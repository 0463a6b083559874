//! Reading a source image (OCI layout, docker archive) into a manifest's parts, and writing the
//! converted image (OCI layout, docker archive). JSON documents are written with sorted keys, so
//! equal images give equal digests.

use std::fs;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Platform,
};

use crate::error::{ConvertError, io};
use crate::hashio::{HashReader, digest_of};
use crate::reference::ImageRef;

/// The annotation naming a tag in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One layer blob on disk.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Media type (OCI spelling).
    pub media_type: MediaType,
    /// `sha256:<hex>` of the blob as stored.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Where the blob's bytes are.
    pub path: PathBuf,
}

/// A source image: its configuration and layer blobs (verified when read, see `layers`).
pub struct SourceImage {
    /// The image configuration.
    pub config: ImageConfiguration,
    /// Layers, base first.
    pub layers: Vec<Blob>,
    _hold: Option<tempfile::TempDir>,
}

/// Serialize with object keys sorted, compact.
pub fn canonical_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ConvertError> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut items: Vec<_> = m.into_iter().collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(items.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let v = serde_json::to_value(v).map_err(|e| ConvertError::Image(e.to_string()))?;
    serde_json::to_vec(&sort(v)).map_err(|e| ConvertError::Image(e.to_string()))
}

fn is_gzip(path: &Path) -> Result<bool, ConvertError> {
    let mut f = fs::File::open(path).map_err(io(path))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io(path))?;
    if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        return Err(ConvertError::Image(format!(
            "{}: zstd-compressed layers are not supported",
            path.display()
        )));
    }
    Ok(n >= 2 && magic[..2] == [0x1f, 0x8b])
}

/// Open a layer blob as an uncompressed tar stream, hashing the stored bytes on the way.
pub fn open_layer(blob: &Blob) -> Result<(Box<dyn Read>, HashCheck), ConvertError> {
    let gz = is_gzip(&blob.path)?;
    let f = fs::File::open(&blob.path).map_err(io(&blob.path))?;
    let check = HashCheck::new(BufReader::with_capacity(1 << 20, f));
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(check.clone_reader()))
    } else {
        Box::new(check.clone_reader())
    };
    Ok((reader, check))
}

/// A shared hashing reader: the layer reader reads through it and, at the end, `finish` drains
/// the rest and compares the digest.
#[derive(Clone)]
pub struct HashCheck(std::rc::Rc<std::cell::RefCell<Option<HashReader<BufReader<fs::File>>>>>);

/// A `Read` handle on a [`HashCheck`].
pub struct CheckReader(HashCheck);

impl Read for CheckReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.0.borrow_mut().as_mut() {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
}

impl HashCheck {
    fn new(r: BufReader<fs::File>) -> Self {
        Self(std::rc::Rc::new(std::cell::RefCell::new(Some(
            HashReader::new(r),
        ))))
    }

    fn clone_reader(&self) -> CheckReader {
        CheckReader(self.clone())
    }

    /// Drain the rest of the blob and compare its digest and size with the descriptor's.
    pub fn finish(&self, blob: &Blob) -> Result<(), String> {
        let r = self.0.borrow_mut().take();
        let Some(r) = r else {
            return Err("layer read twice".into());
        };
        let (digest, size) = r.drain().map_err(|e| e.to_string())?;
        if digest != blob.digest || size != blob.size {
            return Err(format!(
                "corrupt blob: its content has digest {digest} and {size} bytes, the manifest says {} and {} bytes",
                blob.digest, blob.size
            ));
        }
        Ok(())
    }
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf, ConvertError> {
    let hexpart = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ConvertError::Image(format!("unsupported digest {digest}")))?;
    Ok(dir.join("blobs/sha256").join(hexpart))
}

fn read_verified(path: &Path, digest: &str, what: &str) -> Result<Vec<u8>, ConvertError> {
    let data = fs::read(path).map_err(io(path))?;
    let got = digest_of(&data);
    if got != digest {
        return Err(ConvertError::Image(format!(
            "{what} {digest} is corrupt (its content has digest {got})"
        )));
    }
    Ok(data)
}

fn platform_matches(p: Option<&Platform>, want: &str) -> bool {
    p.is_some_and(|p| format!("{}/{}", p.os(), p.architecture()) == want)
}

fn check_platform(config: &ImageConfiguration, want: &str) -> Result<(), ConvertError> {
    let have = format!("{}/{}", config.os(), config.architecture());
    if have != want {
        return Err(ConvertError::Image(format!(
            "unsupported platform {have} (this conversion is for {want}; see --platform)"
        )));
    }
    Ok(())
}

fn oci_layer_type(m: &MediaType, gz: bool) -> Result<MediaType, ConvertError> {
    match m {
        MediaType::ImageLayer | MediaType::ImageLayerGzip => Ok(m.clone()),
        MediaType::Other(s) if s == "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Ok(MediaType::ImageLayerGzip)
        }
        MediaType::Other(s) if s == "application/vnd.docker.image.rootfs.diff.tar" => Ok(if gz {
            MediaType::ImageLayerGzip
        } else {
            MediaType::ImageLayer
        }),
        other => Err(ConvertError::Image(format!(
            "unsupported layer media type {other}"
        ))),
    }
}

impl SourceImage {
    /// Keep `dir` alive as long as the image.
    pub fn hold(&mut self, dir: tempfile::TempDir) {
        self._hold = Some(dir);
    }
}

/// Read the image `r` names, for `platform` (`os/arch`).
pub fn read(
    r: &ImageRef,
    platform: &str,
    tls: crate::registry::Tls,
) -> Result<SourceImage, ConvertError> {
    match r {
        ImageRef::Oci { dir, tag } => read_oci(dir, tag.as_deref(), platform),
        ImageRef::DockerArchive { file, reference } => {
            read_docker_archive(file, reference.as_deref(), platform)
        }
        ImageRef::Registry { reference } => crate::registry::pull(reference, tls, platform),
    }
}

/// Read an OCI layout.
pub fn read_oci(
    dir: &Path,
    tag: Option<&str>,
    platform: &str,
) -> Result<SourceImage, ConvertError> {
    let index_path = dir.join("index.json");
    let index = ImageIndex::from_file(&index_path)
        .map_err(|e| ConvertError::Image(format!("{}: {e}", index_path.display())))?;
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| match tag {
            Some(t) => d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_some_and(|n| n == t),
            None => true,
        })
        .collect();
    let desc = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(ConvertError::Image(format!(
                "{} has no image tagged {}",
                dir.display(),
                tag.unwrap_or("(any)")
            )));
        }
        _ => {
            return Err(ConvertError::Image(format!(
                "{} holds several images: name one with oci:DIR:TAG",
                dir.display()
            )));
        }
    };
    let mut desc = desc;
    for _ in 0..4 {
        match desc.media_type() {
            MediaType::ImageIndex => {
                let path = blob_path(dir, desc.digest().as_ref())?;
                let data = read_verified(&path, desc.digest().as_ref(), "image index")?;
                let idx = ImageIndex::from_reader(&data[..])
                    .map_err(|e| ConvertError::Image(format!("image index: {e}")))?;
                desc = idx
                    .manifests()
                    .iter()
                    .find(|d| platform_matches(d.platform().as_ref(), platform))
                    .cloned()
                    .ok_or_else(|| {
                        ConvertError::Image(format!(
                            "the image index has no image for platform {platform}"
                        ))
                    })?;
            }
            MediaType::ImageManifest => {
                let path = blob_path(dir, desc.digest().as_ref())?;
                let data = read_verified(&path, desc.digest().as_ref(), "manifest")?;
                let m = ImageManifest::from_reader(&data[..])
                    .map_err(|e| ConvertError::Image(format!("manifest: {e}")))?;
                let cpath = blob_path(dir, m.config().digest().as_ref())?;
                let cdata = read_verified(&cpath, m.config().digest().as_ref(), "config")?;
                let config = ImageConfiguration::from_reader(&cdata[..])
                    .map_err(|e| ConvertError::Image(format!("config: {e}")))?;
                check_platform(&config, platform)?;
                let mut layers = Vec::new();
                for l in m.layers() {
                    let path = blob_path(dir, l.digest().as_ref())?;
                    let gz = matches!(l.media_type(), MediaType::ImageLayerGzip);
                    layers.push(Blob {
                        media_type: oci_layer_type(l.media_type(), gz)?,
                        digest: l.digest().to_string(),
                        size: l.size(),
                        path,
                    });
                }
                return Ok(SourceImage {
                    config,
                    layers,
                    _hold: None,
                });
            }
            other => {
                return Err(ConvertError::Image(format!(
                    "unsupported manifest media type {other}"
                )));
            }
        }
    }
    Err(ConvertError::Image(
        "image indexes nested too deeply".into(),
    ))
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn read_docker_archive(
    file: &Path,
    reference: Option<&str>,
    platform: &str,
) -> Result<SourceImage, ConvertError> {
    let tmp = tempfile::tempdir().map_err(io(std::env::temp_dir()))?;
    let f = fs::File::open(file).map_err(io(file))?;
    tar::Archive::new(BufReader::new(f))
        .unpack(tmp.path())
        .map_err(|e| ConvertError::Image(format!("{}: {e}", file.display())))?;
    let mpath = tmp.path().join("manifest.json");
    let data = fs::read(&mpath)
        .map_err(|e| ConvertError::Image(format!("{}: no manifest.json ({e})", file.display())))?;
    let entries: Vec<ArchiveEntry> = serde_json::from_slice(&data)
        .map_err(|e| ConvertError::Image(format!("{}: manifest.json: {e}", file.display())))?;
    let entry = match reference {
        Some(r) => entries.iter().find(|e| {
            e.repo_tags
                .as_ref()
                .is_some_and(|t| t.iter().any(|x| x == r))
        }),
        None if entries.len() == 1 => entries.first(),
        None => {
            return Err(ConvertError::Image(format!(
                "{} holds several images: name one with docker-archive:FILE:REF",
                file.display()
            )));
        }
    }
    .ok_or_else(|| ConvertError::Image(format!("{}: no such image", file.display())))?;
    let inside = |name: &str| -> Result<PathBuf, ConvertError> {
        let rel = Path::new(name);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(ConvertError::Image(format!(
                "{}: bad path {name}",
                file.display()
            )));
        }
        Ok(tmp.path().join(rel))
    };
    let cpath = inside(&entry.config)?;
    let config = ImageConfiguration::from_file(&cpath)
        .map_err(|e| ConvertError::Image(format!("config {}: {e}", entry.config)))?;
    check_platform(&config, platform)?;
    let mut layers = Vec::new();
    for name in &entry.layers {
        let path = inside(name)?;
        let f = fs::File::open(&path).map_err(io(&path))?;
        let (digest, size) = HashReader::new(BufReader::new(f))
            .drain()
            .map_err(io(&path))?;
        let gz = is_gzip(&path)?;
        layers.push(Blob {
            media_type: if gz {
                MediaType::ImageLayerGzip
            } else {
                MediaType::ImageLayer
            },
            digest,
            size,
            path,
        });
    }
    Ok(SourceImage {
        config,
        layers,
        _hold: Some(tmp),
    })
}

/// A converted image ready to be written.
pub struct OutImage {
    /// The configuration JSON (canonical).
    pub config: Vec<u8>,
    /// The layers, base first.
    pub layers: Vec<Blob>,
    /// The manifest JSON (canonical).
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// The uncompressed digests of the layers, as in the config.
    pub diff_ids: Vec<String>,
}

fn put_blob(
    blobs: &Path,
    digest: &str,
    from: Option<&Path>,
    data: Option<&[u8]>,
) -> Result<(), ConvertError> {
    let hexpart = digest.trim_start_matches("sha256:");
    let dst = blobs.join(hexpart);
    if dst.exists() {
        return Ok(());
    }
    match (from, data) {
        (Some(src), _) => {
            if fs::hard_link(src, &dst).is_err() {
                fs::copy(src, &dst).map_err(io(&dst))?;
            }
        }
        (None, Some(d)) => fs::write(&dst, d).map_err(io(&dst))?,
        (None, None) => {}
    }
    Ok(())
}

fn write_oci_blobs(dir: &Path, img: &OutImage) -> Result<(), ConvertError> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    for l in &img.layers {
        put_blob(&blobs, &l.digest, Some(&l.path), None)?;
    }
    put_blob(&blobs, &digest_of(&img.config), None, Some(&img.config))?;
    put_blob(&blobs, &img.manifest_digest, None, Some(&img.manifest))?;
    Ok(())
}

fn manifest_descriptor(img: &OutImage, tag: Option<&str>) -> Result<Descriptor, ConvertError> {
    let digest: oci_spec::image::Digest = img
        .manifest_digest
        .parse()
        .map_err(|e| ConvertError::Image(format!("{e}")))?;
    let mut d = Descriptor::new(MediaType::ImageManifest, img.manifest.len() as u64, digest);
    if let Some(t) = tag {
        d.set_annotations(Some(
            [(REF_NAME.to_string(), t.to_string())]
                .into_iter()
                .collect(),
        ));
    }
    Ok(d)
}

/// Write `img` to `dst`. Nothing is left at `dst` when this fails, except blobs added to an
/// existing layout (which no index names).
pub fn write(
    dst: &ImageRef,
    img: &OutImage,
    tls: crate::registry::Tls,
) -> Result<(), ConvertError> {
    match dst {
        ImageRef::Oci { dir, tag } => write_oci(dir, tag.as_deref(), img),
        ImageRef::DockerArchive { file, reference } => {
            write_docker_archive(file, reference.as_deref(), img)
        }
        ImageRef::Registry { reference } => crate::registry::push(reference, tls, img),
    }
}

fn write_oci(dir: &Path, tag: Option<&str>, img: &OutImage) -> Result<(), ConvertError> {
    let desc = manifest_descriptor(img, tag)?;
    if dir.join("oci-layout").is_file() {
        write_oci_blobs(dir, img)?;
        let index_path = dir.join("index.json");
        let mut index = ImageIndex::from_file(&index_path)
            .map_err(|e| ConvertError::Image(format!("{}: {e}", index_path.display())))?;
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| {
                tag.is_none_or(|t| {
                    d.annotations()
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_none_or(|n| n != t)
                })
            })
            .cloned()
            .collect();
        manifests.push(desc);
        index.set_manifests(manifests);
        let tmp = dir.join("index.json.veil-tmp");
        fs::write(&tmp, canonical_json(&index)?).map_err(io(&tmp))?;
        return fs::rename(&tmp, &index_path).map_err(io(&index_path));
    }
    if dir.exists() && fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(ConvertError::Reference {
            flag: "--to",
            value: format!("oci:{}", dir.display()),
            why: "the directory exists, is not empty and is not an OCI image layout".into(),
        });
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stage = tempfile::Builder::new()
        .prefix(".veil-oci-")
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    fs::write(
        stage.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(io(stage.path()))?;
    write_oci_blobs(stage.path(), img)?;
    let index = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![desc])
        .build()
        .map_err(|e| ConvertError::Image(e.to_string()))?;
    let ipath = stage.path().join("index.json");
    fs::write(&ipath, canonical_json(&index)?).map_err(io(&ipath))?;
    if dir.exists() {
        fs::remove_dir(dir).map_err(io(dir))?;
    }
    let kept = stage.keep();
    fs::rename(&kept, dir).map_err(|e| {
        let _ = fs::remove_dir_all(&kept);
        ConvertError::Io {
            path: dir.to_path_buf(),
            source: e,
        }
    })
}

fn write_docker_archive(
    file: &Path,
    reference: Option<&str>,
    img: &OutImage,
) -> Result<(), ConvertError> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".veil-archive-")
        .tempfile_in(&parent)
        .map_err(io(&parent))?;
    {
        let mut b = tar::Builder::new(std::io::BufWriter::new(tmp.as_file_mut()));
        let config_name = format!(
            "{}.json",
            digest_of(&img.config).trim_start_matches("sha256:")
        );
        let mut names = Vec::new();
        let add = |b: &mut tar::Builder<_>, name: &str, size: u64, r: &mut dyn Read| {
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, r).map_err(io(file))
        };
        for (l, diff_id) in img.layers.iter().zip(&img.diff_ids) {
            let name = format!("{}.tar", diff_id.trim_start_matches("sha256:"));
            let (mut r, check) = open_layer(l)?;
            // The tar needs the size first: decompress into a temporary file.
            let mut t = tempfile::tempfile().map_err(io(std::env::temp_dir()))?;
            let size = std::io::copy(&mut r, &mut t).map_err(io(&l.path))?;
            check.finish(l).map_err(ConvertError::Image)?;
            std::io::Seek::rewind(&mut t).map_err(io(&l.path))?;
            add(&mut b, &name, size, &mut t)?;
            names.push(name);
        }
        add(
            &mut b,
            &config_name,
            img.config.len() as u64,
            &mut &img.config[..],
        )?;
        let manifest = vec![ArchiveEntry {
            config: config_name,
            repo_tags: reference.map(|r| vec![r.to_string()]),
            layers: names,
        }];
        let mj = serde_json::to_vec(&manifest).map_err(|e| ConvertError::Image(e.to_string()))?;
        add(&mut b, "manifest.json", mj.len() as u64, &mut &mj[..])?;
        let mut w = b.into_inner().map_err(io(file))?;
        w.flush().map_err(io(file))?;
    }
    tmp.persist(file).map_err(|e| ConvertError::Io {
        path: file.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
