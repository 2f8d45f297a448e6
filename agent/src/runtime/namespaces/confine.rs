//! The process's credentials and confinement, applied last before `execve`:
//! rlimits, the user and groups, the five capability sets, `no_new_privs` and
//! the seccomp program.

use crate::runtime::{Error, Result, SysContext, capabilities, sys};
use nix::sys::prctl;
use nix::sys::resource::Resource;
use oci_spec::runtime::{LinuxSeccomp, PosixRlimitType, Process};

pub(in crate::runtime) fn rlimit_resource(t: PosixRlimitType) -> Resource {
    match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

fn caps_error(op: &'static str) -> impl Fn(caps::errors::CapsError) -> Error {
    move |source| Error::Caps { op, source }
}

/// The spec's process credentials and confinement, in runc's order: the bounding
/// set, then (keeping the permitted set across the switch) the user and groups,
/// then effective, permitted and inheritable, then ambient, then
/// `no_new_privs`, and the seccomp program last — or, without `no_new_privs`,
/// first, while the process still holds CAP_SYS_ADMIN to install it.
pub(in crate::runtime) fn confine(
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    bpf: Option<&[u8]>,
) -> Result<()> {
    let nnp = process.no_new_privileges().unwrap_or(false);
    let load = |bpf: &[u8]| {
        let flags = seccomp.map_or(0, crate::runtime::seccomp::filter_flags);
        sys::seccomp_load(bpf, flags)
    };
    if let Some(b) = bpf
        && !nnp
    {
        load(b)?;
    }
    let spec_caps = process.capabilities().clone().unwrap_or_default();
    let bounding = capabilities::kernel_set(spec_caps.bounding().as_ref())?;
    let current =
        caps::read(None, caps::CapSet::Bounding).map_err(caps_error("read the bounding set"))?;
    for cap in current.difference(&bounding) {
        caps::drop(None, caps::CapSet::Bounding, *cap)
            .map_err(caps_error("drop from the bounding set"))?;
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(caps_error("clear ambient capabilities"))?;
    prctl::set_keepcaps(true).sys("keep capabilities")?;
    let user = process.user();
    let groups = user.additional_gids().clone().unwrap_or_default();
    sys::set_ids(user.uid(), user.gid(), &groups)?;
    prctl::set_keepcaps(false).sys("keep capabilities")?;
    let mask = |set: &caps::CapsHashSet| set.iter().fold(0u64, |a, c| a | c.bitmask());
    let effective = capabilities::kernel_set(spec_caps.effective().as_ref())?;
    let permitted = capabilities::kernel_set(spec_caps.permitted().as_ref())?;
    let inheritable = capabilities::kernel_set(spec_caps.inheritable().as_ref())?;
    sys::capset(mask(&effective), mask(&permitted), mask(&inheritable))?;
    for cap in capabilities::kernel_set(spec_caps.ambient().as_ref())? {
        // As in runc, an ambient capability the kernel refuses (one missing from
        // the inheritable set, as in `runc spec`'s own config) is not fatal: the
        // ambient set can only ever hold what is already permitted and inheritable.
        let _ = caps::raise(None, caps::CapSet::Ambient, cap);
    }
    if nnp {
        prctl::set_no_new_privs().sys("set no_new_privs")?;
        if let Some(b) = bpf {
            load(b)?;
        }
    }
    Ok(())
}
