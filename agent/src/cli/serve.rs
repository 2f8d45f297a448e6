//! `agent serve`: the node daemon.

use crate::cgroup::{Filter, Hierarchy, MetadataSource, Tracker};
use crate::metrics::Exporter;
use crate::server::{self, ServerState};
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
    /// The agent's state root (containers started by `agent launch`).
    #[arg(long, env = "AGENT_STATE_DIR", default_value = "/var/lib/agent")]
    pub state_dir: PathBuf,
    /// Rescan the cgroup tree for new and removed cgroups at most this often
    /// (e.g. `500ms`, `2s`); scans happen at scrape time.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub rescan_interval: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 500ms, 2s, 1m)"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 86_400.0 {
        return Err(format!("{s:?} is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(v * scale))
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

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    raise_nofile_limit();
    let hierarchy = Hierarchy::detect(&args.cgroup_root).context("detecting cgroups")?;
    let filter = Filter::new(&args.include, &args.exclude)?;
    let tracker = Tracker::new(
        hierarchy.clone(),
        filter,
        MetadataSource {
            docker_root: args.docker_root.clone(),
            state_dir: args.state_dir.clone(),
        },
        args.rescan_interval,
    );
    let registry = Registry::default();
    let exporter = Exporter::new(tracker, registry);
    exporter.refresh();
    let state = Arc::new(ServerState::new(exporter));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            listen = %addr,
            cgroup_root = %hierarchy.root().display(),
            cgroup_version = %hierarchy.version(),
            "serving /metrics"
        );
        server::serve(listener, state, shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("NaNs").is_err());
    }
}
