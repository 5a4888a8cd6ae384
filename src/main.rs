//! `cloudshell-ldap-sync`: parses the command line, sets up logging, calls the library and maps the outcome
//! to the exit codes of `docs/interface.md`.

use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: a run allocates and frees a few million small buffers (every
/// attribute value the directory sends), which glibc's malloc spent a third of the run's CPU on, and glibc's
/// per-thread arenas kept freed memory as resident. Measured in BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cloudshell_ldap_sync::cli::main()
}
