//! `veil run`, `veil envcas` and `veil measure`, as real processes. What can be tested without a
//! CAS: native runs, measurements, environment rules and fatal errors. (The LAS is in `las.rs`.)

use std::io::Write;
use std::path::Path;
use std::process::Command;

use veil_attest::{Target, measurement};

use crate::support::{launcher_bin, veil_bin};

/// A `veil` command with none of the launcher's variables inherited.
fn veil() -> Command {
    let mut c = Command::new(veil_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("VEIL_") || k.starts_with("SCONE_") {
            c.env_remove(k);
        }
    }
    c.env("VEIL_LOG", "warn");
    c
}

fn stdout_of(c: &mut Command) -> String {
    let o = c.output().expect("run veil");
    assert!(
        o.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

#[test]
fn native_run_uses_host_args_env_and_exit_status() {
    let o = veil()
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "echo \"$0|$1|$FOO\"; exit 7",
            "a",
            "b",
        ])
        .env("FOO", "bar")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "a|b|bar\n");
}

#[test]
fn hash_mode_prints_the_offline_measurement() {
    let launcher = launcher_bin();
    // `veil measure` uses the same launcher as `veil run` unless told otherwise.
    let offline = stdout_of(veil().args(["measure", "--program", "/bin/sh"]));
    assert_eq!(offline.len(), 64);
    let explicit = stdout_of(veil().args([
        "measure",
        "--launcher",
        launcher.to_str().expect("path"),
        "--program",
        "/bin/sh",
    ]));
    assert_eq!(explicit, offline);
    for var in ["VEIL_HASH", "SCONE_HASH"] {
        let online = stdout_of(veil().env(var, "1").args(["run", "--", "/bin/sh"]));
        assert_eq!(online, offline, "{var}");
    }
    // The launcher itself, without veil, says the same.
    let direct = stdout_of(
        Command::new(&launcher)
            .env("SCONE_HASH", "1")
            .args(["--program", "/bin/sh"]),
    );
    assert_eq!(direct, offline);
    // Resolved through PATH to the same file.
    let via_path = stdout_of(
        veil()
            .env("VEIL_HASH", "1")
            .env("PATH", "/bin")
            .args(["run", "--", "sh"]),
    );
    assert_eq!(via_path, offline);
    // The construction is the documented one, over the static launcher (not over `veil`).
    let lh = veil_attest::measure::hash_file(&launcher).expect("hash launcher");
    let ph = veil_attest::measure::hash_file(Path::new("/bin/sh")).expect("hash sh");
    assert_eq!(
        offline,
        measurement(&lh, &Target::Program { hash: ph }).to_hex()
    );
    let vh = veil_attest::measure::hash_file(&veil_bin()).expect("hash veil");
    assert_ne!(
        offline,
        measurement(&vh, &Target::Program { hash: ph }).to_hex()
    );

    let envcas_offline = stdout_of(veil().args(["measure", "--envcas"]));
    let envcas_online = stdout_of(veil().env("SCONE_HASH", "1").arg("envcas"));
    assert_eq!(envcas_online, envcas_offline);
    // envcas is measured as the static launcher, whichever name it is invoked by.
    let d = tempfile::tempdir().expect("tmp");
    let envcas_link = d.path().join("envcas");
    std::os::unix::fs::symlink(&launcher, &envcas_link).expect("symlink");
    let by_name = stdout_of(Command::new(&envcas_link).env("SCONE_HASH", "1"));
    assert_eq!(by_name, envcas_offline);
    assert_eq!(envcas_offline, measurement(&lh, &Target::Envcas).to_hex());
    assert_ne!(envcas_offline, offline);
    // measure needs exactly one of --program / --envcas.
    assert!(
        !veil()
            .args(["measure", "--launcher", "/bin/sh"])
            .output()
            .expect("run")
            .status
            .success()
    );
}

/// The program headers of an ELF64 little-endian file: (p_type) of each.
fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes"))
        })
        .collect()
}

#[test]
fn the_launcher_is_static_small_and_not_veil() {
    const PT_INTERP: u32 = 3;
    let launcher = std::fs::read(launcher_bin()).expect("read the launcher");
    let types = program_header_types(&launcher);
    assert!(!types.is_empty());
    assert!(
        !types.contains(&PT_INTERP),
        "the launcher has an ELF interpreter: it is dynamically linked"
    );
    assert!(
        launcher.len() <= 8 * 1024 * 1024,
        "the launcher is {} bytes (at most 8 MiB: it hashes itself at every start)",
        launcher.len()
    );
    // `veil` is the dynamically linked one, and is not what runs workloads.
    let veil = std::fs::read(veil_bin()).expect("read veil");
    assert!(program_header_types(&veil).contains(&PT_INTERP));
    // It answers as itself, and refuses what it does not know.
    let v = stdout_of(Command::new(launcher_bin()).arg("--version"));
    assert!(v.starts_with("veil-launcher "), "{v}");
    let o = Command::new(launcher_bin())
        .arg("--bogus")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unexpected option `--bogus`"));
}

#[test]
fn modified_launcher_copy_has_another_measurement() {
    let d = tempfile::tempdir().expect("tmp");
    let copy = d.path().join("veil-launcher");
    std::fs::copy(launcher_bin(), &copy).expect("copy");
    let run_copy = |p: &Path| {
        stdout_of(veil().env("VEIL_HASH", "1").args([
            "run",
            "--launcher",
            p.to_str().expect("path"),
            "--",
            "/bin/sh",
        ]))
    };
    let original = stdout_of(veil().env("VEIL_HASH", "1").args(["run", "--", "/bin/sh"]));
    assert_eq!(
        run_copy(&copy),
        original,
        "an identical copy measures the same"
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&copy)
        .expect("open");
    f.write_all(b"tampered").expect("append");
    drop(f);
    let tampered = run_copy(&copy);
    assert_ne!(tampered, original);
    // VEIL_LAUNCHER names it as well as --launcher does.
    let via_env = stdout_of(
        veil()
            .env("VEIL_HASH", "1")
            .env("VEIL_LAUNCHER", &copy)
            .args(["run", "--", "/bin/sh"]),
    );
    assert_eq!(via_env, tampered);
    let offline = stdout_of(veil().args([
        "measure",
        "--launcher",
        copy.to_str().expect("path"),
        "--program",
        "/bin/sh",
    ]));
    assert_eq!(tampered, offline);
    // A changed program changes it too.
    let prog = d.path().join("prog.sh");
    std::fs::write(&prog, "#!/bin/sh\necho one\n").expect("w");
    let m1 = stdout_of(
        veil()
            .env("VEIL_HASH", "1")
            .args(["run", "--", prog.to_str().expect("p")]),
    );
    std::fs::write(&prog, "#!/bin/sh\necho two\n").expect("w");
    let m2 = stdout_of(
        veil()
            .env("VEIL_HASH", "1")
            .args(["run", "--", prog.to_str().expect("p")]),
    );
    assert_ne!(m1, m2);
    // A launcher that is not there is a clear error.
    let o = veil()
        .args([
            "run",
            "--launcher",
            "/nonexistent/veil-launcher",
            "--",
            "/bin/sh",
        ])
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("the launcher /nonexistent/veil-launcher is not a file")
    );
}

fn fatal(c: &mut Command) -> String {
    let o = c.output().expect("run");
    assert!(!o.status.success(), "{c:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("[VEIL|FATAL] Could not initialize: "), "{err}");
    err
}

#[test]
fn launcher_fatal_errors() {
    let hash = "a".repeat(64);
    // VEIL_* and SCONE_* disagreeing (decision 18).
    let e = fatal(
        veil()
            .env("VEIL_CONFIG_ID", "s/a")
            .env("SCONE_CONFIG_ID", "s/b")
            .args(["run", "--", "/bin/true"]),
    );
    assert!(
        e.contains("VEIL_CONFIG_ID and SCONE_CONFIG_ID are both set, to different values"),
        "{e}"
    );
    let e = fatal(
        veil()
            .env("VEIL_MODE", "fast")
            .args(["run", "--", "/bin/true"]),
    );
    assert!(e.contains("`fast` is not one of sim, node, auto"), "{e}");
    // No CAS key hash: never trust on first use (decision 7). (This machine bakes none.)
    if !Path::new("/etc/veil/cas-key-hash").exists() {
        let e = fatal(
            veil()
                .env("SCONE_CONFIG_ID", "s/a")
                .args(["run", "--", "/bin/true"]),
        );
        assert!(e.contains("No CAS key hash"), "{e}");
    }
    // node never falls back to sim.
    let e = fatal(
        veil()
            .env("VEIL_CONFIG_ID", "s/a")
            .env("VEIL_CAS_KEY_HASH", &hash)
            .env("VEIL_MODE", "node")
            .env("VEIL_LAS_SOCKET", "/nonexistent/las.sock")
            .args(["run", "--", "/bin/true"]),
    );
    assert!(e.contains("no LAS answers at /nonexistent/las.sock"), "{e}");
    assert!(!e.contains("simulation mode"), "{e}");
    // sim: the warning, then the channel error for an unreachable CAS.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let e = fatal(
        veil()
            .env("VEIL_CONFIG_ID", "s/a@123456")
            .env("VEIL_CAS_KEY_HASH", &hash)
            .env("SCONE_MODE", "sim")
            .env("SCONE_CAS_ADDR", addr.to_string())
            .env("VEIL_SERVICE_ACCESS_TOKEN", "tok-secret")
            .args(["run", "--", "/bin/true"]),
    );
    assert!(e.contains("Application runs in simulation mode (sim tier): its memory and secrets are readable by the host!"), "{e}");
    assert!(
        e.contains("Failed to establish an encrypted channel to CAS"),
        "{e}"
    );
    assert!(!e.contains("123456") && !e.contains("tok-secret"), "{e}");
    // envcas without a config id has nothing to run.
    let e = fatal(veil().arg("envcas"));
    assert!(e.contains("envcas needs VEIL_CONFIG_ID"), "{e}");
}

/// A LAS socket that exists but refuses the launcher is fatal under `auto` (decision 20): a
/// local user who cannot use the node's LAS must not silently get a `sim` start instead.
#[test]
fn auto_mode_never_falls_back_to_sim_when_the_las_refuses() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let d = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = d.path().join("las.sock");
    // A root-only listening socket, like the LAS's default (mode 0600, owner root).
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let hash = "a".repeat(64);
    let run_as = |uid: Option<u32>, mode: &str| {
        let mut c = Command::new(launcher_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("VEIL_") || k.starts_with("SCONE_") {
                c.env_remove(k);
            }
        }
        c.env("VEIL_CONFIG_ID", "s/a")
            .env("VEIL_CAS_KEY_HASH", &hash)
            .env("VEIL_MODE", mode)
            .env("VEIL_LAS_SOCKET", &socket)
            // Unreachable CAS: a start that got past the tier choice fails there instead.
            .env("VEIL_CAS_ADDR", "127.0.0.1:9")
            .args(["--program", "/bin/true"]);
        if let Some(uid) = uid {
            c.uid(uid).gid(uid);
        }
        let o = c.output().expect("run the launcher");
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("proc"));
    assert_eq!(
        euid, 0,
        "this test needs root (to run the launcher as nobody against a root-only socket)"
    );
    for mode in ["auto", "node"] {
        let e = run_as(Some(65534), mode);
        assert!(
            e.contains("exists but refuses this launcher") && e.contains("EACCES"),
            "{mode}: {e}"
        );
        assert!(!e.contains("simulation mode"), "{mode}: {e}");
    }
    drop(listener);
    // Without a socket at all, auto is sim (with its warning).
    std::fs::remove_file(&socket).expect("rm");
    let e = run_as(None, "auto");
    assert!(e.contains("simulation mode"), "{e}");
}
