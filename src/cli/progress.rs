//! Progress on a terminal: a spinner line with counts and bytes, drawn on stderr only when
//! stderr is a TTY (and the user asked for it), so logs and pipes stay clean.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(wanted: bool) -> Self {
        let bar = (wanted && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar }
    }

    pub fn set(&self, msg: impl FnOnce() -> String) {
        if let Some(b) = &self.bar {
            b.set_message(msg());
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What a backup's progress line says.
pub fn progress_line(stats: &crate::repo::ArchiveStats) -> String {
    format!(
        "{} files, {} read, {} new chunks",
        stats.files,
        bytesize::ByteSize(stats.original_size),
        stats.new_chunks
    )
}
