//! What the launcher runs is what was measured (decision 3 as amended), what it leaves on the
//! host (issue 16 §5: mount points only on its own tmpfs, never through symbolic links), and a
//! lost volume lease stops the program (decision 9). Each test runs the real launcher
//! (`veil run`) against a real CAS in the `sim` tier.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use veil_identity::Identity;

use crate::support::{CasProcess, create_session, launcher_command, pin_cas_as, veil_bin};

/// A CAS (sim tier allowed), its owner's home and a scratch directory.
struct Env {
    home: tempfile::TempDir,
    _data: tempfile::TempDir,
    tmp: tempfile::TempDir,
    cas: CasProcess,
}

impl Env {
    fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let owner = Identity::generate("owner", &[]).unwrap();
        let cas = CasProcess::start_with(
            home.path(),
            data.path(),
            &["--allow-sim-tier", "--owner", &owner.key_hash()],
        );
        pin_cas_as(home.path(), &owner, &cas);
        Self {
            home,
            _data: data,
            tmp,
            cas,
        }
    }

    fn t(&self) -> &Path {
        self.tmp.path()
    }

    /// Create session `name` with one service `svc` running `command` (measured as `program`)
    /// of image `img`; `image` is spliced into the image (injection files, volumes), `tail`
    /// after `images:`.
    fn session(&self, name: &str, program: &Path, command: &str, image: &str, tail: &str) {
        let yaml = format!(
            "name: $SESSION\nversion: \"0.3\"\nservices:\n  - name: svc\n    image_name: img\n    mrenclaves: [$MRENCLAVE]\n    command: {command}\n    pwd: /\nimages:\n  - name: img\n{image}{tail}security:\n  attestation:\n    tolerate: [debug-mode]\n"
        );
        let file = self.t().join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        create_session(self.home.path(), name, &measure(program), &file);
    }

    /// `veil run -- PROGRAM` for `session/svc`.
    fn run(&self, session: &str, program: &Path) -> Command {
        let mut c = launcher_command(&veil_bin());
        c.env("VEIL_LOG", "warn")
            .env("VEIL_MODE", "sim")
            .env("VEIL_CONFIG_ID", format!("{session}/svc"))
            .env("VEIL_CAS_ADDR", &self.cas.enclave)
            .env("VEIL_CAS_KEY_HASH", &self.cas.key_hash)
            .arg("run")
            .arg("--")
            .arg(program);
        c
    }
}

/// The measurement of the launcher running `program` (`VEIL_HASH=1`).
fn measure(program: &Path) -> String {
    let o = launcher_command(&veil_bin())
        .env("VEIL_HASH", "1")
        .arg("run")
        .arg("--")
        .arg(program)
        .output()
        .unwrap();
    let m = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert_eq!(m.len(), 64, "{m}: {}", String::from_utf8_lossy(&o.stderr));
    m
}

#[track_caller]
fn ok_stdout(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether a TCP connection to local `port` is established (per `/proc/net/tcp{,6}`).
fn connected_to(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                // local, remote, state: a client end whose remote port is `port`, ESTABLISHED.
                cols.len() > 3 && cols[2].ends_with(&want) && cols[3] == "01"
            })
    })
}

fn signal(pid: u32, sig: &str) {
    let o = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "kill -{sig} {pid}: {o:?}");
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn cas_pid(cas: &CasProcess) -> u32 {
    // The CAS is the process listening on the enclave port; find it through /proc.
    let port: u16 = cas.enclave.rsplit(':').next().unwrap().parse().unwrap();
    let want = format!(":{port:04X}");
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() > 9 && cols[1].ends_with(&want) && cols[3] == "0A")
                .then(|| cols[9].to_string())
        })
        .expect("the CAS's listening socket");
    let link = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == link))
        {
            return pid;
        }
    }
    panic!("no process holds the CAS's socket");
}

/// A program rewritten in place after the launcher hashed it (and before it runs) still runs
/// the measured content: the launcher runs its private copy. The CAS is stopped (SIGSTOP) so
/// the launcher waits in attestation, after hashing; once its connection to the CAS is
/// established the test rewrites the file and lets the CAS go on.
#[test]
fn a_program_rewritten_after_measurement_runs_as_measured() {
    let env = Env::new();
    let prog = env.t().join("prog.sh");
    write_exe(&prog, "#!/bin/sh\necho measured content\n");
    env.session("rewrite", &prog, "prog.sh", "", "");
    let port: u16 = env.cas.enclave.rsplit(':').next().unwrap().parse().unwrap();
    let pid = cas_pid(&env.cas);
    signal(pid, "STOP");
    let child = env
        .run("rewrite", &prog)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the launcher's connection to the CAS",
        Duration::from_secs(20),
        || connected_to(port),
    );
    // In place (same inode): what a descriptor-executing launcher would run.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&prog)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"#!/bin/sh\necho REWRITTEN\n")
        })
        .unwrap();
    signal(pid, "CONT");
    let o = child.wait_with_output().unwrap();
    let out = ok_stdout(&o);
    assert_eq!(out, "measured content\n");
    // The host file keeps its new content: the copy lived only in the launcher's namespace.
    assert_eq!(
        std::fs::read_to_string(&prog).unwrap(),
        "#!/bin/sh\necho REWRITTEN\n"
    );
}

/// A binary finding its library through `$ORIGIN` runs, and it sees its original path as
/// `/proc/self/exe` (not a copy, memfd or descriptor).
#[test]
fn an_origin_binary_runs_and_sees_its_own_path() {
    let env = Env::new();
    let bin = env.t().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("lib.c"),
        "const char *greeting(void) { return \"hello from $ORIGIN\"; }\n",
    )
    .unwrap();
    std::fs::write(
        bin.join("main.c"),
        "#include <stdio.h>\n#include <unistd.h>\nconst char *greeting(void);\nint main(void) {\n  char p[4096]; ssize_t n = readlink(\"/proc/self/exe\", p, sizeof p - 1);\n  if (n < 0) return 2; p[n] = 0;\n  printf(\"%s\\n%s\\n\", greeting(), p); return 0;\n}\n",
    )
    .unwrap();
    let cc = |args: &[&str]| {
        let o = Command::new("cc")
            .current_dir(&bin)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "cc {args:?}: {o:?}");
    };
    cc(&["-shared", "-fPIC", "-o", "libgreet.so", "lib.c"]);
    cc(&[
        "-o",
        "app",
        "main.c",
        "-L.",
        "-lgreet",
        "-Wl,-rpath,$ORIGIN",
        "-Wl,--disable-new-dtags",
    ]);
    let app = std::fs::canonicalize(bin.join("app")).unwrap();
    env.session("origin", &app, "app", "", "");
    let o = env.run("origin", &app).output().unwrap();
    assert_eq!(
        ok_stdout(&o),
        format!("hello from $ORIGIN\n{}\n", app.display())
    );
}

/// A `#!/usr/bin/env python3` script runs and sees its original location as `sys.argv[0]`
/// and `sys.path[0]`.
#[test]
fn a_python_script_sees_its_original_location() {
    let env = Env::new();
    let dir = std::fs::canonicalize(env.t()).unwrap().join("py");
    std::fs::create_dir(&dir).unwrap();
    let script = dir.join("app.py");
    write_exe(
        &script,
        "#!/usr/bin/env python3\nimport sys\nprint(sys.argv[0])\nprint(sys.path[0])\n",
    );
    env.session("py", &script, "app.py", "", "");
    let o = env.run("py", &script).output().unwrap();
    assert_eq!(
        ok_stdout(&o),
        format!("{}\n{}\n", script.display(), dir.display())
    );
}

/// Every path below `dir` (recursively), sorted.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    out
}

fn injection(path: &Path, content: &str) -> String {
    format!(
        "    injection_files:\n      - path: {}\n        content: {content}\n",
        path.display()
    )
}

/// Injection files whose mount points are missing are placed without creating anything on
/// the host: after `kill -9` of the launcher while the program runs, the host directory and
/// `$TMPDIR` hold exactly what they held before.
#[test]
fn kill9_leaves_nothing_on_the_host() {
    let env = Env::new();
    let t = std::fs::canonicalize(env.t()).unwrap();
    let host = t.join("host");
    std::fs::create_dir_all(host.join("existing")).unwrap();
    std::fs::write(host.join("existing/keep"), "host\n").unwrap();
    let marks = tempfile::tempdir().unwrap();
    let ready = marks.path().join("ready");
    let prog = t.join("prog.sh");
    write_exe(
        &prog,
        &format!(
            "#!/bin/sh\n{{ cat {f}; echo; echo $$; }} > {ready}.tmp; mv {ready}.tmp {ready}\nwhile :; do sleep 0.05; done\n",
            f = host.join("new/dir/secret").display(),
            ready = ready.display()
        ),
    );
    let files = format!(
        "{}      - path: {}\n        content: two\n",
        injection(&host.join("new/dir/secret"), "injected"),
        host.join("existing/added").display()
    );
    env.session("kill9", &prog, "prog.sh", &files, "");
    let tmpdir = std::env::temp_dir();
    let before = (listing(&host), listing(&tmpdir));
    let mut launcher: Child = env
        .run("kill9", &prog)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the program", Duration::from_secs(20), || ready.exists());
    let text = std::fs::read_to_string(&ready).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("injected"));
    let program_pid: u32 = lines.next().unwrap().parse().unwrap();
    signal(launcher.id(), "KILL");
    let _ = launcher.wait();
    signal(program_pid, "KILL");
    let after_host = listing(&host);
    let new_tmp: Vec<_> = listing(&tmpdir)
        .into_iter()
        .filter(|p| !before.1.contains(p) && p.to_string_lossy().contains("veil-"))
        .collect();
    assert_eq!(after_host, before.0);
    assert!(new_tmp.is_empty(), "{new_tmp:?}");
    assert_eq!(
        std::fs::read_to_string(host.join("existing/keep")).unwrap(),
        "host\n"
    );
}

/// A symbolic link planted where an injection file's directory should be, pointing to a host
/// directory, is never followed: the launcher refuses with a clear error and the host
/// directory stays untouched.
#[test]
fn a_planted_symlink_is_not_followed() {
    let env = Env::new();
    let t = std::fs::canonicalize(env.t()).unwrap();
    let victim = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.join("app")).unwrap();
    std::os::unix::fs::symlink(victim.path(), t.join("app/conf")).unwrap();
    let prog = t.join("prog.sh");
    write_exe(&prog, "#!/bin/sh\necho ran\n");
    env.session(
        "symlink",
        &prog,
        "prog.sh",
        &injection(&t.join("app/conf/secret"), "s"),
        "",
    );
    let o = env.run("symlink", &prog).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("[VEIL|FATAL]"), "{err}");
    assert!(
        err.contains(&format!(
            "{} is a symbolic link: the launcher does not follow symbolic links",
            t.join("app/conf").display()
        )),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("ran"));
    assert_eq!(listing(victim.path()), Vec::<PathBuf>::new());
}

/// When the launcher can no longer prove its lease on a rollback-protected volume (here: the
/// CAS is killed), it stops the program and exits with a FATAL naming the lease, within the
/// lease TTL (`VEIL_LEASE_TIMEOUT_MS`, 2 s) plus the SIGTERM grace.
#[test]
fn losing_the_volume_lease_stops_the_program() {
    let mut env = Env::new();
    let t = std::fs::canonicalize(env.t()).unwrap();
    std::fs::create_dir(t.join("vol")).unwrap();
    let marks = tempfile::tempdir().unwrap();
    let ready = marks.path().join("ready");
    let term = marks.path().join("term");
    let prog = t.join("prog.sh");
    write_exe(
        &prog,
        &format!(
            "#!/bin/sh\ntrap 'touch {term}; exit 7' TERM\necho x > {vol}/f\ntouch {ready}\nwhile :; do sleep 0.05; done\n",
            term = term.display(),
            vol = t.join("vol/V1").display(),
            ready = ready.display()
        ),
    );
    let image = format!(
        "    volumes:\n      - name: V1\n        path: {}\n",
        t.join("vol/V1").display()
    );
    env.session(
        "lease",
        &prog,
        "prog.sh",
        &image,
        "volumes:\n  - name: V1\n",
    );
    let child = env
        .run("lease", &prog)
        .env("VEIL_VOLUMES_DIR", t.join("stores"))
        .env("VEIL_VOLUME_MODE", "staged")
        .env("VEIL_LEASE_TIMEOUT_MS", "2000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the program", Duration::from_secs(20), || ready.exists());
    let killed = Instant::now();
    env.cas.kill9();
    let o = child.wait_with_output().unwrap();
    let took = killed.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(
            "[VEIL|FATAL] Could not initialize: Stopped the program: the lease on volume V1 can no longer be proven"
        ),
        "{err}"
    );
    assert!(err.contains("within the lease TTL of 2000 ms"), "{err}");
    assert!(term.exists(), "the program did not get SIGTERM: {err}");
    assert!(took < Duration::from_secs(8), "took {took:?}: {err}");
}

/// A converted image's root, built by hand the way `veil sconify-image` lays it out (decisions
/// 19, 23): a dynamic C program, its interpreter and libraries as `ldd` resolves them, the static
/// launcher at `/usr/lib/veil/veil-launcher`, and `/etc/veil/program` listing the program and
/// what it loads.
struct ImageRoot {
    root: PathBuf,
    listed: Vec<String>,
}

impl ImageRoot {
    fn new(env: &Env, cas_key_hash: &str) -> Self {
        let root = env.t().join("rootfs");
        let src = env.t().join("hello.c");
        std::fs::write(
            &src,
            "#include <stdio.h>\nint main(int c, char **v) { printf(\"hello from the image %s\\n\", c > 1 ? v[1] : \"-\"); return 0; }\n",
        )
        .unwrap();
        let exe = env.t().join("hello");
        let o = Command::new("cc")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // What the loader maps, as ldd resolves it on this machine: the interpreter last.
        let ldd = Command::new("ldd").arg(&exe).output().unwrap();
        assert!(ldd.status.success());
        let mut libs = Vec::new();
        let mut interp = None;
        for l in String::from_utf8_lossy(&ldd.stdout).lines() {
            let l = l.trim();
            if let Some((_, rest)) = l.split_once("=> ") {
                if let Some(p) = rest
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/'))
                {
                    libs.push(p.to_string());
                }
            } else if l.starts_with('/') {
                interp = l.split_whitespace().next().map(str::to_string);
            }
        }
        let mut listed = vec![interp.expect("an ELF interpreter")];
        listed.extend(libs);
        for p in std::iter::once(&"/app/hello".to_string()).chain(&listed) {
            let from = if p == "/app/hello" {
                exe.clone()
            } else {
                PathBuf::from(p)
            };
            let to = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            // Regular files (symlinks resolved), as a converted image's layers hold them.
            std::fs::copy(&from, &to).unwrap();
        }
        let launcher = root.join("usr/lib/veil/veil-launcher");
        std::fs::create_dir_all(launcher.parent().unwrap()).unwrap();
        std::fs::copy(crate::support::launcher_bin(), &launcher).unwrap();
        for d in ["proc", "dev", "tmp", "etc/veil"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mut program_file = String::from("/app/hello\n");
        for p in &listed {
            program_file.push_str(p);
            program_file.push('\n');
        }
        std::fs::write(root.join("etc/veil/program"), program_file).unwrap();
        std::fs::write(
            root.join("etc/veil/cas-key-hash"),
            format!("{cas_key_hash}\n"),
        )
        .unwrap();
        Self { root, listed }
    }

    /// The v2 measurement (decision 23) of the image as it is now.
    fn measurement(&self) -> String {
        let hash = |p: &str| {
            veil_attest::measure::hash_file(&self.root.join(p.trim_start_matches('/'))).unwrap()
        };
        let files: Vec<veil_attest::Digest32> = self.listed.iter().map(|p| hash(p)).collect();
        veil_attest::measure::measurement_v2(
            &hash("/usr/lib/veil/veil-launcher"),
            &hash("/app/hello"),
            &veil_attest::measure::loaded_list(&self.listed),
            &files,
        )
        .to_hex()
    }

    /// Run the image's entrypoint (`veil-launcher --`) in its root, as a container runtime
    /// would: a private mount namespace where the root is a mount point (bound onto itself),
    /// with /proc, /dev and a /tmp, then chroot.
    fn run(&self, env: &Env, session: &str, args: &[&str]) -> Output {
        let script = r#"set -e; r="$1"; shift
mount --bind "$r" "$r"; mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"; mount -t tmpfs tmpfs "$r/tmp"
exec chroot "$r" /usr/lib/veil/veil-launcher -- "$@""#;
        let mut c = launcher_command(Path::new("unshare"));
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&self.root)
        .args(args)
        .env("VEIL_LOG", "warn")
        .env("VEIL_MODE", "sim")
        .env("SCONE_CONFIG_ID", format!("{session}/svc"))
        .env("SCONE_CAS_ADDR", &env.cas.enclave);
        c.output().unwrap()
    }
}

/// Decision 23 in the launcher: a converted image's program runs with what it loads measured
/// (measurement v2 over the listed files), and a swapped library, an unlisted
/// `/etc/ld.so.preload` or a listed file that is gone is refused.
#[test]
fn an_image_program_runs_with_what_it_loads_measured() {
    let env = Env::new();
    let image = ImageRoot::new(&env, &env.cas.key_hash);
    let m = image.measurement();
    let yaml = "name: $SESSION\nversion: \"0.3\"\nservices:\n  - name: svc\n    image_name: img\n    mrenclaves: [$MRENCLAVE]\n    command: hello @@1\n    pwd: /\nimages:\n  - name: img\nsecurity:\n  attestation:\n    tolerate: [debug-mode]\n";
    let file = env.t().join("image.yaml");
    std::fs::write(&file, yaml).unwrap();
    create_session(env.home.path(), "image", &m, &file);

    // SCONE_HASH=1 prints the same v2 measurement the test computed.
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t proc proc "$1/proc" && exec chroot "$1" /usr/lib/veil/veil-launcher --"#)
        .arg("sh")
        .arg(&image.root)
        .env("SCONE_HASH", "1")
        .output()
        .unwrap();
    assert_eq!(ok_stdout(&o).trim(), m);

    let out = ok_stdout(&image.run(&env, "image", &["from-host"]));
    assert_eq!(out, "hello from the image from-host\n");

    // A library swapped in a layer: another measurement, refused by the CAS.
    let libc = image
        .listed
        .iter()
        .find(|p| p.contains("libc.so"))
        .expect("libc is loaded")
        .clone();
    let libc_path = image.root.join(libc.trim_start_matches('/'));
    let original = std::fs::read(&libc_path).unwrap();
    let mut swapped = original.clone();
    swapped.extend_from_slice(b"\0swapped");
    std::fs::write(&libc_path, &swapped).unwrap();
    let o = image.run(&env, "image", &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("[VEIL|FATAL]") && err.contains("Attestation failed"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("hello"));
    std::fs::write(&libc_path, &original).unwrap();

    // An /etc/ld.so.preload the list does not name: refused before attesting.
    let preload = image.root.join("etc/ld.so.preload");
    std::fs::write(&preload, "/tmp/evil.so\n").unwrap();
    let o = image.run(&env, "image", &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/etc/ld.so.preload exists but is not among the measured files"),
        "{err}"
    );
    std::fs::remove_file(&preload).unwrap();

    // A listed file that is gone: refused, naming it.
    let hidden = image.root.join("hidden-libc");
    std::fs::rename(&libc_path, &hidden).unwrap();
    let o = image.run(&env, "image", &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("Cannot open the loaded file {libc}")),
        "{err}"
    );
    std::fs::rename(&hidden, &libc_path).unwrap();

    // And the image runs again as measured.
    let out = ok_stdout(&image.run(&env, "image", &["again"]));
    assert_eq!(out, "hello from the image again\n");
}
