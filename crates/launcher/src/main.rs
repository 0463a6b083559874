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
//! Everything else comes from the environment (`VEIL_*` / `SCONE_*`, see the `settings`
//! module). Host arguments reach the program only through `@@N` in the session. Converted
//! images use `["/usr/lib/veil/veil-launcher", "--"]` as their entrypoint.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::ExitCode;

use veil_launcher::{Invocation, Kind, LauncherError};

const USAGE: &str = "usage: veil-launcher [--program PROG | --envcas] [--] [HOST-ARGS...]
       veil-launcher --version | --help

Attests to the CAS (VEIL_CONFIG_ID / SCONE_CONFIG_ID, VEIL_CAS_ADDR, ...), receives the
service's configuration and runs the measured program with it. Without --program the program
named in /etc/veil/program is run. Invoked as `envcas` it is envcas. SCONE_HASH=1 prints the
measurement instead.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Launch(Kind, Vec<String>),
    Version,
    Help,
}

fn parse(argv0_is_envcas: bool, args: Vec<String>) -> Result<Parsed, String> {
    let mut kind = if argv0_is_envcas {
        Some(Kind::Envcas)
    } else {
        None
    };
    let mut it = args.into_iter().peekable();
    // Options come first; the first `--` or the first non-option ends them.
    while let Some(a) = it.peek() {
        match a.as_str() {
            "--" => {
                it.next();
                break;
            }
            "--version" | "-V" => return Ok(Parsed::Version),
            "--help" | "-h" => return Ok(Parsed::Help),
            "--envcas" if kind.is_none() => {
                it.next();
                kind = Some(Kind::Envcas);
            }
            "--program" if kind.is_none() => {
                it.next();
                let p = it
                    .next()
                    .filter(|p| !p.is_empty())
                    .ok_or("--program needs a program")?;
                kind = Some(Kind::Run { program: Some(p) });
            }
            o if o.starts_with('-') => {
                return Err(format!(
                    "unexpected option `{o}` (host arguments go after `--`)"
                ));
            }
            _ => break,
        }
    }
    Ok(Parsed::Launch(
        kind.unwrap_or(Kind::Run { program: None }),
        it.collect(),
    ))
}

fn main() -> ExitCode {
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
    let (kind, args) = match parse(is_envcas, args) {
        Ok(Parsed::Launch(kind, args)) => (kind, args),
        Ok(Parsed::Version) => {
            println!("veil-launcher {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("veil-launcher: {e}\n{USAGE}");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn command_lines() {
        let run = |p: Option<&str>| Kind::Run {
            program: p.map(str::to_string),
        };
        let table: Vec<(bool, Vec<String>, Result<Parsed, ()>)> = vec![
            (false, s(&[]), Ok(Parsed::Launch(run(None), vec![]))),
            (
                false,
                s(&["--", "-x", "y"]),
                Ok(Parsed::Launch(run(None), s(&["-x", "y"]))),
            ),
            (
                false,
                s(&["a", "--b"]),
                Ok(Parsed::Launch(run(None), s(&["a", "--b"]))),
            ),
            (
                false,
                s(&["--program", "/bin/p", "--", "--version"]),
                Ok(Parsed::Launch(run(Some("/bin/p")), s(&["--version"]))),
            ),
            (
                false,
                s(&["--envcas", "1"]),
                Ok(Parsed::Launch(Kind::Envcas, s(&["1"]))),
            ),
            (
                true,
                s(&["1", "2"]),
                Ok(Parsed::Launch(Kind::Envcas, s(&["1", "2"]))),
            ),
            (true, s(&["--program", "p"]), Err(())),
            (false, s(&["--program"]), Err(())),
            (false, s(&["--program", ""]), Err(())),
            (false, s(&["--envcas", "--program", "p"]), Err(())),
            (false, s(&["-x"]), Err(())),
            (false, s(&["--version"]), Ok(Parsed::Version)),
            (false, s(&["--help"]), Ok(Parsed::Help)),
        ];
        for (envcas, args, want) in table {
            let got = parse(envcas, args.clone()).map_err(|_| ());
            assert_eq!(got, want, "{envcas} {args:?}");
        }
    }
}
