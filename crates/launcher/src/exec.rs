//! The executor: the plan, the private mount namespace with the injection files, and the
//! program as a child.
//!
//! * [`plan`](mod@plan): the CAS's configuration → [`Plan`] (host substitutions, path checks; pure).
//! * [`namespace`]: the private mount namespace and private root, staging tmpfs, mount points
//!   made on launcher tmpfs only (never through a symbolic link), bind-mounted injection files,
//!   and the [`namespace::Undo`] drop guard that unmounts whatever was placed.
//! * [`run`]: fork and `execve` of the measured copy's path (or `execveat` of the measured
//!   descriptor), signal forwarding, wait.

pub mod namespace;
pub mod plan;
pub mod run;

pub use namespace::{PlacedFiles, Undo, enter_private_mount_namespace, place_files};
pub use plan::{Plan, plan};
pub(crate) use run::FORWARDED;
pub use run::{ExecTarget, spawn_and_wait};

#[cfg(test)]
mod tests {
    //! The executor changes the process's mount namespace, so each case re-executes this test
    //! binary with `VEIL_TEST_EXECUTOR` set; the `executor_child` "test" then runs the
    //! executor in that fresh process and exits with the program's status.
    use super::*;
    use crate::program::MeasuredProgram;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};
    use veil_api::workload::ConfigResponse;
    use veil_api::workload::InjectionFile;

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
        let sh = MeasuredProgram::open(Path::new("/bin/sh"), &[]).expect("open sh");
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
            content: content.to_vec().into(),
            mode,
        }
    }

    fn secret(s: &str) -> veil_types::SecretString {
        veil_types::SecretString::from(s.to_string())
    }

    fn config(
        argv: Vec<String>,
        env: &[(&str, &str)],
        pwd: &Path,
        files: Vec<InjectionFile>,
    ) -> ConfigResponse {
        ConfigResponse {
            argv: argv.iter().map(|a| secret(a)).collect(),
            env: env
                .iter()
                .map(|(a, b)| (a.to_string(), secret(b)))
                .collect(),
            pwd: Some(pwd.display().to_string()),
            injection_files: files,
            code_region: None,
            volumes: vec![],
            instance_token: secret("t"),
        }
    }

    #[test]
    fn runs_program_with_config_and_private_files() {
        let d = tempfile::tempdir().expect("tmp");
        let t = d.path();
        // Outputs go elsewhere: new entries in `t` live only in the namespace (it is mirrored).
        let o = tempfile::tempdir().expect("tmp");
        std::fs::write(t.join("existing"), b"host content").expect("w");
        let new = t.join("new/dir/f");
        let out = o.path().join("out.txt");
        let before = listing(t);
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
        // Nothing leaked onto the host: original content, no mount point was ever made there.
        assert_eq!(
            std::fs::read(t.join("existing")).expect("r"),
            b"host content"
        );
        assert_eq!(listing(t), before);
    }

    /// Every path below `dir` (recursively), sorted.
    fn listing(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let p = e.path();
                if e.file_type().expect("type").is_dir() {
                    todo.push(p.clone());
                }
                out.push(p);
            }
        }
        out.sort();
        out
    }

    #[test]
    fn mount_points_never_follow_symlinks_and_never_touch_the_host() {
        let d = tempfile::tempdir().expect("tmp");
        let t = d.path();
        let host = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(t.join("real")).expect("mkdir");
        std::os::unix::fs::symlink(host.path(), t.join("link")).expect("symlink");
        let before = (listing(t), listing(host.path()));
        let spec = Spec {
            config: config(
                vec!["sh".into(), "-c".into(), "exit 0".into()],
                &[],
                t,
                vec![
                    file(&t.join("real/new/f"), b"one", 0o600),
                    file(&t.join("link/f"), b"two", 0o600),
                ],
            ),
            host_argv: vec!["sh".into()],
            envcas_config: None,
        };
        let o = child(&spec).output().expect("run");
        assert_eq!(o.status.code(), Some(100));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains(&format!(
                "{} is a symbolic link: the launcher does not follow symbolic links",
                t.join("link").display()
            )),
            "{e}"
        );
        assert_eq!((listing(t), listing(host.path())), before);
    }

    #[test]
    fn a_failed_placement_leaves_nothing_behind() {
        let d = tempfile::tempdir().expect("tmp");
        let t = d.path();
        let o = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(t.join("isdir")).expect("mkdir");
        let out = o.path().join("out");
        let before = listing(t);
        // The first file is placed (directories, placeholder, bind mount); the second cannot
        // be (its path is a directory), so the program never runs and the guard undoes both.
        let spec = Spec {
            config: config(
                vec!["sh".into(), "-c".into(), format!("touch {}", out.display())],
                &[],
                t,
                vec![
                    file(&t.join("new/dir/f"), b"one", 0o600),
                    file(&t.join("isdir"), b"two", 0o600),
                ],
            ),
            host_argv: vec!["sh".into()],
            envcas_config: None,
        };
        // The host's temp dir, as the launcher sees it: it must stay empty.
        let host_tmp = tempfile::tempdir().expect("tmp");
        let o = child(&spec)
            .env("TMPDIR", host_tmp.path())
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(100));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("is a directory"), "{err}");
        assert!(!out.exists(), "the program ran");
        assert_eq!(listing(t), before, "mount point left behind");
        // No staging directory was ever made on the host (they live in the private root).
        assert_eq!(listing(host_tmp.path()), Vec::<std::path::PathBuf>::new());
    }

    #[test]
    fn envcas_copies_and_runs_configured_program() {
        let d = tempfile::tempdir().expect("tmp");
        let t = d.path();
        std::fs::create_dir(t.join("work")).expect("mkdir");
        let cfg_path = t.join("etc/envcas/config.yaml");
        let secret_in = t.join("etc/envcas/injected_file1");
        let out1 = t.join("work/out1");
        let o = tempfile::tempdir().expect("tmp");
        let res = o.path().join("res");
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
        bad.config.injection_files[0].content = bad_yaml.into_bytes().into();
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
        let o = tempfile::tempdir().expect("tmp");
        let out = o.path().join("out");
        let script = format!(
            "exec > {out}; cd {t}; cat new/app.sh empty/e.txt host/added.txt host/keep; \
             for f in new/w host/added.txt; do if ( echo x >> $f ) 2>/dev/null; then echo writable; else echo ro; fi; done",
            out = out.display(),
            t = t.display()
        );
        let mut cfg = config(vec!["sh".into(), "-c".into(), script], &[], &t, vec![]);
        cfg.code_region = Some(veil_api::workload::CodeRegion {
            fspf_path: backing.display().to_string(),
            fspf_key: veil_types::Key32::from_bytes([0x11; 32]),
            fspf_tag: Some(tag),
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
            key: veil_types::Key32::from_bytes([0; 32]),
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
