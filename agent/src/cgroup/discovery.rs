//! Finds the cgroups that hold containers or services, and says whose they are.
//!
//! Recognised by path, the way each runtime names them:
//! - the agent's own: `/agent/<id>`
//! - Docker: `/docker/<id>` (cgroupfs driver), `…/docker-<id>.scope` (systemd driver)
//! - containerd / CRI-O / Kubernetes: everything under `kubepods…` at pod or container
//!   level (`pod<uid>`, `…-pod<uid>.slice`, `cri-containerd-<id>.scope`, `crio-<id>.scope`)
//! - podman: `libpod-<id>.scope` or `/libpod_parent/libpod-<id>`
//! - containerd outside Kubernetes (`ctr run`, in any containerd namespace): no
//!   naming scheme (`/<namespace>/<id>` by default), so not by path: the tracker
//!   adds the cgroups its running containers' bundles name
//! - systemd services: `*.service`
//!
//! `--include` globs add other cgroups; `--exclude` globs remove any.

use super::{CgroupError, Hierarchy};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::{Path, PathBuf};

/// Who created a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Agent,
    Docker,
    Kubernetes,
    /// containerd's own containers, found from its bundles (not by path).
    Containerd,
    Podman,
    Systemd,
    /// Matched only by an `--include` pattern.
    Other,
    /// The root cgroup, `/`: the whole machine, exported as cAdvisor exports its
    /// root container.
    Root,
}

impl Runtime {
    /// Lower-case name used as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Agent => "agent",
            Runtime::Docker => "docker",
            Runtime::Kubernetes => "kubernetes",
            Runtime::Containerd => "containerd",
            Runtime::Podman => "podman",
            Runtime::Systemd => "systemd",
            Runtime::Other => "other",
            Runtime::Root => "root",
        }
    }
}

/// A cgroup found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The cgroup path relative to the hierarchy, e.g. `/docker/<id>`: the `id` label.
    pub path: String,
    pub runtime: Runtime,
    /// The runtime's container id when the path carries one.
    pub container_id: Option<String>,
}

/// Which cgroups to track beyond (or instead of) the recognised ones.
#[derive(Debug, Clone)]
pub struct Filter {
    include: GlobSet,
    exclude: GlobSet,
}

impl Filter {
    /// Builds a filter from glob patterns over cgroup paths (`*` stays within one path
    /// component, `**` crosses them), e.g. `--include '/batch/*' --exclude '/docker/**'`.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, CgroupError> {
        Ok(Filter {
            include: glob_set(include)?,
            exclude: glob_set(exclude)?,
        })
    }

    /// True when an `--exclude` pattern matches `path` (`/` excludes the root cgroup).
    pub fn excludes(&self, path: &str) -> bool {
        self.exclude.is_match(path)
    }

    /// Classifies `path`, applying the include and exclude patterns.
    pub fn select(&self, path: &str) -> Option<Discovered> {
        if self.exclude.is_match(path) {
            return None;
        }
        match classify(path) {
            Some((runtime, container_id)) => Some(Discovered {
                path: path.to_string(),
                runtime,
                container_id,
            }),
            None if self.include.is_match(path) => Some(Discovered {
                path: path.to_string(),
                runtime: Runtime::Other,
                container_id: None,
            }),
            None => None,
        }
    }
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            include: GlobSet::empty(),
            exclude: GlobSet::empty(),
        }
    }
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, CgroupError> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| CgroupError::BadPattern {
                pattern: p.clone(),
                reason: e.kind().to_string(),
            })?;
        builder.add(glob);
    }
    builder.build().map_err(|e| CgroupError::BadPattern {
        pattern: patterns.join(","),
        reason: e.to_string(),
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn scope_id<'a>(leaf: &'a str, prefix: &str) -> Option<&'a str> {
    leaf.strip_prefix(prefix)?
        .strip_suffix(".scope")
        .filter(|id| is_container_id(id))
}

/// Recognises the runtimes' own naming schemes; see the module docs.
pub fn classify(path: &str) -> Option<(Runtime, Option<String>)> {
    let mut components = path.split('/').filter(|c| !c.is_empty());
    let first = components.next()?;
    let leaf = path.rsplit('/').find(|c| !c.is_empty())?;
    let depth = path.split('/').filter(|c| !c.is_empty()).count();
    let id = |s: &str| Some(s.to_string());

    if first == super::AGENT_SUBTREE && depth == 2 {
        return Some((Runtime::Agent, id(leaf)));
    }
    if path.contains("kubepods") {
        for prefix in ["cri-containerd-", "crio-", "docker-"] {
            if let Some(cid) = scope_id(leaf, prefix) {
                return Some((Runtime::Kubernetes, id(cid)));
            }
        }
        if is_container_id(leaf) {
            return Some((Runtime::Kubernetes, id(leaf)));
        }
        let pod = leaf.starts_with("pod") || (leaf.ends_with(".slice") && leaf.contains("-pod"));
        return pod.then_some((Runtime::Kubernetes, None));
    }
    if first == "docker" && depth == 2 && is_container_id(leaf) {
        return Some((Runtime::Docker, id(leaf)));
    }
    if let Some(cid) = scope_id(leaf, "docker-") {
        return Some((Runtime::Docker, id(cid)));
    }
    if let Some(cid) = scope_id(leaf, "libpod-") {
        return Some((Runtime::Podman, id(cid)));
    }
    if first == "libpod_parent"
        && let Some(cid) = leaf.strip_prefix("libpod-").filter(|c| is_container_id(c))
    {
        return Some((Runtime::Podman, id(cid)));
    }
    if leaf.ends_with(".service") {
        return Some((Runtime::Systemd, None));
    }
    None
}

/// What a scan found: the selected cgroups, sorted by path, and the paths
/// (lossily shown) of cgroups whose names are not UTF-8, which are not followed.
#[derive(Debug, Default)]
pub struct Scan {
    pub found: Vec<Discovered>,
    pub non_utf8: Vec<String>,
}

/// Walks the hierarchy and returns every selected cgroup. With `watch`, every
/// directory walked is watched before it is read, so a cgroup made at any time
/// after the walk passed is reported by the watch.
pub fn scan(
    hierarchy: &Hierarchy,
    filter: &Filter,
    watch: Option<&mut super::watch::TreeWatch>,
) -> Result<Scan, CgroupError> {
    scan_below(hierarchy, filter, "", watch)
}

/// Like [`scan`], for cgroup `top` (itself included) and the cgroups below it
/// only: what a change the watch reported needs walked. `""` is the whole tree;
/// a `top` that is gone already gives an empty scan.
pub fn scan_below(
    hierarchy: &Hierarchy,
    filter: &Filter,
    top: &str,
    mut watch: Option<&mut super::watch::TreeWatch>,
) -> Result<Scan, CgroupError> {
    let root = hierarchy
        .walk_root()
        .ok_or_else(|| CgroupError::NotCgroupRoot(hierarchy.root().to_path_buf()))?;
    let dir = root.join(top.trim_start_matches('/'));
    if let Some(w) = watch.as_deref_mut() {
        w.add(&dir, top);
    }
    let mut found: Vec<Discovered> = (!top.is_empty())
        .then(|| filter.select(top))
        .flatten()
        .into_iter()
        .collect();
    let non_utf8 = match walk_from(&dir, top, |rel, entry| {
        if let Some(w) = watch.as_deref_mut() {
            w.add(&entry.path(), rel);
        }
        if let Some(d) = filter.select(rel) {
            found.push(d);
        }
    }) {
        Ok(n) => n,
        Err(CgroupError::Io { source, .. }) if !top.is_empty() && vanished(&source) => {
            return Ok(Scan::default());
        }
        Err(e) => return Err(e),
    };
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Scan { found, non_utf8 })
}

/// A cgroup path and every ancestor of it, deepest first: `/a/b/c`, `/a/b`, `/a`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut cur = Some(path.trim_end_matches('/'));
    std::iter::from_fn(move || {
        let p = cur.filter(|p| !p.is_empty())?;
        cur = p.rfind('/').map(|i| &p[..i]);
        Some(p)
    })
}

/// True when cgroup `path` lies below cgroup `ancestor` (not equal to it).
pub fn is_below(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The one cgroup tree walker: calls `visit` with every cgroup directory below
/// `root` (its path relative to `root`, like `/docker/<id>`, and its entry),
/// at most [`MAX_DEPTH`] levels deep. Directories that vanish during the walk
/// are skipped (containers come and go); only an unreadable `root` fails.
/// Returns the paths of directories whose names are not UTF-8 (shown lossily):
/// they cannot be labels, so they and their subtrees are not visited.
pub fn walk(
    root: &Path,
    visit: impl FnMut(&str, &std::fs::DirEntry),
) -> Result<Vec<String>, CgroupError> {
    walk_from(root, "", visit)
}

/// [`walk`] from directory `dir`, the cgroup `rel` (`""` for the root): the
/// paths given to `visit` start with `rel`.
fn walk_from(
    dir: &Path,
    rel: &str,
    mut visit: impl FnMut(&str, &std::fs::DirEntry),
) -> Result<Vec<String>, CgroupError> {
    let mut non_utf8 = Vec::new();
    let top_depth = rel.split('/').filter(|c| !c.is_empty()).count();
    let mut stack: Vec<(PathBuf, String, usize)> =
        vec![(dir.to_path_buf(), rel.to_owned(), top_depth)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if depth > top_depth && vanished(&e) => continue,
            Err(source) => return Err(super::io_error("read", &dir)(source)),
        };
        for entry in entries.flatten() {
            // cgroupfs reports d_type, so this costs no extra stat per entry.
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                non_utf8.push(format!("{rel}/{}", name.to_string_lossy()));
                continue;
            };
            let child = format!("{rel}/{name}");
            visit(&child, &entry);
            if depth < MAX_DEPTH {
                stack.push((entry.path(), child, depth + 1));
            }
        }
    }
    Ok(non_utf8)
}

/// Deeper trees than this are not walked (kubepods nests five levels; this leaves room).
const MAX_DEPTH: usize = 16;

fn vanished(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV))
}

/// True when an I/O error means the cgroup was removed under us.
pub(crate) fn is_vanished(e: &std::io::Error) -> bool {
    vanished(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const ID: &str = "7b1f0c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

    #[test]
    fn classifies_runtimes() {
        type Expected = Option<(Runtime, Option<String>)>;
        let cases: Vec<(String, Expected)> = vec![
            (
                format!("/docker/{ID}"),
                Some((Runtime::Docker, Some(ID.into()))),
            ),
            (
                format!("/system.slice/docker-{ID}.scope"),
                Some((Runtime::Docker, Some(ID.into()))),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
                ),
                Some((Runtime::Kubernetes, Some(ID.into()))),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice".into(),
                Some((Runtime::Kubernetes, None)),
            ),
            (
                format!("/kubepods/besteffort/pod12-34/{ID}"),
                Some((Runtime::Kubernetes, Some(ID.into()))),
            ),
            ("/kubepods/besteffort".into(), None),
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                Some((Runtime::Podman, Some(ID.into()))),
            ),
            (
                format!("/libpod_parent/libpod-{ID}"),
                Some((Runtime::Podman, Some(ID.into()))),
            ),
            (
                "/system.slice/ssh.service".into(),
                Some((Runtime::Systemd, None)),
            ),
            (
                "/agent/web-1".into(),
                Some((Runtime::Agent, Some("web-1".into()))),
            ),
            ("/agent".into(), None),
            ("/docker".into(), None),
            ("/docker/short".into(), None),
            ("/user.slice".into(), None),
            ("/".into(), None),
        ];
        for (path, want) in cases {
            assert_eq!(classify(&path), want, "{path}");
        }
    }

    #[test]
    fn include_and_exclude_patterns() {
        let f = Filter::new(&["/batch/*".into()], &["/system.slice/**".into()]).unwrap();
        assert_eq!(f.select("/batch/job1").unwrap().runtime, Runtime::Other);
        assert!(
            f.select("/batch/job1/sub").is_none(),
            "* stays in one component"
        );
        assert!(f.select("/system.slice/ssh.service").is_none());
        assert!(f.select("/agent/x").is_some());
        assert!(matches!(
            Filter::new(&["/a/[".into()], &[]),
            Err(CgroupError::BadPattern { .. })
        ));
    }

    #[test]
    fn scans_a_v1_tree() {
        let t = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "cpuacct", "pids"] {
            let base = t.path().join(c);
            fs::create_dir_all(base.join(format!("docker/{ID}"))).unwrap();
            fs::create_dir_all(base.join("agent/c1")).unwrap();
            fs::create_dir_all(base.join("user.slice/user-0.slice")).unwrap();
            fs::write(base.join("cgroup.procs"), "").unwrap();
        }
        let h = Hierarchy::detect(t.path()).unwrap();
        let scan = scan(&h, &Filter::default(), None).unwrap();
        assert!(scan.non_utf8.is_empty());
        let paths: Vec<_> = scan.found.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["/agent/c1".to_string(), format!("/docker/{ID}")]
        );
    }
}
