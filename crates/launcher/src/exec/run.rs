//! The program as a child: everything the child needs (argv, envp, cwd) is prepared before
//! `fork`, and the child only calls async-signal-safe functions up to `execve` of a path (the
//! measured copy bind-mounted at the program's path, or envcas's program) or `execveat(fd, "",
//! …, AT_EMPTY_PATH)` on the descriptor that was measured.
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to the child; the launcher returns the
//! child's status (128 + n for signal n).

// fork, the async-signal-safe child up to execveat, and the signal-forwarding handler call libc
// directly; each unsafe block says why it is sound.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::error::{LauncherError, err};

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

/// Send `sig` to the running program, if there is one (the lease heartbeat stops it this way).
pub(crate) fn signal_program(sig: Signal) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
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
