//! `agent pull REF`, and `launch --pull`: images from a registry, with a progress
//! display like docker's on a terminal and plain lines elsewhere.

use super::state_dir::StateDir;
use crate::runtime::Paths;
use crate::runtime::image::{
    self,
    pull::{self, LayerState, PullEvent, PullRef, RegistryOptions},
};
use clap::{Args, ValueEnum};
use parking_lot::Mutex;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to reach registries (shared by `pull` and `launch`).
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry HOST[:PORT] to reach over plain HTTP, without TLS (repeatable, or
    /// comma-separated in the variable). Only registries named here are.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        env = "AGENT_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registry: Vec<String>,
    /// CA certificate (PEM) to trust for registries, besides the system's and
    /// /etc/docker/certs.d/HOST[:PORT]/*.crt (repeatable).
    #[arg(long = "tls-ca", value_name = "FILE")]
    tls_ca: Vec<PathBuf>,
    /// Docker's per-registry CA directory: DIR/HOST[:PORT]/*.crt.
    #[arg(long = "certs-dir", value_name = "DIR", default_value = pull::DEFAULT_CERTS_DIR)]
    certs_dir: PathBuf,
    /// Docker-style config.json with registry credentials (default:
    /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json).
    #[arg(
        long = "registry-config",
        value_name = "FILE",
        env = "AGENT_REGISTRY_CONFIG"
    )]
    registry_config: Option<PathBuf>,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure_registry.clone(),
            tls_ca: self.tls_ca.clone(),
            certs_dir: self.certs_dir.clone(),
            auth_config: self.registry_config.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    state: StateDir,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Do not print progress.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Image reference: [REGISTRY/]REPOSITORY[:TAG|@DIGEST].
    reference: String,
}

pub fn run(args: PullArgs) -> anyhow::Result<ExitCode> {
    let paths = args.state.open()?;
    let reference = PullRef::parse(&args.reference)?;
    let rec = pull_with_display(&paths, &reference, &args.registry, args.quiet)?;
    println!("{} {}", reference.name(), rec.id);
    Ok(ExitCode::SUCCESS)
}

fn pull_with_display(
    paths: &Paths,
    reference: &PullRef,
    registry: &RegistryArgs,
    quiet: bool,
) -> anyhow::Result<image::ImageRecord> {
    let display = Arc::new(Mutex::new(Display::new(std::io::stderr().is_terminal())));
    let sink = display.clone();
    let progress: pull::PullProgress = Arc::new(move |event| {
        if !quiet {
            sink.lock().show(event);
        }
    });
    let pulled = pull::pull(paths, reference, &registry.options(), progress);
    display.lock().finish();
    Ok(pulled?)
}

/// When `launch` pulls its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// When the store lacks it and its reference names a registry
    /// (host.domain/…, host:port/…, localhost/…).
    Missing,
    /// Every time (fetching only layers the store lacks).
    Always,
    /// Never: the image must be in the store.
    Never,
}

/// `launch`'s pull options.
#[derive(Debug, Clone, Args)]
pub struct LaunchPull {
    /// Pull the image: missing, always or never.
    #[arg(long = "pull", value_name = "WHEN", default_value = "missing")]
    policy: PullPolicy,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl LaunchPull {
    /// Pulls `image` when the policy says so. Runs before `launch` forks; the pull's
    /// threads are gone when it returns.
    pub fn ensure(&self, paths: &Paths, image: &str) -> anyhow::Result<()> {
        let pull = match self.policy {
            PullPolicy::Never => false,
            PullPolicy::Always => true,
            PullPolicy::Missing => {
                PullRef::names_registry(image)
                    && matches!(
                        image::resolve(paths, image),
                        Err(crate::runtime::Error::NoSuchImage { .. })
                    )
            }
        };
        if pull {
            pull_with_display(paths, &PullRef::parse(image)?, &self.registry, false)?;
        }
        Ok(())
    }
}

/// Progress on stderr: on a terminal, one line per layer redrawn in place (at most
/// ten times a second); elsewhere, one line per change of a layer's state.
struct Display {
    tty: bool,
    layers: Vec<String>,
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Display {
    fn new(tty: bool) -> Self {
        Display {
            tty,
            layers: Vec::new(),
            drawn: 0,
            last_draw: None,
        }
    }

    fn show(&mut self, event: PullEvent) {
        match event {
            PullEvent::Note(line) => {
                self.clear();
                eprintln!("{line}");
                self.redraw();
            }
            PullEvent::Layer {
                index,
                count,
                digest,
                state,
            } => {
                if self.layers.len() < count {
                    self.layers.resize(count, String::new());
                }
                let short = digest
                    .strip_prefix("sha256:")
                    .unwrap_or(&digest)
                    .chars()
                    .take(12)
                    .collect::<String>();
                let line = format!("{short}: {}", describe(state));
                let Some(slot) = self.layers.get_mut(index) else {
                    return;
                };
                *slot = line;
                if !self.tty {
                    // Plain lines: no bar, and a download only when it starts.
                    match state {
                        LayerState::Downloading { done: 0, total } => eprintln!(
                            "layer {}/{count} {short}: downloading {:.1} MiB",
                            index + 1,
                            total as f64 / (1024.0 * 1024.0)
                        ),
                        LayerState::Downloading { .. } => {}
                        _ => eprintln!("layer {}/{count} {}", index + 1, self.layers[index]),
                    }
                    return;
                }
                let due = self
                    .last_draw
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
                if due || !matches!(state, LayerState::Downloading { .. }) {
                    self.redraw();
                }
            }
        }
    }

    /// Moves back over the layer lines drawn last (terminal only).
    fn clear(&mut self) {
        if self.tty && self.drawn > 0 {
            eprint!("\x1b[{}F\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn redraw(&mut self) {
        if !self.tty || self.layers.is_empty() {
            return;
        }
        let mut out = std::io::stderr().lock();
        let mut text = String::new();
        if self.drawn > 0 {
            text.push_str(&format!("\x1b[{}F", self.drawn));
        }
        for line in &self.layers {
            text.push_str("\x1b[2K");
            text.push_str(line);
            text.push('\n');
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.drawn = self.layers.len();
        self.last_draw = Some(Instant::now());
    }

    fn finish(&mut self) {
        self.redraw();
    }
}

fn describe(state: LayerState) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    match state {
        LayerState::Present => "already present".into(),
        LayerState::Waiting => "waiting".into(),
        LayerState::Downloading { done, total } => {
            const WIDTH: u64 = 30;
            let filled = (done.min(total) * WIDTH)
                .checked_div(total)
                .unwrap_or(WIDTH) as usize;
            format!(
                "downloading [{}>{}] {:.1}/{:.1} MiB",
                "=".repeat(filled),
                " ".repeat(WIDTH as usize - filled),
                mib(done),
                mib(total)
            )
        }
        LayerState::Unpacked => "unpacked".into(),
        LayerState::Done => "pull complete".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_read_like_dockers() {
        assert_eq!(describe(LayerState::Present), "already present");
        let half = describe(LayerState::Downloading {
            done: 1 << 20,
            total: 2 << 20,
        });
        assert!(
            half.starts_with("downloading [===============>  "),
            "{half}"
        );
        assert!(half.ends_with("1.0/2.0 MiB"), "{half}");
        // An empty blob is complete, not a division by zero.
        let empty = describe(LayerState::Downloading { done: 0, total: 0 });
        assert!(empty.contains(&"=".repeat(30)), "{empty}");
    }
}
