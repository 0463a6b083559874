//! `veil-launcher`: the static, measured launcher (decisions 3, 19, 24). Multi-call: invoked as
//! `envcas` (a link or copy of that name) it is envcas.
//!
//! ```text
//! veil-launcher [--] [HOST-ARGS]                    the program named in /etc/veil/program
//! veil-launcher --program PROG [--] [HOST-ARGS]     `veil run -- PROG HOST-ARGS`
//! veil-launcher --envcas [--] [HOST-ARGS]           `veil envcas HOST-ARGS`, or argv[0] = envcas
//! veil-launcher --version | --help
//! ```
//!
//! The command line is `veil_launcher::cli`; everything else comes from the environment
//! (`VEIL_*` / `SCONE_*`). Host arguments reach the program only through `@@N` in the session.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::ExitCode;

use veil_launcher::cli::{self, Parsed};
use veil_launcher::{Invocation, LauncherError};

fn main() -> ExitCode {
    // Warnings and errors of the libraries (volume commits, unmounts) go to stderr.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let is_envcas = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "envcas");
    let args: Result<Vec<String>, OsString> = argv.map(OsString::into_string).collect();
    let Ok(args) = args else {
        eprint!(
            "{}",
            LauncherError::new("A host argument is not valid UTF-8").fatal_text()
        );
        return ExitCode::from(1);
    };
    let (kind, args) = match cli::parse(is_envcas, args) {
        Ok(Parsed::Launch(kind, args)) => (kind, args),
        Ok(Parsed::Version) => {
            println!("veil-launcher {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("veil-launcher: {e}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let inv = Invocation { kind, args, env };
    match veil_launcher::launch(inv, &mut std::io::stdout()) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprint!("{}", e.fatal_text());
            ExitCode::from(1)
        }
    }
}
