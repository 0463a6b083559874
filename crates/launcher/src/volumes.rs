//! Volumes in staged mode (decisions 2, 4, 9).
//!
//! Backing store: `$VEIL_VOLUMES_DIR/<volume name>` (default `/var/lib/veil/volumes/<name>`).
//! Volume id: (pinned CAS key hash, session name, volume name) — the CAS records tags by session
//! name and volume, so the id survives session updates exactly as the recorded tag does.
//!
//! Before the program starts, each volume is opened at the tag the CAS holds:
//! * no recorded tag and an empty or missing backing store: a new volume is created and its first
//!   tag recorded in the CAS ("no tag" → first tag) before it is acknowledged to the shield;
//! * no recorded tag but a non-empty backing store: refused, never wiped;
//! * a recorded tag but an empty or missing backing store: refused (deletion attack);
//! * a recorded tag: opened with `Expect::Tag` (a modified or rolled-back store is refused) and
//!   decrypted, every chunk verified, into a tmpfs mounted at the volume's `path` inside the
//!   launcher's private mount namespace.
//!
//! After the program exits, the tmpfs content is packed back, committed, the new tag recorded in
//! the CAS by compare-and-swap (old → new), and only then acknowledged to the shield. `ephemeral`
//! volumes are never written back. Failing to record a tag is fatal.
//!
//! `VEIL_VOLUME_MODE`: `staged`, `fuse`, or `auto` (default: `fuse` when running as root with a
//! usable `/dev/fuse` and `fusermount3`, else `staged`). In FUSE mode the volume is served by the
//! shield at its path instead of the tmpfs; every commit (fsync, grouped closes, unmount) is
//! recorded in the CAS synchronously by the same compare-and-swap sink before it is acknowledged.
//! Ephemeral volumes are always staged (their changes are discarded). A missing volume path is
//! made on a launcher tmpfs, never on the host ([`crate::exec::namespace::mount_point`]).
//!
//! While the program runs, [`Heartbeat`] renews the instance's leases; when they can no longer be
//! proven (refused, or no heartbeat within the lease TTL) it stops the program (decision 9).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use veil_api::workload::{UpdatePolicy, VolumeGrant};
use veil_shield::{Access, Expect, Options, Tag, TagSink, Volume, VolumeId, VolumeKey};

use veil_types::SecretString;

use crate::cas::{self, CasTarget};
use crate::error::{LauncherError, err};
use crate::exec::namespace::{MountPoint, mount_point};

/// Longest interval between lease renewals (a quarter of the lease TTL when that is shorter).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Default directory of the backing stores.
pub const DEFAULT_VOLUMES_DIR: &str = "/var/lib/veil/volumes";

/// How volumes are exposed to the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeMode {
    /// Decrypt into a tmpfs before the program starts, encrypt back after it exits.
    Staged,
    /// Serve the volume through FUSE at its path; commits are recorded as they happen.
    Fuse,
}

/// Whether FUSE mounts can work here: root, `/dev/fuse` opens read-write, `fusermount3` exists.
pub fn fuse_usable() -> bool {
    nix::unistd::geteuid().is_root()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_ok()
        && [
            "/usr/bin/fusermount3",
            "/bin/fusermount3",
            "/usr/local/bin/fusermount3",
        ]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// Where volumes live and how the launcher reaches the CAS to record their tags.
#[derive(Debug, Clone)]
pub struct VolumeContext {
    /// Directory holding one backing store per volume name.
    pub volumes_dir: PathBuf,
    /// Exposure mode.
    pub mode: VolumeMode,
    /// The CAS (its key hash is also the `cas` part of each volume id).
    pub cas: CasTarget,
    /// The session name (from the config id).
    pub session: String,
    /// The instance token authorising tag updates (secret: `Debug` is redacted).
    pub instance_token: SecretString,
    /// The launcher's bound on the lease TTL (`VEIL_LEASE_TIMEOUT_MS`), if shorter than the CAS's.
    pub lease_timeout: Option<Duration>,
}

impl VolumeContext {
    /// Settings from the environment: `VEIL_VOLUMES_DIR`, `VEIL_VOLUME_MODE`.
    pub fn from_env(
        env: &BTreeMap<String, String>,
        cas: CasTarget,
        config_id: &str,
        instance_token: &SecretString,
    ) -> Result<Self, LauncherError> {
        let mode = match env
            .get("VEIL_VOLUME_MODE")
            .map(|m| m.to_ascii_lowercase())
            .as_deref()
        {
            Some("staged") => VolumeMode::Staged,
            Some("fuse") => VolumeMode::Fuse,
            None | Some("") | Some("auto") => {
                if fuse_usable() {
                    VolumeMode::Fuse
                } else {
                    VolumeMode::Staged
                }
            }
            Some(other) => {
                return Err(LauncherError::new(format!(
                    "VEIL_VOLUME_MODE `{other}` is not one of staged, fuse, auto"
                )));
            }
        };
        let volumes_dir = env
            .get("VEIL_VOLUMES_DIR")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_VOLUMES_DIR));
        Ok(Self {
            volumes_dir,
            mode,
            cas,
            session: session_of(config_id)?.to_string(),
            instance_token: instance_token.clone(),
            lease_timeout: lease_timeout_from_env(env)?,
        })
    }
}

/// The session name of a config id `session/service[@otp]` (split as the CAS splits it).
pub fn session_of(config_id: &str) -> Result<&str, LauncherError> {
    let rest = config_id
        .rsplit_once('@')
        .map(|(r, _)| r)
        .unwrap_or(config_id);
    match rest.rsplit_once('/') {
        Some((s, svc)) if !s.is_empty() && !svc.is_empty() => Ok(s),
        _ => Err(LauncherError::new(
            "Invalid config id: expected `<session>/<service>[@<otp>]`",
        )),
    }
}

/// Records each commit in the CAS by compare-and-swap from the last recorded tag.
struct CasSink {
    cas: CasTarget,
    instance_token: SecretString,
    volume: String,
    recorded: Option<Tag>,
}

impl CasSink {
    fn new(ctx: &VolumeContext, volume: &str, recorded: Option<Tag>) -> Self {
        Self {
            cas: ctx.cas.clone(),
            instance_token: ctx.instance_token.clone(),
            volume: volume.to_string(),
            recorded,
        }
    }
}

impl TagSink for CasSink {
    fn record(&mut self, tag: &Tag) -> Result<(), String> {
        cas::update_tag(
            &self.cas,
            &self.instance_token,
            &self.volume,
            self.recorded,
            *tag,
        )
        .map_err(|e| e.chain.join(": "))?;
        self.recorded = Some(*tag);
        Ok(())
    }
}

/// One volume, opened and (once mounted) exposed at its path.
pub struct OpenVolume {
    grant: VolumeGrant,
    /// `None` for an ephemeral volume without a recorded state.
    volume: Option<Volume>,
    recorded: Option<Tag>,
    mounted: bool,
    fuse: Option<veil_shield::fuse::Mounted>,
}

impl std::fmt::Debug for OpenVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenVolume")
            .field("name", &self.grant.name)
            .field("path", &self.grant.path)
            .field("recorded", &self.recorded)
            .field("mounted", &self.mounted)
            .finish_non_exhaustive()
    }
}

fn store_is_empty(dir: &Path) -> Result<bool, LauncherError> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(err(
            format!("Cannot read backing store {}", dir.display()),
            e,
        )),
    }
}

fn shield_err(outer: String) -> impl FnOnce(veil_shield::Error) -> LauncherError {
    move |e| err(outer, e)
}

/// Open `grant` following the rules in the module documentation (creating and recording a new
/// volume on first use). Does not mount anything.
pub fn open_volume(ctx: &VolumeContext, grant: &VolumeGrant) -> Result<OpenVolume, LauncherError> {
    let name = &grant.name;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(LauncherError::new(format!(
            "Volume name `{name}` cannot name a backing store"
        )));
    }
    let backing = ctx.volumes_dir.join(name);
    let outer = format!(
        "Cannot open volume {name} (backing store {})",
        backing.display()
    );
    let key = VolumeKey::from_bytes(*grant.key.expose());
    let id = VolumeId::new(&ctx.cas.key_hash, &ctx.session, name);
    let mut opts = Options::named(name);
    opts.display_root = grant.path.clone();
    let empty = store_is_empty(&backing)?;
    let recorded = grant.tag;
    let ephemeral = grant.update_policy == UpdatePolicy::Ephemeral;
    let volume = match (recorded, empty) {
        (Some(t), true) => {
            return Err(LauncherError::chain(vec![
                outer,
                format!(
                    "CAS holds tag {t} for this volume but its backing store is empty or missing: refused (the volume was deleted or replaced)"
                ),
            ]));
        }
        (Some(t), false) => {
            let access = if ephemeral {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            Some(
                veil_shield::open(&backing, &key, &id, Expect::Tag(t), access, opts)
                    .map_err(shield_err(outer))?,
            )
        }
        (None, false) => {
            return Err(LauncherError::chain(vec![
                outer,
                "CAS holds no tag for this volume but its backing store is not empty: refused (never wiped; restore the store or remove it deliberately)".into(),
            ]));
        }
        (None, true) if ephemeral => None,
        (None, true) => {
            let existed = backing.exists();
            let (mut vol, tag) = veil_shield::create(&backing, &key, &id, opts)
                .map_err(shield_err(outer.clone()))?;
            let mut sink = CasSink::new(ctx, name, None);
            if let Err(e) = sink.record(&tag) {
                // Not recorded: undo the creation so the next start finds an empty store again.
                drop(vol);
                let _ = if existed {
                    clear_dir(&backing)
                } else {
                    std::fs::remove_dir_all(&backing)
                };
                return Err(LauncherError::chain(vec![outer, e]));
            }
            vol.ack(tag).map_err(shield_err(outer))?;
            Some(vol)
        }
    };
    let recorded = volume.as_ref().and_then(|v| v.tag());
    Ok(OpenVolume {
        grant: grant.clone(),
        volume,
        recorded,
        mounted: false,
        fuse: None,
    })
}

fn clear_dir(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

impl OpenVolume {
    /// The volume's name.
    pub fn name(&self) -> &str {
        &self.grant.name
    }

    /// Expose the volume at its path in `ctx.mode` (ephemeral volumes always staged). Call
    /// inside the private mount namespace.
    pub fn mount(&mut self, ctx: &VolumeContext) -> Result<(), LauncherError> {
        if ctx.mode == VolumeMode::Fuse && self.grant.update_policy != UpdatePolicy::Ephemeral {
            self.mount_fuse(ctx)
        } else {
            self.mount_staged()
        }
    }

    fn outer(&self) -> String {
        format!(
            "Cannot expose volume {} at {}",
            self.grant.name, self.grant.path
        )
    }

    /// The volume's directory, made on a launcher tmpfs when missing (never on the host, never
    /// through a symbolic link).
    fn make_mount_point(&mut self) -> Result<PathBuf, LauncherError> {
        let path = PathBuf::from(&self.grant.path);
        mount_point(&path, MountPoint::Dir).map_err(|e| e.context(self.outer()))?;
        Ok(path)
    }

    fn mount_fuse(&mut self, ctx: &VolumeContext) -> Result<(), LauncherError> {
        let path = self.make_mount_point()?;
        let outer = self.outer();
        let Some(vol) = self.volume.take() else {
            return Err(err(outer, "the volume is not open"));
        };
        let sink = CasSink::new(ctx, &self.grant.name, self.recorded);
        // The FUSE threads inherit this mask: forwarded signals must reach the main thread.
        let mut block = nix::sys::signal::SigSet::empty();
        for s in crate::exec::FORWARDED {
            block.add(s);
        }
        let mut old = nix::sys::signal::SigSet::empty();
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&block),
            Some(&mut old),
        )
        .map_err(|e| err(outer.clone(), format!("blocking signals: {e}")))?;
        let mounted = veil_shield::fuse::mount(
            vol,
            &path,
            Box::new(sink),
            veil_shield::fuse::MountOptions::default(),
        );
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&old),
            None,
        );
        self.fuse = Some(mounted.map_err(shield_err(outer))?);
        Ok(())
    }

    fn mount_staged(&mut self) -> Result<(), LauncherError> {
        let path = self.make_mount_point()?;
        let outer = self.outer();
        nix::mount::mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700"),
        )
        .map_err(|e| err(outer.clone(), format!("mounting a tmpfs: {e}")))?;
        self.mounted = true;
        if let Some(v) = &self.volume {
            v.unpack(&path).map_err(shield_err(outer))?;
        }
        Ok(())
    }

    /// Pack the tmpfs back, commit, record the new tag in the CAS (old → new) and acknowledge
    /// it. Ephemeral volumes and volumes without changes record nothing.
    pub fn write_back(&mut self, ctx: &VolumeContext) -> Result<(), LauncherError> {
        if let Some(m) = self.fuse.take() {
            // Unmounting commits the final state and records it through the sink.
            let tag = m.unmount().map_err(shield_err(format!(
                "Cannot save volume {}",
                self.grant.name
            )))?;
            self.recorded = Some(tag);
            return Ok(());
        }
        if self.grant.update_policy == UpdatePolicy::Ephemeral || !self.mounted {
            return Ok(());
        }
        let Some(vol) = self.volume.as_mut() else {
            return Ok(());
        };
        let outer = format!("Cannot save volume {}", self.grant.name);
        vol.pack_from(Path::new(&self.grant.path))
            .map_err(shield_err(outer.clone()))?;
        let mut sink = CasSink::new(ctx, &self.grant.name, self.recorded);
        let tag = vol.commit_to(&mut sink).map_err(shield_err(outer))?;
        self.recorded = Some(tag);
        Ok(())
    }

    /// Unmount the volume now (the same as dropping it).
    pub fn unmount(self) {}
}

/// A drop guard: an [`OpenVolume`] unmounts its FUSE mount (which commits and records its
/// final state) or tmpfs (its mount point, if made, lives on a launcher tmpfs).
impl Drop for OpenVolume {
    fn drop(&mut self) {
        if let Some(m) = self.fuse.take()
            && let Err(e) = m.unmount()
        {
            tracing::warn!("cannot unmount volume {}: {e}", self.grant.name);
        }
        if self.mounted {
            if let Err(e) = nix::mount::umount2(self.grant.path.as_str(), MntFlags::MNT_DETACH) {
                tracing::warn!("cannot unmount {}: {e}", self.grant.path);
            }
            self.mounted = false;
        }
    }
}

/// Volumes exposed in the private namespace, a drop guard that unmounts them in reverse order.
#[derive(Debug, Default)]
pub struct OpenVolumes(pub Vec<OpenVolume>);

impl Drop for OpenVolumes {
    fn drop(&mut self) {
        while let Some(v) = self.0.pop() {
            drop(v);
        }
    }
}

/// Renews the instance's leases in the background while the program runs, and stops the
/// program when the leases can no longer be proven (decision 9): the CAS refuses a heartbeat,
/// or no heartbeat succeeded within the lease TTL (the shorter of the TTL the CAS last
/// reported and `VEIL_LEASE_TIMEOUT_MS`). The program then gets SIGTERM, and SIGKILL after
/// [`LEASE_LOSS_GRACE`]; [`Heartbeat::finish`] returns the reason as a fatal error.
pub struct Heartbeat {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<Option<LauncherError>>>,
}

/// The CAS's lease TTL assumed until a heartbeat reports it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(120);

/// Time between SIGTERM and SIGKILL when the lease is lost.
pub const LEASE_LOSS_GRACE: Duration = Duration::from_secs(5);

/// The launcher's own bound on the lease TTL from `VEIL_LEASE_TIMEOUT_MS` (it can only shorten
/// the TTL the CAS grants, never extend it; at least 1 s).
pub fn lease_timeout_from_env(
    env: &BTreeMap<String, String>,
) -> Result<Option<Duration>, LauncherError> {
    match env.get("VEIL_LEASE_TIMEOUT_MS").filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if ms >= 1000 => Ok(Some(Duration::from_millis(ms))),
            _ => Err(LauncherError::new(format!(
                "VEIL_LEASE_TIMEOUT_MS `{v}` is not a number of milliseconds >= 1000"
            ))),
        },
    }
}

impl Heartbeat {
    /// Start renewing. Call after entering the namespaces (which need a single thread).
    pub fn start(ctx: &VolumeContext, volumes: &OpenVolumes) -> Result<Self, LauncherError> {
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let cas = ctx.cas.clone();
        let token = ctx.instance_token.clone();
        let bound = ctx.lease_timeout;
        let names = volumes
            .0
            .iter()
            .map(OpenVolume::name)
            .collect::<Vec<_>>()
            .join(", ");
        let thread = std::thread::Builder::new()
            .name("veil-heartbeat".into())
            .spawn(move || {
                // Forwarded signals must reach the launcher's main thread, not this one.
                let mut block = nix::sys::signal::SigSet::empty();
                for s in crate::exec::FORWARDED {
                    block.add(s);
                }
                let _ = nix::sys::signal::pthread_sigmask(
                    nix::sys::signal::SigmaskHow::SIG_BLOCK,
                    Some(&block),
                    None,
                );
                let ttl_of = |cas_ttl: Duration| bound.map_or(cas_ttl, |b| b.min(cas_ttl));
                let mut ttl = ttl_of(DEFAULT_LEASE_TTL);
                // The lease was granted (or renewed) at attestation, just before this.
                let mut proven = Instant::now();
                let mut last_error = String::from("no heartbeat answered yet");
                let lost = loop {
                    let deadline = proven + ttl;
                    let now = Instant::now();
                    if now >= deadline {
                        break LauncherError::chain(vec![
                            format!("Stopped the program: the lease on volume {names} can no longer be proven"),
                            format!(
                                "no heartbeat was accepted by CAS within the lease TTL of {} ms",
                                ttl.as_millis()
                            ),
                            last_error,
                        ]);
                    }
                    let wait = (ttl / 4).min(HEARTBEAT_INTERVAL).min(deadline - now);
                    if !matches!(
                        rx.recv_timeout(wait),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    ) {
                        return None;
                    }
                    let sent = Instant::now();
                    match cas::heartbeat(&cas, &token) {
                        Ok(granted) => {
                            proven = sent;
                            ttl = ttl_of(granted);
                        }
                        Err(cas::HeartbeatError::Refused(e)) => {
                            break e.context(format!(
                                "Stopped the program: the lease on volume {names} can no longer be proven"
                            ));
                        }
                        Err(cas::HeartbeatError::Unreachable(e)) => {
                            eprintln!("[VEIL|WARN] {e}");
                            last_error = e.to_string();
                        }
                    }
                };
                eprintln!("[VEIL|WARN] {lost}");
                crate::exec::run::signal_program(nix::sys::signal::Signal::SIGTERM);
                if matches!(
                    rx.recv_timeout(LEASE_LOSS_GRACE),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                ) {
                    crate::exec::run::signal_program(nix::sys::signal::Signal::SIGKILL);
                }
                Some(lost)
            })
            .map_err(|e| err("Cannot start the lease heartbeat", e))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop renewing and wait for the thread: the reason the program was stopped, if the lease
    /// was lost.
    pub fn finish(mut self) -> Result<(), LauncherError> {
        let _ = self.stop.send(());
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Some(lost))) => Err(lost),
            Some(Err(_)) => Err(LauncherError::new("The lease heartbeat thread failed")),
            _ => Ok(()),
        }
    }
}

/// A drop guard: the heartbeat thread is stopped and joined.
impl Drop for Heartbeat {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_split_like_the_cas() {
        assert_eq!(session_of("ns/s/svc@123").ok(), Some("ns/s"));
        assert_eq!(session_of("s/svc").ok(), Some("s"));
        assert!(session_of("svc").is_err());
        assert!(session_of("/svc").is_err());
        assert!(session_of("s/").is_err());
    }

    fn ctx(dir: &Path) -> VolumeContext {
        VolumeContext {
            volumes_dir: dir.to_path_buf(),
            mode: VolumeMode::Staged,
            // Nothing listens on port 1: every tag update fails.
            cas: CasTarget {
                addr: "127.0.0.1:1".into(),
                key_hash: "ab".repeat(32),
            },
            session: "s".into(),
            instance_token: SecretString::from("t".to_string()),
            lease_timeout: None,
        }
    }

    fn grant(tag: Option<&str>, policy: UpdatePolicy) -> VolumeGrant {
        VolumeGrant {
            name: "V1".into(),
            path: "/V1".into(),
            key: veil_types::Key32::from_bytes([0x11; 32]),
            tag: tag.map(|t| t.parse().expect("tag")),
            update_policy: policy,
        }
    }

    #[test]
    fn storage_and_recorded_tag_must_agree() {
        let d = tempfile::tempdir().expect("tmp");
        let c = ctx(d.path());
        let rp = UpdatePolicy::RollbackProtected;
        let tag = "0123456789abcdef0123456789abcdef";
        // A recorded tag with missing or empty storage: deletion, refused.
        let e = open_volume(&c, &grant(Some(tag), rp)).expect_err("missing");
        assert!(e.to_string().contains("empty or missing"), "{e}");
        std::fs::create_dir(d.path().join("V1")).expect("mkdir");
        let e = open_volume(&c, &grant(Some(tag), rp)).expect_err("empty");
        assert!(e.to_string().contains("empty or missing"), "{e}");
        // No recorded tag but something in the store: refused and left alone.
        std::fs::write(d.path().join("V1/meta.0"), b"x").expect("w");
        let e = open_volume(&c, &grant(None, rp)).expect_err("not empty");
        assert!(e.to_string().contains("never wiped"), "{e}");
        assert_eq!(std::fs::read(d.path().join("V1/meta.0")).expect("r"), b"x");
        // A key that is not 64 hex never reaches the launcher: the grant does not parse, and
        // the error does not echo it.
        let bad = serde_json::json!({"name": "V1", "path": "/V1", "key": "secret-key-material",
            "tag": null, "update_policy": "rollback_protected"});
        let e = serde_json::from_value::<VolumeGrant>(bad).expect_err("key");
        assert!(!e.to_string().contains("secret-key-material"), "{e}");
        // A name that cannot name a directory.
        let mut g = grant(None, rp);
        g.name = "../x".into();
        assert!(open_volume(&c, &g).is_err());
    }

    #[test]
    fn a_new_volume_whose_first_tag_cannot_be_recorded_is_undone() {
        let d = tempfile::tempdir().expect("tmp");
        let c = ctx(d.path());
        let e = open_volume(&c, &grant(None, UpdatePolicy::RollbackProtected))
            .expect_err("CAS unreachable");
        assert!(
            e.to_string()
                .contains("Failed to record the tag of volume V1 in CAS"),
            "{e}"
        );
        // The next start finds no storage again instead of an unrecorded one it must refuse.
        assert!(!d.path().join("V1").exists());
        // An ephemeral volume without a recorded state touches neither CAS nor storage.
        let v = open_volume(&c, &grant(None, UpdatePolicy::Ephemeral)).expect("ephemeral");
        assert_eq!(v.name(), "V1");
        assert!(!d.path().join("V1").exists());
    }

    #[test]
    fn volume_mode_from_env() {
        let cas = CasTarget {
            addr: "cas:18765".into(),
            key_hash: "k".into(),
        };
        let env = |v: &str| -> BTreeMap<String, String> {
            [("VEIL_VOLUME_MODE".to_string(), v.to_string())]
                .into_iter()
                .collect()
        };
        let token = SecretString::from("t".to_string());
        let c = VolumeContext::from_env(&BTreeMap::new(), cas.clone(), "s/a", &token).expect("ok");
        assert_eq!(c.volumes_dir, PathBuf::from(DEFAULT_VOLUMES_DIR));
        let auto = if fuse_usable() {
            VolumeMode::Fuse
        } else {
            VolumeMode::Staged
        };
        assert_eq!(c.mode, auto);
        for (v, want) in [
            ("staged", VolumeMode::Staged),
            ("fuse", VolumeMode::Fuse),
            ("auto", auto),
        ] {
            let c = VolumeContext::from_env(&env(v), cas.clone(), "s/a", &token).expect(v);
            assert_eq!(c.mode, want, "{v}");
        }
        assert!(VolumeContext::from_env(&env("bogus"), cas, "s/a", &token).is_err());
    }
}
