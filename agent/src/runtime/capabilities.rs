//! Capabilities: Docker's default set, `--cap-add`/`--cap-drop`/`--privileged`
//! resolved into the five sets of the OCI spec, and the bridge from the spec's
//! names (`oci_spec::runtime::Capability`) to the kernel's numbers (the `caps`
//! crate), which the container's first process applies.

use super::{Error, Result};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder};
use std::str::FromStr;

/// Docker's default capability set (moby's `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::NetRaw,
    Capability::SysChroot,
    Capability::Mknod,
    Capability::AuditWrite,
    Capability::Setfcap,
];

/// A `--cap-add`/`--cap-drop` value: one capability (`NET_ADMIN`, `cap_net_admin`)
/// or `ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapArg {
    /// Every capability.
    All,
    /// One capability.
    One(Capability),
}

impl FromStr for CapArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if name == "ALL" {
            return Ok(CapArg::All);
        }
        Capability::from_str(name)
            .map(CapArg::One)
            .map_err(|_| format!("unknown capability {s:?} (e.g. NET_ADMIN, CAP_SYS_PTRACE, ALL)"))
    }
}

/// The kernel's capability for a spec name (`None` for one this `caps` build does
/// not know).
pub fn to_kernel(cap: Capability) -> Option<caps::Capability> {
    caps::Capability::from_str(&format!("CAP_{cap}")).ok()
}

/// The spec name of a kernel capability.
pub fn from_kernel(cap: caps::Capability) -> Option<Capability> {
    let name = cap.to_string();
    Capability::from_str(name.strip_prefix("CAP_").unwrap_or(&name)).ok()
}

/// This process's bounding set: what `--privileged` grants (all of the host's,
/// which may lack some, as this host lacks CAP_SYS_RESOURCE).
pub fn host_bounding() -> Result<Capabilities> {
    let set = caps::read(None, caps::CapSet::Bounding).map_err(|source| Error::Caps {
        op: "read the capability bounding set",
        source,
    })?;
    Ok(set.into_iter().filter_map(from_kernel).collect())
}

/// Docker's default set with `drop` removed and then `add` added (as Docker does,
/// so `--cap-drop ALL --cap-add X` leaves exactly X); `--privileged` starts from
/// the host's bounding set instead.
pub fn resolve(privileged: bool, add: &[CapArg], drop: &[CapArg]) -> Result<Capabilities> {
    let mut set: Capabilities = if privileged {
        host_bounding()?
    } else {
        DOCKER_DEFAULT.iter().copied().collect()
    };
    for d in drop {
        match d {
            CapArg::All => set.clear(),
            CapArg::One(c) => {
                set.remove(c);
            }
        }
    }
    for a in add {
        match a {
            CapArg::All => set.extend(host_bounding()?),
            CapArg::One(c) => {
                set.insert(*c);
            }
        }
    }
    Ok(set)
}

/// The spec's capabilities for `set`, as Docker writes them: bounding, effective
/// and permitted hold the set; inheritable and ambient are empty.
pub fn oci(set: &Capabilities) -> Result<LinuxCapabilities> {
    LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set.clone())
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(|source| Error::Spec {
            what: "building the capability sets".into(),
            source,
        })
}

/// The kernel set for a spec set; a name the kernel does not know is an error (it
/// could not be granted, and must not be silently skipped when it is to be kept).
pub fn kernel_set(set: Option<&Capabilities>) -> Result<caps::CapsHashSet> {
    let Some(set) = set else {
        return Ok(caps::CapsHashSet::new());
    };
    set.iter()
        .map(|c| to_kernel(*c).ok_or_else(|| Error::Invalid(format!("unknown capability CAP_{c}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_is_the_known_mask() {
        let mask = DOCKER_DEFAULT
            .iter()
            .map(|c| to_kernel(*c).unwrap().bitmask())
            .fold(0, |a, b| a | b);
        assert_eq!(mask, 0xa80425fb);
    }

    #[test]
    fn add_and_drop_resolve_like_docker() {
        let all = "ALL".parse::<CapArg>().unwrap();
        let nbs = "net_bind_service".parse::<CapArg>().unwrap();
        let set = resolve(false, &[nbs], &[all]).unwrap();
        assert_eq!(set, [Capability::NetBindService].into_iter().collect());
        let set = resolve(false, &["CAP_SYS_PTRACE".parse().unwrap()], &[]).unwrap();
        assert!(set.contains(&Capability::SysPtrace) && set.contains(&Capability::Chown));
        let set = resolve(false, &[], &["chown".parse().unwrap()]).unwrap();
        assert!(!set.contains(&Capability::Chown));
        assert!("NOT_A_CAP".parse::<CapArg>().is_err());
        for c in DOCKER_DEFAULT {
            assert_eq!(from_kernel(to_kernel(*c).unwrap()), Some(*c));
        }
    }
}
