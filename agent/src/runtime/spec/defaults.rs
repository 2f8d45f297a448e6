//! The defaults every container gets, as Docker and runc give them: masked and
//! read-only `/proc` paths, `/dev` nodes, the tmpfs mounts of `--read-only`,
//! and the `/etc` files bound from the container's directory.

/// `/proc` and `/sys` paths hidden from the container (Docker's defaults).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// `/proc` paths made read-only (Docker's defaults).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device nodes every container gets in its `/dev` (runc's defaults): (name,
/// major, minor).
pub const DEVICES: &[(&str, i64, i64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Writable tmpfs mounts a `--read-only` container gets: (path, mode).
pub const READ_ONLY_TMPFS: &[(&str, &str)] =
    &[("/tmp", "1777"), ("/run", "755"), ("/var/tmp", "1777")];

/// Files of `containers/<id>/` bound over the image's `/etc` ones.
pub const ETC_FILES: &[&str] = &["hostname", "hosts", "resolv.conf"];
