//! What the server does when accept(2) fails. Out of file descriptors (EMFILE,
//! ENFILE) or socket memory, it backs off (10 ms, doubling up to 1 s) while idle
//! connections are closed to make room; a client that gave up before it was accepted
//! is skipped at once. Failures are logged at most once a minute, with a count of
//! those in between: an exhausted server must not also flood its log.

use std::io;
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one "accept failed" log line per this long.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What a failed accept means for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The process or the system ran out of descriptors or socket memory: make room.
    Exhausted,
    /// This one client went away before it was accepted: accept the next.
    ClientGone,
    /// Anything else: back off, then try again.
    Other,
}

impl Failure {
    pub fn of(e: &io::Error) -> Failure {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Failure::Exhausted,
            Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM) => {
                Failure::ClientGone
            }
            _ => Failure::Other,
        }
    }
}

/// The accept loop's memory of failures: the current back-off and what the log has
/// not been told yet.
#[derive(Debug)]
pub struct AcceptFailures {
    backoff: Duration,
    last_report: Option<Instant>,
    unreported: u64,
}

impl Default for AcceptFailures {
    fn default() -> Self {
        AcceptFailures {
            backoff: FIRST_BACKOFF,
            last_report: None,
            unreported: 0,
        }
    }
}

/// A log line that is due: the error, and how many failures it stands for.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub failures: u64,
}

impl AcceptFailures {
    /// An accept succeeded: the next failure starts a fresh back-off.
    pub fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }

    /// An accept failed with `failure` at `now`: how long to wait before the next
    /// accept (`None`: at once), and whether to log it.
    pub fn failed(&mut self, failure: Failure, now: Instant) -> (Option<Duration>, Option<Report>) {
        if failure == Failure::ClientGone {
            return (None, None);
        }
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.unreported += 1;
        let due = self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= REPORT_EVERY);
        if !due {
            return (Some(pause), None);
        }
        self.last_report = Some(now);
        let report = Report {
            failures: std::mem::take(&mut self.unreported),
        };
        (Some(pause), Some(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_of_failures_is_one_line_a_minute() {
        let mut f = AcceptFailures::default();
        let t0 = Instant::now();
        let mut reports = Vec::new();
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i * 10);
            if let (_, Some(r)) = f.failed(Failure::Exhausted, now) {
                reports.push(r.failures);
            }
        }
        // 100 s of failures every 10 ms: the first at once, the next a minute later
        // counting the 6,000 since.
        assert_eq!(reports, vec![1, 6000]);
    }

    #[test]
    fn back_off_doubles_to_a_second_and_resets_on_success() {
        let mut f = AcceptFailures::default();
        let now = Instant::now();
        let pauses: Vec<Duration> = (0..9)
            .map(|_| f.failed(Failure::Other, now).0.unwrap_or_default())
            .collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert_eq!(pauses[1], Duration::from_millis(20));
        assert_eq!(pauses[8], Duration::from_secs(1));
        f.succeeded();
        assert_eq!(
            f.failed(Failure::Other, now).0,
            Some(Duration::from_millis(10))
        );
    }

    #[test]
    fn errno_classes() {
        let of = |n| Failure::of(&io::Error::from_raw_os_error(n));
        assert_eq!(of(libc::EMFILE), Failure::Exhausted);
        assert_eq!(of(libc::ENFILE), Failure::Exhausted);
        assert_eq!(of(libc::ECONNABORTED), Failure::ClientGone);
        assert_eq!(of(libc::EINVAL), Failure::Other);
        let mut f = AcceptFailures::default();
        assert_eq!(
            f.failed(Failure::ClientGone, Instant::now()),
            (None, None),
            "a client that left is neither waited for nor logged"
        );
    }
}
