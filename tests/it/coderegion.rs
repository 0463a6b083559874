//! The code region end to end (issue 7, "verifies and exposes the code region"): a real
//! `veil cas serve` in the sim tier and the real launcher (`veil run -- /bin/sh`). The region is
//! built reproducibly with `veil_shield::build_deterministic` (empty volume id, as the image
//! converter does) from a temp tree holding `<tmp>/code/hello.sh`; the session names its backing
//! store, key and tag. The script runs from the read-only region; a flipped byte in the backing
//! store and a wrong tag are each refused before the program starts.

use std::path::PathBuf;
use std::process::{Command, Output};

use veil_identity::Identity;
use veil_shield::{Protection, VolumeId, VolumeKey};

use crate::support::{
    CasProcess, create_session, launcher_command, pin_cas_as, veil_bin, volume_objects,
};

fn launcher() -> Command {
    let mut c = launcher_command(&veil_bin());
    c.env("VEIL_LOG", "warn");
    c
}

struct Region {
    _home: tempfile::TempDir,
    _data: tempfile::TempDir,
    tmp: tempfile::TempDir,
    cas: CasProcess,
    session: String,
}

impl Region {
    fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let owner = Identity::generate("owner", &[]).unwrap();
        let cas = CasProcess::start_with(
            home.path(),
            data_dir.path(),
            &["--allow-sim-tier", "--owner", &owner.key_hash()],
        );
        pin_cas_as(home.path(), &owner, &cas);
        let o = launcher()
            .env("VEIL_HASH", "1")
            .args(["run", "--", "/bin/sh"])
            .output()
            .unwrap();
        let mrenclave = String::from_utf8(o.stdout).unwrap().trim().to_string();
        assert_eq!(mrenclave.len(), 64, "{mrenclave}");

        // The region holds <t>/code/hello.sh: the program sees it at that path, read-only.
        let t = std::fs::canonicalize(tmp.path()).unwrap();
        let code = t.join("code");
        let src = t.join("src");
        // The marker lives in a directory of its own: the launcher mirrors `t` on a tmpfs in the
        // program's namespace (the region's mount point is made there, never on the host), so
        // new entries directly in `t` are not shared with the test.
        std::fs::create_dir(t.join("marks")).unwrap();
        let src_code = src.join(code.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&src_code).unwrap();
        std::fs::write(
            src_code.join("hello.sh"),
            format!(
                "touch {ran}\necho \"hello from the code region $1\"\nif ( echo x >> {code}/hello.sh ) 2>/dev/null; then echo writable; else echo read-only; fi\n",
                ran = t.join("marks/ran").display(),
                code = code.display()
            ),
        )
        .unwrap();
        let key_hex = "5a".repeat(32);
        let key = VolumeKey::from_hex(&key_hex).unwrap();
        let backing = t.join("fspf");
        let tag = veil_shield::build_deterministic(
            &src,
            &backing,
            &key,
            &VolumeId::default(),
            Protection::Encrypted,
        )
        .unwrap();
        let wrong = "0123456789abcdef0123456789abcdef";
        assert_ne!(tag.to_string(), wrong);
        let service = |name: &str, tag: &str| {
            format!(
                "  - name: {name}\n    mrenclaves: [$MRENCLAVE]\n    command: sh {code}/hello.sh from-cas\n    pwd: /\n    fspf_path: {backing}\n    fspf_key: {key_hex}\n    fspf_tag: {tag}\n",
                code = code.display(),
                backing = backing.display(),
            )
        };
        let yaml = format!(
            "name: $SESSION\nversion: \"0.3\"\nservices:\n{}{}security:\n  attestation:\n    tolerate: [debug-mode]\n",
            service("hello", &tag.to_string()),
            service("wrongtag", wrong),
        );
        let file = t.join("session.yaml");
        std::fs::write(&file, yaml).unwrap();
        let session = "code-region-test".to_string();
        create_session(home.path(), &session, &mrenclave, &file);
        Self {
            _home: home,
            _data: data_dir,
            tmp,
            cas,
            session,
        }
    }

    fn t(&self) -> PathBuf {
        std::fs::canonicalize(self.tmp.path()).unwrap()
    }

    fn run(&self, service: &str) -> Output {
        let o = launcher()
            .env("VEIL_MODE", "sim")
            .env("VEIL_CONFIG_ID", format!("{}/{service}", self.session))
            .env("VEIL_CAS_ADDR", &self.cas.enclave)
            .env("VEIL_CAS_KEY_HASH", &self.cas.key_hash)
            .args(["run", "--", "/bin/sh", "host-arg"])
            .output()
            .unwrap();
        // The mount point created for the region is gone again on the host.
        assert!(!self.t().join("code").exists());
        o
    }

    #[track_caller]
    fn refused(&self, service: &str, what: &str, want: &[&str]) {
        let _ = std::fs::remove_file(self.t().join("marks/ran"));
        let o = self.run(service);
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: accepted\n{out}{err}");
        assert!(
            err.contains("[VEIL|FATAL] Could not initialize:"),
            "{what}: {err}"
        );
        for w in want {
            assert!(err.contains(w), "{what}: expected `{w}` in\n{err}");
        }
        assert!(
            !out.contains("hello from"),
            "{what}: the program ran\n{out}"
        );
        assert!(
            !self.t().join("marks/ran").exists(),
            "{what}: the program ran"
        );
    }
}

#[test]
fn the_code_region_runs_read_only_and_tampering_is_refused() {
    let r = Region::new();
    let t = r.t();
    let script = t.join("code/hello.sh");

    // The script runs from the verified region, with the CAS's arguments, and cannot change it.
    let o = r.run("hello");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(
        out, "hello from the code region from-cas\nread-only\n",
        "{err}"
    );
    assert!(t.join("marks/ran").exists());

    // A tag other than the region's: refused before anything runs.
    r.refused(
        "wrongtag",
        "wrong tag",
        &[
            &format!("Cannot verify the code region {}", t.join("fspf").display()),
            "does not match its recorded tag 0123456789abcdef0123456789abcdef",
        ],
    );

    // One flipped byte in the region's file object: refused, naming the chunk and the file.
    let objs = volume_objects(&t.join("fspf"));
    assert_eq!(objs.len(), 1, "{objs:?}");
    let original = std::fs::read(&objs[0]).unwrap();
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&objs[0], &bytes).unwrap();
    r.refused(
        "hello",
        "flipped byte",
        &[
            "Verification of file chunk 0 (bytes 0 to ",
            &format!("of file {} failed", script.display()),
        ],
    );

    // Restored: it runs again (the refusal left nothing behind).
    std::fs::write(&objs[0], &original).unwrap();
    let o = r.run("hello");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
