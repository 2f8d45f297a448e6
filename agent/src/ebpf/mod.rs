//! eBPF exec and mount tracing.
//!
//! - `ebpf/events.bpf.c` (built by `agent/build.rs`) hooks `sched_process_exec`
//!   and the mount family of syscalls and writes records to a ring buffer;
//! - [`events`] is the `#[repr(C)]` mirror of those records and their decoding;
//! - [`loader`] loads and attaches the programs with aya ([`Tracer`]); `reader`
//!   reads the ring buffer from tokio; `collector` puts the tracer's families
//!   into a scrape;
//! - [`attribution`] maps a record's namespace to a container, a namespace or
//!   the host; [`metrics`] counts and encodes them; [`record`] is the event as
//!   the control socket streams it.
//!
//! Wiring in `agent serve` (inside the tokio runtime):
//!
//! ```ignore
//! let lookup: Arc<dyn ContainerLookup> = discovery.clone(); // cgroup path -> container
//! let tracer = Tracer::start_or_warn(TracerConfig::default(), lookup, &[]).await.map(Arc::new);
//! // at scrape time, in the Collector:
//! match &tracer {
//!     Some(t) => t.encode_metrics(&mut encoder)?,
//!     None => Tracer::encode_unavailable(&mut encoder)?,
//! }
//! // the control socket:
//! let listener = server::control::bind(Path::new(server::control::DEFAULT_SOCKET))?;
//! tokio::spawn(server::control::serve(listener, tracer.as_ref().map(|t| t.event_sender())));
//! ```

pub mod attribution;
mod collector;
pub mod events;
#[cfg(test)]
mod header_mirror_tests;
mod hooks;
pub mod loader;
pub mod metrics;
mod oom;
mod reader;
pub mod record;
mod wire;

pub use collector::TracerCollector;
pub use loader::{EbpfError, HooksSummary, MountHook, ProgramStatus, Tracer, TracerConfig};
pub use record::{EventKind, EventRecord};
