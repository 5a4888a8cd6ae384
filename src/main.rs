//! `cloudshell-ldap-sync`: parses the command line, sets up logging, calls the library and maps the outcome
//! to the exit codes of `docs/interface.md`.

use std::process::ExitCode;

fn main() -> ExitCode {
    cloudshell_ldap_sync::cli::main()
}
