//! The measured program: resolved, opened once, hashed through the open descriptor, and later
//! executed from that same descriptor (decision 3), so what is measured is what runs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use veil_attest::{Digest32, Measurement, Target, measurement};

use crate::error::{LauncherError, err};

/// A program file opened for measurement and execution.
#[derive(Debug)]
pub struct MeasuredProgram {
    /// The path it was opened from.
    pub path: PathBuf,
    /// The open file (executed with `execveat(fd, "", …, AT_EMPTY_PATH)`).
    pub file: File,
    /// SHA-256 of its content, read through `file`.
    pub hash: Digest32,
    /// Whether it starts with `#!` (then the descriptor must survive exec for the interpreter).
    pub is_script: bool,
}

/// Find `prog` like a shell: a name with a `/` is used as is, otherwise `PATH` is searched.
pub fn resolve(prog: &str, path_var: Option<&str>) -> Result<PathBuf, LauncherError> {
    if prog.is_empty() {
        return Err(LauncherError::new(
            "No program given (use `veil run -- PROGRAM [ARGS]`)",
        ));
    }
    if prog.contains('/') {
        return Ok(PathBuf::from(prog));
    }
    let search = path_var.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(prog);
        if let Ok(md) = std::fs::metadata(&cand)
            && md.is_file()
            && md.permissions().mode() & 0o111 != 0
        {
            return Ok(cand);
        }
    }
    Err(LauncherError::new(format!(
        "Program `{prog}` not found in PATH"
    )))
}

impl MeasuredProgram {
    /// Open `path` and hash it through the open descriptor.
    pub fn open(path: &Path) -> Result<Self, LauncherError> {
        let shown = path.display().to_string();
        let mut file =
            File::open(path).map_err(|e| err(format!("Cannot open the program {shown}"), e))?;
        let md = file
            .metadata()
            .map_err(|e| err(format!("Cannot stat the program {shown}"), e))?;
        if !md.is_file() {
            return Err(LauncherError::new(format!(
                "The program {shown} is not a regular file"
            )));
        }
        let hash = Digest32::of_reader(&mut file)
            .map_err(|e| err(format!("Cannot read the program {shown}"), e))?;
        let mut head = [0u8; 2];
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read(&mut head))
            .map_err(|e| err(format!("Cannot read the program {shown}"), e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            hash,
            is_script: &head == b"#!",
        })
    }
}

/// SHA-256 of the running launcher (`/proc/self/exe`).
pub fn launcher_hash() -> Result<Digest32, LauncherError> {
    let f = File::open("/proc/self/exe")
        .map_err(|e| err("Cannot open the launcher executable /proc/self/exe", e))?;
    Digest32::of_reader(f).map_err(|e| err("Cannot read the launcher executable", e))
}

/// The measurement of this launcher running `target`.
pub fn own_measurement(target: &Target) -> Result<Measurement, LauncherError> {
    Ok(measurement(&launcher_hash()?, target))
}

/// Offline measurement (`veil measure`): `launcher` running `program`, or envcas when `None`.
pub fn offline_measurement(
    launcher: &Path,
    program: Option<&Path>,
) -> Result<Measurement, LauncherError> {
    let lh = veil_attest::measure::hash_file(launcher).map_err(|e| {
        err(
            format!("Cannot read the launcher {}", launcher.display()),
            e,
        )
    })?;
    let target = match program {
        Some(p) => Target::Program {
            hash: veil_attest::measure::hash_file(p)
                .map_err(|e| err(format!("Cannot read the program {}", p.display()), e))?,
        },
        None => Target::Envcas,
    };
    Ok(measurement(&lh, &target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_searches_path() -> Result<(), LauncherError> {
        assert_eq!(resolve("./x", None)?, PathBuf::from("./x"));
        let sh = resolve("sh", Some("/nonexistent:/bin:/usr/bin"))?;
        assert!(sh.ends_with("sh"));
        assert!(resolve("no-such-program-veil", Some("/bin")).is_err());
        assert!(resolve("", None).is_err());
        Ok(())
    }

    #[test]
    fn open_hashes_and_detects_scripts() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("s");
        std::fs::write(&p, b"#!/bin/sh\necho hi\n")?;
        let m = MeasuredProgram::open(&p)?;
        assert_eq!(m.hash, Digest32::of(b"#!/bin/sh\necho hi\n"));
        assert!(m.is_script);
        assert!(MeasuredProgram::open(dir.path()).is_err());
        assert!(MeasuredProgram::open(&dir.path().join("missing")).is_err());
        let l = dir.path().join("l");
        std::fs::write(&l, b"launcher")?;
        let m1 = offline_measurement(&l, Some(&p))?;
        std::fs::write(&l, b"launcher2")?;
        assert_ne!(offline_measurement(&l, Some(&p))?, m1);
        assert_ne!(
            offline_measurement(&l, None)?,
            offline_measurement(&l, Some(&p))?
        );
        Ok(())
    }
}
