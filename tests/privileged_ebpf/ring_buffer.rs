//! A full ring buffer loses events, counts them lost, and the tracer goes on.

use super::*;

fn is_marked_exec(e: &EventRecord, marker: &str) -> bool {
    e.exec.as_ref().is_some_and(|x| {
        x.filename == BUSYBOX && x.argv.len() == 2 && x.argv[1].starts_with(&format!("{marker}-"))
    })
}

// A current-thread runtime: while the test thread runs the workload, the
// reader task cannot run, so nothing drains the (one page) ring buffer.
#[tokio::test(flavor = "current_thread")]
async fn full_ring_buffer_loses_and_counts_events_without_harm() {
    const K: usize = 64;
    let config = TracerConfig {
        ring_buffer_bytes: 4096,
        trace_mounts: false,
        // Exits would fill the one-page ring too: this test counts execs.
        trace_exits: false,
        ..TracerConfig::default()
    };
    let Some(tracer) = start(config, Arc::new(NoContainers)).await else {
        return;
    };
    let mut rx = tracer.subscribe();
    let (lost_before, _) = tracer.lost();
    let mut work = NsWorkload::spawn(K, "ring", None, false, false);
    assert_eq!(work.finish(), 0, "workload failed");
    let (lost_after, lost_mount) = tracer.lost();
    let lost = lost_after - lost_before;

    let mut first = drain(&mut rx, Duration::from_millis(500)).await;
    // Nothing is dropped in user space: every record the reader counted reaches
    // the subscriber. A busy host (other execs) may keep the stream from going
    // quiet, and drain stops at its cap with records still queued: take those too.
    let received = tracer.received() as usize;
    while first.len() < received {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Ok(ev)) => first.push(ev),
            other => panic!(
                "{} of {received} received records delivered: {other:?}",
                first.len()
            ),
        }
    }
    let seen = &first;
    let ours = seen.iter().filter(|e| is_marked_exec(e, "ring")).count() as u64;
    eprintln!(
        "delivered {ours} of {K} marked execs, {lost} lost ({} records in all)",
        seen.len()
    );
    // A 4096-byte ring holds at most four 856-byte exec records.
    assert!(ours <= 4, "{ours} delivered through a one-page ring");
    assert!(lost >= K as u64 - 4, "lost {lost}");
    assert!(
        ours + lost >= K as u64,
        "every exec is delivered or counted lost"
    );
    assert_eq!(lost_mount, 0, "mount hooks are off");

    // The tracer goes on normally once drained. This namespace's processes
    // have all exited before their events are read: they still count, to the
    // namespace's own series.
    let mut work = NsWorkload::spawn(3, "late", None, false, false);
    assert_eq!(work.finish(), 0, "workload failed");
    let seen = drain(&mut rx, Duration::from_millis(500)).await;
    let marked: Vec<_> = seen.iter().filter(|e| is_marked_exec(e, "late")).collect();
    assert_eq!(marked.len(), 3, "{marked:#?}");
    let ns = marked[0].process.mnt_ns;
    let labels = ContainerLabels::namespace(ns);
    assert!(marked.iter().all(|e| e.container == labels));
    // Namespace inodes are reused: an earlier namespace (ours or another
    // test's) may have had the same number, and then shares the series. The
    // counter is exactly what the stream showed under these labels.
    let want = first
        .iter()
        .chain(seen.iter())
        .filter(|e| e.container == labels && e.kind == EventKind::Exec)
        .count() as u64;
    assert!(want >= 3);
    assert_eq!(tracer.with_counters(|c| c.execs(&labels)), want);
    let text = scrape(&Arc::new(tracer));
    assert_eq!(
        sample(
            &text,
            &format!(r#"agent_exec_events_total{{id="/ns/mnt:{ns}",name="",image=""}}"#)
        ),
        Some(want),
        "{text}"
    );
    assert!(
        sample(&text, r#"agent_ebpf_events_lost_total{type="exec"}"#).is_some_and(|n| n >= lost),
        "{text}"
    );
}
