//! The one-line progress view: redrawn in place on a terminal, printed as plain lines
//! (one per phase or weight change) otherwise.

use std::io::Write;

use super::chart::Sample;
use super::load::Counts;
use serin_controller::status::CanaryStatus;

pub(crate) struct Progress {
    live: bool,
    drawn: bool,
    last: Option<String>,
}

impl Progress {
    pub(crate) fn new(live: bool) -> Progress {
        Progress {
            live,
            drawn: false,
            last: None,
        }
    }

    /// Draws the line on a terminal (and returns `None`), or returns it for printing when it
    /// differs from the previous one.
    pub(crate) fn line(
        &mut self,
        status: &CanaryStatus,
        sample: &Sample,
        load: Counts,
    ) -> Option<String> {
        let phase = status
            .phase
            .map_or("Pending".to_owned(), |p| format!("{p:?}"));
        let rate = sample
            .success_rate
            .map_or("   -  ".to_owned(), |v| format!("{v:5.1}%"));
        let p99 = sample
            .p99_ms
            .map_or("   -   ".to_owned(), |v| format!("{v:5.0} ms"));
        let summary = format!(
            "{phase:<16} weight {:>5}%  success {rate}  p99 {p99}  failed checks {}",
            status.canary_weight.as_percent(),
            status.failed_checks
        );
        if self.live {
            let mut out = std::io::stdout().lock();
            let _ = write!(
                out,
                "\r\x1b[2K[{:>5.1}s] {summary}  ({} requests)",
                sample.at, load.sent
            );
            let _ = out.flush();
            self.drawn = true;
            return None;
        }
        if self.last.as_deref() == Some(summary.as_str()) {
            return None;
        }
        self.last = Some(summary.clone());
        Some(format!("{:>5.1}s  | {summary}", sample.at))
    }

    /// Erases a drawn line so that a regular line can be printed.
    pub(crate) fn clear(&mut self) {
        if self.drawn {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K");
            let _ = out.flush();
            self.drawn = false;
        }
    }
}
