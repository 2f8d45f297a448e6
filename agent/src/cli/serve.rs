//! `agent serve`: the node daemon.

use crate::cgroup::{Filter, Hierarchy, MetricGroup, MetricGroups, NsView};
use crate::container::{MetadataSource, Tracker};
use crate::ebpf::{Tracer, TracerCollector, TracerConfig};
use crate::machine::{MachineFacts, privileges};
use crate::metrics::{ExportOptions, Exporter, LabelKeys, LaunchedCollector};
use crate::server::connections::Limits;
use crate::server::ui::{self, Ui, history::History};
use crate::server::web_config::WebConfig;
use crate::server::{self, ServerState, control};
use anyhow::Context;
use clap::{Args, ValueEnum};
use prometheus_client::registry::Registry;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for /metrics and /healthz.
    #[arg(long, env = "AGENT_LISTEN", default_value = "0.0.0.0:9810")]
    pub listen: SocketAddr,
    /// Where the cgroup filesystems are mounted.
    #[arg(long, env = "AGENT_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Also track cgroups whose path matches this glob (`*` within a path component,
    /// `**` across them), e.g. `/batch/*`. Repeatable.
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never track cgroups whose path matches this glob. Repeatable; wins over include.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Docker's data root, for container names and images.
    #[arg(long, env = "AGENT_DOCKER_ROOT", default_value = "/var/lib/docker")]
    pub docker_root: PathBuf,
    /// containerd's state directory (its `state`, where the shims' bundles say
    /// which cgroup each container has), for containers of every containerd
    /// namespace, Kubernetes' included.
    #[arg(
        long,
        env = "AGENT_CONTAINERD_STATE",
        default_value = "/run/containerd"
    )]
    pub containerd_state: PathBuf,
    /// containerd's API socket, asked once per new container for its name,
    /// image and labels (in the background, never at scrape time).
    #[arg(
        long,
        env = "AGENT_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_socket: PathBuf,
    /// podman's storage root (rootful podman), for its containers' names and images.
    #[arg(
        long,
        env = "AGENT_PODMAN_ROOT",
        default_value = "/var/lib/containers/storage"
    )]
    pub podman_root: PathBuf,
    /// The agent's state root (containers started by `agent launch`).
    #[arg(long, env = "AGENT_STATE_DIR", default_value = "/var/lib/agent")]
    pub state_dir: PathBuf,
    /// Rescan the cgroup tree for new and removed cgroups at most this often
    /// (e.g. `500ms`, `2s`); scans happen at scrape time.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub rescan_interval: Duration,
    /// Metric groups not to export (comma-separated), like cAdvisor's
    /// --disable_metrics: their families are left out and their cgroup files never
    /// opened. Default: every group is on (each costs a file read or two per
    /// cgroup).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "GROUP")]
    pub disable_metrics: Vec<MetricGroup>,
    /// Container labels to copy onto every container series as
    /// container_label_<key> (comma-separated keys, or `all`), like cAdvisor's
    /// --whitelisted_container_labels. Default: none; agent_container_info carries
    /// every label on one series.
    #[arg(long, value_delimiter = ',', value_name = "KEY", value_parser = label_key)]
    pub container_labels: Vec<String>,
    /// Environment variables of each container to copy onto every container series
    /// as container_env_<name> (comma-separated names; no `all`: environments hold
    /// secrets). Default: none, and no other variable is kept in memory.
    #[arg(long, value_delimiter = ',', value_name = "NAME", value_parser = env_name)]
    pub container_env: Vec<String>,
    /// Walk each container's writable layer for container_fs_usage_bytes at most
    /// this often (e.g. `30s`, `2m`); a layer found unchanged is walked up to 8
    /// times less often. Off the scrape path: scrapes export the last result.
    #[arg(long, default_value = "1m", value_parser = parse_positive_duration)]
    pub fs_usage_interval: Duration,
    /// Cgroup and network stat files kept open between scrapes, at most (within
    /// the open-files limit too). Reading a kept file costs the kernel about half
    /// of opening, reading and closing it at each scrape, but it holds ~3.5 KiB
    /// of kernel memory (its seq_file page) that counts toward the agent's own
    /// memory limit: 16384 files are ~56 MiB, 1,000 cgroups' worth with every
    /// group on.
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub max_open_stat_files: usize,
    /// Do not load the eBPF exec and mount tracing (cgroup metrics only).
    #[arg(long)]
    pub no_ebpf: bool,
    /// Trace exec only, not the mount family. The mount hook runs on every syscall
    /// of every process (about 100 ns each on this project's test host).
    #[arg(long)]
    pub no_trace_mounts: bool,
    /// Do not trace process exits (`agent events --type exit`,
    /// agent_process_exits_total). The exit hook runs once per exiting thread.
    #[arg(long)]
    pub no_trace_exits: bool,
    /// Also write every traced event as a JSON line to this file (created 0600),
    /// for log shippers; rotated by size.
    #[arg(long, value_name = "PATH")]
    pub events_file: Option<PathBuf>,
    /// Rotate the events file before it would pass this size (PATH.1, PATH.2, …).
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "100Mi",
        requires = "events_file"
    )]
    pub events_file_max_bytes: crate::runtime::units::ByteSize,
    /// Rotated events files to keep.
    #[arg(long, value_name = "N", default_value_t = 5, requires = "events_file")]
    pub events_file_keep: u32,
    /// Keep each exec's argv in the events file (it can hold secrets; off by default).
    #[arg(long, requires = "events_file")]
    pub events_file_argv: bool,
    /// The root-only unix socket for `agent events`.
    #[arg(long, env = "AGENT_CONTROL_SOCKET", default_value = crate::server::control::DEFAULT_SOCKET)]
    pub control_socket: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A web config file in the Prometheus exporters' format: TLS
    /// (`tls_server_config`) and basic auth (`basic_auth_users`, bcrypt hashes).
    #[arg(
        long = "web.config.file",
        env = "AGENT_WEB_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub web_config_file: Option<PathBuf>,
    /// Most client connections open at once. At the cap a new connection is still
    /// served: the connection idle the longest is closed to make room.
    #[arg(long = "web.max-connections", default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Close a connection that has had no request for this long.
    #[arg(long = "web.idle-timeout", default_value = "2m", value_name = "DUR",
          value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,
    /// Close a connection whose request headers take longer than this from their first
    /// byte, or, on a new connection, from connecting (TLS handshake included).
    #[arg(long = "web.read-header-timeout", default_value = "10s", value_name = "DUR",
          value_parser = parse_positive_duration)]
    pub read_header_timeout: Duration,
    /// Do not serve the web UI (the container table on /, container pages, the
    /// live event feed) and keep no history for it; / is then a page of links.
    #[arg(long = "no-web-ui")]
    pub no_web_ui: bool,
}

impl ServeArgs {
    /// The flags in effect, for the web UI's landing page (the web config's path,
    /// never its content).
    pub fn flags_in_effect(&self) -> Vec<(String, String)> {
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_owned()
            } else {
                v.join(",")
            }
        };
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("(none)".to_owned(), |p| p.display().to_string())
        };
        vec![
            ("--listen".into(), self.listen.to_string()),
            (
                "--cgroup-root".into(),
                self.cgroup_root.display().to_string(),
            ),
            ("--include".into(), list(&self.include)),
            ("--exclude".into(), list(&self.exclude)),
            (
                "--docker-root".into(),
                self.docker_root.display().to_string(),
            ),
            ("--state-dir".into(), self.state_dir.display().to_string()),
            (
                "--rescan-interval".into(),
                format!("{:?}", self.rescan_interval),
            ),
            (
                "--disable-metrics".into(),
                if self.disable_metrics.is_empty() {
                    "(none)".to_owned()
                } else {
                    self.disable_metrics
                        .iter()
                        .filter_map(|g| g.to_possible_value().map(|v| v.get_name().to_owned()))
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ),
            ("--container-labels".into(), list(&self.container_labels)),
            ("--container-env".into(), list(&self.container_env)),
            (
                "--max-open-stat-files".into(),
                self.max_open_stat_files.to_string(),
            ),
            ("--no-ebpf".into(), self.no_ebpf.to_string()),
            ("--no-trace-mounts".into(), self.no_trace_mounts.to_string()),
            (
                "--control-socket".into(),
                self.control_socket.display().to_string(),
            ),
            ("--web.config.file".into(), path(&self.web_config_file)),
            (
                "--web.max-connections".into(),
                self.max_connections.to_string(),
            ),
            (
                "--web.idle-timeout".into(),
                format!("{:?}", self.idle_timeout),
            ),
            (
                "--web.read-header-timeout".into(),
                format!("{:?}", self.read_header_timeout),
            ),
        ]
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A container label key for `--container-labels`: not empty.
fn label_key(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("a label key cannot be empty".into());
    }
    Ok(s.to_string())
}

/// An environment variable name for `--container-env`: not empty, no `=`.
fn env_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('=') || s.chars().any(char::is_whitespace) {
        return Err(format!(
            "{s:?} is not an environment variable name (no '=', no spaces)"
        ));
    }
    Ok(s.to_string())
}

/// Parses `250ms`, `2s`, `1m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 2s, 1m, 1h)"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 86_400.0 {
        return Err(format!("{s:?} is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Like [`parse_duration`], but zero is refused.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} must be more than 0")),
        d => Ok(d),
    }
}

/// Sets up `tracing` for the daemon: human text by default, JSON lines on request;
/// the level comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Every tracked cgroup keeps ~15 files open; make room for thousands of cgroups.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Stat calls per second the writable-layer walker may make, at most (about a
/// tenth of a core here; see `cargo xtask bench fs-usage`).
const FS_USAGE_STATS_PER_SEC: u64 = 100_000;

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Each thread that allocates would get its own glibc arena, each keeping its
    // freed scrape buffers; two arenas bound the resident size of the daemon.
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    // The exposition (megabytes at 1000 cgroups) and its gzip copy are freed after
    // each response. By default glibc raises its mmap threshold to the size of a
    // freed mapping, so from the second scrape on they came from the heap, which
    // kept them between scrapes; a fixed threshold keeps them mapped, returned to
    // the kernel when freed. At 1 MiB rather than lower, the scrape's smaller
    // buffers (per-cgroup readings, ~0.5 MiB at 1000) stay in the heap: mapping
    // them afresh cost ~6 ms of page faults per scrape at 256 KiB.
    // SAFETY: as above.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024) };
    init_logging(args.log_format);
    raise_nofile_limit();
    let web = match &args.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    let limits = Limits {
        max_connections: args.max_connections as usize,
        idle_timeout: args.idle_timeout,
        header_read_timeout: args.read_header_timeout,
    };
    let hierarchy = Hierarchy::detect(&args.cgroup_root).context("detecting cgroups")?;
    let filter = Filter::new(&args.include, &args.exclude)?;
    let groups = MetricGroups::without(&args.disable_metrics);
    let mut tracker = Tracker::new(
        hierarchy.clone(),
        filter,
        MetadataSource {
            env_keys: args.container_env.clone(),
            ..MetadataSource::new(&args.docker_root, &args.state_dir)
        }
        .with_containerd(&args.containerd_state, &args.containerd_socket)
        .with_podman(&args.podman_root),
        args.rescan_interval,
    )
    .with_groups(groups)
    .with_max_kept_files(args.max_open_stat_files)
    .with_layer_usage(args.fs_usage_interval, FS_USAGE_STATS_PER_SEC);
    let export = ExportOptions {
        groups,
        container_labels: LabelKeys::from_keys(&args.container_labels),
        machine: MachineFacts::read(std::path::Path::new("/")),
        sys_root: PathBuf::from("/sys"),
    };
    tracker.refresh(true);
    let index = tracker.container_index();
    let flags = args.flags_in_effect();
    let machine = export.machine.clone();
    // Run in a container, the agent may stand in a cgroup namespace of its own, and
    // lack a capability or a mount: found now, said once in the start-up line.
    let proc_root = std::path::Path::new("/proc");
    let ns_view = NsView::detect(&hierarchy, proc_root, std::process::id());
    let missing = privileges::check(proc_root, &ns_view, !args.no_ebpf);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal();
        let listener = server::bind(args.listen)
            .with_context(|| format!("listening on {}", args.listen))?;
        let tracer = if args.no_ebpf {
            let (warn, line) =
                privileges::startup_line(&privileges::Tracing::Disabled, &missing, &ns_view);
            if warn {
                tracing::warn!("{line}");
            } else {
                tracing::info!("{line}");
            }
            None
        } else {
            let config = TracerConfig {
                trace_mounts: !args.no_trace_mounts,
                ns_view: ns_view.clone(),
                trace_exits: !args.no_trace_exits,
                ..TracerConfig::default()
            };
            Tracer::start_or_warn(config, index, &missing)
                .await
                .map(Arc::new)
        };
        if let Some(path) = &args.events_file {
            match &tracer {
                Some(t) => {
                    let config = server::events_file::EventsFileConfig {
                        path: path.clone(),
                        max_bytes: args.events_file_max_bytes.0,
                        keep: args.events_file_keep,
                        argv: args.events_file_argv,
                    };
                    server::events_file::spawn(config, t.subscribe()).map_err(|e| {
                        anyhow::anyhow!(crate::ebpf::loader::error_chain(&e))
                    })?;
                    tracing::info!(path = %path.display(), "writing events to a file");
                }
                None => tracing::warn!(
                    path = %path.display(),
                    "eBPF tracing is off: the events file stays empty"
                ),
            }
        }
        // Loading parsed the kernel's BTF (megabytes, now freed); hand the freed
        // heap back to the system so the daemon's resident size stays small.
        server::release_free_heap();
        let control = match control::bind(&args.control_socket) {
            Ok(l) => {
                tokio::spawn(control::serve(l, tracer.as_ref().map(|t| t.event_sender())));
                Some(args.control_socket.clone())
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no control socket; `agent events` will not connect");
                None
            }
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(TracerCollector(tracer.clone())));
        registry.register_collector(Box::new(LaunchedCollector::new(args.state_dir.clone())));
        let mut exporter = Exporter::new(tracker, registry, export);
        let history = (!args.no_web_ui).then(|| Arc::new(History::default()));
        if let Some(h) = &history {
            exporter = exporter.with_sink(h.clone());
        }
        let mut state = ServerState::new(exporter);
        if let Some(h) = &history {
            let events = tracer.as_ref().map(|t| t.event_sender());
            let oom_traced = tracer.as_ref().is_some_and(|t| t.traces_oom_kills());
            state = state.with_ui(Ui::new(
                h.clone(),
                events,
                oom_traced,
                args.state_dir.clone(),
                &machine,
                flags,
            ));
        }
        let state = Arc::new(state);
        tokio::spawn(rescan_in_background(state.clone(), args.rescan_interval));
        if let Some(h) = history {
            tokio::spawn(ui::sample_when_idle(state.clone(), h));
        }

        let addr = listener.local_addr()?;
        tracing::info!(
            listen = %addr,
            cgroup_root = %hierarchy.root().display(),
            cgroup_version = %hierarchy.version(),
            web = web.describe(),
            max_connections = limits.max_connections,
            "serving /metrics"
        );
        server::serve(listener, state, Arc::new(web), limits, shutdown).await;
        if let Some(path) = control {
            let _ = std::fs::remove_file(path);
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Keeps the container index fresh for the event path between scrapes, so a new
/// container's events carry its name even when nobody scrapes for a while.
async fn rescan_in_background(state: Arc<ServerState>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !state.refresh_wanted() {
            continue;
        }
        let st = state.clone();
        if tokio::task::spawn_blocking(move || st.refresh())
            .await
            .is_err()
        {
            tracing::error!("background rescan panicked");
        }
    }
}

/// Installs the SIGTERM/SIGINT handlers now (so a signal that arrives before the
/// first poll is not fatal) and returns a future that completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ServeArgs, env_name, label_key, parse_duration};
    use crate::cgroup::MetricGroup;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn groups_labels_and_env_lists() {
        let cli = Cli::try_parse_from([
            "serve",
            "--disable-metrics",
            "disk,pressure",
            "--disable-metrics",
            "fs",
            "--container-labels",
            "tier,com.example.team",
            "--container-env",
            "LANG",
        ])
        .unwrap();
        assert_eq!(
            cli.serve.disable_metrics,
            [MetricGroup::Disk, MetricGroup::Pressure, MetricGroup::Fs]
        );
        assert_eq!(cli.serve.container_labels, ["tier", "com.example.team"]);
        assert_eq!(cli.serve.container_env, ["LANG"]);
        let defaults = Cli::try_parse_from(["serve"]).unwrap().serve;
        assert!(defaults.disable_metrics.is_empty() && defaults.container_labels.is_empty());
        assert!(
            defaults.container_env.is_empty(),
            "no environment by default"
        );
        assert!(Cli::try_parse_from(["serve", "--disable-metrics", "cpu,bogus"]).is_err());
        assert!(label_key("").is_err() && env_name("A=B").is_err() && env_name("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("25h").is_err());
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("NaNs").is_err());
    }
}
