//! The Prometheus exposition: cgroup families named as cAdvisor names them, plus the
//! agent's own `agent_*` families. Everything is read at scrape time.

mod cgroup_families;
mod collector;

pub use cgroup_families::FAMILIES;
pub use collector::{CgroupCollector, Format, encode};
