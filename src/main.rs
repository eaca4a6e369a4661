//! The `nsn-lane1` command-line entry point.

use std::process::ExitCode;

const USAGE: &str = "\
nsn-lane1 — the Lane 1 executor of a Neural Sovereign Network node

USAGE:
    nsn-lane1 <COMMAND>

COMMANDS:
    help       Print this message
    version    Print the version

The executor commands (`dev`, `run`, `sidecar`) are not part of this build yet.
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("version" | "-V" | "--version") => {
            println!("nsn-lane1 {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("error: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
