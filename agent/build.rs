//! Compiles the C eBPF programs in `../ebpf` into `$OUT_DIR/events.bpf.o`.
//!
//! Uses `clang-19 -target bpf -g -O2` (the `CLANG` environment variable
//! overrides the compiler) against the libbpf-dev headers. A missing clang is
//! a hard error: an agent without its eBPF programs is never built silently.
//! `AGENT_EBPF_STUB=1` allows an empty stub object instead (for `cargo check`
//! or clippy on a machine without clang); the loader then says the programs
//! were not built, and the build script runs again on every build until clang
//! is there. A clang that is present but fails is a hard error too.

use std::env;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: &[&str] = &["events"];
/// Debian's clang-19 (package clang-19), which `cargo xtask` installs.
const DEBIAN_CLANG: &str = "/usr/bin/clang-19";

/// Set to 1 to allow a build without clang, with an empty eBPF object.
const STUB_ENV: &str = "AGENT_EBPF_STUB";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest.join("..").join("ebpf");
    let include = ebpf_dir.join("include");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed={STUB_ENV}");
    println!("cargo:rerun-if-changed={}", include.display());
    for entry in std::fs::read_dir(&include)
        .expect("read ebpf/include")
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }

    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // The mount hooks decode x86_64 syscall numbers and registers.
    let (target_arch_define, multiarch) = match arch.as_str() {
        "x86_64" => ("__TARGET_ARCH_x86", "x86_64-linux-gnu"),
        other => {
            println!("cargo:warning=eBPF programs are not built for target arch {other:?}");
            for name in PROGRAMS {
                write_stub(&out_dir, name);
            }
            return;
        }
    };

    // clang-19 on PATH, else where Debian's clang-19 puts it: the file `cargo xtask`
    // checks before it installs the package, so the two agree when PATH lacks it.
    let clang = env::var("CLANG").unwrap_or_else(|_| {
        let on_path = env::var_os("PATH")
            .is_some_and(|p| env::split_paths(&p).any(|d| d.join("clang-19").is_file()));
        if on_path || !Path::new(DEBIAN_CLANG).is_file() {
            "clang-19".to_owned()
        } else {
            DEBIAN_CLANG.to_owned()
        }
    });
    for name in PROGRAMS {
        let src = ebpf_dir.join(format!("{name}.bpf.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        let out = out_dir.join(format!("{name}.bpf.o"));
        let result = Command::new(&clang)
            .args(["-target", "bpf", "-g", "-O2", "-Wall", "-Werror"])
            .arg(format!("-D{target_arch_define}"))
            .arg("-I")
            .arg(&include)
            .arg("-I")
            .arg(format!("/usr/include/{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .status();
        match result {
            Ok(status) if status.success() => {}
            Ok(status) => panic!("{clang} failed on {} ({status})", src.display()),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                if env::var(STUB_ENV).as_deref() != Ok("1") {
                    panic!(
                        "{clang} not found, so the agent's eBPF programs cannot be built. \
                         Install clang-19, llvm-19 and libbpf-dev (`cargo xtask run` and \
                         `cargo xtask test` install them), set CLANG to another clang, or \
                         set {STUB_ENV}=1 to build an agent without eBPF."
                    );
                }
                println!(
                    "cargo:warning={clang} not found: eBPF programs replaced by a stub ({STUB_ENV}=1)"
                );
                write_stub(&out_dir, name);
                // A path that never exists keeps this script rerunning on every
                // build, so the stub is replaced as soon as clang is installed.
                println!(
                    "cargo:rerun-if-changed={}",
                    out_dir.join("stub-until-clang-is-installed").display()
                );
            }
            Err(err) => panic!("cannot run {clang}: {err}"),
        }
    }
}

fn write_stub(out_dir: &Path, name: &str) {
    std::fs::write(out_dir.join(format!("{name}.bpf.o")), b"").expect("write stub object");
}
