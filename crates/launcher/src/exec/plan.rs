//! Turning the CAS's configuration into a [`Plan`]: `@@N` and `\@\@NAME` expanded from the
//! host's argv and environment, injection-file and volume paths checked (absolute, no `.` or
//! `..`, not the root, unique). Pure: touches neither the file system nor the process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use veil_api::workload::{ConfigResponse, InjectionFile};
use veil_types::ExposeSecret;

use crate::error::LauncherError;
use crate::subst::{expand_args, expand_env};

/// What the program will be started with, after host substitutions.
#[derive(Clone)]
pub struct Plan {
    /// argv (`argv[0]` first).
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub pwd: Option<String>,
    /// Files to place.
    pub files: Vec<InjectionFile>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("argc", &self.argv.len())
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("pwd", &self.pwd)
            .field("files", &self.files)
            .finish()
    }
}

pub(crate) fn check_path(p: &str) -> Result<(), LauncherError> {
    let path = Path::new(p);
    let bad = |why: &str| LauncherError::new(format!("Injection file path `{p}` {why}"));
    if !path.is_absolute() {
        return Err(bad("is not absolute"));
    }
    if p.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(bad("contains `.` or `..`"));
    }
    if path.parent().is_none() {
        return Err(bad("names the root directory"));
    }
    Ok(())
}

fn check_volume_path(name: &str, p: &str) -> Result<(), LauncherError> {
    check_path(p).map_err(|e| {
        LauncherError::new(
            e.chain
                .join(": ")
                .replace("Injection file path", &format!("Path of volume {name}")),
        )
    })
}

/// Turn a CAS configuration into a [`Plan`]: expand `@@N` and `\@\@NAME` and check paths.
pub fn plan(
    config: &ConfigResponse,
    host_argv: &[String],
    host_env: &BTreeMap<String, String>,
) -> Result<Plan, LauncherError> {
    let mut volume_paths = BTreeSet::new();
    for v in &config.volumes {
        check_volume_path(&v.name, &v.path)?;
        if !volume_paths.insert(v.path.as_str()) {
            return Err(LauncherError::new(format!(
                "Volume path `{}` appears twice",
                v.path
            )));
        }
    }
    let service_argv: Vec<String> = config
        .argv
        .iter()
        .map(|a| a.expose_secret().to_string())
        .collect();
    let argv = expand_args(&service_argv, host_argv)?;
    if argv.is_empty() {
        return Err(LauncherError::new("The service's command is empty"));
    }
    let mut seen = BTreeSet::new();
    for f in &config.injection_files {
        check_path(&f.path)?;
        if !seen.insert(f.path.as_str()) {
            return Err(LauncherError::new(format!(
                "Injection file path `{}` appears twice",
                f.path
            )));
        }
    }
    Ok(Plan {
        argv,
        env: expand_env(
            &config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.expose_secret().to_string()))
                .collect(),
            host_env,
        ),
        pwd: config.pwd.clone(),
        files: config.injection_files.clone(),
    })
}
