//! How far a long command that copies blobs is (`mxmedia backup`, `mxmedia migrate-store`): a
//! bar of bytes with rate and ETA on a terminal, otherwise (a log, a journal) a plain line every
//! few seconds. Both on stderr, so stdout keeps only the summary.

use std::time::{Duration, Instant};

use bytesize::ByteSize;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use num_traits::ToPrimitive as _;

/// How often the plain line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Progress {
    /// The command, at the start of each plain line.
    command: &'static str,
    bar: Option<ProgressBar>,
    total_files: u64,
    total_bytes: u64,
    files: u64,
    bytes: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    pub(crate) fn new(
        command: &'static str,
        total_files: u64,
        total_bytes: u64,
        bar: bool,
    ) -> Self {
        let bar = bar.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} {msg} ({bytes_per_sec}, ETA {eta})",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Self {
            command,
            bar,
            total_files,
            total_bytes,
            files: 0,
            bytes: 0,
            started: now,
            last_line: now,
        }
    }

    /// One blob of the first pass done (copied, found, or failed).
    pub(crate) fn blob(&mut self, len: u64) {
        self.files += 1;
        self.bytes = self.bytes.saturating_add(len);
        match &self.bar {
            Some(bar) => {
                bar.inc(len);
                bar.set_message(format!("{}/{} blobs", self.files, self.total_files));
            }
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    /// A message that must not be drawn over by the bar.
    pub(crate) fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    pub(crate) fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.files > 0 => eprintln!("{}", self.line()),
            None => {}
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = ByteSize::b(
            (self.bytes.to_f64().unwrap_or(0.0) / secs)
                .to_u64()
                .unwrap_or(0),
        );
        format!(
            "{}: {}/{} blobs, {}/{}, {rate}/s",
            self.command,
            self.files,
            self.total_files,
            ByteSize::b(self.bytes),
            ByteSize::b(self.total_bytes),
        )
    }
}
