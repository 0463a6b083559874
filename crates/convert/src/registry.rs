//! Registries (`docker://HOST[:PORT]/REPO:TAG`) through `oci-client`: a pull lands in a
//! temporary OCI layout (then read like `oci:`, digests verified again), a push sends every blob
//! the registry lacks and the manifest last, so a failed push leaves no image behind.
//! Credentials come from `REGISTRY_AUTH_FILE` or `~/.docker/config.json` (`auths.HOST.auth`,
//! base64 of `user:password`), else the access is anonymous.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::{ConvertError, io};
use crate::image::{OutImage, REF_NAME, SourceImage, canonical_json};

/// How to reach a registry.
#[derive(Debug, Clone, Copy)]
pub struct Tls {
    /// `false`: plain HTTP and no certificate checks (`--src-tls-verify=false`, a local registry).
    pub verify: bool,
}

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn bad(flag: &'static str, reference: &str, why: impl std::fmt::Display) -> ConvertError {
    // One line: the client's errors can span several.
    let why = why.to_string();
    let why = why.lines().next().unwrap_or_default().to_string();
    ConvertError::Reference {
        flag,
        value: format!("docker://{reference}"),
        why,
    }
}

fn client(tls: Tls) -> Client {
    Client::new(ClientConfig {
        protocol: if tls.verify {
            ClientProtocol::Https
        } else {
            ClientProtocol::Http
        },
        accept_invalid_certificates: !tls.verify,
        ..Default::default()
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, ConvertError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("tokio runtime"))
}

/// The credentials for `registry` from the auth file, if any.
pub fn auth_for(registry: &str) -> Result<RegistryAuth, ConvertError> {
    let path = match std::env::var_os("REGISTRY_AUTH_FILE") {
        Some(p) => PathBuf::from(p),
        None => match std::env::var_os("HOME") {
            Some(h) => Path::new(&h).join(".docker/config.json"),
            None => return Ok(RegistryAuth::Anonymous),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(ConvertError::Io { path, source: e }),
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ConvertError::Flag {
        flag: format!("credentials {}", path.display()),
        why: e.to_string(),
    })?;
    let Some(entry) = v["auths"][registry]["auth"].as_str() else {
        return Ok(RegistryAuth::Anonymous);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        })
        .ok_or_else(|| ConvertError::Flag {
            flag: format!("credentials {}", path.display()),
            why: format!("auths.{registry}.auth is not base64 of user:password"),
        })?;
    Ok(RegistryAuth::Basic(decoded.0, decoded.1))
}

/// Pull `reference` into a temporary OCI layout and read it.
pub fn pull(reference: &str, tls: Tls, platform: &str) -> Result<SourceImage, ConvertError> {
    let r = Reference::from_str(reference).map_err(|e| bad("--from", reference, e))?;
    let auth = auth_for(r.resolve_registry())?;
    let tmp = tempfile::tempdir().map_err(io(std::env::temp_dir()))?;
    let blobs = tmp.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
    let c = client(tls);
    let rt = runtime()?;
    let put = |digest: &str, data: &[u8]| -> Result<(), ConvertError> {
        let p = blobs.join(digest.trim_start_matches("sha256:"));
        std::fs::write(&p, data).map_err(io(&p))
    };
    let manifest_digest = rt.block_on(async {
        let (raw, digest) = c
            .pull_manifest_raw(&r, &auth, MANIFEST_TYPES)
            .await
            .map_err(|e| bad("--from", reference, e))?;
        put(&digest, &raw)?;
        let v: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| bad("--from", reference, format!("manifest: {e}")))?;
        let (raw, digest) = if v["manifests"].is_array() {
            // An index: the platform's manifest.
            let (os, arch) = platform.split_once('/').unwrap_or((platform, ""));
            let pick = v["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["platform"]["os"] == os && m["platform"]["architecture"] == arch)
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| {
                    ConvertError::Image(format!(
                        "the image index has no image for platform {platform}"
                    ))
                })?
                .to_string();
            let by_digest =
                Reference::with_digest(r.registry().to_string(), r.repository().to_string(), pick);
            let (raw, digest) = c
                .pull_manifest_raw(&by_digest, &auth, MANIFEST_TYPES)
                .await
                .map_err(|e| bad("--from", reference, e))?;
            put(&digest, &raw)?;
            (raw, digest)
        } else {
            (raw, digest)
        };
        let m: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| bad("--from", reference, format!("manifest: {e}")))?;
        let mut descs = vec![m["config"].clone()];
        descs.extend(m["layers"].as_array().into_iter().flatten().cloned());
        for d in descs {
            let digest_s = d["digest"].as_str().unwrap_or_default().to_string();
            let hexpart = digest_s
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| ConvertError::Image(format!("unsupported digest {digest_s}")))?;
            let path = blobs.join(hexpart);
            let file = tokio::fs::File::create(&path).await.map_err(io(&path))?;
            let desc = oci_client::manifest::OciDescriptor {
                media_type: d["mediaType"].as_str().unwrap_or_default().to_string(),
                digest: digest_s.clone(),
                size: d["size"].as_i64().unwrap_or_default(),
                ..Default::default()
            };
            c.pull_blob(&r, &desc, file)
                .await
                .map_err(|e| bad("--from", reference, format!("blob {digest_s}: {e}")))?;
        }
        Ok::<_, ConvertError>((digest, raw.len()))
    })?;
    let (digest, size) = manifest_digest;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {REF_NAME: "src"},
        }],
    });
    let ip = tmp.path().join("index.json");
    std::fs::write(&ip, canonical_json(&index)?).map_err(io(&ip))?;
    let mut img = crate::image::read_oci(tmp.path(), Some("src"), platform)?;
    img.hold(tmp);
    Ok(img)
}

/// Push `img` to `reference`: blobs first, the manifest last.
pub fn push(reference: &str, tls: Tls, img: &OutImage) -> Result<(), ConvertError> {
    let r = Reference::from_str(reference).map_err(|e| bad("--to", reference, e))?;
    let auth = auth_for(r.resolve_registry())?;
    let c = client(tls);
    let rt = runtime()?;
    rt.block_on(async {
        c.auth(&r, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| bad("--to", reference, e))?;
        let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
        for l in &img.layers {
            if c.blob_exists(&r, &l.digest).await.unwrap_or(false) {
                continue;
            }
            let data = std::fs::read(&l.path).map_err(io(&l.path))?;
            blobs.push((l.digest.clone(), data));
        }
        blobs.push((crate::hashio::digest_of(&img.config), img.config.clone()));
        for (digest, data) in blobs {
            c.push_blob(&r, data, &digest)
                .await
                .map_err(|e| bad("--to", reference, format!("blob {digest}: {e}")))?;
        }
        let ct = http_header("application/vnd.oci.image.manifest.v1+json");
        c.push_manifest_raw(&r, img.manifest.clone(), ct)
            .await
            .map_err(|e| bad("--to", reference, format!("manifest: {e}")))?;
        Ok(())
    })
}

fn http_header(v: &'static str) -> http::HeaderValue {
    http::HeaderValue::from_static(v)
}
