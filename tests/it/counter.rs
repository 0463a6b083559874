//! The counter with volume V1 end to end (issue 7, test 4): a real `veil cas serve` in the sim
//! tier, the real launcher (`veil run -- /bin/sh`) in staged volume mode, the counter script from
//! `tests/data/counter.sh` with its `/V1` templated into a temp dir. Three runs count 0, 1, 2;
//! then a modified object, a deleted object, a rolled-back and a deleted backing store are each
//! refused, and the counter never silently restarts at 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use veil_identity::Identity;

use crate::support::{
    CasProcess, create_session, data, launcher_command, pin_cas_as, veil_bin, volume_objects,
};

/// A CAS process (sim tier allowed) owned by `owner`; killed on drop.
fn start_cas(home: &Path, data_dir: &Path, owner: &str) -> CasProcess {
    CasProcess::start_with(home, data_dir, &["--allow-sim-tier", "--owner", owner])
}

struct Counter {
    home: tempfile::TempDir,
    data: tempfile::TempDir,
    owner: String,
    tmp: tempfile::TempDir,
    cas: CasProcess,
    session: String,
    mode: &'static str,
}

impl Counter {
    fn new() -> Self {
        Self::with_volume_options("")
    }

    /// `extra` is appended to the image's volume entry (e.g. an `update_policy` line).
    fn with_volume_options(extra: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let owner = Identity::generate("owner", &[]).unwrap();
        let cas = start_cas(home.path(), data_dir.path(), &owner.key_hash());
        pin_cas_as(home.path(), &owner, &cas);

        // The measurement covers the launcher and the program it runs (/bin/sh).
        let o = launcher()
            .env("VEIL_HASH", "1")
            .args(["run", "--", "/bin/sh"])
            .output()
            .unwrap();
        let mrenclave = String::from_utf8(o.stdout).unwrap().trim().to_string();
        assert_eq!(mrenclave.len(), 64, "{mrenclave}");

        let t = tmp.path();
        let volume_path = t.join("V1");
        let script = t.join("counter.sh");
        let text = std::fs::read_to_string(data("counter.sh"))
            .unwrap()
            .replace("/V1/", &format!("{}/", volume_path.display()));
        std::fs::write(&script, text).unwrap();
        // Markers live in a directory of their own: the launcher mirrors `t` on a tmpfs in the
        // program's namespace (the volume's mount point is made there, never on the host), so
        // new entries directly in `t` are not shared with the test.
        std::fs::create_dir(t.join("marks")).unwrap();
        let slow = t.join("slow.sh");
        std::fs::write(
            &slow,
            format!(
                "touch {ready}\nwhile [ ! -e {go} ]; do sleep 0.05; done\n. {script}\n",
                ready = t.join("marks/ready").display(),
                go = t.join("marks/go").display(),
                script = script.display()
            ),
        )
        .unwrap();
        let mounts = t.join("mounts.sh");
        std::fs::write(
            &mounts,
            format!("grep ' {} ' /proc/self/mountinfo\n", volume_path.display()),
        )
        .unwrap();
        let yaml = format!(
            "name: $SESSION\nversion: \"0.3\"\nservices:\n  - name: counter\n    image_name: counter_image\n    mrenclaves: [$MRENCLAVE]\n    command: sh {script}\n    pwd: /\n  - name: slow\n    image_name: counter_image\n    mrenclaves: [$MRENCLAVE]\n    command: sh {slow}\n    pwd: /\n  - name: mounts\n    image_name: counter_image\n    mrenclaves: [$MRENCLAVE]\n    command: sh {mounts}\n    pwd: /\nvolumes:\n  - name: V1\nimages:\n  - name: counter_image\n    volumes:\n      - name: V1\n        path: {vol}\n{extra}security:\n  attestation:\n    tolerate: [debug-mode]\n",
            script = script.display(),
            slow = slow.display(),
            mounts = mounts.display(),
            vol = volume_path.display()
        );
        let file = t.join("session.yaml");
        std::fs::write(&file, yaml).unwrap();
        let session = "counter-test".to_string();
        create_session(home.path(), &session, &mrenclave, &file);
        Self {
            home,
            data: data_dir,
            owner: owner.key_hash(),
            tmp,
            cas,
            session,
            mode: "staged",
        }
    }

    fn volumes_dir(&self) -> PathBuf {
        self.tmp.path().join("volumes")
    }

    fn backing(&self) -> PathBuf {
        self.volumes_dir().join("V1")
    }

    /// `veil run -- /bin/sh -v <host path>` for `service`, not waited for.
    fn launch(&self, service: &str) -> Command {
        let mut c = launcher();
        c.env("VEIL_MODE", "sim")
            .env("VEIL_CONFIG_ID", format!("{}/{service}", self.session))
            .env("VEIL_CAS_ADDR", &self.cas.enclave)
            .env("VEIL_CAS_KEY_HASH", &self.cas.key_hash)
            .env("VEIL_VOLUMES_DIR", self.volumes_dir())
            .env("VEIL_VOLUME_MODE", self.mode)
            .args(["run", "--", "/bin/sh", "-v"])
            .arg(self.tmp.path().join("host-num"));
        c
    }

    /// `veil run -- /bin/sh -v <host path>`: the host arguments must be ignored.
    fn run(&self) -> Output {
        let host_num = self.tmp.path().join("host-num");
        let o = launcher()
            .env("VEIL_MODE", "sim")
            .env("VEIL_CONFIG_ID", format!("{}/counter", self.session))
            .env("VEIL_CAS_ADDR", &self.cas.enclave)
            .env("VEIL_CAS_KEY_HASH", &self.cas.key_hash)
            .env("VEIL_VOLUMES_DIR", self.volumes_dir())
            .env("VEIL_VOLUME_MODE", self.mode)
            .args(["run", "--", "/bin/sh", "-v"])
            .arg(&host_num)
            .output()
            .unwrap();
        assert!(!host_num.exists(), "host arguments reached the program");
        // The plaintext never stays on the host: the mount point is removed again.
        assert!(!self.tmp.path().join("V1").exists());
        o
    }

    fn count(&self, want: u32) {
        let o = self.run();
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{out}{err}");
        assert!(
            out.contains(&format!("The number of executions is {want}\n")),
            "{out}{err}"
        );
    }

    fn refused(&self, what: &str, cause: &str) {
        let o = self.run();
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: {out}{err}");
        assert!(err.contains("[VEIL|FATAL]"), "{what}: {err}");
        assert!(err.contains(cause), "{what}: {err}");
        assert!(
            !out.contains("The number of executions is"),
            "{what}: the program ran: {out}"
        );
    }
}

fn launcher() -> Command {
    let mut c = launcher_command(&veil_bin());
    c.env("VEIL_LOG", "warn");
    c
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn counter_counts_and_attacks_on_the_backing_store_are_refused() {
    let c = Counter::new();
    c.count(0);
    let old = c.tmp.path().join("old-copy");
    copy_dir(&c.backing(), &old);
    c.count(1);
    c.count(2);

    // Modify one byte of an object: refused; restoring it lets the counter go on.
    let objs = volume_objects(&c.backing());
    assert!(!objs.is_empty(), "no objects in the backing store");
    let obj = &objs[0];
    let original = std::fs::read(obj).unwrap();
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(obj, &bytes).unwrap();
    c.refused("modified object", "Cannot expose volume V1");
    std::fs::write(obj, &original).unwrap();
    c.count(3);

    // Delete the file's object.
    let objs = volume_objects(&c.backing());
    let saved = c.tmp.path().join("saved-object");
    std::fs::copy(&objs[0], &saved).unwrap();
    std::fs::remove_file(&objs[0]).unwrap();
    c.refused("deleted object", "Cannot expose volume V1");
    std::fs::copy(&saved, &objs[0]).unwrap();
    c.count(4);

    // Roll the whole backing store back to an older copy: refused.
    let current = c.tmp.path().join("current-copy");
    copy_dir(&c.backing(), &current);
    std::fs::remove_dir_all(c.backing()).unwrap();
    copy_dir(&old, &c.backing());
    c.refused("rolled-back store", "Cannot open volume V1");
    std::fs::remove_dir_all(c.backing()).unwrap();
    copy_dir(&current, &c.backing());
    c.count(5);

    // Delete the volume: refused as a deletion, never a fresh start at 0.
    std::fs::remove_dir_all(&current).unwrap();
    copy_dir(&c.backing(), &current);
    std::fs::remove_dir_all(c.backing()).unwrap();
    c.refused("deleted store", "backing store is empty or missing");
    std::fs::create_dir_all(c.backing()).unwrap();
    c.refused("emptied store", "backing store is empty or missing");
    std::fs::remove_dir_all(c.backing()).unwrap();
    copy_dir(&current, &c.backing());
    c.count(6);
}

#[test]
fn a_tag_the_cas_cannot_record_is_fatal_and_the_recorded_state_stays() {
    let mut c = Counter::new();
    c.count(0);
    // The program runs while the CAS goes away; saving its change cannot be recorded.
    let child = c
        .launch("slow")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = c.tmp.path().join("marks/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the slow program never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // One writer per volume: a second start while the first runs is refused by the CAS.
    let o = c.launch("counter").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("volume V1 is in use by instance"), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("executions"));
    let key_hash = c.cas.key_hash.clone();
    drop(std::mem::replace(
        &mut c.cas,
        CasProcess::without_process(String::new(), "127.0.0.1:1".into(), key_hash.clone()),
    ));
    std::fs::write(c.tmp.path().join("marks/go"), b"").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("The number of executions is 1"), "{out}{err}");
    assert!(!o.status.success(), "{out}{err}");
    assert!(err.contains("[VEIL|FATAL]"), "{err}");
    assert!(
        err.contains("Failed to record the tag of volume V1 in CAS"),
        "{err}"
    );
    // Restarted, the CAS still holds the last recorded tag: that state opens, the unrecorded
    // one is gone, and nothing restarts at 0.
    c.cas = start_cas(c.home.path(), c.data.path(), &c.owner);
    assert_eq!(c.cas.key_hash, key_hash);
    // The instance died while the CAS was down, so its lease (persisted) is still held: a new
    // start is refused until it lapses (one TTL) or the owner releases it.
    let o = c.launch("counter").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("volume V1 is in use by instance"), "{err}");
    let cli = |args: &[&str]| {
        let o = crate::support::veil(c.home.path())
            .args(args)
            .output()
            .unwrap();
        crate::support::assert_success(&o);
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    cli(&["cas", "attest", &c.cas.api, "--key-hash", &key_hash]);
    let out = cli(&[
        "cas",
        "release-lease",
        &c.session,
        "V1",
        "--cas",
        &c.cas.api,
    ]);
    assert!(
        out.starts_with(&format!(
            "released the lease of volume V1 of session {}",
            c.session
        )),
        "{out}"
    );
    let out = cli(&[
        "cas",
        "release-lease",
        &c.session,
        "V1",
        "--cas",
        &c.cas.api,
    ]);
    assert!(out.starts_with("no lease of volume V1"), "{out}");
    c.count(1);
    c.count(2);
}

#[test]
fn counter_in_fuse_mode_and_across_modes() {
    if !crate::support::require("fuse", crate::support::fuse_unusable()) {
        return;
    }
    let mut c = Counter::new();
    c.mode = "fuse";
    c.count(0);
    // What the program sees at the volume's path: the shield's FUSE file system, or a tmpfs.
    for (mode, fs) in [("fuse", " - fuse veil:V1 "), ("staged", " - tmpfs ")] {
        let o = c
            .launch("mounts")
            .env("VEIL_VOLUME_MODE", mode)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{mode}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains(fs), "{mode}: {out}");
    }
    c.count(1);
    // The same backing store in staged mode and back: one format, one recorded tag.
    c.mode = "staged";
    c.count(2);
    c.mode = "fuse";
    c.count(3);
    // Rolled back under FUSE: refused as in staged mode.
    let old = c.tmp.path().join("old");
    copy_dir(&c.backing(), &old);
    c.count(4);
    let current = c.tmp.path().join("current");
    copy_dir(&c.backing(), &current);
    std::fs::remove_dir_all(c.backing()).unwrap();
    copy_dir(&old, &c.backing());
    c.refused("rolled-back store (fuse)", "Cannot open volume V1");
    std::fs::remove_dir_all(c.backing()).unwrap();
    copy_dir(&current, &c.backing());
    c.count(5);
}

#[test]
fn ephemeral_volume_changes_are_discarded() {
    let c = Counter::with_volume_options("        update_policy: ephemeral\n");
    for _ in 0..2 {
        c.count(0);
    }
    // Nothing was stored: no backing store, no recorded tag.
    assert!(!c.backing().exists());
}
