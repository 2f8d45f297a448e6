//! Launch options as the user gives them, validated into a [`LaunchSpec`] before
//! anything is created, and rendered as the OCI runtime `config.json`.
//!
//! Validation happens first and touches nothing on disk, so bad input (a malformed
//! limit, an unknown user, a missing command) leaves nothing behind.
//!
//! [`user`] resolves `--user` against the image's passwd and group files,
//! [`render`] builds the OCI spec, and [`defaults`] holds Docker's and runc's
//! defaults that go into it.

mod defaults;
mod render;
mod user;

pub use defaults::{DEVICES, ETC_FILES, MASKED_PATHS, READ_ONLY_TMPFS, READONLY_PATHS};
use render::build_config;
pub use render::{Confinement, confinement, place, resources, write_oci_config};
pub use user::{ResolvedUser, resolve_user, resolve_user_under};

use super::capabilities::CapArg;
use super::image::{self, ImageRecord};
use super::restart::RestartPolicy;
use super::state::validate_name;
pub use super::units::Network;
use super::units::{ByteSize, Cpus, MemorySwap, PidsLimit, SecurityOpt};
use super::userns::IdMap;
use super::volumes::{self, MountRequest};
use super::{Error, Paths, Result};
use crate::cgroup::Limits;
use oci_spec::runtime::Spec;
use std::collections::BTreeMap;

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
}
