//! Reads the guest's serial console: the `@@VMTEST` lines init.sh prints, and the
//! libtest output of each test binary between its BEGIN and END lines.

/// One test binary's run in the guest.
#[derive(Debug, Default, PartialEq)]
pub struct Binary {
    pub name: String,
    /// Exit status; None when no END line came (the guest died or hung).
    pub rc: Option<i32>,
    pub timed_out: bool,
    /// (test name, "ok" | "FAILED" | "ignored")
    pub tests: Vec<(String, String)>,
    /// (test name, reason) for tests that passed only by skipping.
    pub skipped: Vec<(String, String)>,
    /// (test name, what) for parts a test skipped while checking the rest
    /// ("SKIPPED panel 31 …" from a test not named so).
    pub partial: Vec<(String, String)>,
    pub leftovers: Vec<String>,
    /// (test name, JSON) from the tests' `EVENTS <test> <json>` lines: their
    /// events reduced to what must not differ between runs on each mount hook kind.
    pub events: Vec<(String, String)>,
}

/// Everything the console said.
#[derive(Debug, Default)]
pub struct Report {
    pub booted: Option<String>,
    pub cgroup: Option<String>,
    /// The tests' scratch disk, or why there is none.
    pub scratch: Option<String>,
    pub hooks: Vec<String>,
    pub binaries: Vec<Binary>,
    pub fatal: Option<String>,
    pub capture: Option<Result<(), String>>,
    pub done: bool,
}

pub fn parse(console: &str) -> Report {
    let mut r = Report::default();
    let mut current: Option<Binary> = None;
    // The test whose captured output is being read (libtest's "---- name stdout ----").
    let mut output_of: Option<String> = None;
    // The test whose "test name ... " line came without its result yet.
    let mut pending: Option<String> = None;
    for line in console.lines() {
        if let Some(rest) = line.strip_prefix("@@VMTEST ") {
            let (word, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            match word {
                "BOOTED" => r.booted = Some(arg.to_string()),
                "CGROUP2" => r.cgroup = Some(arg.to_string()),
                "SCRATCH" => r.scratch = Some(arg.to_string()),
                "HOOK" => r.hooks.push(arg.to_string()),
                "FATAL" => r.fatal = Some(arg.to_string()),
                "CAPTURED" => r.capture = Some(Ok(())),
                // The first failure names the cause; later ones only repeat it.
                "CAPTURE-FAILED" if !matches!(r.capture, Some(Err(_))) => {
                    r.capture = Some(Err(arg.to_string()));
                }
                "DONE" => r.done = true,
                "BEGIN" => {
                    r.binaries.extend(current.take());
                    current = Some(Binary {
                        name: arg.to_string(),
                        ..Binary::default()
                    });
                    output_of = None;
                    pending = None;
                }
                "TIMEOUT" => {
                    if let Some(b) = current.as_mut() {
                        b.timed_out = true;
                    }
                }
                "LEFTOVER" => {
                    // "LEFTOVER <binary> <cgroup>"
                    let what = arg.split_once(' ').map_or(arg, |(_, w)| w);
                    match current.as_mut() {
                        Some(b) => b.leftovers.push(what.to_string()),
                        None => {
                            if let Some(b) = r.binaries.last_mut() {
                                b.leftovers.push(what.to_string())
                            }
                        }
                    }
                }
                "END" => {
                    if let Some(mut b) = current.take() {
                        b.rc = arg
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("rc="))
                            .and_then(|v| v.parse().ok());
                        r.binaries.push(b);
                    }
                }
                _ => {}
            }
            continue;
        }
        let Some(b) = current.as_mut() else {
            continue;
        };
        // "test name ... ok"; output of the test's children (the agent's log) may
        // come between the name and the result, which then stands on its own line.
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, after)) = rest.split_once(" ... ")
        {
            pending = Some(name.to_string());
            if let Some(result) = outcome_word(after.rsplit(' ').next().unwrap_or("")) {
                b.tests.push((pending.take().unwrap_or_default(), result));
            }
            continue;
        }
        if let Some(result) = outcome_word(line.trim())
            && let Some(name) = pending.take()
        {
            b.tests.push((name, result));
            continue;
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            output_of = Some(name.to_string());
            continue;
        }
        if let Some((test, json)) = line
            .trim_start()
            .strip_prefix("EVENTS ")
            .and_then(|l| l.split_once(' '))
        {
            b.events
                .push((test.to_string(), json.trim_end().to_string()));
            continue;
        }
        // The tests' own skip lines: "SKIPPED name: reason", "SKIPPED: reason",
        // "SKIP: reason".
        let trimmed = line.trim_start();
        let reason = trimmed
            .strip_prefix("SKIPPED")
            .or_else(|| trimmed.strip_prefix("SKIP"))
            .filter(|r| r.starts_with([':', ' ']))
            .map(|r| r.trim_start_matches(':').trim());
        if let Some(reason) = reason {
            let test = output_of.clone().unwrap_or_else(|| "?".into());
            // "SKIPPED name: reason" and "SKIPPED: reason" skip the whole test;
            // "SKIPPED <something else>" is one part of it.
            let bare = trimmed.starts_with("SKIP:") || trimmed.starts_with("SKIPPED:");
            let named = reason
                .strip_prefix(test.as_str())
                .and_then(|r| r.strip_prefix(':'))
                .map(str::trim);
            let whole = named.or(bare.then_some(reason));
            match whole {
                Some(why) if !b.skipped.iter().any(|(t, _)| *t == test) => {
                    b.skipped.push((test, why.to_string()))
                }
                Some(_) => {}
                None => b.partial.push((test, reason.to_string())),
            }
        }
    }
    r.binaries.extend(current);
    r
}

/// The tests whose `EVENTS` lines `first` and `again` both printed, with the
/// number of events in each, when every such line is the same in both runs;
/// else which test differs, and how.
pub fn same_events(first: &Binary, again: &Binary) -> Result<Vec<(String, usize)>, String> {
    let mut same = Vec::new();
    for (test, json) in &first.events {
        let Some((_, other)) = again.events.iter().find(|(t, _)| t == test) else {
            return Err(format!("{} printed no events for {test}", again.name));
        };
        if other != json {
            return Err(format!(
                "{test}: {} saw {json}, {} saw {other}",
                first.name, again.name
            ));
        }
        let n = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0);
        same.push((test.clone(), n));
    }
    if let Some((test, _)) = again
        .events
        .iter()
        .find(|(t, _)| !first.events.iter().any(|(f, _)| f == t))
    {
        return Err(format!("{} printed no events for {test}", first.name));
    }
    Ok(same)
}

fn outcome_word(word: &str) -> Option<String> {
    matches!(word, "ok" | "FAILED" | "ignored").then(|| word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    0.5] booting
@@VMTEST BOOTED 6.1.0-56-cloud-amd64 cpus=2 mem_kib=2000000
@@VMTEST HOOK btf yes /sys/kernel/btf/vmlinux
@@VMTEST BEGIN privileged_cgroup

running 2 tests
test a ... ok
test b ... 2026-11-28T01:18:36Z INFO agent: serving /metrics
agent log line
FAILED
test c ... ignored

successes:

---- a stdout ----
SKIPPED a: needs root
---- c stdout ----
SKIPPED: no cgroup2 at /sys/fs/cgroup/unified
SKIPPING is not a skip line
---- d stdout ----
SKIPPED panel 31 \"Exec events\": not landed
EVENTS d [[\"exec\",\"/bin/true\"]]

failures:
@@VMTEST END privileged_cgroup rc=101
@@VMTEST LEFTOVER privileged_cgroup /agent
@@VMTEST BEGIN e2e_prometheus
test p ... ";

    #[test]
    fn reads_results_skips_and_a_hung_binary() {
        let r = parse(CONSOLE);
        assert_eq!(
            r.booted.as_deref(),
            Some("6.1.0-56-cloud-amd64 cpus=2 mem_kib=2000000")
        );
        assert_eq!(r.hooks, ["btf yes /sys/kernel/btf/vmlinux"]);
        assert_eq!(r.binaries.len(), 2);
        let b = &r.binaries[0];
        assert_eq!(b.rc, Some(101));
        assert_eq!(
            b.tests,
            [
                ("a".into(), "ok".into()),
                ("b".into(), "FAILED".into()),
                ("c".into(), "ignored".into())
            ]
        );
        assert_eq!(
            b.skipped,
            [
                ("a".into(), "needs root".into()),
                ("c".into(), "no cgroup2 at /sys/fs/cgroup/unified".into())
            ]
        );
        assert_eq!(
            b.partial,
            [("d".into(), "panel 31 \"Exec events\": not landed".into())]
        );
        assert_eq!(b.leftovers, ["/agent"]);
        assert_eq!(
            b.events,
            [("d".to_string(), r#"[["exec","/bin/true"]]"#.to_string())]
        );
        let mut again = Binary {
            name: "privileged_cgroup[x]".into(),
            events: b.events.clone(),
            ..Binary::default()
        };
        assert_eq!(same_events(b, &again), Ok(vec![("d".into(), 1)]));
        again.events[0].1 = r#"[["exec","/bin/false"]]"#.into();
        let differ = same_events(b, &again).unwrap_err();
        assert!(differ.contains("/bin/false"), "{differ}");
        again.events[0].0 = "e".into();
        assert!(same_events(b, &again).is_err());
        let hung = &r.binaries[1];
        assert_eq!(hung.name, "e2e_prometheus");
        assert_eq!(hung.rc, None);
        assert!(!r.done);
    }
}
