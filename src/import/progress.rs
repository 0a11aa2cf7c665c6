//! How far an import (or an export) is: a bar with rate and ETA on a terminal, otherwise (a log, a journal) a
//! plain line every few seconds. Both on stderr, so stdout keeps only the summary.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Progress {
    /// What is counted, for the plain line: `import`, `export`.
    label: &'static str,
    bar: Option<ProgressBar>,
    total: u64,
    rows: u64,
    bytes: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    pub(crate) fn new(label: &'static str, total: u64, bar: bool) -> Self {
        let bar = bar.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} rows, {msg} ({per_sec}, ETA {eta})",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Self {
            label,
            bar,
            total,
            rows: 0,
            bytes: 0,
            started: now,
            last_line: now,
        }
    }

    pub(crate) fn row(&mut self) {
        self.rows += 1;
        match &self.bar {
            Some(bar) => bar.inc(1),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    pub(crate) fn bytes(&mut self, n: u64) {
        self.bytes += n;
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} stored", bytesize::ByteSize::b(self.bytes)));
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
            None if self.rows > 0 => eprintln!("{}", self.line()),
            None => {}
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rows = self.rows;
        format!(
            "{}: {rows}/{} rows, {} stored, {:.0} rows/s",
            self.label,
            self.total,
            bytesize::ByteSize::b(self.bytes),
            // Display only: precision loss above 2^53 rows does not matter.
            f64::from(u32::try_from(rows).unwrap_or(u32::MAX)) / secs
        )
    }
}
