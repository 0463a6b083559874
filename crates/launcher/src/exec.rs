//! The executor: private mount namespace, injection files, and the program as a child.
//!
//! Decision 4: the launcher enters its own mount namespace (`unshare(CLONE_NEWNS)`, plus a user
//! namespace when not root) with all mounts made private, so nothing it mounts is visible on the
//! host. A tmpfs is mounted (inside that namespace only) on a fresh, empty staging directory;
//! each injection file is written there with its mode and bind-mounted at its path; then the
//! staging tmpfs is detached, so only the bind mounts keep it alive and the program sees no
//! staging directory. A missing path gets an empty
//! placeholder file (and missing parent directories) as mount point, removed again at exit.
//!
//! The program runs as a child: everything the child needs (argv, envp, cwd) is prepared before
//! `fork`, and the child only calls async-signal-safe functions up to `execveat(fd, "", …,
//! AT_EMPTY_PATH)` on the descriptor that was measured. SIGINT, SIGTERM, SIGHUP and SIGQUIT are
//! forwarded to the child; the launcher exits with the child's status (128 + n for signal n).

// fork, the async-signal-safe child up to execveat, and the signal-forwarding handler call libc
// directly; each unsafe block says why it is sound.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use veil_api::workload::{ConfigResponse, InjectionFile};
use veil_types::ExposeSecret;

use crate::error::{LauncherError, err};
use crate::subst::{expand_args, expand_env};

/// What the program will be started with, after host substitutions.
#[derive(Clone)]
pub struct Plan {
    /// argv (`argv[0]` first).
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub pwd: Option<String>,
    /// Files to place.
    pub files: Vec<InjectionFile>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("argc", &self.argv.len())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("pwd", &self.pwd)
            .field("files", &self.files)
            .finish()
    }
}

fn check_path(p: &str) -> Result<(), LauncherError> {
    let path = Path::new(p);
    let bad = |why: &str| LauncherError::new(format!("Injection file path `{p}` {why}"));
    if !path.is_absolute() {
        return Err(bad("is not absolute"));
    }
    if p.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad("contains `.` or `..`"));
    }
    if path.parent().is_none() {
        return Err(bad("names the root directory"));
    }
    Ok(())
}

fn check_volume_path(name: &str, p: &str) -> Result<(), LauncherError> {
    check_path(p).map_err(|e| {
        LauncherError::new(
            e.chain
                .join(": ")
                .replace("Injection file path", &format!("Path of volume {name}")),
        )
    })
}

/// Turn a CAS configuration into a [`Plan`]: expand `@@N` and `\@\@NAME` and check paths.
pub fn plan(
    config: &ConfigResponse,
    host_argv: &[String],
    host_env: &BTreeMap<String, String>,
) -> Result<Plan, LauncherError> {
    let mut volume_paths = BTreeSet::new();
    for v in &config.volumes {
        check_volume_path(&v.name, &v.path)?;
        if !volume_paths.insert(v.path.as_str()) {
            return Err(LauncherError::new(format!(
                "Volume path `{}` appears twice",
                v.path
            )));
        }
    }
    let service_argv: Vec<String> = config
        .argv
        .iter()
        .map(|a| a.expose_secret().to_string())
        .collect();
    let argv = expand_args(&service_argv, host_argv)?;
    if argv.is_empty() {
        return Err(LauncherError::new("The service's command is empty"));
    }
    let mut seen = BTreeSet::new();
    for f in &config.injection_files {
        check_path(&f.path)?;
        if !seen.insert(f.path.as_str()) {
            return Err(LauncherError::new(format!(
                "Injection file path `{}` appears twice",
                f.path
            )));
        }
    }
    Ok(Plan {
        argv,
        env: expand_env(
            &config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.expose_secret().to_string()))
                .collect(),
            host_env,
        ),
        pwd: config.pwd.clone(),
        files: config.injection_files.clone(),
    })
}

/// Enter a private mount namespace (and a user namespace mapping our own uid/gid when not
/// root). Must be called while the process is single-threaded.
pub fn enter_private_mount_namespace() -> Result<(), LauncherError> {
    let outer = "Cannot create a private mount namespace";
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    if uid.is_root() {
        nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| err(outer, e))?;
    } else {
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
            .map_err(|e| err(outer, e))?;
        let w = |p: &str, s: String| {
            std::fs::write(p, s).map_err(|e| err(outer, format!("writing {p}: {e}")))
        };
        w("/proc/self/setgroups", "deny".into())?;
        w("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
        w("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    }
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| err(outer, format!("making / private: {e}")))?;
    Ok(())
}

/// Injection files placed in the private namespace; [`PlacedFiles::cleanup`] undoes it.
#[derive(Debug, Default)]
pub struct PlacedFiles {
    staging: Option<PathBuf>,
    mounted: Vec<PathBuf>,
    created_files: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
}

impl PlacedFiles {
    /// Unmount the files and remove the placeholders and directories that were created.
    pub fn cleanup(self) {
        for m in self.mounted.iter().rev() {
            if let Err(e) = nix::mount::umount2(m, MntFlags::MNT_DETACH) {
                tracing::warn!("cannot unmount {}: {e}", m.display());
            }
        }
        for f in self.created_files.iter().rev() {
            if let Err(e) = std::fs::remove_file(f) {
                tracing::warn!("cannot remove placeholder {}: {e}", f.display());
            }
        }
        for d in self.created_dirs.iter().rev() {
            // Only if empty: something else may have been put there meanwhile.
            let _ = std::fs::remove_dir(d);
        }
        if let Some(s) = &self.staging {
            let _ = nix::mount::umount2(s, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(s);
        }
    }
}

/// Place `files` at their paths. Call after [`enter_private_mount_namespace`].
pub fn place_files(files: &[InjectionFile]) -> Result<PlacedFiles, LauncherError> {
    let mut placed = PlacedFiles::default();
    if files.is_empty() {
        return Ok(placed);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let staging =
        std::env::temp_dir().join(format!("veil-injection-{}-{nanos:08x}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| err(format!("Cannot create {}", staging.display()), e))?;
    placed.staging = Some(staging.clone());
    if let Err(e) = nix::mount::mount(
        Some("tmpfs"),
        &staging,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    ) {
        placed.cleanup();
        return Err(err("Cannot mount the tmpfs for injection files", e));
    }
    for (i, f) in files.iter().enumerate() {
        if let Err(e) = place_one(f, &staging.join(i.to_string()), &mut placed) {
            placed.cleanup();
            return Err(e.context(format!("Cannot place injection file {}", f.path)));
        }
    }
    // Detach the staging tmpfs: the bind mounts keep their files alive.
    if let Err(e) = nix::mount::umount2(&staging, MntFlags::MNT_DETACH) {
        placed.cleanup();
        return Err(err("Cannot detach the injection tmpfs", e));
    }
    Ok(placed)
}

fn place_one(
    f: &InjectionFile,
    staged: &Path,
    placed: &mut PlacedFiles,
) -> Result<(), LauncherError> {
    check_path(&f.path)?;
    let target = PathBuf::from(&f.path);
    let mut mem = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(staged)
        .map_err(|e| err("creating the file on the tmpfs", e))?;
    mem.write_all(f.content.expose_secret())
        .map_err(|e| err("writing the content", e))?;
    mem.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o7777))
        .map_err(|e| err("setting the mode", e))?;
    drop(mem);
    // Mount point: create missing directories and an empty placeholder file.
    if let Some(parent) = target.parent() {
        let mut missing = Vec::new();
        let mut cur = Some(parent);
        while let Some(d) = cur {
            if d.exists() {
                break;
            }
            missing.push(d.to_path_buf());
            cur = d.parent();
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d)
                .map_err(|e| err(format!("creating directory {}", d.display()), e))?;
            placed.created_dirs.push(d);
        }
    }
    match std::fs::symlink_metadata(&target) {
        Ok(md) if md.is_dir() => {
            return Err(LauncherError::new(format!("{} is a directory", f.path)));
        }
        Ok(_) => {}
        Err(_) => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(|e| err(format!("creating mount point {}", f.path), e))?;
            placed.created_files.push(target.clone());
        }
    }
    nix::mount::mount(
        Some(staged),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err(format!("bind-mounting over {}", f.path), e))?;
    placed.mounted.push(target);
    Ok(())
}

/// How the child is executed.
#[derive(Debug)]
pub enum ExecTarget<'a> {
    /// The measured descriptor (`execveat(fd, "", …, AT_EMPTY_PATH)`).
    Fd {
        /// The open program file.
        file: &'a File,
        /// Whether it is a `#!` script (the descriptor must then stay open across exec).
        is_script: bool,
    },
    /// A path (envcas: the program is named by the configuration, not measured).
    Path(&'a Path),
}

static CHILD: AtomicI32 = AtomicI32::new(0);
/// Signals forwarded to the program.
pub(crate) const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is our child's pid.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, LauncherError> {
    CString::new(s).map_err(|_| LauncherError::new(format!("{what} contains a NUL byte")))
}

/// Start the program as a child with `argv`, `env` and `pwd`, forward signals, and return its
/// exit status (128 + n when killed by signal n).
pub fn spawn_and_wait(
    target: ExecTarget<'_>,
    argv: &[String],
    env: &BTreeMap<String, String>,
    pwd: Option<&str>,
) -> Result<i32, LauncherError> {
    // Everything the child touches is prepared here, before fork.
    let c_argv: Vec<CString> = argv
        .iter()
        .map(|a| cstring("An argument", a))
        .collect::<Result<_, _>>()?;
    let c_env: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') {
                return Err(LauncherError::new(format!(
                    "Environment variable name `{k}` is invalid"
                )));
            }
            cstring(&format!("Environment variable {k}"), &format!("{k}={v}"))
        })
        .collect::<Result<_, _>>()?;
    let mut p_argv: Vec<*const libc::c_char> = c_argv.iter().map(|c| c.as_ptr()).collect();
    p_argv.push(std::ptr::null());
    let mut p_env: Vec<*const libc::c_char> = c_env.iter().map(|c| c.as_ptr()).collect();
    p_env.push(std::ptr::null());
    let c_pwd = pwd
        .map(|p| cstring("The working directory", p))
        .transpose()?;
    let empty = c"";
    let (fd, keep_fd, c_path) = match &target {
        ExecTarget::Fd { file, is_script } => (file.as_raw_fd(), *is_script, None),
        ExecTarget::Path(p) => (
            -1,
            false,
            Some(cstring("The program path", &p.to_string_lossy())?),
        ),
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| err("Cannot create a pipe", e))?;
    let mut block = SigSet::empty();
    for s in FORWARDED {
        block.add(s);
    }
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old))
        .map_err(|e| err("Cannot block signals", e))?;
    let old_raw: libc::sigset_t = *old.as_ref();
    let wr_raw = wr.as_raw_fd();

    // SAFETY: the child only calls async-signal-safe libc functions on data prepared above and
    // then execs or _exits; it never returns into Rust code of the parent.
    let fork = unsafe { nix::unistd::fork() };
    match fork {
        Ok(ForkResult::Child) => {
            // SAFETY: async-signal-safe calls only (sigprocmask, chdir, fcntl, execve(at),
            // write, _exit); all pointers point to memory prepared before fork.
            unsafe {
                libc::sigprocmask(libc::SIG_SETMASK, &old_raw, std::ptr::null_mut());
                let fail = |step: u8| -> ! {
                    let e = *libc::__errno_location();
                    let mut msg = [0u8; 5];
                    msg[0] = step;
                    msg[1..].copy_from_slice(&e.to_le_bytes());
                    libc::write(wr_raw, msg.as_ptr().cast(), msg.len());
                    libc::_exit(127)
                };
                if let Some(d) = &c_pwd
                    && libc::chdir(d.as_ptr()) != 0
                {
                    fail(1);
                }
                if let Some(p) = &c_path {
                    libc::execve(p.as_ptr(), p_argv.as_ptr(), p_env.as_ptr());
                } else {
                    if keep_fd {
                        libc::fcntl(fd, libc::F_SETFD, 0);
                    }
                    libc::syscall(
                        libc::SYS_execveat,
                        fd,
                        empty.as_ptr(),
                        p_argv.as_ptr(),
                        p_env.as_ptr(),
                        libc::AT_EMPTY_PATH,
                    );
                }
                fail(2)
            }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            let result = parent_wait(child, rd, argv, pwd);
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            result
        }
        Err(e) => {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            Err(err("Cannot fork", e))
        }
    }
}

fn parent_wait(
    child: Pid,
    rd: OwnedFd,
    argv: &[String],
    pwd: Option<&str>,
) -> Result<i32, LauncherError> {
    let mut report = Vec::new();
    let mut pipe = File::from(rd);
    let _ = pipe.read_to_end(&mut report);
    if report.len() == 5 {
        let _ = waitpid(child, None);
        let mut e = [0u8; 4];
        e.copy_from_slice(&report[1..5]);
        let errno = nix::errno::Errno::from_raw(i32::from_le_bytes(e));
        let prog = argv.first().map(String::as_str).unwrap_or_default();
        return Err(if report[0] == 1 {
            err(
                format!(
                    "Cannot change to the working directory {}",
                    pwd.unwrap_or_default()
                ),
                errno.desc(),
            )
        } else {
            err(format!("Cannot execute the program `{prog}`"), errno.desc())
        });
    }
    CHILD.store(child.as_raw(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let mut previous = Vec::new();
    for s in FORWARDED {
        // SAFETY: `forward` is async-signal-safe (an atomic load and kill).
        if let Ok(prev) = unsafe { nix::sys::signal::sigaction(s, &action) } {
            previous.push((s, prev));
        }
    }
    let mut unblock = SigSet::empty();
    for s in FORWARDED {
        unblock.add(s);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&unblock), None);
    let status = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => break Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => break Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break Err(err("Cannot wait for the program", e)),
        }
    };
    CHILD.store(0, Ordering::SeqCst);
    for (s, prev) in previous {
        // SAFETY: restoring the handler that was installed before.
        let _ = unsafe { nix::sys::signal::sigaction(s, &prev) };
    }
    status
}

#[cfg(test)]
mod tests {
    //! The executor changes the process's mount namespace, so each case re-executes this test
    //! binary with `VEIL_TEST_EXECUTOR` set; the `executor_child` "test" then runs the
    //! executor in that fresh process and exits with the program's status.
    use super::*;
    use crate::program::MeasuredProgram;
    use std::process::Command;
    use std::time::{Duration, Instant};
    use veil_api::workload::ConfigResponse;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Spec {
        config: ConfigResponse,
        host_argv: Vec<String>,
        envcas_config: Option<String>,
    }

    #[test]
    fn executor_child() {
        let Ok(spec) = std::env::var("VEIL_TEST_EXECUTOR") else {
            return;
        };
        let spec: Spec = serde_json::from_str(&spec).expect("spec");
        let host_env: BTreeMap<String, String> = std::env::vars().collect();
        let sh = MeasuredProgram::open(Path::new("/bin/sh")).expect("open sh");
        let r = match &spec.envcas_config {
            Some(p) => crate::run_config(
                &spec.config,
                &spec.host_argv,
                &host_env,
                None,
                Path::new(p),
                None,
            ),
            None => crate::run_config(
                &spec.config,
                &spec.host_argv,
                &host_env,
                Some(&sh),
                Path::new("/nonexistent"),
                None,
            ),
        };
        match r {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprint!("{}", e.fatal_text());
                std::process::exit(100)
            }
        }
    }

    fn child(spec: &Spec) -> Command {
        let mut c = Command::new(std::env::current_exe().expect("exe"));
        c.args([
            "--exact",
            "exec::tests::executor_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "VEIL_TEST_EXECUTOR",
            serde_json::to_string(spec).expect("json"),
        );
        c
    }

    fn file(path: &Path, content: &[u8], mode: u32) -> InjectionFile {
        InjectionFile {
            path: path.display().to_string(),
            content: content.to_vec(),
            mode,
        }
    }

    fn config(
        argv: Vec<String>,
        env: &[(&str, &str)],
        pwd: &Path,
        files: Vec<InjectionFile>,
    ) -> ConfigResponse {
        ConfigResponse {
            argv,
            env: env
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            pwd: Some(pwd.display().to_string()),
            injection_files: files,
            code_region: None,
            volumes: vec![],
            instance_token: "t".into(),
        }
    }

    #[test]
    fn runs_program_with_config_and_private_files() {
        let d = tempfile::tempdir().expect("tmp");
        let t = d.path();
        std::fs::write(t.join("existing"), b"host content").expect("w");
        let new = t.join("new/dir/f");
        let out = t.join("out.txt");
        let script = format!(
            "exec > {out}; cat {e}; echo; cat {n}; echo; stat -c %a {e} {n}; echo \"$A|$HOSTVAR|$OTHER|$1|$0\"; pwd; exit 3",
            out = out.display(),
            e = t.join("existing").display(),
            n = new.display()
        );
        let spec = Spec {
            config: config(
                vec!["sh".into(), "-c".into(), script, "@@2".into(), "@@1".into()],
                &[("A", "from-cas"), ("\\@\\@HOSTVAR", "ignored")],
                t,
                vec![
                    file(&t.join("existing"), b"injected one", 0o640),
                    file(&new, b"injected two", 0o400),
                ],
            ),
            host_argv: vec!["sh".into(), "first".into(), "second".into()],
            envcas_config: None,
        };
        let st = child(&spec)
            .env("HOSTVAR", "hv")
            .env("OTHER", "must-not-leak")
            .status()
            .expect("run");
        assert_eq!(st.code(), Some(3));
        let got = std::fs::read_to_string(&out).expect("out");
        let want = format!(
            "injected one\ninjected two\n640\n400\nfrom-cas|hv||first|second\n{}\n",
            t.display()
        );
        assert_eq!(got, want);
        // Nothing leaked onto the host: original content, placeholders and dirs gone.
        assert_eq!(
            std::fs::read(t.join("existing")).expect("r"),
            b"host content"
        );
        assert!(!t.join("new").exists());
    }

    #[test]
    fn envcas_copies_and_runs_configured_program() {
        let d = tempfile::tempdir().expect("tmp");
        let t = d.path();
        std::fs::create_dir(t.join("work")).expect("mkdir");
        let cfg_path = t.join("etc/envcas/config.yaml");
        let secret_in = t.join("etc/envcas/injected_file1");
        let out1 = t.join("work/out1");
        let res = t.join("res");
        let yaml = format!(
            "program: /bin/sh\ninjection_files:\n  - from: {}\n    to: {}\n",
            secret_in.display(),
            out1.display()
        );
        let spec = Spec {
            config: config(
                vec![
                    "envcas".into(),
                    "-c".into(),
                    format!(
                        "cat {} > {r}; echo \"$SECRET_ENV\" >> {r}",
                        out1.display(),
                        r = res.display()
                    ),
                ],
                &[("SECRET_ENV", "env-secret")],
                t,
                vec![
                    file(&cfg_path, yaml.as_bytes(), 0o600),
                    file(&secret_in, b"file-secret\n", 0o600),
                ],
            ),
            host_argv: vec!["envcas".into()],
            envcas_config: Some(cfg_path.display().to_string()),
        };
        let st = child(&spec).status().expect("run");
        assert_eq!(st.code(), Some(0));
        assert_eq!(
            std::fs::read_to_string(&res).expect("res"),
            "file-secret\nenv-secret\n"
        );
        assert_eq!(std::fs::read(&out1).expect("out1"), b"file-secret\n");
        assert!(!t.join("etc").exists());

        // A destination whose directory is missing is an error naming it.
        let bad_yaml = format!(
            "program: /bin/sh\ninjection_files:\n  - from: {}\n    to: {}/missing/out\n",
            secret_in.display(),
            t.display()
        );
        let mut bad = spec;
        bad.config.injection_files[0].content = bad_yaml.into_bytes();
        let o = child(&bad).output().expect("run");
        assert_eq!(o.status.code(), Some(100));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!(
                "the directory {}/missing does not exist",
                t.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn forwards_sigterm_and_returns_child_status() {
        let d = tempfile::tempdir().expect("tmp");
        let t = d.path();
        let ready = t.join("ready");
        let script = format!(
            "trap 'exit 9' TERM; touch {}; while :; do sleep 0.05; done",
            ready.display()
        );
        let spec = Spec {
            config: config(vec!["sh".into(), "-c".into(), script], &[], t, vec![]),
            host_argv: vec!["sh".into()],
            envcas_config: None,
        };
        let mut c = child(&spec).spawn().expect("spawn");
        let start = Instant::now();
        while !ready.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "program never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = Pid::from_raw(i32::try_from(c.id()).expect("pid"));
        nix::sys::signal::kill(pid, Signal::SIGTERM).expect("kill");
        assert_eq!(c.wait().expect("wait").code(), Some(9));
    }

    #[test]
    fn code_region_is_exposed_read_only_at_its_directories() {
        let d = tempfile::tempdir().expect("tmp");
        let t = std::fs::canonicalize(d.path()).expect("canonical");
        // On the host: a non-empty directory (the region only adds to it), an empty directory
        // (the region's directory replaces it) and nothing at `new` (created as mount point).
        std::fs::create_dir_all(t.join("host")).expect("mkdir");
        std::fs::write(t.join("host/keep"), b"host file\n").expect("w");
        std::fs::create_dir_all(t.join("empty")).expect("mkdir");
        let src = t.join("src");
        let inner = src.join(t.strip_prefix("/").expect("absolute"));
        for (p, c) in [
            ("new/app.sh", "app\n"),
            ("empty/e.txt", "e\n"),
            ("host/added.txt", "added\n"),
        ] {
            let f = inner.join(p);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(&f, c).expect("w");
        }
        let key = veil_shield::VolumeKey::from_hex(&"11".repeat(32)).expect("key");
        let backing = t.join("fspf");
        let tag = veil_shield::build_deterministic(
            &src,
            &backing,
            &key,
            &crate::coderegion::region_id(),
            veil_shield::Protection::Encrypted,
        )
        .expect("build");
        let out = t.join("out");
        let script = format!(
            "exec > {out}; cd {t}; cat new/app.sh empty/e.txt host/added.txt host/keep; \
             for f in new/w host/added.txt; do if ( echo x >> $f ) 2>/dev/null; then echo writable; else echo ro; fi; done",
            out = out.display(),
            t = t.display()
        );
        let mut cfg = config(vec!["sh".into(), "-c".into(), script], &[], &t, vec![]);
        cfg.code_region = Some(veil_api::workload::CodeRegion {
            fspf_path: backing.display().to_string(),
            fspf_key: "11".repeat(32),
            fspf_tag: Some(tag.to_string()),
            update_policy: veil_api::workload::UpdatePolicy::RollbackProtected,
        });
        let spec = Spec {
            config: cfg,
            host_argv: vec!["sh".into()],
            envcas_config: None,
        };
        let o = child(&spec).output().expect("run");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&out).expect("out"),
            "app\ne\nadded\nhost file\nro\nro\n"
        );
        // Nothing of the region stays on the host; the host's own files are untouched.
        assert!(!t.join("new").exists());
        assert!(!t.join("host/added.txt").exists());
        assert!(!t.join("empty/e.txt").exists());
        assert_eq!(
            std::fs::read(t.join("host/keep")).expect("keep"),
            b"host file\n"
        );
    }

    #[test]
    fn plan_refuses_what_it_cannot_honour() {
        let t = Path::new("/tmp");
        let mut c = config(vec!["x".into()], &[], t, vec![]);
        c.volumes.push(veil_api::workload::VolumeGrant {
            name: "V1".into(),
            path: "/V1".into(),
            key: "k".into(),
            tag: None,
            update_policy: veil_api::workload::UpdatePolicy::RollbackProtected,
        });
        assert!(plan(&c, &[], &BTreeMap::new()).is_ok());
        c.volumes[0].path = "V1".into();
        let e = plan(&c, &[], &BTreeMap::new()).expect_err("relative volume path");
        assert!(e.to_string().contains("Path of volume V1"), "{e}");
        let cases = [
            ("relative", "is not absolute"),
            ("/a/../b", "`..`"),
            ("/", "root directory"),
        ];
        for (p, want) in cases {
            let c = config(
                vec!["x".into()],
                &[],
                t,
                vec![file(Path::new(p), b"", 0o600)],
            );
            let e = plan(&c, &[], &BTreeMap::new()).expect_err(p);
            assert!(e.to_string().contains(want), "{p}: {e}");
        }
        let dup = config(
            vec!["x".into()],
            &[],
            t,
            vec![
                file(Path::new("/a"), b"", 0o600),
                file(Path::new("/a"), b"", 0o600),
            ],
        );
        assert!(plan(&dup, &[], &BTreeMap::new()).is_err());
        assert!(plan(&config(vec![], &[], t, vec![]), &[], &BTreeMap::new()).is_err());
    }
}
