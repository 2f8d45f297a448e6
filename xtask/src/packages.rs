//! The system packages the agent and its tests need, checked and installed in one place.

use anyhow::{Context, bail};
use std::path::Path;
use std::process::Command;

/// (file that proves the package is installed, Debian package, what needs it).
pub const PACKAGES: &[(&str, &str, &str)] = &[
    (
        "/usr/bin/prometheus",
        "prometheus",
        "end-to-end tests (a real Prometheus server)",
    ),
    ("/usr/bin/promtool", "prometheus", "alert rule tests"),
    (
        "/usr/bin/openssl",
        "openssl",
        "certificates for the web config (TLS) tests",
    ),
    (
        "/usr/bin/curl",
        "curl",
        "HTTPS requests in the web config tests",
    ),
    (
        "/usr/bin/clang-19",
        "clang-19",
        "building the eBPF programs",
    ),
    (
        "/usr/bin/llvm-strip-19",
        "llvm-19",
        "building the eBPF programs",
    ),
    (
        "/usr/include/bpf/bpf_helpers.h",
        "libbpf-dev",
        "eBPF program headers",
    ),
    (
        "/bin/busybox",
        "busybox-static",
        "test images and exec benchmarks",
    ),
    ("/usr/sbin/runc", "runc", "the launch benchmark baseline"),
    ("/usr/bin/umoci", "umoci", "building OCI test images"),
    (
        "/usr/bin/skopeo",
        "skopeo",
        "pushing test images to a registry; the pull benchmark baseline",
    ),
    (
        "/usr/bin/docker-registry",
        "docker-registry",
        "a real OCI distribution registry for the pull tests and benchmark",
    ),
    (
        "/usr/sbin/dockerd",
        "docker.io",
        "a real third-party runtime for discovery tests",
    ),
    (
        "/usr/bin/ctr",
        "containerd",
        "a real containerd that imports the agent's image (ctr images import)",
    ),
    (
        "/usr/bin/kubectl",
        "kubernetes-client",
        "building the kustomize base (kubectl kustomize) in the deploy test",
    ),
    (
        "/usr/bin/qemu-system-x86_64",
        "qemu-system-x86",
        "the VM test rig (cargo xtask vm-test)",
    ),
    ("/usr/bin/cpio", "cpio", "the VM test rig's initramfs"),
    (
        "/usr/sbin/depmod",
        "kmod",
        "the VM test rig's kernel modules",
    ),
    ("/usr/bin/strip", "binutils", "the VM test rig's initramfs"),
    (
        "/usr/include/seccomp.h",
        "libseccomp-dev",
        "building the agent (seccomp filters through libseccomp)",
    ),
    (
        "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json",
        "golang-github-docker-docker-dev",
        "Docker's default seccomp profile, which every launch loads",
    ),
    (
        "/usr/share/containers/seccomp.json",
        "golang-github-containers-common",
        "podman's seccomp profile (the confinement comparison test)",
    ),
    (
        "/usr/bin/podman",
        "podman",
        "the seccomp comparison test and podman's naming test (a real runtime)",
    ),
    (
        "/usr/bin/protoc",
        "protobuf-compiler",
        "building the agent (containerd's API client is generated from its protos)",
    ),
    (
        "/usr/bin/containerd",
        "containerd",
        "the containerd and Kubernetes CRI naming tests (a real containerd)",
    ),
    (
        "/usr/bin/chromium",
        "chromium",
        "the web UI test (a real browser, headless)",
    ),
    (
        "/usr/bin/cc",
        "gcc",
        "the static syscall probe of the confinement tests",
    ),
    (
        "/usr/lib/x86_64-linux-gnu/libc.a",
        "libc6-dev",
        "the static syscall probe of the confinement tests",
    ),
];

/// The packages `serve` itself needs at run time (none beyond the kernel) and at
/// build time (the eBPF toolchain, libseccomp, protoc for containerd's API client).
pub const SERVE_PACKAGES: &[&str] = &[
    "clang-19",
    "llvm-19",
    "libbpf-dev",
    "libseccomp-dev",
    "protobuf-compiler",
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs whichever of `wanted` (Debian package names) are missing, when root;
/// otherwise fails naming exactly what is missing and the command that installs it.
pub fn ensure(wanted: &[&str]) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(file, pkg, _)| wanted.contains(pkg) && !Path::new(file).exists())
        .map(|(_, pkg, _)| *pkg)
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        let why: Vec<String> = PACKAGES
            .iter()
            .filter(|(_, p, _)| missing.contains(p))
            .map(|(_, p, what)| format!("{p} ({what})"))
            .collect();
        bail!(
            "missing system packages: {}; install them with: sudo apt-get install -y {}",
            why.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    // An install that was killed half-way leaves dpkg asking for this first.
    let _ = Command::new("dpkg")
        .arg("--configure")
        .arg("-a")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    let status = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=300"])
        .arg("update")
        .arg("-q")
        .status()
        .context("running apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed");
    }
    // Another apt may hold the lock for a while; wait for it rather than fail.
    let status = Command::new("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=300"])
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}

/// Every package of [`PACKAGES`].
pub fn all() -> Vec<&'static str> {
    let mut v: Vec<&str> = PACKAGES.iter().map(|(_, p, _)| *p).collect();
    v.dedup();
    v
}

/// PyPI's kubernetes-validate (it bundles the Kubernetes OpenAPI schemas), which the
/// deploy test runs: installed with pip into a venv under `target/tools/venv`, not
/// into the system's Python.
pub fn ensure_kubernetes_validate(workspace: &Path) -> anyhow::Result<()> {
    let venv = workspace.join("target/tools/venv");
    if venv.join("bin/kubernetes-validate").is_file() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing kubernetes-validate into {}",
        venv.display()
    );
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("running python3 -m venv (Debian package python3-venv)")?;
    if !status.success() {
        bail!(
            "python3 -m venv {} failed (apt-get install python3-venv)",
            venv.display()
        );
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "kubernetes-validate==1.37.0"])
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip install kubernetes-validate failed");
    }
    Ok(())
}
