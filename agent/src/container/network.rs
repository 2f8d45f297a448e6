//! Network counters per container, read from the container's own network namespace
//! (`/proc/<pid>/net/dev` of one of its tasks), as cAdvisor reads them.
//!
//! A namespace is read once per scrape however many cgroups share it (a pod's
//! containers, `--network container:X`), keyed by its inode. Its series go to one
//! cgroup: the one that started first (the pod sandbox, container X), as cAdvisor
//! reports a pod's network on the sandbox only. The host's namespace goes to the
//! root cgroup `/` and, as cAdvisor's Docker handler does, to every Docker, podman
//! and agent container that runs in it (`--network host`); systemd services and
//! other plain cgroups in it get none.
//!
//! The file of each namespace is kept open between scrapes (within the descriptor
//! budget) and re-read with `pread`: the open file stays bound to its namespace.

use crate::cgroup::discovery::Runtime;
use crate::cgroup::parse::ParseError;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One interface's counters (`/proc/net/dev` columns cAdvisor exports).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Interfaces cAdvisor leaves out: loopback, and the host ends of veth pairs and
/// Docker's bridges (seen in the host's namespace).
const IGNORED_PREFIXES: [&str; 3] = ["lo", "veth", "docker"];

/// Interfaces per namespace exported, at most: a container that may make links
/// (CAP_NET_ADMIN) cannot flood the exposition.
pub const MAX_INTERFACES: usize = 64;

/// Parses `/proc/<pid>/net/dev`, skipping the interfaces cAdvisor skips.
pub fn parse_net_dev(buf: &[u8]) -> Result<Vec<InterfaceStats>, ParseError> {
    let text = std::str::from_utf8(buf).map_err(|_| ParseError::BadFormat("not UTF-8".into()))?;
    let mut out = Vec::new();
    // Two header lines.
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(ParseError::BadFormat(clip(line)));
        };
        let name = name.trim();
        let mut fields = [0u64; 16];
        let mut n = 0;
        for token in counters.split_ascii_whitespace() {
            if n == fields.len() {
                return Err(ParseError::BadFormat(clip(line)));
            }
            fields[n] = token
                .parse()
                .map_err(|_| ParseError::BadValue(clip(token)))?;
            n += 1;
        }
        if n != fields.len() {
            return Err(ParseError::BadFormat(clip(line)));
        }
        let lower = name.to_ascii_lowercase();
        if IGNORED_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            continue;
        }
        if out.len() == MAX_INTERFACES {
            break;
        }
        out.push(InterfaceStats {
            name: name.to_string(),
            rx_bytes: fields[0],
            rx_packets: fields[1],
            rx_errors: fields[2],
            rx_dropped: fields[3],
            tx_bytes: fields[8],
            tx_packets: fields[9],
            tx_errors: fields[10],
            tx_dropped: fields[11],
        });
    }
    Ok(out)
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The network namespace of a cgroup: resolved from one of its tasks, again only
/// when the task listed first changes (a runtime may place a task in the cgroup
/// before it enters the container's namespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetnsOf {
    pid: u32,
    inode: u64,
}

/// One namespace's `net/dev`, open or opened per read.
#[derive(Debug)]
struct NetnsFile {
    path: PathBuf,
    kept: Option<File>,
}

/// A cgroup's part in a scrape: which it is and what it shares.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// Its first task now (from `cgroup.procs`), `None` for an empty cgroup.
    pub first_pid: Option<u32>,
    /// Creation time, to give a shared namespace to the oldest cgroup.
    pub start_time: f64,
    pub runtime: Runtime,
}

/// The namespaces being read, by inode.
#[derive(Debug)]
pub struct NetnsTable {
    proc_root: PathBuf,
    /// The host's namespace (that of pid 1, or failing that the agent's own).
    host: Option<u64>,
    files: HashMap<u64, NetnsFile>,
}

impl NetnsTable {
    /// A table over the processes of `proc_root` (`/proc`).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        let proc_root = proc_root.into();
        // pid 1's, or this process's where pid 1's cannot be read (a sandbox
        // that hides it): the agent runs on the host's network.
        let host =
            netns_inode(&proc_root, 1).or_else(|| netns_inode(&proc_root, std::process::id()));
        NetnsTable {
            proc_root,
            host,
            files: HashMap::new(),
        }
    }

    /// Descriptors it keeps open.
    pub fn open_files(&self) -> usize {
        self.files.values().filter(|f| f.kept.is_some()).count()
    }

    /// Reads the network counters for a scrape. `members[i]` is a cgroup (`None`:
    /// the root cgroup, which is given the host's namespace), `cache[i]` what was
    /// resolved for it before (updated here). Returns each member's interfaces
    /// (empty where none are exported). `keep` says whether one more descriptor
    /// may be kept open. Errors reading a namespace are passed to `on_error`.
    pub fn read(
        &mut self,
        members: &[Option<Member>],
        cache: &mut [Option<NetnsOf>],
        mut keep: impl FnMut() -> bool,
        mut on_error: impl FnMut(std::io::Error),
    ) -> Vec<Arc<Vec<InterfaceStats>>> {
        // Resolve each member's namespace.
        let mut inodes: Vec<Option<u64>> = Vec::with_capacity(members.len());
        for (m, c) in members.iter().zip(cache.iter_mut()) {
            let inode = match m {
                None => self.host.map(|h| (1, h)),
                Some(Member {
                    first_pid: Some(pid),
                    ..
                }) => match c {
                    Some(known) if known.pid == *pid => Some((known.pid, known.inode)),
                    _ => netns_inode(&self.proc_root, *pid).map(|i| (*pid, i)),
                },
                Some(_) => None,
            };
            *c = inode.map(|(pid, inode)| NetnsOf { pid, inode });
            inodes.push(inode.map(|(_, i)| i));
        }
        // Who gets each namespace's series: the oldest member, or every
        // container-runtime member for the host's.
        let mut owner: HashMap<u64, usize> = HashMap::new();
        let mut wanted = vec![false; members.len()];
        for (i, (m, inode)) in members.iter().zip(&inodes).enumerate() {
            let Some(inode) = *inode else { continue };
            match m {
                None => wanted[i] = true,
                Some(m) if Some(inode) == self.host => {
                    wanted[i] = matches!(
                        m.runtime,
                        Runtime::Docker | Runtime::Podman | Runtime::Agent
                    );
                }
                Some(m) => {
                    let e = owner.entry(inode).or_insert(i);
                    let older = |j: usize| match members[j] {
                        Some(o) => m.start_time < o.start_time,
                        None => false,
                    };
                    if *e != i && older(*e) {
                        *e = i;
                    }
                }
            }
        }
        for i in owner.values() {
            wanted[*i] = true;
        }
        // Open each wanted namespace once (kept from earlier scrapes mostly).
        let mut todo: Vec<u64> = Vec::new();
        let mut seen: HashSet<u64> = HashSet::with_capacity(inodes.len());
        let mut failed: HashMap<u64, std::io::Error> = HashMap::new();
        for (i, inode) in inodes.iter().enumerate() {
            let (Some(inode), true) = (*inode, wanted[i]) else {
                continue;
            };
            // A set, not `todo.contains`, which was quadratic (tens of ms at 10,000).
            if !seen.insert(inode) {
                continue;
            }
            let pid = cache[i].map_or(1, |c| c.pid);
            match self.ensure_open(inode, pid, &mut keep) {
                Ok(()) => todo.push(inode),
                Err(e) => {
                    failed.insert(inode, e);
                }
            }
        }
        // Read them, on a few threads when there are many (each read is the
        // kernel formatting the namespace's devices).
        let files = &self.files;
        let read_chunk = |chunk: &[u64]| -> Vec<(u64, std::io::Result<Vec<InterfaceStats>>)> {
            let mut buf = Vec::with_capacity(4096);
            chunk
                .iter()
                .map(|inode| (*inode, read_file(files.get(inode), &mut buf)))
                .collect()
        };
        let results: Vec<(u64, std::io::Result<Vec<InterfaceStats>>)> =
            super::tracker::read_in_parallel(&todo, read_chunk);
        let mut read: HashMap<u64, Arc<Vec<InterfaceStats>>> = HashMap::new();
        let mut errors: Vec<(u64, std::io::Error)> = failed.into_iter().collect();
        for (inode, r) in results {
            match r {
                Ok(v) => {
                    read.insert(inode, Arc::new(v));
                }
                Err(e) => errors.push((inode, e)),
            }
        }
        for (inode, e) in errors {
            // A task that exited since `cgroup.procs` was read is no error.
            if e.kind() != std::io::ErrorKind::NotFound {
                on_error(e);
            }
            self.files.remove(&inode);
            read.insert(inode, Arc::default());
        }
        let out = inodes
            .iter()
            .zip(&wanted)
            .map(|(inode, wanted)| match (inode, wanted) {
                (Some(inode), true) => read.get(inode).cloned().unwrap_or_default(),
                _ => Arc::default(),
            })
            .collect();
        // Close the namespaces no cgroup is in any more (they may be gone).
        self.files.retain(|inode, _| read.contains_key(inode));
        out
    }

    /// Opens the `net/dev` of namespace `inode` through `pid`, unless open.
    fn ensure_open(
        &mut self,
        inode: u64,
        pid: u32,
        keep: &mut impl FnMut() -> bool,
    ) -> std::io::Result<()> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.files.entry(inode) {
            let path = self.proc_root.join(pid.to_string()).join("net/dev");
            let opened = File::open(&path)?;
            e.insert(NetnsFile {
                kept: keep().then_some(opened),
                path,
            });
        }
        Ok(())
    }
}

/// Reads and parses one namespace's `net/dev`.
fn read_file(file: Option<&NetnsFile>, buf: &mut Vec<u8>) -> std::io::Result<Vec<InterfaceStats>> {
    let file = file.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    let data = match &file.kept {
        Some(f) => crate::cgroup::stats::read_all(f, buf)?,
        None => crate::cgroup::stats::read_all(&File::open(&file.path)?, buf)?,
    };
    parse_net_dev(data).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", file.path.display()),
        )
    })
}

/// The inode of the network namespace of `pid`, `None` when it is gone.
fn netns_inode(proc_root: &Path, pid: u32) -> Option<u64> {
    std::fs::metadata(proc_root.join(pid.to_string()).join("ns/net"))
        .ok()
        .map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// `/proc/net/dev` of a Docker container on a bridge (kernel 6.18).
    const CONTAINER: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  eth0: 8400313    5813    1    2    0     0          0         0   123456     901    3    4    0     0       0          0
";

    const HOST: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  ens3: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0
docker0: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0
veth12ab: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0
";

    #[test]
    fn net_dev_is_parsed_without_loopback() {
        let v = parse_net_dev(CONTAINER.as_bytes()).unwrap();
        assert_eq!(
            v,
            [InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 8400313,
                rx_packets: 5813,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 123456,
                tx_packets: 901,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
        let host = parse_net_dev(HOST.as_bytes()).unwrap();
        assert_eq!(
            host.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["ens3"],
            "lo, veth* and docker* are left out, as cAdvisor does"
        );
    }

    #[test]
    fn bad_net_dev_is_an_error_not_a_panic() {
        for bad in [
            "h\nh\n  eth0: 1 2 3\n",
            "h\nh\n  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n",
            "h\nh\nno colon here\n",
            "h\nh\n  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n",
        ] {
            assert!(parse_net_dev(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(parse_net_dev(b"").unwrap(), []);
        let many: String = (0..100)
            .map(|i| format!("e{i}: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"))
            .collect();
        let v = parse_net_dev(format!("h\nh\n{many}").as_bytes()).unwrap();
        assert_eq!(v.len(), MAX_INTERFACES);
    }

    /// A fake `/proc`: pid → namespace file (its inode stands for the namespace).
    fn proc_tree(pids: &[(u32, &str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let ns = t.path().join("namespaces");
        fs::create_dir_all(&ns).unwrap();
        for (pid, netns, dev) in pids {
            let dir = t.path().join(pid.to_string());
            fs::create_dir_all(dir.join("ns")).unwrap();
            fs::create_dir_all(dir.join("net")).unwrap();
            let target = ns.join(netns);
            if !target.exists() {
                fs::write(&target, "").unwrap();
            }
            fs::hard_link(&target, dir.join("ns/net")).unwrap();
            fs::write(dir.join("net/dev"), dev).unwrap();
        }
        t
    }

    fn member(pid: Option<u32>, start_time: f64, runtime: Runtime) -> Option<Member> {
        Some(Member {
            first_pid: pid,
            start_time,
            runtime,
        })
    }

    #[test]
    fn a_shared_namespace_is_read_once_and_given_to_the_oldest_cgroup() {
        let t = proc_tree(&[
            (1, "host", HOST),
            (10, "pod", CONTAINER),
            (11, "pod", CONTAINER),
            (20, "own", CONTAINER),
            (30, "host", HOST),
            (40, "host", HOST),
        ]);
        let mut table = NetnsTable::new(t.path());
        let members = [
            None,                                       // the root cgroup
            member(Some(11), 5.0, Runtime::Kubernetes), // app container
            member(Some(10), 1.0, Runtime::Kubernetes), // sandbox, older
            member(Some(20), 3.0, Runtime::Docker),     // own namespace
            member(Some(30), 3.0, Runtime::Docker),     // --network host
            member(Some(40), 3.0, Runtime::Systemd),    // a service
            member(None, 3.0, Runtime::Docker),         // no task yet
        ];
        let mut cache = vec![None; members.len()];
        let mut kept = 0;
        let got = table.read(
            &members,
            &mut cache,
            || {
                kept += 1;
                true
            },
            |e| panic!("{e}"),
        );
        let names = |i: usize| -> Vec<&str> { got[i].iter().map(|x| x.name.as_str()).collect() };
        assert_eq!(names(0), ["ens3"]);
        assert_eq!(names(1), Vec::<&str>::new(), "the sandbox has it");
        assert_eq!(names(2), ["eth0"]);
        assert_eq!(names(3), ["eth0"]);
        assert_eq!(names(4), ["ens3"], "host network: the host's, as cAdvisor");
        assert!(names(5).is_empty() && names(6).is_empty());
        assert_eq!(kept, 3, "three namespaces, each opened once");
        assert_eq!(table.open_files(), 3);

        // The kept file is re-read: new counters show without reopening.
        fs::write(
            t.path().join("20/net/dev"),
            CONTAINER.replace("8400313", "9000000"),
        )
        .unwrap();
        let got = table.read(
            &members,
            &mut cache,
            || panic!("no reopen"),
            |e| panic!("{e}"),
        );
        assert_eq!(got[3][0].rx_bytes, 9000000);

        // The sandbox goes: the app container gets the pod's namespace.
        let members2 = [members[0], members[1], members[3]];
        let mut cache2 = vec![cache[0], cache[1], cache[3]];
        let got = table.read(&members2, &mut cache2, || true, |e| panic!("{e}"));
        assert_eq!(got[1][0].name, "eth0");
        // Only the root's namespace left: the others are closed.
        let got = table.read(&members2[..1], &mut cache2[..1], || true, |e| panic!("{e}"));
        assert_eq!(got.len(), 1);
        assert_eq!(table.open_files(), 1);
    }

    #[test]
    fn many_namespaces_are_read_on_several_threads_each_to_its_cgroup() {
        let devs: Vec<(u32, String, String)> = (0..150u32)
            .map(|i| {
                (
                    100 + i,
                    format!("ns{i}"),
                    CONTAINER.replace("8400313", &(1000 + i).to_string()),
                )
            })
            .collect();
        let mut pids: Vec<(u32, &str, &str)> = devs
            .iter()
            .map(|(p, n, d)| (*p, n.as_str(), d.as_str()))
            .collect();
        pids.push((1, "host", HOST));
        let t = proc_tree(&pids);
        let mut table = NetnsTable::new(t.path());
        let members: Vec<Option<Member>> = devs
            .iter()
            .map(|(pid, ..)| member(Some(*pid), 1.0, Runtime::Docker))
            .collect();
        let mut cache = vec![None; members.len()];
        let got = table.read(&members, &mut cache, || true, |e| panic!("{e}"));
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v[0].rx_bytes, 1000 + i as u64);
        }
        assert_eq!(table.open_files(), 150);
    }

    #[test]
    fn past_the_budget_the_file_is_opened_per_read() {
        let t = proc_tree(&[(1, "host", HOST), (20, "own", CONTAINER)]);
        let mut table = NetnsTable::new(t.path());
        let members = [member(Some(20), 1.0, Runtime::Docker)];
        let mut cache = vec![None];
        let got = table.read(&members, &mut cache, || false, |e| panic!("{e}"));
        assert_eq!(got[0][0].name, "eth0");
        assert_eq!(table.open_files(), 0);
        // A garbled file is reported, not fatal.
        fs::write(t.path().join("20/net/dev"), "h\nh\neth0: x\n").unwrap();
        let mut errors = 0;
        let got = table.read(&members, &mut cache, || false, |_| errors += 1);
        assert!(got[0].is_empty());
        assert_eq!(errors, 1);
    }
}
