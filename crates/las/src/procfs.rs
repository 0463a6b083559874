//! Measuring a process from `/proc`, without trusting it.
//!
//! [`Measurer::measure`] reads the process's start time, `TracerPid` and the (dev, inode) of
//! `/proc/<pid>/exe`, opens and hashes the executable, and reads them again; any change (the
//! process exited and the pid was reused, it exec'd something else, a tracer attached) fails.
//! Hashes are cached by (dev, inode, size, mtime, ctime) of the opened file.
//!
//! Between the two identity reads it also refuses a process whose executable is dynamically
//! linked (a `PT_INTERP` program header: [`crate::elf`]), whose environment has any `LD_*`
//! variable (`/proc/<pid>/environ`), or that maps executable memory other than its executable
//! (`/proc/<pid>/maps`: any `x` mapping that is not the exe's (dev, inode); `[vdso]` and
//! `[vsyscall]` are allowed): code other than the measured executable could be running in it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use veil_attest::Digest32;

use crate::LasError;

/// What must not change while a process is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcIdentity {
    /// Start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`).
    pub start_time: u64,
    /// `TracerPid` from `/proc/<pid>/status`.
    pub tracer_pid: i32,
    /// Device of the executable.
    pub exe_dev: u64,
    /// Inode of the executable.
    pub exe_ino: u64,
}

type CacheKey = (u64, u64, u64, i64, i64, i64, i64);

/// Hashes executables of processes, with a bounded cache.
#[derive(Debug, Default)]
pub struct Measurer {
    cache: Mutex<HashMap<CacheKey, Digest32>>,
}

const CACHE_MAX: usize = 1024;

fn err(pid: i32, reason: impl Into<String>) -> LasError {
    LasError::Measure {
        pid,
        reason: reason.into(),
    }
}

/// Parse the start time out of the text of `/proc/<pid>/stat` (the comm field may contain
/// spaces and parentheses, so fields are counted after the last `)`).
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // After ")" come fields 3 (state) onwards; starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Parse `TracerPid` out of the text of `/proc/<pid>/status`.
pub fn parse_tracer_pid(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The cgroup v2 path of `pid` (the `0::PATH` line of `/proc/<pid>/cgroup`).
pub fn cgroup(pid: i32) -> Result<String, LasError> {
    let path = format!("/proc/{pid}/cgroup");
    let text =
        std::fs::read_to_string(&path).map_err(|e| err(pid, format!("reading {path}: {e}")))?;
    parse_cgroup(&text).ok_or_else(|| err(pid, format!("{path}: no cgroup v2 entry")))
}

/// The path of the unified (v2) hierarchy out of the text of `/proc/<pid>/cgroup`.
pub fn parse_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_string())
}

/// The first `LD_*` variable in the text of `/proc/<pid>/environ` (NUL separated).
pub fn find_ld_var(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find(|v| v.starts_with(b"LD_"))
        .map(|v| {
            let name = v.split(|&b| b == b'=').next().unwrap_or(v);
            String::from_utf8_lossy(name).into_owned()
        })
}

/// Linux's encoding of a device number's major and minor (as `/proc/<pid>/maps` shows them).
fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The first executable mapping in the text of `/proc/<pid>/maps` that is neither the file
/// (`exe_dev`, `exe_ino`) nor `[vdso]`/`[vsyscall]`; anonymous executable memory counts. A
/// line that does not parse counts as well (refused rather than skipped).
pub fn foreign_exec_mapping(maps: &str, exe_dev: u64, exe_ino: u64) -> Option<String> {
    let (maj, min) = dev_major_minor(exe_dev);
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let (Some(_range), Some(perms), Some(_off), Some(dev), Some(ino)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Some(line.to_string());
        };
        if !perms.contains('x') {
            continue;
        }
        let path: Vec<&str> = it.collect();
        let path = path.join(" ");
        if path == "[vdso]" || path == "[vsyscall]" {
            continue;
        }
        let same = dev
            .split_once(':')
            .and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
            .is_some_and(|d| d == (maj, min))
            && ino.parse::<u64>().is_ok_and(|i| i == exe_ino && i != 0);
        if !same {
            return Some(if path.is_empty() {
                "anonymous executable memory".to_string()
            } else {
                path
            });
        }
    }
    None
}

/// Refuse `pid` if code other than its executable may run in it (see the module docs).
fn check_code(pid: i32, id: &ProcIdentity, exe: &File) -> Result<(), LasError> {
    match crate::elf::has_interp(exe) {
        Ok(false) => {}
        Ok(true) => {
            return Err(err(
                pid,
                "its executable is dynamically linked (PT_INTERP); only a static launcher is accepted",
            ));
        }
        Err(e) => {
            return Err(err(
                pid,
                format!("its executable is not a usable ELF file: {e}"),
            ));
        }
    }
    let base = format!("/proc/{pid}");
    let environ = std::fs::read(format!("{base}/environ"))
        .map_err(|e| err(pid, format!("reading {base}/environ: {e}")))?;
    if let Some(name) = find_ld_var(&environ) {
        return Err(err(
            pid,
            format!("its environment sets {name} (no LD_* variable is accepted)"),
        ));
    }
    let maps = std::fs::read_to_string(format!("{base}/maps"))
        .map_err(|e| err(pid, format!("reading {base}/maps: {e}")))?;
    if let Some(m) = foreign_exec_mapping(&maps, id.exe_dev, id.exe_ino) {
        return Err(err(
            pid,
            format!("it maps executable code other than its executable: {m}"),
        ));
    }
    Ok(())
}

/// Read the [`ProcIdentity`] of `pid`.
pub fn identity(pid: i32) -> Result<ProcIdentity, LasError> {
    let base = format!("/proc/{pid}");
    let stat = std::fs::read_to_string(format!("{base}/stat"))
        .map_err(|e| err(pid, format!("reading {base}/stat: {e}")))?;
    let start_time =
        parse_start_time(&stat).ok_or_else(|| err(pid, format!("{base}/stat: no start time")))?;
    let status = std::fs::read_to_string(format!("{base}/status"))
        .map_err(|e| err(pid, format!("reading {base}/status: {e}")))?;
    let tracer_pid = parse_tracer_pid(&status)
        .ok_or_else(|| err(pid, format!("{base}/status: no TracerPid")))?;
    let md = std::fs::metadata(format!("{base}/exe"))
        .map_err(|e| err(pid, format!("stat {base}/exe: {e}")))?;
    Ok(ProcIdentity {
        start_time,
        tracer_pid,
        exe_dev: md.dev(),
        exe_ino: md.ino(),
    })
}

impl Measurer {
    /// A measurer with an empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// SHA-256 of the executable of process `pid`, with the checks described above.
    pub fn measure(&self, pid: i32) -> Result<Digest32, LasError> {
        let before = identity(pid)?;
        if before.tracer_pid != 0 {
            return Err(err(pid, format!("it is traced by {}", before.tracer_pid)));
        }
        let path = format!("/proc/{pid}/exe");
        let file = File::open(&path).map_err(|e| err(pid, format!("opening {path}: {e}")))?;
        let md = file
            .metadata()
            .map_err(|e| err(pid, format!("stat {path}: {e}")))?;
        if (md.dev(), md.ino()) != (before.exe_dev, before.exe_ino) {
            return Err(err(pid, "its executable changed while it was measured"));
        }
        let key: CacheKey = (
            md.dev(),
            md.ino(),
            md.size(),
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec(),
        );
        let cached = self.cache.lock().ok().and_then(|c| c.get(&key).copied());
        let hash = match cached {
            Some(h) => h,
            None => {
                let h = Digest32::of_reader(&file)
                    .map_err(|e| err(pid, format!("reading {path}: {e}")))?;
                // Only cache if the file did not change while it was read.
                let md2 = file
                    .metadata()
                    .map_err(|e| err(pid, format!("stat {path}: {e}")))?;
                if (
                    md2.size(),
                    md2.mtime(),
                    md2.mtime_nsec(),
                    md2.ctime(),
                    md2.ctime_nsec(),
                ) != (key.2, key.3, key.4, key.5, key.6)
                {
                    return Err(err(
                        pid,
                        "its executable was modified while it was measured",
                    ));
                }
                if let Ok(mut c) = self.cache.lock() {
                    if c.len() >= CACHE_MAX {
                        c.clear();
                    }
                    c.insert(key, h);
                }
                h
            }
        };
        check_code(pid, &before, &file)?;
        let after = identity(pid)?;
        if after != before {
            return Err(err(
                pid,
                "the process changed (exited, exec'd or was traced) while it was measured",
            ));
        }
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let fields: Vec<String> = (3..=30).map(|i| i.to_string()).collect();
        let stat = format!("1234 (a b) (c)) {}", fields.join(" "));
        assert_eq!(parse_start_time(&stat), Some(22));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn parses_tracer_pid() {
        assert_eq!(
            parse_tracer_pid("Name:\tx\nTracerPid:\t0\nUid: 0\n"),
            Some(0)
        );
        assert_eq!(parse_tracer_pid("TracerPid:\t77\n"), Some(77));
        assert_eq!(parse_tracer_pid("Name: x\n"), None);
    }

    #[test]
    fn finds_ld_variables() {
        assert_eq!(
            find_ld_var(b"A=1\0LD_PRELOAD=/x.so\0"),
            Some("LD_PRELOAD".into())
        );
        assert_eq!(find_ld_var(b"A=1\0XLD_X=1\0"), None);
        assert_eq!(find_ld_var(b""), None);
    }

    #[test]
    fn finds_foreign_executable_mappings() {
        // dev 0xfd01 = 253:1
        let exe = "00400000-00401000 r-xp 00000000 fd:01 42 /usr/bin/veil-launcher\n";
        let vdso = "7ffd0000-7ffd2000 r-xp 00000000 00:00 0 [vdso]\n";
        let data = "00600000-00601000 rw-p 00000000 00:00 0 \n";
        let ok = format!("{exe}{vdso}{data}");
        assert_eq!(foreign_exec_mapping(&ok, 0xfd01, 42), None);
        let lib = format!("{ok}7f000000-7f001000 r-xp 00000000 fd:01 43 /tmp/evil.so\n");
        assert_eq!(
            foreign_exec_mapping(&lib, 0xfd01, 42),
            Some("/tmp/evil.so".into())
        );
        let anon = format!("{ok}7f000000-7f001000 rwxp 00000000 00:00 0 \n");
        assert_eq!(
            foreign_exec_mapping(&anon, 0xfd01, 42),
            Some("anonymous executable memory".into())
        );
        // Same inode on another device is another file.
        assert!(foreign_exec_mapping(exe, 0xfd02, 42).is_some());
        assert!(foreign_exec_mapping("garbage\n", 0xfd01, 42).is_some());
    }

    #[test]
    fn refuses_a_dynamic_executable() {
        let m = Measurer::new();
        let pid = i32::try_from(std::process::id())
            .map_err(|_| err(0, "pid"))
            .unwrap();
        // The test binary links glibc dynamically.
        let e = m.measure(pid).unwrap_err().to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        assert!(m.measure(i32::MAX).is_err());
    }
}
