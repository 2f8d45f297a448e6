//! Facts about the machine itself, for the `machine_*` families and the `device`
//! label: CPU topology and memory (read once at start: they do not change while
//! the agent runs), the machine's identity, and block device names.
//!
//! Everything is read below a root directory (normally `/`), so tests point it at a
//! tree of captured files.

pub mod privileges;

use std::collections::BTreeSet;
use std::path::Path;

/// CPU, memory and identity of the machine, as cAdvisor's `machine_*` families
/// report them. `None` where the files say nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineFacts {
    /// Online logical CPUs.
    pub cpu_cores: Option<u64>,
    /// Distinct (package, core) pairs of the online CPUs.
    pub cpu_physical_cores: Option<u64>,
    /// Distinct packages of the online CPUs.
    pub cpu_sockets: Option<u64>,
    /// `MemTotal` of `/proc/meminfo`, in bytes.
    pub memory_bytes: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `/etc/machine-id` (or D-Bus's copy).
    pub machine_id: String,
    /// `/sys/class/dmi/id/product_uuid` (root-only; empty on machines without DMI).
    pub system_uuid: String,
}

impl MachineFacts {
    /// Reads the facts of the machine whose `/` is `root`.
    pub fn read(root: &Path) -> Self {
        let (cpu_cores, cpu_physical_cores, cpu_sockets) = cpu_topology(root);
        let first_line = |rels: &[&str]| {
            rels.iter()
                .find_map(|rel| std::fs::read_to_string(root.join(rel)).ok())
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        MachineFacts {
            cpu_cores,
            cpu_physical_cores,
            cpu_sockets,
            memory_bytes: std::fs::read_to_string(root.join("proc/meminfo"))
                .ok()
                .and_then(|m| mem_total_bytes(&m)),
            boot_id: first_line(&["proc/sys/kernel/random/boot_id"]),
            machine_id: first_line(&["etc/machine-id", "var/lib/dbus/machine-id"]),
            system_uuid: first_line(&["sys/class/dmi/id/product_uuid"]),
        }
    }
}

/// The name of block device `major:minor` as cAdvisor labels it: `/dev/` and the
/// `DEVNAME` of `<sys>/dev/block/MAJ:MIN/uevent` (`/dev/sda`, `/dev/nvme0n1`,
/// `/dev/dm-0`). A device sysfs does not know (gone already) is named by udev's
/// path for its number, `/dev/block/MAJ:MIN`, so two such devices never share a
/// label value (cAdvisor would give both an empty one).
pub fn block_device_name(sys: &Path, major: u32, minor: u32) -> String {
    let uevent = sys.join(format!("dev/block/{major}:{minor}/uevent"));
    std::fs::read_to_string(uevent)
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(str::trim)
                .filter(|n| !n.is_empty() && !n.contains(".."))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| format!("/dev/block/{major}:{minor}"))
}

/// `MemTotal:  24683652 kB` in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// (logical, physical, sockets) of the online CPUs: sysfs topology, else
/// `/proc/cpuinfo` (some virtual machines and architectures have no topology).
fn cpu_topology(root: &Path) -> (Option<u64>, Option<u64>, Option<u64>) {
    let cpus = root.join("sys/devices/system/cpu");
    let online = std::fs::read_to_string(cpus.join("online"))
        .ok()
        .and_then(|s| cpu_list(s.trim()));
    if let Some(online) = &online {
        let read = |cpu: u32, file: &str| -> Option<i64> {
            std::fs::read_to_string(cpus.join(format!("cpu{cpu}/topology/{file}")))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let topology: Option<Vec<(i64, i64)>> = online
            .iter()
            .map(|&cpu| Some((read(cpu, "physical_package_id")?, read(cpu, "core_id")?)))
            .collect();
        if let Some(topology) = topology.filter(|t| !t.is_empty()) {
            return counts(online.len(), &topology);
        }
    }
    let Ok(cpuinfo) = std::fs::read_to_string(root.join("proc/cpuinfo")) else {
        return (online.map(|o| o.len() as u64), None, None);
    };
    cpuinfo_topology(&cpuinfo)
}

fn counts(logical: usize, topology: &[(i64, i64)]) -> (Option<u64>, Option<u64>, Option<u64>) {
    let cores: BTreeSet<&(i64, i64)> = topology.iter().collect();
    let sockets: BTreeSet<i64> = topology.iter().map(|(p, _)| *p).collect();
    (
        Some(logical as u64),
        Some(cores.len() as u64),
        Some(sockets.len() as u64),
    )
}

/// Topology from `/proc/cpuinfo`: `processor`, `physical id` and `core id` lines.
fn cpuinfo_topology(cpuinfo: &str) -> (Option<u64>, Option<u64>, Option<u64>) {
    let mut topology = Vec::new();
    let mut logical = 0;
    let (mut package, mut core) = (None, None);
    let field = |l: &str, name: &str| -> Option<i64> {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().parse().ok())?
    };
    for line in cpuinfo.lines().chain([""]) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (package.take(), core.take()) {
                topology.push((p, c));
            }
            continue;
        }
        if line
            .split(':')
            .next()
            .is_some_and(|k| k.trim() == "processor")
        {
            logical += 1;
        }
        package = package.or(field(line, "physical id"));
        core = core.or(field(line, "core id"));
    }
    if logical == 0 {
        return (None, None, None);
    }
    if topology.len() != logical {
        // No topology lines (some architectures): only the logical count is known.
        return (Some(logical as u64), None, None);
    }
    counts(logical, &topology)
}

/// A kernel CPU list such as `0-3,8,10-11`.
fn cpu_list(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/machine-6.18")
    }

    #[test]
    fn facts_from_captured_files() {
        let f = MachineFacts::read(&fixture());
        // As captured: two online CPUs, one package, two cores, 24683652 kB.
        assert_eq!(f.cpu_cores, Some(2));
        assert_eq!(f.cpu_physical_cores, Some(2));
        assert_eq!(f.cpu_sockets, Some(1));
        assert_eq!(f.memory_bytes, Some(24_683_652 * 1024));
        assert_eq!(f.boot_id.len(), 36, "{:?}", f.boot_id);
        assert_eq!(f.machine_id.len(), 32, "{:?}", f.machine_id);
        assert_eq!(f.system_uuid, "", "this machine has no DMI");
    }

    #[test]
    fn cpuinfo_agrees_with_sysfs_on_the_capture() {
        let cpuinfo = std::fs::read_to_string(fixture().join("proc/cpuinfo")).unwrap();
        assert_eq!(cpuinfo_topology(&cpuinfo), (Some(2), Some(2), Some(1)));
        // Without the sysfs topology, cpuinfo answers.
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc")).unwrap();
        std::fs::write(t.path().join("proc/cpuinfo"), &cpuinfo).unwrap();
        assert_eq!(cpu_topology(t.path()), (Some(2), Some(2), Some(1)));
    }

    /// The live machine, read the simplest way: sysconf and /proc/cpuinfo.
    #[test]
    fn facts_of_this_machine() {
        let f = MachineFacts::read(Path::new("/"));
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        assert_eq!(f.cpu_cores, Some(online as u64));
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let (_, physical, sockets) = cpuinfo_topology(&cpuinfo);
        if physical.is_some() {
            assert_eq!((f.cpu_physical_cores, f.cpu_sockets), (physical, sockets));
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kb: u64 = meminfo
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(f.memory_bytes, Some(kb * 1024));
    }

    #[test]
    fn block_device_names() {
        let sys = fixture().join("sys");
        assert_eq!(block_device_name(&sys, 254, 0), "/dev/vda");
        assert_eq!(block_device_name(&sys, 254, 99), "/dev/block/254:99");
        // This machine's own disks, if sysfs is there: every listed one resolves.
        for e in std::fs::read_dir("/sys/dev/block")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().into_string().unwrap();
            let (major, minor) = name.split_once(':').unwrap();
            let dev = block_device_name(
                Path::new("/sys"),
                major.parse().unwrap(),
                minor.parse().unwrap(),
            );
            assert!(
                dev.starts_with("/dev/") && !dev.starts_with("/dev/block/"),
                "{name}: {dev}"
            );
        }
    }

    #[test]
    fn cpu_lists_and_meminfo() {
        assert_eq!(cpu_list("0-3,8,10-11"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(cpu_list("0"), Some(vec![0]));
        assert_eq!(cpu_list("3-1"), None);
        assert_eq!(cpu_list("x"), None);
        assert_eq!(mem_total_bytes("MemTotal:  1 kB\n"), Some(1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: 1 MB\n"), None);
        assert_eq!(cpuinfo_topology(""), (None, None, None));
        assert_eq!(
            cpuinfo_topology("processor : 0\n\nprocessor : 1\n"),
            (Some(2), None, None)
        );
    }
}
