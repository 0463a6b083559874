//! What a dynamically linked program loads at start (decision 23): its ELF interpreter
//! (`PT_INTERP`) and the `DT_NEEDED` closure, resolved inside the image root the way glibc's
//! loader does: `DT_RPATH` of the object and its loaders (when the object has no `DT_RUNPATH`),
//! `LD_LIBRARY_PATH`, `DT_RUNPATH`, `/etc/ld.so.cache`, then the default directories; `$ORIGIN`,
//! `$LIB` and `$PLATFORM` are expanded. A candidate of another ELF class or machine is skipped,
//! as the loader skips it.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::Path;

use goblin::elf::Elf;

use crate::error::ConvertError;
use crate::rootfs::{host, resolve};

/// The loader's cache.
pub const LD_SO_CACHE: &str = "/etc/ld.so.cache";
/// Libraries glibc preloads into every program.
pub const LD_SO_PRELOAD: &str = "/etc/ld.so.preload";
/// glibc's default directories on x86-64 (Debian's multiarch ones first).
const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// What the program loads at start, in load order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The interpreter, `/etc/ld.so.cache` when the loader reads it, then the libraries, as
    /// image paths (symlinks resolved).
    pub files: Vec<String>,
}

struct Obj {
    class64: bool,
    machine: u16,
    interp: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

fn parse(root: &Path, path: &str) -> Result<Option<Obj>, ConvertError> {
    let hp = host(root, path);
    let data = fs::read(&hp).map_err(|e| ConvertError::Program {
        path: path.to_string(),
        why: e.to_string(),
    })?;
    if data.get(..4) != Some(b"\x7fELF") {
        return Ok(None);
    }
    let elf = Elf::parse(&data).map_err(|e| ConvertError::Program {
        path: path.to_string(),
        why: format!("not a valid ELF file: {e}"),
    })?;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(Some(Obj {
        class64: elf.is_64,
        machine: elf.header.e_machine,
        interp: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
    }))
}

fn expand(dir: &str, origin: &str) -> String {
    dir.replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin)
        .replace("${LIB}", "lib/x86_64-linux-gnu")
        .replace("$LIB", "lib/x86_64-linux-gnu")
        .replace("${PLATFORM}", "x86_64")
        .replace("$PLATFORM", "x86_64")
}

/// Entries of a glibc `ld.so.cache` (the `glibc-ld.so.cache1.1` format, alone or after the old
/// `ld.so-1.7.0` table): (name, path) in cache order.
pub fn parse_ld_so_cache(data: &[u8]) -> Result<Vec<(String, String)>, String> {
    const NEW: &[u8] = b"glibc-ld.so.cache1.1";
    const OLD: &[u8] = b"ld.so-1.7.0";
    let u32_at = |d: &[u8], off: usize| -> Option<usize> {
        d.get(off..off + 4)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 4]| u32::from_le_bytes(b) as usize)
    };
    let start = if data.starts_with(NEW) {
        0
    } else if data.starts_with(OLD) {
        let n = u32_at(data, 12).ok_or("truncated")?;
        let end = 16 + n * 12;
        // The new table follows, aligned to 8 bytes.
        (end + 7) & !7
    } else {
        return Err("unknown format".into());
    };
    let d = data.get(start..).ok_or("truncated")?;
    if !d.starts_with(NEW) {
        return Err("unknown format".into());
    }
    let nlibs = u32_at(d, 20).ok_or("truncated")?;
    let mut out = Vec::new();
    let cstr = |off: usize| -> Option<String> {
        let s = d.get(off..)?;
        let end = s.iter().position(|&b| b == 0)?;
        String::from_utf8(s.get(..end)?.to_vec()).ok()
    };
    for i in 0..nlibs {
        let e = 48 + i * 24;
        let key = u32_at(d, e + 4).ok_or("truncated")?;
        let value = u32_at(d, e + 8).ok_or("truncated")?;
        let (Some(k), Some(v)) = (cstr(key), cstr(value)) else {
            return Err("bad string offset".into());
        };
        out.push((k, v));
    }
    Ok(out)
}

/// Resolve what `program` (an image path, symlinks resolved) loads at start, with the
/// `LD_LIBRARY_PATH` the program will get. `Ok(None)` when the program is not an ELF file.
pub fn loaded(
    root: &Path,
    program: &str,
    ld_library_path: Option<&str>,
) -> Result<Loaded, ConvertError> {
    let Some(main) = parse(root, program)? else {
        return Err(ConvertError::Program {
            path: program.to_string(),
            why: "not an ELF executable (the measured --binary must be one; scripts run through their interpreter as --binary)".into(),
        });
    };
    let mut files = Vec::new();
    let Some(interp) = main.interp.clone() else {
        if !main.needed.is_empty() {
            return Err(ConvertError::Program {
                path: program.to_string(),
                why: "needs shared libraries but has no ELF interpreter".into(),
            });
        }
        return Ok(Loaded { files });
    };
    let ip = resolve(root, &interp, true).map_err(|why| ConvertError::Program {
        path: interp.clone(),
        why,
    })?;
    if !host(root, &ip).is_file() {
        return Err(ConvertError::Program {
            path: program.to_string(),
            why: format!("its ELF interpreter {interp} is not in the image"),
        });
    }
    files.push(ip);
    if host(root, LD_SO_PRELOAD).exists() {
        return Err(ConvertError::Program {
            path: LD_SO_PRELOAD.into(),
            why: "preloaded libraries are not supported in converted images; remove the file"
                .into(),
        });
    }
    let cache = match fs::read(host(root, LD_SO_CACHE)) {
        Ok(d) => {
            let entries = parse_ld_so_cache(&d).map_err(|why| ConvertError::Program {
                path: LD_SO_CACHE.into(),
                why,
            })?;
            files.push(LD_SO_CACHE.to_string());
            entries
        }
        Err(_) => Vec::new(),
    };
    let env_dirs: Vec<String> = ld_library_path
        .unwrap_or_default()
        .split([':', ';'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut seen_names = BTreeSet::new();
    let mut seen_paths: BTreeSet<String> = files.iter().cloned().collect();
    seen_paths.insert(program.to_string());
    // (object path, object, rpaths of its loaders)
    let mut queue: VecDeque<(String, Obj, Vec<String>)> = VecDeque::new();
    queue.push_back((program.to_string(), main, Vec::new()));
    while let Some((opath, obj, inherited)) = queue.pop_front() {
        let origin = opath
            .rsplit_once('/')
            .map(|(d, _)| d)
            .unwrap_or("/")
            .to_string();
        let origin = if origin.is_empty() {
            "/".to_string()
        } else {
            origin
        };
        let own_rpath: Vec<String> = obj.rpath.iter().map(|d| expand(d, &origin)).collect();
        let mut chain = if obj.runpath.is_empty() {
            own_rpath.clone()
        } else {
            Vec::new()
        };
        chain.extend(inherited.iter().cloned());
        for name in &obj.needed {
            if !seen_names.insert(name.clone()) {
                continue;
            }
            let mut candidates: Vec<String> = Vec::new();
            if name.contains('/') {
                candidates.push(name.clone());
            } else {
                let mut dirs: Vec<String> = Vec::new();
                if obj.runpath.is_empty() {
                    dirs.extend(chain.iter().cloned());
                }
                dirs.extend(env_dirs.iter().cloned());
                dirs.extend(obj.runpath.iter().map(|d| expand(d, &origin)));
                candidates.extend(
                    dirs.iter()
                        .map(|d| format!("{}/{name}", d.trim_end_matches('/'))),
                );
                candidates.extend(
                    cache
                        .iter()
                        .filter(|(k, _)| k == name)
                        .map(|(_, v)| v.clone()),
                );
                candidates.extend(DEFAULT_DIRS.iter().map(|d| format!("{d}/{name}")));
            }
            let mut found = None;
            for c in &candidates {
                let Ok(real) = resolve(root, c, true) else {
                    continue;
                };
                if !host(root, &real).is_file() {
                    continue;
                }
                match parse(root, &real)? {
                    Some(o) if o.class64 == obj.class64 && o.machine == obj.machine => {
                        found = Some((c.clone(), real, o));
                        break;
                    }
                    _ => continue,
                }
            }
            let Some((as_found, real, lib)) = found else {
                return Err(ConvertError::Program {
                    path: opath.clone(),
                    why: format!("needs {name}, which is not in the image"),
                });
            };
            if seen_paths.insert(real.clone()) {
                files.push(real);
                let next_inherited = if lib.runpath.is_empty() {
                    chain.clone()
                } else {
                    Vec::new()
                };
                queue.push_back((as_found, lib, next_inherited));
            }
        }
    }
    Ok(Loaded { files })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_bytes(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut strings = Vec::new();
        let header = 48 + entries.len() * 24;
        let mut table = Vec::new();
        for (k, v) in entries {
            let ko = header + strings.len();
            strings.extend_from_slice(k.as_bytes());
            strings.push(0);
            let vo = header + strings.len();
            strings.extend_from_slice(v.as_bytes());
            strings.push(0);
            table.extend_from_slice(&0x0303i32.to_le_bytes());
            table.extend_from_slice(&(ko as u32).to_le_bytes());
            table.extend_from_slice(&(vo as u32).to_le_bytes());
            table.extend_from_slice(&0u32.to_le_bytes());
            table.extend_from_slice(&0u64.to_le_bytes());
        }
        let mut d = b"glibc-ld.so.cache1.1".to_vec();
        d.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        d.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        d.resize(48, 0);
        d.extend(table);
        d.extend(strings);
        d
    }

    #[test]
    fn parses_the_loader_cache() {
        let d = cache_bytes(&[
            ("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
            ("libz.so.1", "/opt/z/libz.so.1"),
        ]);
        assert_eq!(
            parse_ld_so_cache(&d).unwrap(),
            vec![
                (
                    "libc.so.6".to_string(),
                    "/lib/x86_64-linux-gnu/libc.so.6".to_string()
                ),
                ("libz.so.1".to_string(), "/opt/z/libz.so.1".to_string())
            ]
        );
        assert!(parse_ld_so_cache(b"garbage").is_err());
        assert!(parse_ld_so_cache(&d[..60]).is_err());
    }

    #[test]
    fn this_machines_ld_so_cache_parses() {
        // Debian's own cache, written by ldconfig, which nobody here wrote.
        let d = fs::read("/etc/ld.so.cache").unwrap();
        let entries = parse_ld_so_cache(&d).unwrap();
        assert!(
            entries
                .iter()
                .any(|(k, v)| k == "libc.so.6" && v.ends_with("/libc.so.6"))
        );
    }

    #[test]
    fn origin_and_lib_expand() {
        assert_eq!(
            expand("$ORIGIN/../lib", "/opt/app/bin"),
            "/opt/app/bin/../lib"
        );
        assert_eq!(
            expand("${ORIGIN}/x:$LIB", "/a"),
            "/a/x:lib/x86_64-linux-gnu"
        );
    }

    #[test]
    fn a_host_program_closure_matches_ldd() {
        // Copy /bin/ls and what ldd says it loads into a root, then compare with ldd's list.
        let out = std::process::Command::new("ldd")
            .arg("/bin/ls")
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut want: Vec<String> = Vec::new();
        for line in text.lines() {
            let path = match line.split_once("=>") {
                Some((_, r)) => r.split_whitespace().next().unwrap_or_default().to_string(),
                None => line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            };
            if path.starts_with('/') {
                want.push(path);
            }
        }
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let copy = |p: &str| {
            let dst = host(root, p);
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(p, &dst).unwrap();
        };
        copy("/bin/ls");
        for w in &want {
            copy(w);
        }
        let interp = "/lib64/ld-linux-x86-64.so.2".to_string();
        let got = loaded(root, "/bin/ls", None).unwrap();
        let mut got_sorted = got.files.clone();
        got_sorted.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        want_sorted.dedup();
        assert_eq!(got_sorted, want_sorted);
        assert_eq!(
            got.files.first(),
            Some(&interp),
            "the interpreter comes first"
        );
        // A missing library is named.
        let libc = want.iter().find(|w| w.contains("libc.so")).unwrap();
        fs::remove_file(host(root, libc)).unwrap();
        let e = loaded(root, "/bin/ls", None).unwrap_err().to_string();
        assert!(
            e.contains("needs libc.so.6, which is not in the image"),
            "{e}"
        );
    }
}
