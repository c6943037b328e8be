//! The handlers of `xdplb`'s commands. Binary only (declared by main.rs,
//! not part of the `xdplb` library): each parses what clap left to it,
//! calls the library, prints the outcome and picks the exit code.

pub mod admin;
pub mod backend_setup;
pub mod changes;
pub mod daemon;
pub mod decap;
pub mod explain;
pub mod rollout;
pub mod status;
pub mod trace;

use std::process::ExitCode;

/// Exit code of a host command (`decap`, `backend-setup`): its lines on
/// stdout, or the error and its causes on one line and exit 1.
fn print_lines(done: anyhow::Result<Vec<String>>) -> ExitCode {
    match done {
        Ok(lines) => {
            lines.iter().for_each(|l| println!("{l}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xdplb: {e:#}");
            ExitCode::FAILURE
        }
    }
}
