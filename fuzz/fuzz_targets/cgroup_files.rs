//! Every parser of `agent::cgroup::parse` over the same bytes: a cgroup file read
//! from a container's cgroup (which the container's processes can shape, e.g. with
//! nested cgroup names or a hostile kernel module's counters) or a truncated read.
//! Beyond "no panic": each result agrees with a naive reading of the text, and
//! errors stay one short line.

#![no_main]

use agent::cgroup::parse::{self, ParseError};
use libfuzzer_sys::fuzz_target;

/// `clip` keeps 40 characters; `{:?}` escapes each to at most 10 (`\u{10ffff}`).
const MAX_ERROR_LEN: usize = 40 + 40 * 10 + 40;

fn check_error(e: &ParseError) {
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "two lines: {msg}");
    assert!(msg.len() <= MAX_ERROR_LEN, "{} bytes: {msg}", msg.len());
}

fn check<T>(r: &Result<T, ParseError>) {
    if let Err(e) = r {
        check_error(e);
    }
}

fuzz_target!(|data: &[u8]| {
    let text = std::str::from_utf8(data).ok();
    let trimmed = text.map(str::trim);

    let single = parse::single_u64(data);
    check(&single);
    if let Ok(v) = single {
        assert_eq!(trimmed.map(str::parse::<u64>), Some(Ok(v)));
    }

    let limit = parse::limit_or_max(data);
    check(&limit);
    match limit {
        Ok(0) if trimmed == Some("max") => {}
        Ok(v) => assert_eq!(trimmed.map(str::parse::<u64>), Some(Ok(v))),
        Err(_) => {}
    }

    let v1 = parse::v1_limit(data);
    check(&v1);
    if let Ok(v) = v1 {
        let raw = *single.as_ref().expect("v1_limit reads a single number");
        assert!(v == raw || v == 0, "{raw} became {v}");
    }

    let signed = parse::signed_or_unlimited(data);
    check(&signed);
    if let Ok(v) = signed {
        let raw: i64 = trimmed.expect("UTF-8").parse().expect("a signed number");
        assert_eq!(v, raw.max(0) as u64);
    }

    let mut pairs = Vec::new();
    let keyed = parse::flat_keyed(data, |k, v| pairs.push((k, v)));
    check(&keyed);
    if keyed.is_ok() {
        let text = text.expect("UTF-8");
        assert!(!pairs.is_empty());
        for (k, v) in &pairs {
            assert!(!k.is_empty() && !k.contains(|c: char| c.is_ascii_whitespace()));
            assert!(text.contains(k), "{k:?} is not in the file");
            let _ = v;
        }
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(pairs.len(), lines, "one pair per non-blank line");
    }

    let cpu = parse::cpu_max(data);
    check(&cpu);
    if let Ok((quota, period)) = cpu {
        let mut parts = trimmed.expect("UTF-8").split_ascii_whitespace();
        let q = parts.next().expect("quota");
        assert!(q == "max" && quota == 0 || q.parse() == Ok(quota));
        assert_eq!(parts.next().map(str::parse), Some(Ok(period)));
    }

    let psi = parse::pressure(data);
    check(&psi);
    if let Ok(p) = psi {
        let text = text.expect("UTF-8");
        assert!(text.contains("some"));
        assert!(p.full_total_us.is_none() || text.contains("full"));
    }

    let procs = parse::count_lines(data);
    check(&procs);
    if let Ok(n) = procs {
        let text = text.expect("UTF-8");
        assert_eq!(
            n as usize,
            text.lines().filter(|l| !l.trim().is_empty()).count()
        );
    }

    if let Ok(w) = single {
        // Any weight maps into the v1 range without overflow (or to 0 for 0).
        let s = parse::weight_to_shares(w.min(10_000));
        assert!(w == 0 || (2..=262_144).contains(&s), "{w} -> {s}");
    }
});
