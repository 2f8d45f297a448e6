//! Launch options as the user gives them, validated into a [`LaunchSpec`] before
//! anything is created, and rendered as the OCI runtime `config.json`.
//!
//! Validation happens first and touches nothing on disk, so bad input (a malformed
//! limit, an unknown user, a missing command) leaves nothing behind.

use super::capabilities::{self, CapArg};
use super::image::{self, ImageRecord};
use super::restart::RestartPolicy;
use super::seccomp::Profile;
use super::state::validate_name;
pub use super::units::Network;
use super::units::{ByteSize, Cpus, MemorySwap, PidsLimit, SecurityOpt};
use super::userns::IdMap;
use super::volumes::{self, MountRequest};
use super::{Error, IoContext, Paths, Result};
use crate::cgroup::Limits;
use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::collections::{BTreeMap, HashMap};
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
    /// `--cap-add`.
    pub cap_add: Vec<CapArg>,
    /// `--cap-drop`.
    pub cap_drop: Vec<CapArg>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--read-only`.
    pub read_only: bool,
    /// `--security-opt`.
    pub security_opts: Vec<SecurityOpt>,
    /// `--userns-remap USER[:GROUP]`.
    pub userns_remap: Option<String>,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// `-i`: keep stdin open.
    pub interactive: bool,
    /// `-t`: a pseudo-terminal.
    pub tty: bool,
    /// `-v`, `--tmpfs` and `--mount`, in the order given.
    pub mounts: Vec<MountRequest>,
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
    /// The OCI runtime spec: what `config.json` holds and the container applies.
    pub config: Spec,
    /// The user namespace's id map (`--userns-remap`).
    pub idmap: Option<IdMap>,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// Its volumes, as asked for.
    pub volumes: Vec<MountRequest>,
    /// `-i`.
    pub interactive: bool,
    /// `-t`.
    pub tty: bool,
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
    parse_colon_file(&std::fs::read_to_string(path).unwrap_or_default())
}

fn parse_colon_file(text: &str) -> Vec<Vec<String>> {
    text.lines()
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

/// Applies `-e KEY=VALUE` (or `-e KEY`, copied from this process's environment
/// when set) to `env`: a key given again replaces the earlier value.
pub fn merge_env(env: &mut Vec<String>, overrides: &[String]) -> Result<()> {
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    for e in overrides {
        if e.contains('=') {
            let (k, v) = parse_kv("-e", e)?;
            set(format!("{k}={v}"));
        } else if e.is_empty() || e.contains('\0') {
            return Err(Error::Invalid(format!("-e {e:?}: expected KEY=VALUE")));
        } else if let Ok(v) = std::env::var(e) {
            set(format!("{e}={v}"));
        }
    }
    Ok(())
}

/// Resolves `user[:group]` against `/etc/passwd` and `/etc/group` of a running
/// container, read through its `/proc/<pid>/root` with links resolved inside it
/// (an image's `/etc/passwd -> /etc/shadow` names the container's, not the host's).
pub fn resolve_user_under(root: &Path, spec: &str) -> Result<ResolvedUser> {
    let read = |name: &str| -> Result<Vec<Vec<String>>> {
        let data = super::sys::read_in_root(root, name)?.unwrap_or_default();
        Ok(parse_colon_file(&String::from_utf8_lossy(&data)))
    };
    resolve_user_in(&read("etc/passwd")?, &read("etc/group")?, spec)
}

/// Validates `opts` against the store. Creates nothing.
pub fn validate(paths: &Paths, opts: &LaunchOptions, id: String) -> Result<LaunchSpec> {
    let limits = parse_limits(opts)?;
    super::restart::validate(opts.restart, opts.auto_remove)?;
    volumes::check_duplicates(&opts.mounts)?;
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
    merge_env(&mut env, &opts.env)?;
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, image::DEFAULT_PATH_ENV.to_string());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.push(format!("HOSTNAME={hostname}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let confinement = confinement(opts)?;
    let idmap = opts
        .userns_remap
        .as_deref()
        .map(IdMap::from_subid_files)
        .transpose()?;
    let volume_mounts = volumes::oci_mounts(paths, &opts.mounts)?;
    let config = build_config(
        &paths.container(&id),
        volume_mounts,
        opts.tty,
        &argv,
        &env,
        &cwd,
        &user,
        &hostname,
        network,
        &limits,
        &labels,
        &confinement,
        idmap.as_ref(),
    )?;
    Ok(LaunchSpec {
        id,
        name,
        image_ref: opts.image.clone(),
        image,
        argv,
        hostname,
        network,
        limits,
        labels,
        detach: opts.detach,
        auto_remove: opts.auto_remove,
        init: opts.init,
        config,
        idmap,
        restart: opts.restart,
        volumes: opts.mounts.clone(),
        interactive: opts.interactive,
        tty: opts.tty,
    })
}

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

fn build_error(what: &str) -> impl Fn(oci_spec::OciSpecError) -> Error + '_ {
    move |source| Error::Spec {
        what: format!("building config.json ({what})"),
        source,
    }
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(build_error(dest))
}

/// Docker's default mounts, the container's `/etc` files bound from
/// `container_dir`, and with `--read-only` the writable tmpfs mounts.
fn mounts(container_dir: &Path, privileged: bool, read_only: bool) -> Result<Vec<Mount>> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ];
    if read_only {
        for (path, mode) in READ_ONLY_TMPFS {
            let mode = format!("mode={mode}");
            out.push(mount(
                path,
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", &mode, "size=65536k"],
            )?);
        }
    }
    for name in ETC_FILES {
        let source = container_dir.join(name);
        out.push(
            MountBuilder::default()
                .destination(format!("/etc/{name}"))
                .typ("bind")
                .source(source)
                .options(vec!["rbind".to_string(), "rprivate".to_string()])
                .build()
                .map_err(build_error(name))?,
        );
    }
    Ok(out)
}

/// Files of `containers/<id>/` bound over the image's `/etc` ones.
pub const ETC_FILES: &[&str] = &["hostname", "hosts", "resolv.conf"];

/// `linux.resources` for `limits` (memory.swap is memory plus swap, -1 unlimited,
/// as in Docker's and runc's spec).
pub fn resources(limits: &Limits) -> Result<LinuxResources> {
    let mut b = LinuxResourcesBuilder::default();
    if let Some(m) = limits.memory_bytes {
        let swap = limits.memory_swap_bytes.map_or(-1, |s| s as i64);
        b = b.memory(
            LinuxMemoryBuilder::default()
                .limit(m as i64)
                .swap(swap)
                .build()
                .map_err(build_error("memory"))?,
        );
    }
    if let (Some(q), Some(p)) = (limits.cpu_quota_us, limits.cpu_period_us) {
        b = b.cpu(
            LinuxCpuBuilder::default()
                .quota(q as i64)
                .period(p)
                .build()
                .map_err(build_error("cpu"))?,
        );
    }
    if let Some(p) = limits.pids_max {
        b = b.pids(
            LinuxPidsBuilder::default()
                .limit(p as i64)
                .build()
                .map_err(build_error("pids"))?,
        );
    }
    b.build().map_err(build_error("resources"))
}

/// The confinement a launch asked for, resolved.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// The capability set (bounding = effective = permitted).
    pub capabilities: Capabilities,
    /// `linux.seccomp`, `None` when unconfined.
    pub seccomp: Option<LinuxSeccomp>,
    /// `no_new_privs`.
    pub no_new_privileges: bool,
    /// Masked and read-only paths (empty with `--privileged`).
    pub masked: bool,
    /// `--privileged`.
    pub privileged: bool,
    /// `--read-only`.
    pub read_only: bool,
}

/// Resolves capabilities, seccomp and no_new_privs from the options. The default
/// profile comes from its package or the launch is refused.
pub fn confinement(opts: &LaunchOptions) -> Result<Confinement> {
    let capabilities = capabilities::resolve(opts.privileged, &opts.cap_add, &opts.cap_drop)?;
    let mut seccomp_opt = None;
    let mut no_new_privileges = true;
    for o in &opts.security_opts {
        match o {
            SecurityOpt::SeccompUnconfined => seccomp_opt = Some(None),
            SecurityOpt::SeccompProfile(p) => seccomp_opt = Some(Some(p.clone())),
            SecurityOpt::NoNewPrivileges(v) => no_new_privileges = *v,
        }
    }
    let profile = match seccomp_opt {
        Some(None) => None,
        Some(Some(path)) => Some(Profile::load(&path)?),
        // --privileged turns seccomp off unless a profile is named, as in Docker.
        None if opts.privileged => None,
        None => Some(Profile::load_default()?),
    };
    let seccomp = profile.map(|p| p.resolve(&capabilities)).transpose()?;
    Ok(Confinement {
        capabilities,
        seccomp,
        no_new_privileges,
        masked: !opts.privileged,
        privileged: opts.privileged,
        read_only: opts.read_only,
    })
}

/// Builds the OCI runtime spec of a launch: the one description that is written
/// as `config.json` and that the container's first process applies. `root.path`
/// and `linux.cgroupsPath` are filled in once the layer and cgroup exist.
#[allow(clippy::too_many_arguments)]
fn build_config(
    container_dir: &Path,
    volume_mounts: Vec<Mount>,
    terminal: bool,
    argv: &[String],
    env: &[String],
    cwd: &str,
    user: &ResolvedUser,
    hostname: &str,
    network: Network,
    limits: &Limits,
    labels: &BTreeMap<String, String>,
    confinement: &Confinement,
    idmap: Option<&IdMap>,
) -> Result<Spec> {
    let process = ProcessBuilder::default()
        .terminal(terminal)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.groups.clone())
                .build()
                .map_err(build_error("user"))?,
        )
        .args(argv.to_vec())
        .env(env.to_vec())
        .cwd(cwd)
        .capabilities(capabilities::oci(&confinement.capabilities)?)
        .no_new_privileges(confinement.no_new_privileges)
        .build()
        .map_err(build_error("process"))?;
    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if network == Network::None {
        kinds.push(LinuxNamespaceType::Network);
    }
    if idmap.is_some() {
        kinds.push(LinuxNamespaceType::User);
    }
    let namespaces = kinds
        .into_iter()
        .map(|typ| {
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(build_error("namespace"))
        })
        .collect::<Result<Vec<_>>>()?;
    let devices = DEVICES
        .iter()
        .map(|(name, major, minor)| {
            LinuxDeviceBuilder::default()
                .path(format!("/dev/{name}"))
                .typ(LinuxDeviceType::C)
                .major(*major)
                .minor(*minor)
                .file_mode(0o666u32)
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(build_error("device"))
        })
        .collect::<Result<Vec<_>>>()?;
    let (masked, readonly): (Vec<String>, Vec<String>) = if confinement.masked {
        (
            MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(limits)?)
        .devices(devices)
        .masked_paths(masked)
        .readonly_paths(readonly);
    if let Some(s) = &confinement.seccomp {
        linux = linux.seccomp(s.clone());
    }
    if let Some(map) = idmap {
        linux = linux
            .uid_mappings(vec![map.uid_mapping()?])
            .gid_mappings(vec![map.gid_mapping()?]);
    }
    SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(confinement.read_only)
                .build()
                .map_err(build_error("root"))?,
        )
        .hostname(hostname)
        .mounts({
            let mut all = mounts(container_dir, confinement.privileged, confinement.read_only)?;
            all.extend(volume_mounts);
            all
        })
        .annotations(
            labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        )
        .linux(linux.build().map_err(build_error("linux"))?)
        .build()
        .map_err(build_error("spec"))
}

/// Sets the parts of `config` known only once the container exists.
pub fn place(config: &mut Spec, rootfs: &Path, cgroups_path: &str) -> Result<()> {
    let mut root = config.root().clone().unwrap_or_default();
    root.set_path(rootfs.to_path_buf());
    config.set_root(Some(root));
    let mut linux = config.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(cgroups_path.into()));
    config.set_linux(Some(linux));
    Ok(())
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
