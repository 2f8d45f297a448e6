//! The OCI runtime spec of a launch, built with oci-spec's builders: the one
//! description written as `config.json` and applied by the container.

use super::defaults::{DEVICES, ETC_FILES, MASKED_PATHS, READ_ONLY_TMPFS, READONLY_PATHS};
use super::{LaunchOptions, Network, ResolvedUser};
use crate::cgroup::Limits;
use crate::runtime::capabilities;
use crate::runtime::seccomp::Profile;
use crate::runtime::units::SecurityOpt;
use crate::runtime::userns::IdMap;
use crate::runtime::{Error, IoContext, Result};
use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

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
pub(super) fn build_config(
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
