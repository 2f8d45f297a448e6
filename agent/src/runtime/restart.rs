//! `--restart no|on-failure[:N]|always|unless-stopped`: Docker's restart policies,
//! carried out by the container's supervisor.
//!
//! The supervisor decides after every exit, with Docker's rules: `on-failure`
//! restarts only after a non-zero exit, at most N times when N is given; `always`
//! and `unless-stopped` restart whatever the exit; none of them restarts a
//! container that `agent stop`, `kill` or `rm -f` ended (Docker's "manually
//! stopped"), which those commands say by leaving a marker file in the
//! container's directory. Without a daemon that restarts, `always` and
//! `unless-stopped` behave the same.
//!
//! Between runs it waits with Docker's back-off: 100 ms, doubled after each
//! restart up to a minute, back to 100 ms after a run that lasted 10 s or more.

use super::{Error, IoContext, Paths, Result};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::Duration;

/// A restart policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    /// Never restart (the default).
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times when set.
    OnFailure {
        /// `on-failure:N`.
        #[serde(default)]
        max_retries: Option<u32>,
    },
    /// Restart after every exit.
    Always,
    /// Restart after every exit unless stopped by the user.
    UnlessStopped,
}

impl FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: use no, on-failure[:N], always or unless-stopped");
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let policy = match name {
            "no" => RestartPolicy::No,
            "on-failure" => RestartPolicy::OnFailure {
                max_retries: count
                    .map(|c| c.parse::<u32>().map_err(|_| bad()))
                    .transpose()?,
            },
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            _ => return Err(bad()),
        };
        if count.is_some() && !matches!(policy, RestartPolicy::OnFailure { .. }) {
            return Err(format!(
                "{s:?}: only on-failure takes a maximum retry count"
            ));
        }
        Ok(policy)
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

impl RestartPolicy {
    /// Whether a container that exited with `exit_code`, after `restarts`
    /// restarts so far, runs again. `stopped_by_user`: stop, kill or rm ended it.
    pub fn restarts(self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && max_retries.is_none_or(|max| restarts < max)
            }
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }
}

/// Docker's back-off between restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// First delay.
    pub const INITIAL: Duration = Duration::from_millis(100);
    /// Longest delay.
    pub const MAX: Duration = Duration::from_secs(60);
    /// A run at least this long resets the delay.
    pub const RESET_AFTER: Duration = Duration::from_secs(10);

    /// A back-off at its first delay.
    pub fn new() -> Self {
        Backoff {
            next: Self::INITIAL,
        }
    }

    /// The delay before the next start, after a run that lasted `ran`.
    pub fn delay(&mut self, ran: Duration) -> Duration {
        if ran >= Self::RESET_AFTER {
            self.next = Self::INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// The marker `stop`, `kill` and `rm -f` leave for the supervisor.
fn marker(paths: &Paths, id: &str) -> std::path::PathBuf {
    paths.container(id).join("stopped-by-user")
}

/// Tells the container's supervisor not to restart it.
pub fn mark_stopped_by_user(paths: &Paths, id: &str) -> Result<()> {
    let p = marker(paths, id);
    match std::fs::write(&p, b"") {
        // Already removed: nothing left to restart.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.at("write", &p),
    }
}

/// Whether the user stopped the container (or removed its directory).
pub fn stopped_by_user(paths: &Paths, id: &str) -> bool {
    marker(paths, id).exists() || !paths.container(id).is_dir()
}

/// Removes the marker (a new start of the container).
pub fn clear_stopped_by_user(paths: &Paths, id: &str) -> Result<()> {
    let p = marker(paths, id);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at("remove", &p),
        _ => Ok(()),
    }
}

/// Refuses combinations Docker refuses.
pub fn validate(policy: RestartPolicy, auto_remove: bool) -> Result<()> {
    if auto_remove && policy != RestartPolicy::No {
        return Err(Error::Invalid(format!(
            "--restart {policy} and --rm conflict: a removed container cannot restart"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_like_docker() {
        assert_eq!("no".parse(), Ok(RestartPolicy::No));
        assert_eq!(
            "on-failure".parse(),
            Ok(RestartPolicy::OnFailure { max_retries: None })
        );
        assert_eq!(
            "on-failure:2".parse(),
            Ok(RestartPolicy::OnFailure {
                max_retries: Some(2)
            })
        );
        assert_eq!("always".parse(), Ok(RestartPolicy::Always));
        assert_eq!("unless-stopped".parse(), Ok(RestartPolicy::UnlessStopped));
        for bad in ["", "sometimes", "on-failure:", "on-failure:-1", "always:3"] {
            assert!(bad.parse::<RestartPolicy>().is_err(), "{bad}");
        }
        for p in [
            "no",
            "on-failure",
            "on-failure:5",
            "always",
            "unless-stopped",
        ] {
            assert_eq!(p.parse::<RestartPolicy>().unwrap().to_string(), p);
        }
    }

    #[test]
    fn decisions_follow_docker() {
        let on_failure_2 = RestartPolicy::OnFailure {
            max_retries: Some(2),
        };
        assert!(on_failure_2.restarts(1, 0, false));
        assert!(on_failure_2.restarts(1, 1, false));
        assert!(!on_failure_2.restarts(1, 2, false), "two restarts at most");
        assert!(!on_failure_2.restarts(0, 0, false), "success ends it");
        assert!(!on_failure_2.restarts(137, 0, true), "stopped by the user");
        assert!(RestartPolicy::Always.restarts(0, 1000, false));
        assert!(!RestartPolicy::Always.restarts(143, 0, true));
        assert!(!RestartPolicy::No.restarts(1, 0, false));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new();
        let short = Duration::from_millis(5);
        assert_eq!(b.delay(short), Duration::from_millis(100));
        assert_eq!(b.delay(short), Duration::from_millis(200));
        assert_eq!(b.delay(short), Duration::from_millis(400));
        for _ in 0..20 {
            b.delay(short);
        }
        assert_eq!(b.delay(short), Backoff::MAX);
        assert_eq!(b.delay(Duration::from_secs(11)), Backoff::INITIAL);
    }

    #[test]
    fn policy_serializes_for_state_json() {
        let p = RestartPolicy::OnFailure {
            max_retries: Some(3),
        };
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(j, r#"{"name":"on-failure","max_retries":3}"#);
        assert_eq!(serde_json::from_str::<RestartPolicy>(&j).unwrap(), p);
        assert!(validate(RestartPolicy::Always, true).is_err());
        assert!(validate(RestartPolicy::No, true).is_ok());
    }
}
