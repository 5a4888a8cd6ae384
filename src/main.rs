//! `cloudshell-ldap-sync`: parses the command line, sets up logging, calls the library and maps the outcome
//! to the exit codes of `docs/interface.md`.

use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: a run allocates and frees a few million small buffers (every
/// attribute value the directory sends), which glibc's malloc spent a third of the run's CPU on, and glibc's
/// per-thread arenas kept freed memory as resident. Measured in BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, the same in mimalloc 2 and 3; the Rust
/// bindings name no constant for it). A test checks that it holds mimalloc 3's default, 1000 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Memory freed goes back to the system at once instead of a second later. A run frees large buffers (CloudShell
    // pages, the user list's earlier capacity, directory answers) while it is building the next: returned at
    // once, their pages are not resident at the run's peak. Measured: peak RSS 70 -> 60 MB at a million
    // memberships, no change in time (BENCHMARKS.md).
    // SAFETY: sets an integer option; mimalloc reads options at any time and documents setting them so.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    cloudshell_ldap_sync::cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_with_mimalloc_3s_default_of_1000_ms() {
        // SAFETY: reads an integer option.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // (options.c: `{ 1000, ..., MI_OPTION_LEGACY(purge_delay, reset_delay) }`; the header's comment still says 10.)
        assert_eq!(default, 1000, "mi_option_e changed: find mi_option_purge_delay in mimalloc.h again");
    }
}
