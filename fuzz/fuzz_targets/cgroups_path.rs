//! An OCI bundle's `linux.cgroupsPath` (containerd's shims' `config.json`),
//! turned into the cgroup path that becomes a container's `id` label.

#![no_main]

use agent::container::containerd::cgroup_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    let Some(path) = cgroup_path(spec) else {
        return;
    };
    // A path below the hierarchy's root: never the root itself, never out of it.
    assert!(
        path.starts_with('/') && path.len() > 1,
        "{spec:?} -> {path:?}"
    );
    assert!(
        path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".."),
        "{spec:?} -> {path:?}"
    );
});
