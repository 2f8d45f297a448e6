//! Values the command line gives the runtime, parsed once at the edge and passed
//! inward typed: byte sizes, CPUs, pids limits, the network mode and signals.
//! Each is a `FromStr`, so clap uses it as the flag's value parser and a
//! malformed value is one clear line before anything runs.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// A byte size: an integer or decimal with an optional unit `b`, `k`/`ki`/`kb`,
/// `m`/`mi`/`mb`, `g`/`gi`/`gb`, `t`… (case-insensitive; all binary, as Docker does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid size {s:?}: use a number with an optional unit (b, k, m, g, t; e.g. 256Mi)"
            )
        };
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() || num.starts_with('.') {
            return Err(bad());
        }
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "ki" | "kb" | "kib" => 1 << 10,
            "m" | "mi" | "mb" | "mib" => 1 << 20,
            "g" | "gi" | "gb" | "gib" => 1 << 30,
            "t" | "ti" | "tb" | "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        // Whole numbers exactly: an f64 holds integers only up to 2^53.
        if let Ok(whole) = num.parse::<u64>() {
            return whole.checked_mul(mult).map(ByteSize).ok_or_else(bad);
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

/// `--memory-swap`: memory plus swap, or `-1` for unlimited swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySwap {
    Unlimited,
    Total(ByteSize),
}

impl FromStr for MemorySwap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "-1" {
            Ok(MemorySwap::Unlimited)
        } else {
            s.parse().map(MemorySwap::Total)
        }
    }
}

/// Fractional CPUs, bounded as Docker bounds `--cpus`: from 0.01 to the number
/// of CPUs of this machine.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Cpus(f64);

impl Cpus {
    /// The smallest value Docker accepts.
    pub const MIN: f64 = 0.01;

    /// The CFS quota for `period_us`.
    pub fn quota_us(self, period_us: u64) -> u64 {
        (self.0 * period_us as f64).round() as u64
    }
}

impl FromStr for Cpus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let cpus: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number of CPUs (e.g. 0.5)"))?;
        let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if !cpus.is_finite() || cpus < Self::MIN {
            return Err(format!(
                "{s}: the range of CPUs is from 0.01 to {available}"
            ));
        }
        if cpus > available {
            return Err(format!("{s}: only {available} CPUs are available"));
        }
        Ok(Cpus(cpus))
    }
}

/// `--pids-limit`: at least one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidsLimit(pub u64);

impl FromStr for PidsLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let n: i64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an integer"))?;
        if n <= 0 {
            return Err(format!("{s}: must be at least 1"));
        }
        Ok(PidsLimit(n as u64))
    }
}

/// Network mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A fresh network namespace with only loopback, up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

impl Network {
    /// `none` / `host`.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Host => "host",
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Network::None),
            "host" => Ok(Network::Host),
            other => Err(format!("{other:?}: use none or host")),
        }
    }
}

/// A signal, by name (`KILL`, `SIGKILL`, `kill`) or number (`9`; real-time
/// signals only by number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub i32);

impl FromStr for Signal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<i32>() {
            if !(1..=64).contains(&n) {
                return Err(format!("invalid signal number {n}"));
            }
            return Ok(Signal(n));
        }
        // Names are nix's (every standard signal), with or without `SIG`, any case.
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        let sig: nix::sys::signal::Signal = format!("SIG{name}")
            .parse()
            .map_err(|_| format!("unknown signal {s:?}"))?;
        Ok(Signal(sig as i32))
    }
}

/// A `--security-opt` value, as Docker spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityOpt {
    /// `seccomp=unconfined`: no seccomp filter.
    SeccompUnconfined,
    /// `seccomp=PATH.json`: this profile instead of the default one.
    SeccompProfile(std::path::PathBuf),
    /// `no-new-privileges[=true|false]` (on unless turned off).
    NoNewPrivileges(bool),
}

impl FromStr for SecurityOpt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (key, value) = match s.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (s, None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => Ok(SecurityOpt::SeccompUnconfined),
            ("seccomp", Some(path)) if !path.is_empty() => {
                Ok(SecurityOpt::SeccompProfile(path.into()))
            }
            ("no-new-privileges", None | Some("true")) => Ok(SecurityOpt::NoNewPrivileges(true)),
            ("no-new-privileges", Some("false")) => Ok(SecurityOpt::NoNewPrivileges(false)),
            _ => Err(format!(
                "{s:?}: use seccomp=unconfined, seccomp=PATH.json or no-new-privileges[=true|false]"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, want) in [
            ("1048576", 1 << 20),
            ("256Mi", 256 << 20),
            ("1g", 1 << 30),
            ("1.5k", 1536),
            ("64MB", 64 << 20),
            ("10b", 10),
        ] {
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(want)), "{s}");
        }
        for s in [
            "",
            "abc",
            "-1",
            "1x",
            ".5m",
            "99999999999999999999t",
            "16777216t",
        ] {
            assert!(s.parse::<ByteSize>().is_err(), "{s}");
        }
        // Found by the cli_values fuzz target: whole numbers above 2^53 went
        // through an f64 and came back rounded.
        for n in [(1u64 << 53) + 1, 30_806_552_531_659_123, u64::MAX] {
            assert_eq!(n.to_string().parse::<ByteSize>(), Ok(ByteSize(n)), "{n}");
        }
        assert_eq!(
            "16777215t".parse::<ByteSize>(),
            Ok(ByteSize(16_777_215 << 40))
        );
        assert_eq!("-1".parse::<MemorySwap>(), Ok(MemorySwap::Unlimited));
    }

    #[test]
    fn cpus_are_bounded_as_docker_bounds_them() {
        assert_eq!(
            "0.5".parse::<Cpus>().map(|c| c.quota_us(100_000)),
            Ok(50_000)
        );
        assert_eq!(
            "0.01".parse::<Cpus>().map(|c| c.quota_us(100_000)),
            Ok(1_000)
        );
        for s in ["1e-9", "0.009", "0", "-1", "NaN", "inf", "1000000", "x"] {
            assert!(s.parse::<Cpus>().is_err(), "{s}");
        }
    }

    #[test]
    fn signals_and_networks() {
        for (s, n) in [
            ("KILL", 9),
            ("sigterm", 15),
            ("9", 9),
            ("HUP", 1),
            ("SIGWINCH", 28),
            ("tstp", 20),
            ("40", 40),
        ] {
            assert_eq!(s.parse::<Signal>(), Ok(Signal(n)), "{s}");
        }
        for s in ["0", "65", "FOO", "", "SIG", "SIGSIGKILL"] {
            assert!(s.parse::<Signal>().is_err(), "{s}");
        }
        assert_eq!("host".parse::<Network>(), Ok(Network::Host));
        assert!("bridge".parse::<Network>().is_err());
    }

    #[test]
    fn security_opts() {
        assert_eq!(
            "seccomp=unconfined".parse::<SecurityOpt>(),
            Ok(SecurityOpt::SeccompUnconfined)
        );
        assert_eq!(
            "seccomp=/p.json".parse::<SecurityOpt>(),
            Ok(SecurityOpt::SeccompProfile("/p.json".into()))
        );
        assert_eq!(
            "no-new-privileges".parse::<SecurityOpt>(),
            Ok(SecurityOpt::NoNewPrivileges(true))
        );
        assert_eq!(
            "no-new-privileges=false".parse::<SecurityOpt>(),
            Ok(SecurityOpt::NoNewPrivileges(false))
        );
        for bad in [
            "seccomp",
            "seccomp=",
            "apparmor=x",
            "no-new-privileges=maybe",
        ] {
            assert!(bad.parse::<SecurityOpt>().is_err(), "{bad}");
        }
    }
}
