//! An agent restart leaves the containers and their series alone.

use super::*;

#[test]
fn an_agent_restart_leaves_containers_and_their_series_alone() {
    let Some((env, mut agent)) = setup("agent_restart") else {
        return;
    };
    let name = format!("survivor-{}", std::process::id());
    // Execs a short sleep five times a second, so that its exec counter moves.
    env.launch(&[
        "-d",
        "--name",
        &name,
        "--memory",
        "64Mi",
        "busybox",
        "/bin/sh",
        "-c",
        "while :; do /bin/sleep 0.2; done",
    ])
    .ok();
    let v = env.inspect(&name);
    let id = format!("/agent/{}", v["id"].as_str().unwrap());
    let labels_of = |m: &str| -> Result<Vec<Labels>, String> {
        let mut out = Vec::new();
        for family in [
            "container_spec_memory_limit_bytes",
            "agent_container_running",
            "agent_exec_events_total",
        ] {
            let (l, value) = matching(m, family, &[("name", &name)])
                .pop()
                .ok_or(format!("no {family} for {name}"))?;
            if value < 1.0 {
                return Err(format!("{family} is {value}"));
            }
            out.push(l);
        }
        Ok(out)
    };
    let first = wait_metrics(&agent, 10, labels_of);
    for l in &first {
        assert_eq!(l["id"], id);
    }
    assert!(agent.stop(), "agent serve did not stop cleanly");
    // serve never owned the container: it runs on, same process.
    std::thread::sleep(Duration::from_millis(300));
    let during = env.inspect(&name);
    assert_eq!(during["status"], "running");
    assert_eq!(during["pid"], v["pid"]);

    let agent = AgentProcess::start_traced_in(&env.state, &[]);
    let again = wait_metrics(&agent, 10, labels_of);
    assert_eq!(first, again, "same labels after the restart");
    assert_eq!(env.inspect(&name)["pid"], v["pid"]);
    drop(agent);
    assert_clean(&env, &[v]);
}
