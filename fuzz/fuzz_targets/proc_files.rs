//! `/proc/<pid>/cgroup` (how eBPF events are attributed to containers) and
//! `/proc/<pid>/stat` (whether a container's supervisor still lives): both hold
//! names a process chooses (its cgroup path, its command name).

#![no_main]

use agent::cgroup::cgroup_path_from_proc;
use agent::runtime::state::parse_stat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(path) = cgroup_path_from_proc(text) {
        // The path is the rest of the memory controller's line, or of the unified
        // hierarchy's (`0::`), after `ID:CONTROLLERS:`.
        assert!(!path.contains('\n'));
        let from = |l: &str| {
            let mut parts = l.splitn(3, ':');
            let (id, controllers, p) = (parts.next(), parts.next(), parts.next());
            p == Some(path.as_str())
                && (controllers.is_some_and(|c| c.split(',').any(|c| c == "memory"))
                    || (id == Some("0") && controllers == Some("")))
        };
        assert!(
            text.lines().any(from),
            "{path:?} is from no memory or unified line"
        );
    }
    if let Some(stat) = parse_stat(text) {
        // The state (field 3) is the first field after the last `)`, the command
        // name's end; the start time is field 22.
        let rest = &text[text.rfind(')').expect("a command name") + 1..];
        let mut fields = rest.split_whitespace();
        assert_eq!(
            fields.next().and_then(|f| f.chars().next()),
            Some(stat.state)
        );
        assert_eq!(fields.nth(18).map(str::parse), Some(Ok(stat.start_ticks)));
    }
});
