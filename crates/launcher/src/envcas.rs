//! `envcas`: after attestation, read the injected `/etc/envcas/config.yaml`, copy each
//! injected `from` file to its `to` path on the real file system, then run `program` with the
//! session's arguments (`argv[0]` dropped) and environment (`scone.md` §6).

use std::path::Path;

use serde::Deserialize;

use crate::error::{LauncherError, err};

/// Where envcas reads its configuration (normally itself an injection file).
pub const ENVCAS_CONFIG: &str = "/etc/envcas/config.yaml";

/// One copy instruction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvcasCopy {
    /// Injected source file.
    pub from: String,
    /// Destination on the real file system (its directory must exist).
    pub to: String,
}

/// `/etc/envcas/config.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvcasConfig {
    /// The native program to run.
    pub program: String,
    /// Files to copy before it starts.
    #[serde(default)]
    pub injection_files: Vec<EnvcasCopy>,
}

/// Parse an envcas configuration; `origin` names the file in errors.
pub fn parse_config(text: &str, origin: &str) -> Result<EnvcasConfig, LauncherError> {
    let cfg: EnvcasConfig = serde_saphyr::from_str(text)
        .map_err(|e| err(format!("Invalid envcas configuration {origin}"), e))?;
    if !cfg.program.starts_with('/') {
        return Err(LauncherError::new(format!(
            "Invalid envcas configuration {origin}: `program` must be an absolute path, got `{}`",
            cfg.program
        )));
    }
    Ok(cfg)
}

/// Read and parse the configuration at `path`.
pub fn read_config(path: &Path) -> Result<EnvcasConfig, LauncherError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(
            format!("Cannot read the envcas configuration {shown} (is it an injection file of the service?)"),
            e,
        )
    })?;
    parse_config(&text, &shown)
}

/// Copy every `from` to its `to`. A missing destination directory is an error naming it.
pub fn copy_files(cfg: &EnvcasConfig) -> Result<(), LauncherError> {
    for c in &cfg.injection_files {
        let outer = format!("Cannot copy {} to {}", c.from, c.to);
        let to = Path::new(&c.to);
        let parent = to
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| err(outer.clone(), "the destination has no directory"))?;
        if !parent.is_dir() {
            return Err(err(
                outer,
                format!("the directory {} does not exist", parent.display()),
            ));
        }
        std::fs::copy(&c.from, to).map_err(|e| err(outer, e))?;
    }
    Ok(())
}

/// The program's argv: `program` followed by the session's arguments without `argv[0]`.
pub fn program_argv(cfg: &EnvcasConfig, session_argv: &[String]) -> Vec<String> {
    std::iter::once(cfg.program.clone())
        .chain(session_argv.iter().skip(1).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "program:  /bin/bash\ninjection_files:\n  - from: /etc/envcas/injected_file1\n    to: /work/out1\n  - from: /etc/envcas/injected_file2\n    to: /work/out2\n";

    #[test]
    fn parses_the_seed_config() -> Result<(), LauncherError> {
        let c = parse_config(SEED, "config.yaml")?;
        assert_eq!(c.program, "/bin/bash");
        assert_eq!(c.injection_files.len(), 2);
        assert_eq!(c.injection_files[1].to, "/work/out2");
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let cases = [
            ("injection_files: []\n", "program"),
            ("program: /bin/sh\ninjected_file: []\n", "injected_file"),
            ("program: bash\n", "absolute"),
            ("program: [\n", "config.yaml"),
        ];
        for (text, want) in cases {
            let e = parse_config(text, "config.yaml").expect_err(text);
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn copies_and_refuses_missing_dirs() -> Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        let from = d.path().join("in");
        std::fs::write(&from, [0u8, 1, 2, 255])?;
        let ok = EnvcasConfig {
            program: "/bin/sh".into(),
            injection_files: vec![EnvcasCopy {
                from: from.display().to_string(),
                to: d.path().join("out").display().to_string(),
            }],
        };
        copy_files(&ok)?;
        assert_eq!(std::fs::read(d.path().join("out"))?, vec![0u8, 1, 2, 255]);
        let missing = d.path().join("nodir");
        let bad = EnvcasConfig {
            program: "/bin/sh".into(),
            injection_files: vec![EnvcasCopy {
                from: from.display().to_string(),
                to: missing.join("out").display().to_string(),
            }],
        };
        let e = copy_files(&bad).expect_err("missing dir");
        assert!(
            e.to_string().contains(&format!(
                "the directory {} does not exist",
                missing.display()
            )),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn argv_drops_argv0() {
        let c = EnvcasConfig {
            program: "/bin/bash".into(),
            injection_files: vec![],
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            program_argv(&c, &s(&["envcas", "-c", "cat /work/out1"])),
            s(&["/bin/bash", "-c", "cat /work/out1"])
        );
        assert_eq!(program_argv(&c, &[]), s(&["/bin/bash"]));
    }
}
