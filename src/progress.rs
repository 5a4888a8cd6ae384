//! Progress of a long read: a `read progress` event at a steady interval while one paged read goes on (pages,
//! entries so far, time spent), nothing for a read that ends sooner. It counts and logs; it never changes what
//! is read.

use std::time::{Duration, Instant};

/// How often a long read says how far it got, unless the settings say otherwise.
pub const EVERY: Duration = Duration::from_secs(10);

/// One paged read's counters.
pub struct Progress {
    /// `directory` or `cloudshell`.
    source: &'static str,
    /// What is read: the search, or the list.
    operation: String,
    every: Duration,
    started: Instant,
    next: Instant,
    /// Entries per page, when the pages are not seen one by one (the directory's paged searches): pages are
    /// then counted from the entries.
    page_size: Option<u64>,
    pages: u64,
    entries: u64,
}

impl Progress {
    /// A read starting now that logs every `every` while it lasts.
    pub fn new(source: &'static str, operation: impl Into<String>, every: Duration) -> Progress {
        let started = Instant::now();
        Progress {
            source,
            operation: operation.into(),
            every,
            started,
            next: started + every,
            page_size: None,
            pages: 0,
            entries: 0,
        }
    }

    /// Counts pages from entries, `page_size` a page.
    pub fn with_page_size(mut self, page_size: u64) -> Progress {
        self.page_size = Some(page_size.max(1));
        self
    }

    /// One entry more; logs when the interval is up. A counter and a clock read: cheap enough per entry.
    pub fn entry(&mut self) {
        self.entries += 1;
        self.check();
    }

    /// A page and its `entries` more; logs when the interval is up.
    pub fn page(&mut self, entries: usize) {
        self.pages += 1;
        self.entries += entries as u64;
        self.check();
    }

    fn check(&mut self) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.every;
        let pages = match self.page_size {
            Some(size) => self.entries.div_ceil(size),
            None => self.pages,
        };
        tracing::info!(
            source = self.source,
            operation = %self.operation,
            pages,
            entries = self.entries,
            elapsed_s = now.duration_since(self.started).as_secs(),
            "read progress"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `read progress` lines `f` logs.
    fn logged(f: impl FnOnce()) -> Vec<String> {
        let lines = crate::logging::Captured::default();
        let sink = lines.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || sink.clone()).with_ansi(false).without_time().finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = lines.text();
        text.lines().filter(|l| l.contains("read progress")).map(str::to_string).collect()
    }

    #[test]
    fn a_read_shorter_than_the_interval_logs_nothing() {
        let lines = logged(|| {
            let mut p = Progress::new("directory", "the users search", EVERY).with_page_size(500);
            for _ in 0..10_000 {
                p.entry();
            }
        });
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn a_read_past_the_interval_logs_pages_entries_and_elapsed_once_per_interval() {
        let lines = logged(|| {
            let mut p = Progress::new("cloudshell", "list_users", Duration::from_millis(30));
            p.page(250);
            std::thread::sleep(Duration::from_millis(40));
            p.page(250);
            p.page(250); // within the next interval: no second line
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        for field in ["source=\"cloudshell\"", "operation=list_users", "pages=2", "entries=500", "elapsed_s=0"] {
            assert!(line.contains(field), "{field}: {line}");
        }
    }

    #[test]
    fn directory_pages_are_counted_from_the_entries() {
        let lines = logged(|| {
            let mut p = Progress::new("directory", "the users search", Duration::ZERO).with_page_size(500);
            for _ in 0..1001 {
                p.entry();
            }
        });
        let last = lines.last().expect("a line per entry with no interval");
        assert!(last.contains("pages=3") && last.contains("entries=1001"), "{last}");
    }
}
