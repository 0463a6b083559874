//! veil's integration tests: one binary, one module per area. They drive the real `veil` binary
//! (and real CAS/LAS processes) the way a user would; servers listen on 127.0.0.1 port 0.

// All of this crate is test code: its helpers may unwrap and expect like the tests do (clippy's
// allow-unwrap-in-tests covers only the #[test] functions of an integration-test crate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attacks;
mod audit;
mod cas;
mod cli;
mod coderegion;
mod counter;
mod deps;
mod evidence;
mod las;
mod launch;
mod policy;
mod rest;
mod run;
mod sconify;
mod secrets;
mod shield;
mod support;
mod tidy;
mod workload;
