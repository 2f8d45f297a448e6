//! Each mount hook kind alone sees the same mount events.

use super::*;

/// Each kind of mount hook this kernel allows, alone, over the same workload
/// (the old and the new mount API): the same mount events, field for field.
/// A kind the kernel refuses is reported and left out (fexit, here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mount_hook_kind_sees_the_same_events() {
    type Row = (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        u64,
        u64,
        i64,
    );
    let mut runs: Vec<(MountHook, Vec<Row>)> = Vec::new();
    for kind in MountHook::ALL {
        let config = TracerConfig {
            mount_hooks: vec![kind],
            trace_exits: false,
            ..TracerConfig::default()
        };
        let Some(tracer) = start(config, Arc::new(NoContainers)).await else {
            return;
        };
        let status = tracer
            .programs()
            .iter()
            .find(|p| p.hook == kind.hook())
            .expect("listed")
            .clone();
        if !status.attached {
            skip(&format!(
                "mount hook {} does not attach here: {}",
                kind.hook(),
                status.error.as_deref().unwrap_or("?")
            ));
            continue;
        }
        let others = tracer
            .programs()
            .iter()
            .filter(|p| p.attached && p.hook != kind.hook())
            .filter(|p| MountHook::ALL.iter().any(|k| k.hook() == p.hook))
            .count();
        assert_eq!(others, 0, "only {} is live", kind.hook());
        let (dir, seen) = workload_mounts(&tracer, "kinds").await;
        let rows: Vec<Row> = seen
            .iter()
            .map(|m| {
                let i = &m.info;
                (
                    i.operation.as_str().to_owned(),
                    i.source.clone(),
                    i.target.clone().map(|t| t.replace(&dir, "DIR")),
                    i.fstype.clone(),
                    i.flags,
                    i.attr,
                    // fds differ from run to run only in number, not in sign
                    i.ret.signum(),
                )
            })
            .collect();
        assert_eq!(rows.len(), 7, "{} saw {rows:#?}", kind.hook());
        eprintln!("{}: {} mount events", kind.hook(), rows.len());
        runs.push((kind, rows));
    }
    assert!(!runs.is_empty());
    for (kind, rows) in &runs[1..] {
        assert_eq!(
            rows,
            &runs[0].1,
            "{} and {} differ",
            kind.hook(),
            runs[0].0.hook()
        );
    }
}
