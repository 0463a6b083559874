//! The measured program (decision 3 as amended): what is measured is what runs.
//!
//! * **Private copy** ([`MeasuredProgram::open_private`], when the launcher can mount): before
//!   attestation the launcher enters its private mount namespace, copies the program into a
//!   staging tmpfs of its private root and hashes the bytes as it copies them (one read). Before
//!   the program starts, the copy is bind-mounted read-only over the program's canonical path
//!   ([`MeasuredProgram::expose`]) and that path is executed, so `/proc/self/exe`, `$ORIGIN`
//!   rpaths, `#!` interpreters and `sys.path[0]` see the original path while a file rewritten
//!   after the hash cannot change what runs.
//! * **Descriptor** ([`MeasuredProgram::open`], when it cannot mount, and for `SCONE_HASH=1`):
//!   the file is opened once, hashed through the descriptor and executed from that same
//!   descriptor (`execveat(fd, "", …, AT_EMPTY_PATH)`).
//! * **What it loads** (decision 23): a converted image's `/etc/veil/program` lists, after the
//!   program, the files the program loads at start (its ELF interpreter, `/etc/ld.so.cache`, its
//!   `DT_NEEDED` closure). Each is hashed like the program (copied and later bind-mounted over
//!   its canonical path, or kept open when the launcher cannot mount), and the target becomes
//!   [`Target::Image`] (measurement v2). A missing or non-regular listed file, and an
//!   `/etc/ld.so.preload` the list does not name, are refused.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use veil_attest::{Digest32, Measurement, Target, measurement};

use crate::error::{LauncherError, err};
use crate::exec::ExecTarget;
use crate::exec::namespace::{self, MountPoint, Undo};

/// A program file opened for measurement and execution.
#[derive(Debug)]
pub struct MeasuredProgram {
    /// The path it was opened from (canonical for a private copy).
    pub path: PathBuf,
    /// The open file: the private copy, or the original (executed with `execveat(fd, "", …,
    /// AT_EMPTY_PATH)`).
    pub file: File,
    /// SHA-256 of its content, read through `file` (or while copying it).
    pub hash: Digest32,
    /// Whether it starts with `#!` (then the descriptor must survive exec for the interpreter).
    pub is_script: bool,
    /// The files it loads at start (decision 23), in list order; empty outside converted images.
    pub loaded: Vec<LoadedFile>,
    /// The list of loaded files as measured ([`veil_attest::measure::loaded_list`]).
    pub loaded_list: Vec<u8>,
    /// The private copy: its staging tmpfs, until [`MeasuredProgram::expose`] bind-mounts it.
    private: Option<RefCell<PrivateCopy>>,
}

/// One file the program loads at start, measured (decision 23).
#[derive(Debug)]
pub struct LoadedFile {
    /// The path as listed.
    pub listed: String,
    /// Its canonical path (where the copy is bind-mounted).
    pub path: PathBuf,
    /// SHA-256 of its content.
    pub hash: Digest32,
    /// The private copy on the staging tmpfs, or the open original (descriptor mode).
    held: Held,
}

#[derive(Debug)]
enum Held {
    Copy(PathBuf),
    Open(#[allow(dead_code)] File),
}

#[derive(Debug)]
struct PrivateCopy {
    /// The copy on the staging tmpfs.
    copy: PathBuf,
    /// The staging tmpfs (released once the copy is bind-mounted).
    staging: PathBuf,
    undo: Undo,
}

/// What `/etc/veil/program` names: the program (line 1) and what it loads (the other lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramFile {
    /// The measured program (absolute path).
    pub program: String,
    /// The files it loads at start, in the order the converter listed them.
    pub loaded: Vec<String>,
}

impl ProgramFile {
    /// Parse the file's text: one absolute path per line, empty lines ignored at the end only.
    pub fn parse(text: &str, origin: &str) -> Result<Self, LauncherError> {
        let mut lines: Vec<&str> = text.lines().collect();
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        let Some((first, rest)) = lines.split_first() else {
            return Err(LauncherError::new(format!("{origin} names no program")));
        };
        let mut seen = std::collections::HashSet::new();
        for (i, l) in lines.iter().enumerate() {
            let at = |what: &str| LauncherError::new(format!("{origin}:{}: `{l}` {what}", i + 1));
            if !l.starts_with('/') || l.trim() != *l {
                return Err(at("is not an absolute path"));
            }
            if l.split('/').any(|c| c == "." || c == "..") {
                return Err(at("has a `.` or `..` component"));
            }
            if !seen.insert(*l) {
                return Err(at("is listed twice"));
            }
        }
        if rest.len() > veil_attest::measure::MAX_LOADED_FILES {
            return Err(LauncherError::new(format!(
                "{origin} lists {} loaded files (at most {})",
                rest.len(),
                veil_attest::measure::MAX_LOADED_FILES
            )));
        }
        Ok(Self {
            program: (*first).to_string(),
            loaded: rest.iter().map(|l| (*l).to_string()).collect(),
        })
    }
}

/// Refuse an `/etc/ld.so.preload` that the measured list does not name: the loader would map
/// the libraries it names into the program unmeasured.
pub fn check_preload(loaded: &[String], preload: &Path) -> Result<(), LauncherError> {
    match std::fs::symlink_metadata(preload) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(format!("Cannot check {}", preload.display()), e)),
        Ok(_) if loaded.iter().any(|l| Path::new(l) == preload) => Ok(()),
        Ok(_) => Err(LauncherError::new(format!(
            "{} exists but is not among the measured files of /etc/veil/program: the loader would load unmeasured code into the program",
            preload.display()
        ))),
    }
}

fn open_regular(path: &Path, what: &str) -> Result<(File, std::fs::Metadata), LauncherError> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| err(format!("Cannot open {what} {shown}"), e))?;
    let md = file
        .metadata()
        .map_err(|e| err(format!("Cannot stat {what} {shown}"), e))?;
    if !md.is_file() {
        return Err(LauncherError::new(format!(
            "{what} {shown} is not a regular file"
        )));
    }
    Ok((file, md))
}

/// The program's copy bind-mounted over its path: a drop guard that unmounts it.
#[derive(Debug, Default)]
pub struct ExposedProgram {
    undo: Undo,
}

/// Copies everything read through it into `copy`.
struct Tee<'a> {
    from: &'a mut File,
    copy: &'a mut File,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.from.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
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
    /// Open `path` and hash it through the open descriptor; open, hash and keep open each of
    /// `loaded`.
    pub fn open(path: &Path, loaded: &[String]) -> Result<Self, LauncherError> {
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
        let mut files = Vec::with_capacity(loaded.len());
        for l in loaded {
            let (mut f, _) = open_regular(Path::new(l), "the loaded file")?;
            let hash = Digest32::of_reader(&mut f)
                .map_err(|e| err(format!("Cannot read the loaded file {l}"), e))?;
            files.push(LoadedFile {
                listed: l.clone(),
                path: PathBuf::from(l),
                hash,
                held: Held::Open(f),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            hash,
            is_script: &head == b"#!",
            loaded_list: veil_attest::measure::loaded_list(loaded),
            loaded: files,
            private: None,
        })
    }

    /// What the launcher attests to running: the program, with what it loads when listed.
    pub fn target(&self) -> Target {
        if self.loaded.is_empty() {
            Target::Program { hash: self.hash }
        } else {
            Target::Image {
                program: self.hash,
                list: Digest32::of(&self.loaded_list),
                files: self.loaded.iter().map(|f| f.hash).collect(),
            }
        }
    }

    /// Measure `path` as a private copy when the launcher can mount (see the module
    /// documentation): enters the private mount namespace (before attestation: the copy must
    /// be hashed before it), copies and hashes in one read. When the namespace cannot be
    /// entered, falls back to [`MeasuredProgram::open`].
    pub fn open_private(path: &Path, loaded: &[String]) -> Result<Self, LauncherError> {
        let shown = path.display().to_string();
        // Resolved before the namespace changes the root: relative paths and symlinks.
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| err(format!("Cannot open the program {shown}"), e))?;
        if let Err(e) = namespace::enter_private_mount_namespace() {
            tracing::debug!("no private copy of the program (cannot mount): {e}");
            return Self::open(path, loaded);
        }
        let outer = format!("Cannot copy the program {shown} into the launcher's tmpfs");
        let mut undo = Undo::default();
        let staging =
            namespace::staging_tmpfs("program", &mut undo).map_err(|e| e.context(outer.clone()))?;
        let mut from = File::open(&canonical)
            .map_err(|e| err(format!("Cannot open the program {shown}"), e))?;
        let md = from
            .metadata()
            .map_err(|e| err(format!("Cannot stat the program {shown}"), e))?;
        if !md.is_file() {
            return Err(LauncherError::new(format!(
                "The program {shown} is not a regular file"
            )));
        }
        let copy = staging.join("program");
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&copy)
            .map_err(|e| err(outer.clone(), e))?;
        let hash = Digest32::of_reader(Tee {
            from: &mut from,
            copy: &mut to,
        })
        .map_err(|e| err(format!("Cannot read the program {shown}"), e))?;
        to.set_permissions(std::fs::Permissions::from_mode(
            md.permissions().mode() & 0o755,
        ))
        .map_err(|e| err(outer.clone(), e))?;
        // Closed for writing before it is ever executed (ETXTBSY otherwise).
        drop(to);
        let mut file = File::open(&copy).map_err(|e| err(outer, e))?;
        let mut head = [0u8; 2];
        file.read(&mut head)
            .map_err(|e| err(format!("Cannot read the program {shown}"), e))?;
        let mut files = Vec::with_capacity(loaded.len());
        for (i, l) in loaded.iter().enumerate() {
            let outer = format!("Cannot copy the loaded file {l} into the launcher's tmpfs");
            let canonical = std::fs::canonicalize(l)
                .map_err(|e| err(format!("Cannot open the loaded file {l}"), e))?;
            let (mut from, md) = open_regular(&canonical, "the loaded file")?;
            let copy = staging.join(format!("loaded-{i}"));
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&copy)
                .map_err(|e| err(outer.clone(), e))?;
            let hash = Digest32::of_reader(Tee {
                from: &mut from,
                copy: &mut to,
            })
            .map_err(|e| err(format!("Cannot read the loaded file {l}"), e))?;
            to.set_permissions(std::fs::Permissions::from_mode(
                md.permissions().mode() & 0o755,
            ))
            .map_err(|e| err(outer, e))?;
            files.push(LoadedFile {
                listed: l.clone(),
                path: canonical,
                hash,
                held: Held::Copy(copy),
            });
        }
        Ok(Self {
            path: canonical,
            file,
            hash,
            is_script: &head == b"#!",
            loaded_list: veil_attest::measure::loaded_list(loaded),
            loaded: files,
            private: Some(RefCell::new(PrivateCopy {
                copy,
                staging,
                undo,
            })),
        })
    }

    /// Whether this program runs from a private copy bind-mounted over its path.
    pub fn is_private_copy(&self) -> bool {
        self.private.is_some()
    }

    /// Bind-mount the private copy read-only over the program's path (in the private
    /// namespace) and release its staging tmpfs; nothing for a descriptor. Call just before
    /// running the program, after every other mount.
    pub fn expose(&self) -> Result<ExposedProgram, LauncherError> {
        let mut exposed = ExposedProgram::default();
        let Some(private) = &self.private else {
            return Ok(exposed);
        };
        let shown = self.path.display();
        let outer = format!("Cannot place the measured copy of the program at {shown}");
        let mut p = private.borrow_mut();
        for f in &self.loaded {
            if let Held::Copy(copy) = &f.held {
                let outer = format!(
                    "Cannot place the measured copy of the loaded file {} at {}",
                    f.listed,
                    f.path.display()
                );
                bind_read_only(copy, &f.path, &mut exposed.undo).map_err(|e| e.context(outer))?;
            }
        }
        bind_read_only(&p.copy, &self.path, &mut exposed.undo)
            .map_err(|e| e.context(outer.clone()))?;
        let staging = p.staging.clone();
        p.undo.release(&staging).map_err(|e| e.context(outer))?;
        Ok(exposed)
    }

    /// How to execute it: the path over which the copy is mounted, or the descriptor.
    pub fn exec_target(&self) -> ExecTarget<'_> {
        if self.private.is_some() {
            ExecTarget::Path(&self.path)
        } else {
            ExecTarget::Fd {
                file: &self.file,
                is_script: self.is_script,
            }
        }
    }
}

/// Bind-mount the file `copy` read-only over `path` (a mount point made in the private
/// namespace, never through a symlink); `undo` unmounts it.
fn bind_read_only(copy: &Path, path: &Path, undo: &mut Undo) -> Result<(), LauncherError> {
    let point = namespace::mount_point(path, MountPoint::File)?;
    let target = namespace::fd_path(&point);
    nix::mount::mount(
        Some(copy),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err("bind-mounting the copy", e))?;
    undo.mounted(path);
    nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| err("making the copy read-only", e))?;
    Ok(())
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
    fn program_files_name_the_program_then_what_it_loads() {
        let f = ProgramFile::parse("/app/p\n/lib64/ld.so\n/etc/ld.so.cache\n\n", "pf").unwrap();
        assert_eq!(f.program, "/app/p");
        assert_eq!(f.loaded, ["/lib64/ld.so", "/etc/ld.so.cache"]);
        // The list the measurement covers is each path and a newline, as the converter wrote it.
        assert_eq!(
            veil_attest::measure::loaded_list(&f.loaded),
            b"/lib64/ld.so\n/etc/ld.so.cache\n"
        );
        assert_eq!(ProgramFile::parse("/p", "pf").unwrap().loaded.len(), 0);
        for (bad, want) in [
            ("", "names no program"),
            ("p\n", "pf:1: `p` is not an absolute path"),
            ("/p\n lib\n", "pf:2"),
            ("/p\n\n/lib\n", "pf:2: `` is not an absolute path"),
            (
                "/p\n/lib/../etc/x\n",
                "pf:2: `/lib/../etc/x` has a `.` or `..` component",
            ),
            ("/p\n/./lib\n", "pf:2: `/./lib` has a `.` or `..` component"),
            ("/p\n/lib\n/lib\n", "pf:3: `/lib` is listed twice"),
        ] {
            let e = ProgramFile::parse(bad, "pf").unwrap_err().to_string();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let many: String = std::iter::once("/p\n".to_string())
            .chain((0..=veil_attest::measure::MAX_LOADED_FILES).map(|i| format!("/l{i}\n")))
            .collect();
        assert!(ProgramFile::parse(&many, "pf").is_err());
    }

    #[test]
    fn loaded_files_make_an_image_target() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("p");
        let l = dir.path().join("lib.so");
        std::fs::write(&p, b"program")?;
        std::fs::write(&l, b"library")?;
        let listed = vec![l.display().to_string()];
        let m = MeasuredProgram::open(&p, &listed)?;
        let want = Target::Image {
            program: Digest32::of(b"program"),
            list: Digest32::of(format!("{}\n", l.display()).as_bytes()),
            files: vec![Digest32::of(b"library")],
        };
        assert_eq!(m.target(), want);
        assert_eq!(
            MeasuredProgram::open(&p, &[])?.target(),
            Target::Program {
                hash: Digest32::of(b"program")
            }
        );
        // A listed directory or missing file is refused, naming it.
        let e = MeasuredProgram::open(&p, &[dir.path().display().to_string()]).unwrap_err();
        assert!(e.to_string().contains("is not a regular file"), "{e}");
        // ld.so.preload: absent is fine, listed is fine, anything else is refused.
        let preload = dir.path().join("ld.so.preload");
        check_preload(&listed, &preload)?;
        std::fs::write(&preload, "x")?;
        assert!(check_preload(&listed, &preload).is_err());
        check_preload(&[preload.display().to_string()], &preload)?;
        Ok(())
    }

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
        let m = MeasuredProgram::open(&p, &[])?;
        assert_eq!(m.hash, Digest32::of(b"#!/bin/sh\necho hi\n"));
        assert!(m.is_script);
        assert!(MeasuredProgram::open(dir.path(), &[]).is_err());
        assert!(MeasuredProgram::open(&dir.path().join("missing"), &[]).is_err());
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
