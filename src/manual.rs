//! The manual pages: `cloudshell-ldap-sync(1)`, the command line's own sections from its clap definition
//! (`clap_mangen`), then what operators look up there: files, exit status, signals, environment, see also; and
//! one page per command (`cloudshell-ldap-sync-sync(1)`...), each with every option of that command, which the
//! main page's COMMANDS section names.

use std::io::Write;
use std::path::Path;

/// The sections clap knows nothing of, in roff.
const OPERATOR_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/cloudshell\-ldap\-sync/config.toml\fR
The configuration (TOML; unknown keys are refused). Every key is shown with its default in
\fI/usr/share/doc/cloudshell\-ldap\-sync/example.toml\fR.
.TP
\fI/var/lib/cloudshell\-ldap\-sync/status.json\fR
The last run, written after every run into the state directory: \fB[monitor] state_directory\fR (the installed
configuration names this directory, the units' \fBStateDirectory=\fR, so that commands run by hand as root share
the service's state), else \fB$STATE_DIRECTORY\fR. It must not be writable by group or others.
.TP
\fI/var/lib/cloudshell\-ldap\-sync/state.db\fR
The state database (SQLite, with its \fI\-wal\fR and \fI\-shm\fR files): the managed users, which alone can
become leavers; each group's member count at the last good run, for the shrink guard (\fBaccept\-shrink\fR
forgets them, to accept a shrink); and the audit trail that \fBhistory\fR shows, kept for
\fB[monitor] history_retention\fR (default 400 days).
.TP
\fI/var/lib/cloudshell\-ldap\-sync/groups.json\fR, \fIusers.json\fR
The shrink guard's counts and the managed users before \fIstate.db\fR: moved into it on the first start, and
renamed aside (\fIgroups.json.migrated\fR).
.TP
\fI/usr/lib/systemd/system/cloudshell\-ldap\-sync.service\fR
The daemon unit; \fIcloudshell\-ldap\-sync\-oneshot.service\fR and \fIcloudshell\-ldap\-sync.timer\fR run
one sync on systemd's schedule instead. Use one or the other.
.SH EXIT STATUS
.TP
\fB0\fR
Every configured group was enumerated and every needed write succeeded (or, with \fB\-\-dry\-run\fR, was planned).
For \fBstatus\fR: the last run was ok, is not stale, and the next run is not overdue.
.TP
\fB1\fR
Fatal: the directory or CloudShell could not be reached, or a bind or login was refused; nothing was written.
For \fBstatus\fR: the last run was not ok, is older than two schedule periods, or the next run is overdue (its
time passed by more than \fBsync.run_timeout\fR plus 5 minutes). For \fBaccept\-shrink\fR and
\fBaccept\-identity\fR: a run is in progress (it holds the run lock; try again when it is done), or
\fIstate.db\fR could not be written.
.TP
\fB2\fR
A configuration or usage error (the message names the file, the key and the line). For \fBstatus\fR: no usable status file (missing, unreadable or damaged). For \fBhistory\fR, \fBaccept\-shrink\fR and \fBaccept\-identity\fR: no usable \fIstate.db\fR (none yet, damaged, or written by a newer version); for \fBaccept\-shrink\fR, also a group that is not configured.
.TP
\fB3\fR
Partial: some groups, users, memberships or deactivations failed; the rest were done.
.TP
\fB4\fR
Held: a safety limit stopped writes (imports, removals from groups, or deactivations), in one run or, for the daily budgets, in any 24 hours; or the configuration identifies users differently from the one that made \fIstate.db\fR (every deactivation and removal held until \fBaccept\-identity\fR).
.TP
\fB5\fR
Busy: another run holds the run lock (on the configuration file's directory, and on \fIrun.lock\fR in the state directory where there is one); this run did nothing.
.TP
\fB6\fR
Only with \fBsync \-\-dry\-run \-\-detailed\-exitcode\fR: the dry run went well and planned changes (imports,
group memberships, deactivations or reactivations); 0 then means there is nothing to do.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
No new call starts; the call in flight finishes; the daemon then exits 0. \fBsync\fR exits 3, or 1 when the
stop came while it was still reading the directory and CloudShell (nothing was written). A second signal
abandons the calls in flight too.
.TP
\fBSIGHUP\fR
The daemon reloads its configuration; a broken file is refused, logged, and the old one kept.
.TP
\fBSIGUSR1\fR
The daemon runs now (skipped, and logged, while a run is in progress).
.SH ENVIRONMENT
.TP
\fBCLOUDSHELL_LDAP_SYNC_CONFIG\fR
The configuration file when \fB\-c\fR/\fB\-\-config\fR is not given (the option wins; without either,
\fI/etc/cloudshell\-ldap\-sync/config.toml\fR).
.TP
\fBRUST_LOG\fR
The log filter (default \fIwarn,rustls=off,rustls_platform_verifier=off,cloudshell_ldap_sync=info\fR, moved by \fB\-v\fR and \fB\-q\fR); when set, it
decides instead of \fB\-v\fR and \fB\-q\fR.
.TP
\fBNO_COLOR\fR
When set and not empty, no colours in logs, help or usage errors, even on a terminal.
.TP
\fBCREDENTIALS_DIRECTORY\fR
Set by systemd's \fBLoadCredential=\fR: \fB*_file\fR paths may use it, and the credentials
\fIldap\-password\fR and \fIcloudshell\-password\fR are read from it when no password is configured. To run
a command by hand with the installed configuration, set it to \fI/etc/cloudshell\-ldap\-sync\fR.
.TP
\fBSTATE_DIRECTORY\fR
Set by systemd's \fBStateDirectory=\fR: the state directory when \fB[monitor] state_directory\fR is not set.
.TP
\fBJOURNAL_STREAM\fR
Set under journald: when it names stderr, logs are plain text without colours or timestamps, each line with
its level as the journal's priority (\fBjournalctl \-p warning\fR shows errors and warnings).
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1), \fBsystemd.exec\fR(5);
\fI/usr/share/doc/cloudshell\-ldap\-sync/README.md\fR
"#;

/// What a command's own page says after its options: where the rest is.
const COMMAND_SEE_ALSO: &str = r#".SH SEE ALSO
\fBcloudshell\-ldap\-sync\fR(1): the files, exit status, signals and environment of every command.
"#;

/// `command` built for the pages: no `help` command (it has no page, and every page says `--help`).
fn built(command: clap::Command) -> clap::Command {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    command
}

/// Writes the main manual page for `command` to `out`.
pub fn render(command: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(built(command));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    out.write_all(OPERATOR_SECTIONS.as_bytes())?;
    man.render_version_section(out)
}

/// Writes the page of one command (`sub`, from a built command): its synopsis, description and every option.
fn render_command(sub: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    // A page's footer names the program's version, and a command has none of its own. Set on the built
    // command, it adds no `--version` option.
    let man = clap_mangen::Man::new(sub.clone().version(crate::VERSION))
        .source(format!("cloudshell-ldap-sync {}", crate::VERSION));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    out.write_all(COMMAND_SEE_ALSO.as_bytes())?;
    man.render_version_section(out)
}

/// The pages as files: `cloudshell-ldap-sync.1` and one `cloudshell-ldap-sync-<command>.1` per visible command.
pub fn pages(command: clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let command = built(command);
    let mut main = Vec::new();
    render(command.clone(), &mut main)?;
    let mut pages = vec![(format!("{}.1", command.get_name()), main)];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut page = Vec::new();
        render_command(sub, &mut page)?;
        let name = sub.get_display_name().unwrap_or(sub.get_name());
        pages.push((format!("{name}.1"), page));
    }
    Ok(pages)
}

/// Writes every page into `dir` (made if missing).
pub fn write_pages(command: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, page) in pages(command)? {
        std::fs::write(dir.join(name), page)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_manual_names_every_command_and_the_operator_sections() {
        let mut out = Vec::new();
        super::render(crate::cli::command(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(".TH cloudshell-ldap-sync 1"), "{text}");
        for command in ["sync", "run", "check", "status", "history", "accept-shrink", "completions"] {
            // roff escapes every `-`.
            assert!(text.contains(&command.replace('-', "\\-")), "{command} missing");
        }
        for section in ["FILES", "EXIT STATUS", "SIGNALS", "ENVIRONMENT", "SEE ALSO"] {
            assert!(text.contains(&format!(".SH {section}")), "{section} missing");
        }
        assert!(!text.contains(".SH \"MAN\"") && !text.contains("\\fBman\\fR"), "the hidden command stays hidden");
    }
}
