//! Command-line values: `--memory`, `--memory-swap`, `--cpus`, `--pids-limit`,
//! `--network`, signals, and the serve flags' durations. Beyond "no panic": what
//! parses is in range, and integers round-trip exactly through their text.

#![no_main]

use agent::fuzzing::parse_duration;
use agent::runtime::units::{ByteSize, Cpus, MemorySwap, Network, PidsLimit, Signal};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

const UNITS: [(&str, u64); 5] = [
    ("", 1),
    ("k", 1 << 10),
    ("Mi", 1 << 20),
    ("g", 1 << 30),
    ("TB", 1 << 40),
];

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes as a number, for the round trips.
    let mut n = [0u8; 8];
    let head = data.len().min(8);
    n[..head].copy_from_slice(&data[..head]);
    let n = u64::from_le_bytes(n);
    for (unit, mult) in UNITS {
        let want = (n / mult).checked_mul(mult).expect("in range");
        let text = format!("{}{unit}", n / mult);
        assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(want)), "{text}");
    }
    let ms = n % 86_400_001;
    assert_eq!(
        parse_duration(&format!("{ms}ms")),
        Ok(Duration::from_millis(ms)),
        "{ms}ms"
    );
    let secs = n % 86_401;
    assert_eq!(
        parse_duration(&format!("{secs}s")),
        Ok(Duration::from_secs(secs))
    );
    assert_eq!(
        parse_duration(&format!("{secs}")),
        Ok(Duration::from_secs(secs))
    );
    let pids = (n >> 1).max(1);
    assert_eq!(pids.to_string().parse::<PidsLimit>(), Ok(PidsLimit(pids)));

    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let size = s.parse::<ByteSize>();
    if let Err(e) = &size {
        assert!(!e.contains('\n'));
    }
    match s.parse::<MemorySwap>() {
        Ok(MemorySwap::Unlimited) => assert_eq!(s.trim(), "-1"),
        Ok(MemorySwap::Total(t)) => assert_eq!(size, Ok(t)),
        Err(_) => assert!(size.is_err()),
    }
    if let Ok(cpus) = s.parse::<Cpus>() {
        let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let quota = cpus.quota_us(100_000);
        assert!(
            (1_000..=available * 100_000).contains(&quota),
            "{s}: {quota}"
        );
    }
    if let Ok(PidsLimit(p)) = s.parse::<PidsLimit>() {
        assert!(p >= 1);
        assert_eq!(p.to_string().parse::<PidsLimit>(), Ok(PidsLimit(p)));
    }
    if let Ok(Signal(sig)) = s.parse::<Signal>() {
        assert!((1..=64).contains(&sig), "{s}: {sig}");
    }
    if let Ok(net) = s.parse::<Network>() {
        assert_eq!(net.as_str(), s);
    }
    if let Ok(d) = parse_duration(s) {
        assert!(d <= Duration::from_secs(86_400), "{s}: {d:?}");
    }
});
