//! Seccomp: Docker's default profile (the one built into dockerd, which Debian
//! ships as a file in `golang-github-docker-docker-dev`) resolved into the OCI
//! spec's `linux.seccomp` for one container's capabilities and this machine's
//! architecture, then compiled to a classic BPF program with libseccomp.
//!
//! Docker's rather than podman's (`/usr/share/containers/seccomp.json`, the same
//! format): podman's allows `keyctl`, `setns` and `unshare(CLONE_NEWUSER)` to
//! every container, and a container here gets Docker's confinement or stronger.
//! Podman's still runs with `--security-opt seccomp=PATH`.
//!
//! The profile format (moby's, shared by containers/common) is a superset of the
//! OCI one: `archMap` (native and
//! sub-architectures), per-rule `includes`/`excludes` by capabilities,
//! architectures and minimum kernel, and `errnoRet`. A rule applies when every
//! capability it includes is in the container's bounding set and none it excludes
//! is (moby's rule). A file in the plain OCI form (`architectures`, no
//! conditions) reads the same way.
//!
//! libseccomp (Debian's, through the `libseccomp` crate) rather than seccompiler:
//! it resolves syscall names for every architecture of the filter (x86_64 with its
//! x86 and x32 sub-architectures), knows the names newer than a hand-kept table,
//! and its `SCMP_CMP_MASKED_EQ` and multi-argument conditions are exactly the
//! profile's. The program is compiled once per (spec, libseccomp) pair and kept in
//! the store (`seccomp/<sha256>.bpf`); the container's first process only hands
//! the bytes to seccomp(2).

use super::capabilities::CapArg;
use super::{Error, IoContext, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Capabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where Debian's `golang-github-docker-docker-dev` puts Docker's default profile
/// (moby's `profiles/seccomp/default.json`, the one dockerd compiles in).
pub const DEFAULT_PROFILE: &str =
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json";
/// The package that ships [`DEFAULT_PROFILE`].
pub const PROFILE_PACKAGE: &str = "golang-github-docker-docker-dev";

/// A profile file, in the containers/common form or the plain OCI one.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Condition>,
    #[serde(default)]
    excludes: Option<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// This machine's architecture as the profile names it (Go's names) and as
/// seccomp does.
fn native_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "x86" => ("386", "SCMP_ARCH_X86"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        "loongarch64" => ("loong64", "SCMP_ARCH_LOONGARCH64"),
        _ => ("", "SCMP_ARCH_NATIVE"),
    }
}

/// `(major, minor)` of a kernel release such as `6.18.4-foo` or `4.8`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn running_kernel() -> Option<(u32, u32)> {
    kernel_version(
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()?
            .trim(),
    )
}

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile> {
        let data = std::fs::read(path).at("read seccomp profile", path)?;
        serde_json::from_slice(&data).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The default profile, from the package. Never falls back to anything weaker:
    /// a missing file is an error that names the package.
    pub fn load_default() -> Result<Profile> {
        Self::load_default_from(Path::new(DEFAULT_PROFILE))
    }

    fn load_default_from(path: &Path) -> Result<Profile> {
        if !path.exists() {
            return Err(Error::Invalid(format!(
                "the default seccomp profile {} is missing: install {PROFILE_PACKAGE} \
                 (or pass --security-opt seccomp=PATH.json)",
                path.display()
            )));
        }
        Self::load(path)
    }

    /// The OCI `linux.seccomp` of this profile for a container whose bounding set
    /// is `bounding`, on this machine.
    pub fn resolve(&self, bounding: &Capabilities) -> Result<LinuxSeccomp> {
        self.resolve_for(bounding, native_arch(), running_kernel())
    }

    fn resolve_for(
        &self,
        bounding: &Capabilities,
        (go_arch, scmp_arch): (&str, &str),
        kernel: Option<(u32, u32)>,
    ) -> Result<LinuxSeccomp> {
        let has_cap = |name: &String| match name.parse::<CapArg>() {
            Ok(CapArg::One(c)) => bounding.contains(&c),
            _ => false,
        };
        let mut architectures: Vec<String> = match (&self.arch_map, &self.architectures) {
            (Some(map), _) => map
                .iter()
                .filter(|m| m.architecture == scmp_arch)
                .flat_map(|m| {
                    std::iter::once(m.architecture.clone())
                        .chain(m.sub_architectures.clone().unwrap_or_default())
                })
                .collect(),
            (None, Some(list)) => list.clone(),
            (None, None) => Vec::new(),
        };
        architectures.dedup();
        let mut syscalls = Vec::new();
        for rule in self.syscalls.iter().flatten() {
            let inc = rule.includes.clone().unwrap_or_default();
            let exc = rule.excludes.clone().unwrap_or_default();
            if !inc.caps.iter().flatten().all(has_cap) || exc.caps.iter().flatten().any(has_cap) {
                continue;
            }
            if inc
                .arches
                .as_ref()
                .is_some_and(|a| !a.is_empty() && !a.iter().any(|x| x == go_arch))
                || exc.arches.iter().flatten().any(|x| x == go_arch)
            {
                continue;
            }
            if let Some(min) = inc.min_kernel.as_deref().and_then(kernel_version)
                && kernel.is_some_and(|k| k < min)
            {
                continue;
            }
            let names: Vec<String> = rule
                .names
                .iter()
                .flatten()
                .cloned()
                .chain(rule.name.clone())
                .collect();
            if names.is_empty() {
                continue;
            }
            let mut b = LinuxSyscallBuilder::default()
                .names(names)
                .action(rule.action);
            if let Some(e) = rule.errno_ret {
                b = b.errno_ret(e);
            }
            if let Some(args) = rule.args.clone().filter(|a| !a.is_empty()) {
                b = b.args(args);
            }
            syscalls.push(b.build().map_err(invalid)?);
        }
        let mut b = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .syscalls(syscalls);
        if let Some(e) = self.default_errno_ret {
            b = b.default_errno_ret(e);
        }
        if !architectures.is_empty() {
            let arches =
                serde_json::from_value(serde_json::json!(architectures)).map_err(|source| {
                    Error::Encode {
                        what: "seccomp architectures".into(),
                        source,
                    }
                })?;
            b = b.architectures::<Vec<oci_spec::runtime::Arch>>(arches);
        }
        if let Some(flags) = self.flags.clone().filter(|f| !f.is_empty()) {
            b = b.flags(flags);
        }
        b.build().map_err(invalid)
    }
}

fn invalid(source: oci_spec::OciSpecError) -> Error {
    Error::Spec {
        what: "seccomp profile".into(),
        source,
    }
}

fn seccomp_error(what: String) -> impl FnOnce(libseccomp::error::SeccompError) -> Error {
    move |source| Error::Seccomp { what, source }
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.map_or(libc::EPERM, |e| e as i32))
        }
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.map_or(libc::EPERM as u16, |e| e as u16))
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn compare(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(arg.value()),
    };
    let datum = match arg.op() {
        LinuxSeccompOperator::ScmpCmpMaskedEq => arg.value_two().unwrap_or(0),
        _ => arg.value(),
    };
    ScmpArgCompare::new(arg.index() as u32, op, datum)
}

/// Compiles `seccomp` to a classic BPF program (`struct sock_filter` array).
///
/// Like runc: names libseccomp does not know are skipped, a rule whose action is
/// the default is left out, and a rule with several conditions on the same
/// argument becomes one rule per condition (OR), otherwise one rule (AND).
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<u8>> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).map_err(seccomp_error("create filter".into()))?;
    // No_new_privs is the spec's decision, applied by the runtime, not libseccomp's.
    ctx.set_ctl_nnp(false)
        .map_err(seccomp_error("clear the nnp attribute".into()))?;
    for arch in seccomp.architectures().iter().flatten() {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let Ok(arch) = name.parse::<ScmpArch>() else {
            continue;
        };
        if arch != ScmpArch::native() {
            ctx.add_arch(arch)
                .map_err(seccomp_error(format!("add architecture {name}")))?;
        }
    }
    for rule in seccomp.syscalls().iter().flatten() {
        add_rule(&mut ctx, rule, default)?;
    }
    let mut file = memfd()?;
    ctx.export_bpf(&file)
        .map_err(seccomp_error("export the BPF program".into()))?;
    use std::io::{Read, Seek};
    let mut bpf = Vec::new();
    file.seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bpf))
        .at("read the compiled seccomp program", "memfd:seccomp-bpf")?;
    Ok(bpf)
}

fn add_rule(ctx: &mut ScmpFilterContext, rule: &LinuxSyscall, default: ScmpAction) -> Result<()> {
    let act = action(rule.action(), rule.errno_ret());
    if act == default {
        return Ok(());
    }
    let conds: Vec<ScmpArgCompare> = rule.args().iter().flatten().map(compare).collect();
    let mut indices: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
    indices.sort_unstable();
    let same_arg_twice = indices.windows(2).any(|w| w[0] == w[1]);
    for name in rule.names() {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            continue;
        };
        let what = || format!("rule for {name}");
        if conds.is_empty() {
            ctx.add_rule(act, syscall).map_err(seccomp_error(what()))?;
        } else if same_arg_twice {
            for c in &conds {
                ctx.add_rule_conditional(act, syscall, std::slice::from_ref(c))
                    .map_err(seccomp_error(what()))?;
            }
        } else {
            ctx.add_rule_conditional(act, syscall, &conds)
                .map_err(seccomp_error(what()))?;
        }
    }
    Ok(())
}

fn memfd() -> Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: the name is a NUL-terminated literal; flags are plain integers.
    let fd = unsafe { libc::memfd_create(c"seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::last_os("memfd_create"));
    }
    // SAFETY: `fd` was just returned by memfd_create and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// The compiled program of `seccomp`, from the store's cache `dir` when this
/// exact spec was compiled before (by this libseccomp), else compiled and cached.
pub fn compiled(dir: &Path, seccomp: &LinuxSeccomp) -> Result<Vec<u8>> {
    let path = cache_path(dir, seccomp)?;
    if let Ok(bpf) = std::fs::read(&path)
        && !bpf.is_empty()
        && bpf.len().is_multiple_of(8)
    {
        return Ok(bpf);
    }
    let bpf = compile(seccomp)?;
    std::fs::create_dir_all(dir).at("create directory", dir)?;
    super::state::write_atomic(&path, &bpf)?;
    Ok(bpf)
}

fn cache_path(dir: &Path, seccomp: &LinuxSeccomp) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(seccomp).map_err(|source| Error::Encode {
        what: "seccomp profile".into(),
        source,
    })?;
    let v = libseccomp::ScmpVersion::current().map_err(seccomp_error("version".into()))?;
    let mut h = Sha256::new();
    h.update(&json);
    h.update(v.to_string().as_bytes());
    Ok(dir.join(format!("{}.bpf", super::hex(&h.finalize()))))
}

/// The seccomp(2) flags the spec asks for.
pub fn filter_flags(seccomp: &LinuxSeccomp) -> libc::c_ulong {
    seccomp
        .flags()
        .iter()
        .flatten()
        .map(|f| match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 1 << 5,
        })
        .fold(0, |a, b| a | b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::capabilities::DOCKER_DEFAULT;

    fn profile() -> Profile {
        serde_json::from_str(include_str!(
            "../../../tests/fixtures/seccomp/containers-common.json"
        ))
        .unwrap()
    }

    fn rules_for<'a>(s: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn default_caps_block_what_docker_blocks() {
        let caps: Capabilities = DOCKER_DEFAULT.iter().copied().collect();
        let s = profile()
            .resolve_for(&caps, ("amd64", "SCMP_ARCH_X86_64"), Some((6, 18)))
            .unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(38));
        let arches = serde_json::to_value(s.architectures()).unwrap();
        assert_eq!(
            arches,
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
        // bpf: only the EPERM rule applies without CAP_SYS_ADMIN.
        let bpf = rules_for(&s, "bpf");
        assert_eq!(bpf.len(), 1);
        assert_eq!(bpf[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(bpf[0].errno_ret(), Some(1));
        // arch_prctl is amd64's; the arm-only names are left out.
        assert_eq!(rules_for(&s, "arch_prctl").len(), 1);
        assert!(rules_for(&s, "breakpoint").is_empty());
        // personality: allowed for a few argument values only.
        assert!(
            rules_for(&s, "personality")
                .iter()
                .all(|r| r.args().is_some())
        );
        let bpf = compile(&s).unwrap();
        assert!(!bpf.is_empty() && bpf.len().is_multiple_of(8));
    }

    #[test]
    fn sys_admin_lifts_its_rules() {
        let mut caps: Capabilities = DOCKER_DEFAULT.iter().copied().collect();
        caps.insert(oci_spec::runtime::Capability::SysAdmin);
        let s = profile()
            .resolve_for(&caps, ("amd64", "SCMP_ARCH_X86_64"), Some((6, 18)))
            .unwrap();
        let bpf = rules_for(&s, "bpf");
        assert_eq!(bpf.len(), 1);
        assert_eq!(bpf[0].action(), LinuxSeccompAction::ScmpActAllow);
    }

    #[test]
    fn a_missing_default_profile_refuses_naming_the_package() {
        let err = Profile::load_default_from(Path::new("/nonexistent/seccomp.json")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(PROFILE_PACKAGE) && !msg.contains('\n'),
            "{msg}"
        );
    }

    #[test]
    fn the_compiled_program_is_cached_per_spec() {
        let caps: Capabilities = DOCKER_DEFAULT.iter().copied().collect();
        let s = profile()
            .resolve_for(&caps, ("amd64", "SCMP_ARCH_X86_64"), Some((6, 18)))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let first = compiled(dir.path(), &s).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(compiled(dir.path(), &s).unwrap(), first);
        // Measured here: compiling Docker's profile with libseccomp takes
        // milliseconds, reading the cached program microseconds.
        let t = std::time::Instant::now();
        compile(&s).unwrap();
        let compile_time = t.elapsed();
        let t = std::time::Instant::now();
        compiled(dir.path(), &s).unwrap();
        let cached_time = t.elapsed();
        eprintln!("seccomp: compile {compile_time:?}, cached {cached_time:?}");
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.44-fc-v857"), Some((6, 18)));
        assert_eq!(kernel_version("4.8"), Some((4, 8)));
        assert_eq!(kernel_version("x"), None);
    }
}
