//! Measuring a process from `/proc`, without trusting it.
//!
//! [`Measurer::measure`] reads the process's start time, `TracerPid` and the (dev, inode) of
//! `/proc/<pid>/exe`, opens and hashes the executable, and reads them again; any change (the
//! process exited and the pid was reused, it exec'd something else, a tracer attached) fails.
//! Hashes are cached by (dev, inode, size, mtime, ctime) of the opened file.

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
    fn measures_own_executable() -> Result<(), LasError> {
        let m = Measurer::new();
        let pid = i32::try_from(std::process::id()).map_err(|_| err(0, "pid"))?;
        let exe = std::env::current_exe().map_err(|e| LasError::io("current_exe", e))?;
        let want = veil_attest::measure::hash_file(&exe).map_err(|e| LasError::io("hash", e))?;
        assert_eq!(m.measure(pid)?, want);
        // Second time from the cache, same answer.
        assert_eq!(m.measure(pid)?, want);
        assert!(m.measure(i32::MAX).is_err());
        Ok(())
    }
}
