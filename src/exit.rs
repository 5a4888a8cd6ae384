//! The process exit codes operators script against. A library concept: the report maps a run's result to
//! one, and the command line only hands it to the process. Never renumber these.

/// Every configured group was enumerated and every needed write succeeded (or, dry, was planned).
pub const OK: u8 = 0;
/// The run could not proceed (directory or CloudShell unreachable, bind or login refused): nothing written.
pub const FATAL: u8 = 1;
/// Configuration or usage error.
pub const CONFIG: u8 = 2;
/// Some groups or users failed; the rest were synced.
pub const PARTIAL: u8 = 3;
/// A safety limit stopped writes.
pub const HELD: u8 = 4;
/// Another run (a `sync`, or the daemon's) holds the run lock: this one did nothing.
pub const BUSY: u8 = 5;
/// `sync --dry-run --detailed-exitcode` only: the dry run went well and planned changes (0 then means nothing
/// to do).
pub const CHANGES_PLANNED: u8 = 6;
