//! Image references: `oci:DIR[:TAG]`, `docker-archive:FILE[:REF]`, `docker://HOST[:PORT]/REPO:TAG`.

use std::path::PathBuf;

use crate::error::ConvertError;

/// Where an image is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory and the tag (`org.opencontainers.image.ref.name`).
    Oci {
        /// The layout directory.
        dir: PathBuf,
        /// The tag, if given.
        tag: Option<String>,
    },
    /// A `docker save` / `podman save` archive.
    DockerArchive {
        /// The archive file.
        file: PathBuf,
        /// The image reference recorded in (or written to) the archive, if given.
        reference: Option<String>,
    },
    /// An image in a registry.
    Registry {
        /// `host[:port]/repo:tag` or `…@sha256:…`.
        reference: String,
    },
}

impl ImageRef {
    /// Parse `value` given to `flag` (`--from` or `--to`).
    pub fn parse(flag: &'static str, value: &str) -> Result<Self, ConvertError> {
        let bad = |why: &str| ConvertError::Reference {
            flag,
            value: value.to_string(),
            why: why.to_string(),
        };
        if let Some(rest) = value.strip_prefix("oci:") {
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') => (d, Some(t.to_string())),
                _ => (rest, None),
            };
            if dir.is_empty() {
                return Err(bad("oci: needs a directory (oci:DIR[:TAG])"));
            }
            if tag.as_deref() == Some("") {
                return Err(bad("empty tag"));
            }
            return Ok(Self::Oci {
                dir: PathBuf::from(dir),
                tag,
            });
        }
        if let Some(rest) = value.strip_prefix("docker-archive:") {
            let (file, reference) = match rest.split_once(':') {
                Some((f, r)) if !r.is_empty() => (f, Some(r.to_string())),
                _ => (rest, None),
            };
            if file.is_empty() {
                return Err(bad("docker-archive: needs a file (docker-archive:FILE)"));
            }
            return Ok(Self::DockerArchive {
                file: PathBuf::from(file),
                reference,
            });
        }
        if let Some(rest) = value.strip_prefix("docker://") {
            if rest.is_empty() || !rest.contains('/') {
                return Err(bad("docker:// needs HOST[:PORT]/REPO:TAG"));
            }
            return Ok(Self::Registry {
                reference: rest.to_string(),
            });
        }
        Err(bad(
            "unknown transport: use oci:DIR[:TAG], docker-archive:FILE or docker://HOST[:PORT]/REPO:TAG",
        ))
    }

    /// The repository the Helm chart names (tag and digest removed): `host[:port]/repo` for a
    /// registry, else the image's name (to be overridden with `--set image.repository=…`).
    pub fn repository(&self) -> String {
        match self {
            Self::Registry { reference } => {
                let no_digest = reference.split('@').next().unwrap_or(reference);
                match no_digest.rsplit_once(':') {
                    Some((r, tag)) if !tag.contains('/') => r.to_string(),
                    _ => no_digest.to_string(),
                }
            }
            Self::DockerArchive {
                reference: Some(r), ..
            } => match r.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
                _ => r.clone(),
            },
            Self::Oci { dir, .. } => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into()),
            Self::DockerArchive { file, .. } => file
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into()),
        }
    }

    /// The name a session gets when `--name` is not given: the destination's last path part and
    /// tag, with characters a session name does not take replaced by `-`.
    pub fn default_session_name(&self) -> String {
        let raw = match self {
            Self::Oci { dir, tag } => {
                let base = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "image".into());
                match tag {
                    Some(t) => format!("{base}-{t}"),
                    None => base,
                }
            }
            Self::DockerArchive { file, reference } => match reference {
                Some(r) => r.rsplit('/').next().unwrap_or(r).to_string(),
                None => file
                    .file_stem()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "image".into()),
            },
            Self::Registry { reference } => reference
                .rsplit('/')
                .next()
                .unwrap_or(reference)
                .to_string(),
        };
        let cleaned: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let cleaned = cleaned.trim_matches('-').to_string();
        if cleaned.is_empty() {
            "image".into()
        } else {
            cleaned
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_transport() {
        assert_eq!(
            ImageRef::parse("--from", "oci:/tmp/x:v1").unwrap(),
            ImageRef::Oci {
                dir: "/tmp/x".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("--from", "oci:rel/dir").unwrap(),
            ImageRef::Oci {
                dir: "rel/dir".into(),
                tag: None
            }
        );
        assert_eq!(
            ImageRef::parse("--to", "docker-archive:/tmp/a.tar").unwrap(),
            ImageRef::DockerArchive {
                file: "/tmp/a.tar".into(),
                reference: None
            }
        );
        assert_eq!(
            ImageRef::parse("--to", "docker://127.0.0.1:5000/app:v2").unwrap(),
            ImageRef::Registry {
                reference: "127.0.0.1:5000/app:v2".into()
            }
        );
        let e = ImageRef::parse("--from", "busybox:latest").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--from busybox:latest: unknown transport")
        );
        assert!(ImageRef::parse("--from", "oci:").is_err());
    }

    #[test]
    fn default_session_names() {
        let r = ImageRef::parse("--to", "oci:/tmp/out/counter:v1.2").unwrap();
        assert_eq!(r.default_session_name(), "counter-v1-2");
        let r = ImageRef::parse("--to", "docker://h:5000/org/app:v2").unwrap();
        assert_eq!(r.default_session_name(), "app-v2");
        assert_eq!(r.repository(), "h:5000/org/app");
    }
}
