//! Hardware evidence from inside a confidential VM through Linux configfs-tsm
//! (`/sys/kernel/config/tsm/report`, kernel ABI `Documentation/ABI/testing/configfs-tsm`): a TDX
//! quote (`tdx_guest`) or an SEV-SNP report (`sev_guest`) over the 64 bytes of report data the
//! CAS expects (decision 10).
//!
//! The sequence is the one the ABI prescribes: make a report directory, read `generation`, write
//! `inblob` (and `privlevel` for SNP when asked), read `outblob`, read `generation` again and
//! require exactly one increment per write — anything else means another process wrote the same
//! report directory in between, and the blob may be about other report data. The directory is
//! removed afterwards. `auxblob` (the SNP certificate table, when the host provides one) is
//! returned when present.
//!
//! **Not exercised on real hardware here**: there is no TDX or SNP machine in veil's CI. The
//! sequence is unit-tested against `FakeTsm` (in the tests), an in-memory model of the kernel's behaviour
//! (generation counting, concurrent writers, providers, missing attributes).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the kernel mounts the report interface.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm/report";

/// Errors of the configfs-tsm producer.
#[derive(Debug, thiserror::Error)]
pub enum TsmError {
    /// An attribute could not be created, read or written.
    #[error("configfs-tsm {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel's answer was not what the ABI says.
    #[error("configfs-tsm {path}: {detail}")]
    Protocol {
        /// The attribute.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// Someone else wrote the report directory while this request used it.
    #[error(
        "configfs-tsm {path}: generation went from {before} to {after} instead of {expected}: another writer used the report directory"
    )]
    Race {
        /// The report directory.
        path: String,
        /// `generation` before writing.
        before: u64,
        /// What one request should have made of it.
        expected: u64,
        /// `generation` after reading the blob.
        after: u64,
    },
}

/// The file operations the producer needs, so that it can run against the kernel's configfs
/// ([`RealTsm`]) or a model of it (in the tests).
pub trait TsmFs {
    /// `mkdir` of a report directory.
    fn create_dir(&self, path: &Path) -> std::io::Result<()>;
    /// Read an attribute.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// Write an attribute (one `write` of the whole value).
    fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()>;
    /// `rmdir` of a report directory.
    fn remove_dir(&self, path: &Path) -> std::io::Result<()>;
}

/// The kernel's configfs.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealTsm;

impl TsmFs for RealTsm {
    fn create_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        std::fs::write(path, data)
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_dir(path)
    }
}

/// What the TEE answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// `provider`: `tdx_guest`, `sev_guest`, …
    pub provider: String,
    /// `outblob`: the TDX quote or the SNP report.
    pub outblob: Vec<u8>,
    /// `auxblob`: the SNP certificate table, when the host supplies one.
    pub auxblob: Option<Vec<u8>>,
}

/// Options of one request.
#[derive(Debug, Clone, Default)]
pub struct TsmRequest {
    /// `privlevel` (SNP: the VMPL the report is requested for); `None` leaves the default.
    pub privlevel: Option<u32>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TsmError + '_ {
    move |source| TsmError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read_u64(fs: &dyn TsmFs, path: &Path) -> Result<u64, TsmError> {
    let raw = fs.read(path).map_err(io(path))?;
    let text = String::from_utf8_lossy(&raw);
    text.trim().parse().map_err(|_| TsmError::Protocol {
        path: path.display().to_string(),
        detail: format!("`{}` is not a number", text.trim()),
    })
}

/// Removes the report directory when the request ends, however it ends.
struct ReportDir<'a> {
    fs: &'a dyn TsmFs,
    path: PathBuf,
}

impl Drop for ReportDir<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.fs.remove_dir(&self.path) {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Ask the TEE under `root` (normally [`DEFAULT_ROOT`]) for evidence over `report_data`.
pub fn request(
    fs: &dyn TsmFs,
    root: &Path,
    report_data: &[u8; 64],
    opts: &TsmRequest,
) -> Result<TsmReport, TsmError> {
    let name = format!(
        "veil-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let dir = root.join(name);
    fs.create_dir(&dir).map_err(io(&dir))?;
    let dir = ReportDir { fs, path: dir };
    let attr = |n: &str| dir.path.join(n);

    let generation = attr("generation");
    let before = read_u64(fs, &generation)?;
    let mut writes = 0;
    if let Some(level) = opts.privlevel {
        let p = attr("privlevel");
        fs.write(&p, level.to_string().as_bytes()).map_err(io(&p))?;
        writes += 1;
    }
    let inblob = attr("inblob");
    fs.write(&inblob, report_data).map_err(io(&inblob))?;
    writes += 1;
    let outblob_path = attr("outblob");
    let outblob = fs.read(&outblob_path).map_err(io(&outblob_path))?;
    let after = read_u64(fs, &generation)?;
    let expected = before + writes;
    if after != expected {
        return Err(TsmError::Race {
            path: dir.path.display().to_string(),
            before,
            expected,
            after,
        });
    }
    if outblob.is_empty() {
        return Err(TsmError::Protocol {
            path: outblob_path.display().to_string(),
            detail: "the TEE returned no evidence".into(),
        });
    }
    let provider_path = attr("provider");
    let provider = String::from_utf8_lossy(&fs.read(&provider_path).map_err(io(&provider_path))?)
        .trim()
        .to_string();
    let aux_path = attr("auxblob");
    let auxblob = match fs.read(&aux_path) {
        Ok(b) if b.is_empty() => None,
        Ok(b) => Some(b),
        // Providers without an auxiliary blob do not have the attribute, or refuse reading it.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::Unsupported
            ) || e.raw_os_error() == Some(95) =>
        {
            None
        }
        Err(e) => return Err(io(&aux_path)(e)),
    };
    Ok(TsmReport {
        provider,
        outblob,
        auxblob,
    })
}

#[cfg(test)]
mod fake {
    use super::TsmFs;
    use std::path::{Path, PathBuf};

    /// An in-memory model of the kernel's configfs-tsm, for tests of everything that requests
    /// evidence: report directories appear on `mkdir` with `generation` 0, every write of `inblob` or
    /// an option increments it, `outblob` is `provider ‖ ":" ‖ inblob` (so a test sees which report
    /// data the blob is about), and [`FakeTsm::interfere`] makes another writer bump `generation`
    /// between the request's write and read.
    #[derive(Debug, Default)]
    pub struct FakeTsm {
        state: std::sync::Mutex<FakeState>,
    }

    #[derive(Debug, Default)]
    struct FakeState {
        provider: String,
        aux: Option<Vec<u8>>,
        interfere: bool,
        dirs: std::collections::BTreeMap<PathBuf, FakeDir>,
        removed: Vec<PathBuf>,
    }

    #[derive(Debug, Default)]
    struct FakeDir {
        generation: u64,
        inblob: Vec<u8>,
        privlevel: Option<u32>,
    }

    impl FakeTsm {
        /// A TEE of `provider` (`tdx_guest`, `sev_guest`), with `aux` as its auxiliary blob.
        pub fn new(provider: &str, aux: Option<Vec<u8>>) -> Self {
            Self {
                state: std::sync::Mutex::new(FakeState {
                    provider: provider.into(),
                    aux,
                    ..FakeState::default()
                }),
            }
        }

        /// From now on, another writer writes `inblob` right after every request's write.
        pub fn interfere(&self) {
            if let Ok(mut s) = self.state.lock() {
                s.interfere = true;
            }
        }

        /// Report directories that still exist (a request must leave none).
        pub fn open_dirs(&self) -> usize {
            self.state.lock().map_or(usize::MAX, |s| s.dirs.len())
        }

        /// How many report directories requests have removed.
        pub fn removed_count(&self) -> usize {
            self.state.lock().map_or(0, |s| s.removed.len())
        }

        fn split(path: &Path) -> std::io::Result<(PathBuf, String)> {
            match (path.parent(), path.file_name()) {
                (Some(d), Some(n)) => Ok((d.to_path_buf(), n.to_string_lossy().into_owned())),
                _ => Err(std::io::ErrorKind::NotFound.into()),
            }
        }

        fn lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, FakeState>> {
            self.state
                .lock()
                .map_err(|_| std::io::Error::other("fake configfs poisoned"))
        }
    }

    impl TsmFs for FakeTsm {
        fn create_dir(&self, path: &Path) -> std::io::Result<()> {
            let mut s = self.lock()?;
            if s.dirs.contains_key(path) {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            s.dirs.insert(path.to_path_buf(), FakeDir::default());
            Ok(())
        }

        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            let (dir, name) = Self::split(path)?;
            let s = self.lock()?;
            let d = s.dirs.get(&dir).ok_or(std::io::ErrorKind::NotFound)?;
            match name.as_str() {
                "generation" => Ok(format!("{}\n", d.generation).into_bytes()),
                "provider" => Ok(format!("{}\n", s.provider).into_bytes()),
                "outblob" => {
                    let mut v = s.provider.as_bytes().to_vec();
                    v.push(b':');
                    if let Some(l) = d.privlevel {
                        v.extend_from_slice(format!("vmpl{l}:").as_bytes());
                    }
                    v.extend_from_slice(&d.inblob);
                    Ok(v)
                }
                "auxblob" => match &s.aux {
                    Some(a) => Ok(a.clone()),
                    None => Err(std::io::Error::from_raw_os_error(95)),
                },
                _ => Err(std::io::ErrorKind::NotFound.into()),
            }
        }

        fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
            let (dir, name) = Self::split(path)?;
            let mut s = self.lock()?;
            let interfere = s.interfere;
            let d = s.dirs.get_mut(&dir).ok_or(std::io::ErrorKind::NotFound)?;
            match name.as_str() {
                "inblob" if data.len() <= 64 => {
                    d.inblob = data.to_vec();
                    d.generation += 1;
                    if interfere {
                        d.inblob = vec![0xee; 64];
                        d.generation += 1;
                    }
                    Ok(())
                }
                "privlevel" => {
                    let l = std::str::from_utf8(data)
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                        .filter(|l| *l <= 3)
                        .ok_or(std::io::ErrorKind::InvalidInput)?;
                    d.privlevel = Some(l);
                    d.generation += 1;
                    Ok(())
                }
                "inblob" => Err(std::io::ErrorKind::InvalidInput.into()),
                _ => Err(std::io::ErrorKind::PermissionDenied.into()),
            }
        }

        fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
            let mut s = self.lock()?;
            s.dirs.remove(path).ok_or(std::io::ErrorKind::NotFound)?;
            s.removed.push(path.to_path_buf());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTsm;
    use super::*;

    fn rd(b: u8) -> [u8; 64] {
        [b; 64]
    }

    #[test]
    fn a_tdx_guest_answers_a_quote_about_the_report_data() {
        let fs = FakeTsm::new("tdx_guest", None);
        let root = Path::new("/sys/kernel/config/tsm/report");
        let r = request(&fs, root, &rd(7), &TsmRequest::default()).unwrap();
        assert_eq!(r.provider, "tdx_guest");
        let mut want = b"tdx_guest:".to_vec();
        want.extend_from_slice(&rd(7));
        assert_eq!(r.outblob, want);
        assert_eq!(r.auxblob, None);
        // The report directory is gone again; a second request uses a new one.
        assert_eq!(fs.open_dirs(), 0);
        request(&fs, root, &rd(8), &TsmRequest::default()).unwrap();
        assert_eq!((fs.open_dirs(), fs.removed_count()), (0, 2));
    }

    #[test]
    fn an_snp_guest_takes_a_privilege_level_and_returns_its_certificates() {
        let fs = FakeTsm::new("sev_guest", Some(b"cert table".to_vec()));
        let root = Path::new("/tsm");
        let r = request(&fs, root, &rd(1), &TsmRequest { privlevel: Some(2) }).unwrap();
        assert!(r.outblob.starts_with(b"sev_guest:vmpl2:"));
        assert_eq!(r.auxblob.as_deref(), Some(&b"cert table"[..]));
        // An out-of-range level is the kernel's EINVAL, named with its attribute.
        let e = request(&fs, root, &rd(1), &TsmRequest { privlevel: Some(9) }).unwrap_err();
        assert!(e.to_string().contains("privlevel"), "{e}");
        assert_eq!(fs.open_dirs(), 0);
    }

    #[test]
    fn another_writer_in_between_is_refused_not_returned() {
        let fs = FakeTsm::new("tdx_guest", None);
        fs.interfere();
        let e = request(&fs, Path::new("/tsm"), &rd(3), &TsmRequest::default()).unwrap_err();
        assert!(
            matches!(
                e,
                TsmError::Race {
                    before: 0,
                    expected: 1,
                    after: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("another writer"));
        assert_eq!(fs.open_dirs(), 0);
    }

    #[test]
    fn no_tsm_interface_is_a_clear_error() {
        // A real, empty directory: no configfs-tsm here (as on every machine of this CI).
        let d = tempfile::tempdir().unwrap();
        let e = request(&RealTsm, d.path(), &rd(0), &TsmRequest::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("generation"), "{msg}");
        // What it created, it removed.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let e = request(
            &RealTsm,
            Path::new("/nonexistent/tsm/report"),
            &rd(0),
            &TsmRequest::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("configfs-tsm /nonexistent/tsm/report/veil-")
        );
    }
}
