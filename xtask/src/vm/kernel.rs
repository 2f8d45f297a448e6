//! The guest kernel: Debian's `linux-image-cloud-amd64`, fetched with `apt-get download`
//! and unpacked with `dpkg-deb -x` into a cache under `target/` (never installed into
//! the host's `/boot`), plus the modules the guest loads from it.

use anyhow::{Context, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian metapackage that names the current cloud kernel.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// An unpacked kernel package.
pub struct Kernel {
    /// e.g. `6.1.0-56-cloud-amd64`
    pub release: String,
    /// The Debian package it came from, with its version.
    pub package: String,
    pub vmlinuz: PathBuf,
    pub config: PathBuf,
    modules: PathBuf,
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The versioned image package the metapackage's candidate depends on, and its version.
fn resolve_package() -> anyhow::Result<(String, String)> {
    let parse = |text: &str| -> Option<(String, String)> {
        // `apt-cache show` prints one stanza per known version, the candidate first.
        let stanza = text.split("\n\n").next()?;
        let version = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))?
            .trim()
            .to_string();
        let depends = stanza.lines().find_map(|l| l.strip_prefix("Depends: "))?;
        let pkg = depends
            .split([',', ' ', '('])
            .find(|w| w.starts_with("linux-image-"))?
            .to_string();
        Some((pkg, version))
    };
    let show =
        || output(Command::new("apt-cache").args(["show", "--no-all-versions", META_PACKAGE]));
    if let Some(found) = show().ok().as_deref().and_then(parse) {
        return Ok(found);
    }
    // No package lists yet (a fresh container): fetch them once and ask again.
    eprintln!("xtask: vm: {META_PACKAGE} unknown to apt; running apt-get update");
    output(Command::new("apt-get").args(["update", "-q"]))?;
    show().ok().as_deref().and_then(parse).with_context(|| {
        format!("apt-cache knows no {META_PACKAGE} (is a Debian bookworm source configured?)")
    })
}

/// Downloads and unpacks the kernel package into `cache` unless already there.
pub fn fetch(cache: &Path) -> anyhow::Result<Kernel> {
    let (pkg, version) = resolve_package()?;
    let dir = cache.join(format!("{pkg}_{version}"));
    let root = dir.join("root");
    let stamp = dir.join(".unpacked");
    if !stamp.exists() {
        eprintln!("xtask: vm: fetching {pkg} {version}");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing the partial {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        output(
            Command::new("apt-get")
                .args(["download", "-q", &format!("{pkg}={version}")])
                .current_dir(&dir),
        )?;
        let deb = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download left no .deb in {}", dir.display()))?;
        output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        std::fs::remove_file(&deb)?;
        let release = release_of(&root)?;
        // The package ships no modules.dep (its postinst runs depmod); make one here.
        output(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
        std::fs::write(&stamp, "")?;
        // Older kernel packages (superseded by a Debian update) are ~100 MB each.
        for old in std::fs::read_dir(cache)?.flatten() {
            if old.path() != dir && old.file_type().is_ok_and(|t| t.is_dir()) {
                eprintln!(
                    "xtask: vm: removing the superseded {}",
                    old.path().display()
                );
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
    }
    let release = release_of(&root)?;
    Ok(Kernel {
        vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
        config: root.join(format!("boot/config-{release}")),
        modules: root.join(format!("lib/modules/{release}")),
        package: format!("{pkg} {version}"),
        release,
    })
}

fn release_of(root: &Path) -> anyhow::Result<String> {
    let modules = root.join("lib/modules");
    std::fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .flatten()
        .find_map(|e| e.file_name().to_str().map(String::from))
        .with_context(|| format!("no kernel release under {}", modules.display()))
}

impl Kernel {
    /// The `.ko` files for `wanted` and everything they depend on, in load order
    /// (dependencies first). Modules built into the kernel are left out.
    pub fn modules_in_load_order(&self, wanted: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let dep_file = self.modules.join("modules.dep");
        let text = std::fs::read_to_string(&dep_file)
            .with_context(|| format!("reading {}", dep_file.display()))?;
        let builtin =
            std::fs::read_to_string(self.modules.join("modules.builtin")).unwrap_or_default();
        let name_of = |path: &str| -> String {
            let file = path.rsplit('/').next().unwrap_or(path);
            file.trim_end_matches(".ko").replace('-', "_")
        };
        let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
        for line in text.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let list = rest.split_whitespace().map(name_of).collect();
            deps.insert(name_of(module), (module.to_string(), list));
        }
        let mut order = Vec::new();
        fn visit(
            m: &str,
            deps: &HashMap<String, (String, Vec<String>)>,
            order: &mut Vec<String>,
            stack: &mut Vec<String>,
        ) -> anyhow::Result<()> {
            if order.iter().any(|o| o == m) {
                return Ok(());
            }
            if stack.iter().any(|s| s == m) {
                bail!("module dependency cycle through {m}");
            }
            let (_, list) = deps
                .get(m)
                .with_context(|| format!("no kernel module {m}"))?;
            stack.push(m.to_string());
            for d in list {
                visit(d, deps, order, stack)?;
            }
            stack.pop();
            order.push(m.to_string());
            Ok(())
        }
        for m in wanted {
            let m = m.replace('-', "_");
            let is_builtin = builtin.lines().any(|l| name_of(l) == m);
            if is_builtin {
                continue;
            }
            visit(&m, &deps, &mut order, &mut Vec::new())?;
        }
        Ok(order
            .into_iter()
            .map(|m| {
                let path = self.modules.join(&deps[&m].0);
                (m, path)
            })
            .collect())
    }

    /// The build options that decide which eBPF hooks can attach, as the package's
    /// config file states them.
    pub fn hook_config(&self) -> anyhow::Result<Vec<String>> {
        const KEYS: &[&str] = &[
            "CONFIG_BPF_SYSCALL",
            "CONFIG_BPF_JIT",
            "CONFIG_DEBUG_INFO_BTF",
            "CONFIG_DEBUG_INFO_BTF_MODULES",
            "CONFIG_BPF_EVENTS",
            "CONFIG_KPROBES",
            "CONFIG_KPROBE_EVENTS",
            "CONFIG_KPROBES_ON_FTRACE",
            "CONFIG_FPROBE",
            "CONFIG_FUNCTION_TRACER",
            "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS",
            "CONFIG_FTRACE_SYSCALLS",
            "CONFIG_BPF_LSM",
            "CONFIG_LSM",
            "CONFIG_SECURITY_LOCKDOWN_LSM",
            "CONFIG_LOCK_DOWN_KERNEL_FORCE_NONE",
            "CONFIG_KALLSYMS_ALL",
            "CONFIG_DEBUG_FS",
        ];
        let text = std::fs::read_to_string(&self.config)
            .with_context(|| format!("reading {}", self.config.display()))?;
        Ok(KEYS
            .iter()
            .map(|k| {
                text.lines()
                    .find(|l| l.starts_with(&format!("{k}=")))
                    .map(String::from)
                    .unwrap_or_else(|| format!("# {k} is not set"))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_come_after_their_dependencies_and_builtins_are_skipped() {
        let dir = std::env::temp_dir().join(format!("xtask-kernel-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/fs/overlayfs/overlay.ko:\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio-pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/fs/fuse/fuse.ko\n").unwrap();
        let k = Kernel {
            release: "test".into(),
            package: "test".into(),
            vmlinuz: dir.join("vmlinuz"),
            config: dir.join("config"),
            modules: dir.clone(),
        };
        let order: Vec<String> = k
            .modules_in_load_order(&["overlay", "virtio_pci", "virtio_blk", "fuse"])
            .unwrap()
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(
            order,
            [
                "overlay",
                "virtio_ring",
                "virtio",
                "virtio_pci",
                "virtio_blk"
            ]
        );
        let err = k.modules_in_load_order(&["nope"]).unwrap_err();
        assert_eq!(err.to_string(), "no kernel module nope");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
