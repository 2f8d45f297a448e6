//! Launch options as the user gives them, validated into a [`LaunchSpec`] before
//! anything is created, and rendered as the OCI runtime `config.json`.
//!
//! Validation happens first and touches nothing on disk, so bad input (a malformed
//! limit, an unknown user, a missing command) leaves nothing behind.

use super::image::{self, ImageRecord};
use super::state::validate_name;
pub use super::units::Network;
use super::units::{ByteSize, Cpus, MemorySwap, PidsLimit};
use super::{Error, IoContext, Paths, Result};
use crate::cgroup::Limits;
use std::collections::BTreeMap;
use std::path::Path;

/// Launch options as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// `--name`.
    pub name: Option<String>,
    /// `--memory` (e.g. `256Mi`, `1g`, `1048576`).
    pub memory: Option<ByteSize>,
    /// `--memory-swap`: memory + swap, or `-1` for unlimited swap.
    pub memory_swap: Option<MemorySwap>,
    /// `--cpus` (fractional CPUs).
    pub cpus: Option<Cpus>,
    /// `--pids-limit`.
    pub pids_limit: Option<PidsLimit>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-e KEY=VALUE` (or `KEY` to copy from the caller's environment).
    pub env: Vec<String>,
    /// `--workdir`.
    pub workdir: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--label KEY=VALUE`.
    pub labels: Vec<String>,
    /// `--network none|host`.
    pub network: Network,
    /// `-d`.
    pub detach: bool,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--init`.
    pub init: bool,
    /// IMAGE.
    pub image: String,
    /// CMD….
    pub command: Vec<String>,
}

/// A fully validated launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Image reference as given.
    pub image_ref: String,
    /// The resolved image.
    pub image: ImageRecord,
    /// argv (entrypoint + cmd).
    pub argv: Vec<String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// uid / gid / supplementary groups.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
    /// Hostname.
    pub hostname: String,
    /// Network mode.
    pub network: Network,
    /// Cgroup limits.
    pub limits: Limits,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// `-d`.
    pub detach: bool,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--init`.
    pub init: bool,
}

/// Smallest memory limit accepted (Docker's minimum).
pub const MIN_MEMORY: u64 = 6 << 20;
/// CFS period used for `--cpus`.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Checks the limit options against each other into [`Limits`] (each value
/// was parsed and bounded by its own type already).
pub fn parse_limits(opts: &LaunchOptions) -> Result<Limits> {
    let mut limits = Limits::default();
    if let Some(ByteSize(bytes)) = opts.memory {
        if bytes < MIN_MEMORY {
            return Err(Error::Invalid(format!(
                "--memory {bytes}: the minimum is 6MiB"
            )));
        }
        limits.memory_bytes = Some(bytes);
    }
    match (opts.memory_swap, limits.memory_bytes) {
        (Some(_), None) => {
            return Err(Error::Invalid(
                "--memory-swap needs --memory as well".into(),
            ));
        }
        (Some(MemorySwap::Unlimited), Some(_)) => limits.memory_swap_bytes = None,
        (Some(MemorySwap::Total(ByteSize(bytes))), Some(mem)) => {
            if bytes < mem {
                return Err(Error::Invalid(format!(
                    "--memory-swap {bytes} is smaller than --memory (it is memory plus swap)"
                )));
            }
            limits.memory_swap_bytes = Some(bytes);
        }
        // Docker's default: as much swap as memory.
        (None, Some(mem)) => limits.memory_swap_bytes = Some(mem.saturating_mul(2)),
        (None, None) => {}
    }
    if let Some(cpus) = opts.cpus {
        limits.cpu_quota_us = Some(cpus.quota_us(CPU_PERIOD_US));
        limits.cpu_period_us = Some(CPU_PERIOD_US);
    }
    if let Some(PidsLimit(n)) = opts.pids_limit {
        limits.pids_max = Some(n);
    }
    Ok(limits)
}

fn parse_kv(kind: &str, s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::Invalid(format!("{kind} {s:?}: expected KEY=VALUE")))?;
    if k.is_empty() || k.contains('\0') || v.contains('\0') {
        return Err(Error::Invalid(format!(
            "{kind} {s:?}: empty key or NUL byte"
        )));
    }
    Ok((k.to_string(), v.to_string()))
}

fn validate_label(k: &str, v: &str) -> Result<()> {
    let key_ok = k.len() <= 256
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if !key_ok || v.len() > 4096 || v.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(format!(
            "--label {k}={v:?}: keys are [A-Za-z0-9._/-], values have no control characters"
        )));
    }
    Ok(())
}

fn validate_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid hostname {h:?}")))
    }
}

/// A passwd or group file parsed into (name, fields).
fn read_colon_file(path: Option<&Path>) -> Vec<Vec<String>> {
    let Some(path) = path else { return Vec::new() };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Resolved user: uid, gid, supplementary groups, home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory (for `HOME`).
    pub home: String,
}

/// Resolves `user[:group]` against the image's `/etc/passwd` and `/etc/group`.
pub fn resolve_user(paths: &Paths, image: &ImageRecord, spec: &str) -> Result<ResolvedUser> {
    let passwd =
        read_colon_file(image::find_in_layers(paths, &image.layers, "etc/passwd").as_deref());
    let group =
        read_colon_file(image::find_in_layers(paths, &image.layers, "etc/group").as_deref());
    resolve_user_in(&passwd, &group, spec)
}

fn resolve_user_in(
    passwd: &[Vec<String>],
    group: &[Vec<String>],
    spec: &str,
) -> Result<ResolvedUser> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = passwd
        .iter()
        .find(|f| f.len() >= 4 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let (uid, mut gid, name, home) = match (entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| Error::Invalid(format!("bad passwd entry for {user}")))?,
            f[3].parse::<u32>()
                .map_err(|_| Error::Invalid(format!("bad passwd entry for {user}")))?,
            Some(f[0].clone()),
            f.get(5).cloned().unwrap_or_else(|| "/".into()),
        ),
        (None, Ok(uid)) => (uid, 0, None, "/".to_string()),
        (None, Err(_)) => {
            return Err(Error::NotFound(format!(
                "unknown user {user:?}: not in the image's /etc/passwd"
            )));
        }
    };
    if let Some(g) = grp {
        gid = match group.iter().find(|f| f.len() >= 3 && f[0] == g) {
            Some(f) => f[2]
                .parse()
                .map_err(|_| Error::Invalid(format!("bad group entry for {g}")))?,
            None => g.parse().map_err(|_| {
                Error::NotFound(format!(
                    "unknown group {g:?}: not in the image's /etc/group"
                ))
            })?,
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = &name {
        for f in group {
            if f.len() >= 4
                && f[3].split(',').any(|m| m == name)
                && let Ok(g) = f[2].parse::<u32>()
                && !groups.contains(&g)
            {
                groups.push(g);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
    })
}

/// Validates `opts` against the store. Creates nothing.
pub fn validate(paths: &Paths, opts: &LaunchOptions, id: String) -> Result<LaunchSpec> {
    let limits = parse_limits(opts)?;
    let network = opts.network;
    let name = match &opts.name {
        Some(n) => {
            validate_name(n)?;
            n.clone()
        }
        None => format!("agent-{}", &id[..12]),
    };
    let mut labels = BTreeMap::new();
    for l in &opts.labels {
        let (k, v) = parse_kv("--label", l)?;
        validate_label(&k, &v)?;
        labels.insert(k, v);
    }
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    validate_hostname(&hostname)?;
    let image = image::resolve(paths, &opts.image)?;
    let cfg = &image.config;
    let argv: Vec<String> = if opts.command.is_empty() {
        cfg.entrypoint.iter().chain(&cfg.cmd).cloned().collect()
    } else {
        cfg.entrypoint
            .iter()
            .chain(&opts.command)
            .cloned()
            .collect()
    };
    if argv.is_empty() || argv[0].is_empty() {
        return Err(Error::Invalid(format!(
            "no command given and image {} has no Cmd or Entrypoint",
            opts.image
        )));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(Error::Invalid("command contains a NUL byte".into()));
    }
    let user_spec = opts.user.clone().unwrap_or_else(|| cfg.user.clone());
    let user = resolve_user(paths, &image, &user_spec)?;
    let cwd = opts
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(cfg.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(Error::Invalid(format!(
            "--workdir {cwd}: must be an absolute path"
        )));
    }
    let mut env: Vec<String> = cfg.env.clone();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    for e in &opts.env {
        if e.contains('=') {
            let (k, v) = parse_kv("-e", e)?;
            set(format!("{k}={v}"));
        } else if e.is_empty() || e.contains('\0') {
            return Err(Error::Invalid(format!("-e {e:?}: expected KEY=VALUE")));
        } else if let Ok(v) = std::env::var(e) {
            set(format!("{e}={v}"));
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, image::DEFAULT_PATH_ENV.to_string());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    Ok(LaunchSpec {
        id,
        name,
        image_ref: opts.image.clone(),
        image,
        argv,
        env,
        cwd,
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        hostname,
        network,
        limits,
        labels,
        detach: opts.detach,
        auto_remove: opts.auto_remove,
        init: opts.init,
    })
}

/// Docker's default capability set (bounding, effective, permitted).
pub const DEFAULT_CAPS: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_RAW", 13),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_MKNOD", 27),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_SETFCAP", 31),
];

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

/// Device nodes created in the container's `/dev`: (name, major, minor).
pub const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Renders the OCI runtime spec (`config.json`) of a launch. `rootfs` is the
/// `merged` directory; `cgroups_path` the container's cgroup path.
pub fn oci_config(
    spec: &LaunchSpec,
    rootfs: &Path,
    cgroups_path: &str,
) -> Result<oci_spec::runtime::Spec> {
    let caps: Vec<&str> = DEFAULT_CAPS.iter().map(|c| c.0).collect();
    let mut namespaces = vec![
        serde_json::json!({"type": "pid"}),
        serde_json::json!({"type": "ipc"}),
        serde_json::json!({"type": "uts"}),
        serde_json::json!({"type": "mount"}),
        serde_json::json!({"type": "cgroup"}),
    ];
    if spec.network == Network::None {
        namespaces.push(serde_json::json!({"type": "network"}));
    }
    let mut resources = serde_json::Map::new();
    let l = &spec.limits;
    if l.memory_bytes.is_some() {
        resources.insert(
            "memory".into(),
            serde_json::json!({"limit": l.memory_bytes, "swap": l.memory_swap_bytes}),
        );
    }
    if l.cpu_quota_us.is_some() {
        resources.insert(
            "cpu".into(),
            serde_json::json!({"quota": l.cpu_quota_us, "period": l.cpu_period_us}),
        );
    }
    if let Some(p) = l.pids_max {
        resources.insert("pids".into(), serde_json::json!({"limit": p}));
    }
    let value = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": spec.uid, "gid": spec.gid, "additionalGids": spec.groups},
            "args": spec.argv,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": spec.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "annotations": spec.labels,
        "linux": {
            "cgroupsPath": cgroups_path,
            "namespaces": namespaces,
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    });
    serde_json::from_value(value).map_err(|e| Error::Invalid(format!("building config.json: {e}")))
}

/// Writes `config.json` into the container directory.
pub fn write_oci_config(dir: &Path, config: &oci_spec::runtime::Spec) -> Result<()> {
    let path = dir.join("config.json");
    let data = serde_json::to_vec_pretty(config).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, data).at("write", &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_validated() {
        let opts = |f: fn(&mut LaunchOptions)| {
            let mut o = LaunchOptions::default();
            f(&mut o);
            parse_limits(&o)
        };
        assert!(opts(|o| o.memory = Some(ByteSize(1024))).is_err());
        assert!(opts(|o| o.memory_swap = Some(MemorySwap::Total(ByteSize(1 << 30)))).is_err());
        let l = opts(|o| {
            o.memory = Some(ByteSize(64 << 20));
            o.memory_swap = Some(MemorySwap::Total(ByteSize(32 << 20)));
        });
        assert!(l.is_err(), "swap total below memory");
        let l = opts(|o| {
            o.memory = Some(ByteSize(64 << 20));
            o.cpus = "0.5".parse().ok();
            o.pids_limit = Some(PidsLimit(64));
        })
        .unwrap();
        assert_eq!(l.memory_bytes, Some(64 << 20));
        assert_eq!(l.memory_swap_bytes, Some(128 << 20));
        assert_eq!(
            (l.cpu_quota_us, l.cpu_period_us),
            (Some(50_000), Some(100_000))
        );
        assert_eq!(l.pids_max, Some(64));
        let l = opts(|o| {
            o.memory = Some(ByteSize(64 << 20));
            o.memory_swap = Some(MemorySwap::Unlimited);
        })
        .unwrap();
        assert_eq!(l.memory_swap_bytes, None);
    }

    #[test]
    fn users_resolve_from_passwd_and_group() {
        let split = |s: &str| -> Vec<Vec<String>> {
            s.lines()
                .map(|l| l.split(':').map(str::to_string).collect())
                .collect()
        };
        let passwd = split(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false",
        );
        let group = split("root:x:0:\nnogroup:x:65534:\nstaff:x:50:nobody");
        let u = resolve_user_in(&passwd, &group, "nobody").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups.clone()),
            (65534, 65534, vec![65534, 50])
        );
        let u = resolve_user_in(&passwd, &group, "1000:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(resolve_user_in(&passwd, &group, "").unwrap().home, "/root");
        assert!(resolve_user_in(&passwd, &group, "ghost").is_err());
        assert!(resolve_user_in(&passwd, &group, "root:ghosts").is_err());
    }
}
