//! The command line: clap definitions and dispatch. Each subcommand lives in its own file.

pub mod sim;

/// Entry point used by `main.rs`; returns the process exit code.
pub fn main() -> i32 {
    0
}
