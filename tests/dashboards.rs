//! Checks `dashboards/`: the alert rules with promtool (syntax and unit tests), the
//! Grafana dashboard by linting its JSON and parsing every query with promtool, and
//! the example Prometheus and Grafana provisioning files.
//!
//! Needs `promtool` (Debian's `prometheus` package); `PROMTOOL` may name another binary.
//! Runs in about a second and needs neither root nor a running Prometheus.

use agent_test_support::dashboard_queries;
use agent_test_support::promtool;

use dashboard_queries::{Variables, all_panels, dashboards_dir, metric_names};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Per-container families of the metrics contract (DESIGN.md), labels `id`, `name`, `image`.
const CONTAINER_METRICS: &[&str] = &[
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_cpu_system_seconds_total",
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_memory_rss",
    "container_memory_cache",
    "container_memory_mapped_file",
    "container_memory_swap",
    "container_memory_max_usage_bytes",
    "container_memory_failcnt",
    "container_oom_events_total",
    "container_processes",
    "container_threads",
    "container_threads_max",
    "container_spec_memory_limit_bytes",
    "container_spec_cpu_quota",
    "container_spec_cpu_period",
    "container_spec_cpu_shares",
    "container_pressure_cpu_waiting_seconds_total",
    "container_pressure_cpu_stalled_seconds_total",
    "container_pressure_memory_waiting_seconds_total",
    "container_pressure_memory_stalled_seconds_total",
    "container_pressure_io_waiting_seconds_total",
    "container_pressure_io_stalled_seconds_total",
    "container_start_time_seconds",
    "container_last_seen",
    "container_spec_memory_reservation_limit_bytes",
    "container_spec_memory_swap_limit_bytes",
    "container_memory_failures_total",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
    "container_blkio_device_usage_total",
    // eBPF events (provisional names), labels id, name, image (+ operation, result).
    "agent_exec_events_total",
    "agent_mount_events_total",
    "agent_process_exits_total",
    "agent_oom_kills_total",
    // Containers started by `agent launch` (provisional names).
    "agent_container_info",
    "agent_container_exit_code",
    "agent_container_running",
    "agent_container_oom_killed",
    "agent_container_restarts_total",
];

/// The agent's own families (no container labels).
const AGENT_METRICS: &[&str] = &[
    // The machine (labels boot_id, machine_id, system_uuid).
    "machine_cpu_cores",
    "machine_cpu_physical_cores",
    "machine_cpu_sockets",
    "machine_memory_bytes",
    "agent_build_info",
    "agent_scrape_duration_seconds",
    "agent_scrape_errors_total",
    "agent_tracked_cgroups",
    // eBPF (provisional names)
    "agent_ebpf_events_lost_total",
    "agent_ebpf_program_attached",
];

/// Series that Prometheus itself adds to every scrape target.
const PROMETHEUS_SYNTHETIC: &[&str] = &["up", "scrape_duration_seconds"];

fn exported(name: &str) -> bool {
    CONTAINER_METRICS.contains(&name)
        || AGENT_METRICS.contains(&name)
        || PROMETHEUS_SYNTHETIC.contains(&name)
}

// ------------------------------------------------------------------ promtool

#[test]
fn alert_rules_pass_promtool_check() {
    promtool(&dashboards_dir(), &["check", "rules", "alerts.yml"]);
}

#[test]
fn alert_rules_pass_promtool_unit_tests() {
    promtool(&dashboards_dir(), &["test", "rules", "alerts_test.yml"]);
}

#[test]
fn example_prometheus_config_is_valid() {
    promtool(&dashboards_dir(), &["check", "config", "prometheus.yml"]);
}

// ------------------------------------------------------------------ alert rules

fn read_yaml(relative: &str) -> serde_yaml_ng::Value {
    let path = dashboards_dir().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_seq(value: &serde_yaml_ng::Value) -> &[serde_yaml_ng::Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

/// (alert name, expr, annotations) of every alerting rule in alerts.yml.
fn alerts() -> Vec<(String, String, BTreeMap<String, String>)> {
    let rules = read_yaml("alerts.yml");
    let mut out = Vec::new();
    for group in yaml_seq(&rules["groups"]) {
        for rule in yaml_seq(&group["rules"]) {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            let annotations = rule["annotations"]
                .as_mapping()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let text =
                        |v: &serde_yaml_ng::Value| v.as_str().unwrap_or_default().to_string();
                    (text(k), text(v))
                })
                .collect();
            let expr = rule["expr"].as_str().unwrap_or_default().to_string();
            out.push((name.to_string(), expr, annotations));
        }
    }
    out
}

/// The alerts that issue 5 asks for, one per condition.
const REQUIRED_ALERTS: &[&str] = &[
    "ContainerMemoryNearLimit",
    "ContainerOOMKilled",
    "ContainerCPUThrottled",
    "ContainerPidsNearLimit",
    "LaunchedContainerRestarting",
    "LaunchedContainerExitedNonZero",
    "AgentDown",
    "AgentEbpfEventsLost",
    "AgentScrapeErrors",
];

#[test]
fn every_required_alert_exists() {
    let names: BTreeSet<String> = alerts().into_iter().map(|(name, ..)| name).collect();
    for required in REQUIRED_ALERTS {
        assert!(names.contains(*required), "alerts.yml lacks {required}");
    }
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let tests = read_yaml("alerts_test.yml");
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for test in yaml_seq(&tests["tests"]) {
        for case in yaml_seq(&test["alert_rule_test"]) {
            let name = case["alertname"].as_str().unwrap_or_default().to_string();
            if yaml_seq(&case["exp_alerts"]).is_empty() {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    for (name, ..) in alerts() {
        assert!(
            firing.contains(&name),
            "no promtool test where {name} fires"
        );
        assert!(
            quiet.contains(&name),
            "no promtool test where {name} does not fire"
        );
    }
}

#[test]
fn alert_annotations_name_the_container_and_the_value() {
    for (name, expr, annotations) in alerts() {
        let about_containers = metric_names(&expr)
            .iter()
            .any(|m| CONTAINER_METRICS.contains(&m.as_str()));
        for key in ["summary", "description"] {
            let text = annotations
                .get(key)
                .unwrap_or_else(|| panic!("{name} has no {key} annotation"));
            let subject = if about_containers {
                "$labels.name"
            } else {
                "$labels.instance"
            };
            assert!(
                text.contains(subject),
                "{name} {key} does not name {subject}: {text}"
            );
            // `up` is 0 whenever AgentDown fires: its value says nothing.
            if name != "AgentDown" {
                assert!(
                    text.contains("$value"),
                    "{name} {key} does not give the value: {text}"
                );
            }
        }
    }
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    for (name, expr, _) in alerts() {
        for metric in metric_names(&expr) {
            assert!(
                exported(&metric),
                "alert {name} uses {metric}, which the agent does not export"
            );
        }
    }
}

#[test]
fn alert_rules_with_short_for_still_pass_promtool_check() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(dashboards_dir().join("alerts.yml")).unwrap();
    let rewritten = dashboard_queries::alert_rules_with_for(&original, "5s");
    std::fs::write(dir.path().join("alerts.yml"), &rewritten).unwrap();
    promtool(dir.path(), &["check", "rules", "alerts.yml"]);
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rewritten).unwrap();
    let fors: Vec<&str> = yaml_seq(&doc["groups"])
        .iter()
        .flat_map(|g| yaml_seq(&g["rules"]))
        .filter_map(|r| r["for"].as_str())
        .collect();
    assert!(!fors.is_empty());
    assert!(fors.iter().all(|f| *f == "5s"), "{fors:?}");
}

// ------------------------------------------------------------------ dashboard

fn content_panels(dashboard: &Value) -> Vec<&Value> {
    all_panels(dashboard)
        .into_iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

fn title(panel: &Value) -> String {
    format!(
        "panel {} {:?}",
        panel["id"],
        panel["title"].as_str().unwrap_or("?")
    )
}

#[test]
fn dashboard_is_importable() {
    let d = dashboard_queries::load_dashboard();
    assert!(
        d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion too old"
    );
    assert!(
        d["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    // An exported dashboard with a numeric id would overwrite another one on import.
    assert!(d["id"].is_null(), "dashboard id must be null");
    assert!(
        d.get("__inputs").is_none(),
        "datasource must be a variable, not an import input"
    );

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let instance = var("instance");
    assert_eq!(instance["type"], "query");
    let container = var("container");
    assert_eq!(container["type"], "query");
    assert_eq!(container["includeAll"], true);
    assert_eq!(
        container["allValue"], ".*",
        "All must include unnamed containers"
    );
    for v in dashboard_queries::variable_queries(&d) {
        assert!(
            v.query.ends_with(match v.name.as_str() {
                "instance" => ", instance)",
                "container" => ", name)",
                _ => ")",
            }),
            "variable {} query: {}",
            v.name,
            v.query
        );
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"]["uid"], "${datasource}",
            "variable {}",
            v["name"]
        );
    }
}

#[test]
fn panel_ids_are_unique() {
    let d = dashboard_queries::load_dashboard();
    let mut seen = BTreeSet::new();
    for panel in all_panels(&d) {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{} has no id", title(panel)));
        assert!(seen.insert(id), "panel id {id} is used twice");
    }
}

#[test]
fn every_panel_has_the_datasource_variable_and_a_query() {
    let d = dashboard_queries::load_dashboard();
    let panels = content_panels(&d);
    assert!(panels.len() >= 20, "only {} panels", panels.len());
    let ds = json!({"type": "prometheus", "uid": "${datasource}"});
    for panel in panels {
        assert_eq!(panel["datasource"], ds, "{}", title(panel));
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "{} has no query", title(panel));
        let mut ref_ids = BTreeSet::new();
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{} has an empty query",
                title(panel)
            );
            assert!(
                ref_ids.insert(t["refId"].to_string()),
                "{} repeats a refId",
                title(panel)
            );
            if t.get("datasource").is_some() {
                assert_eq!(t["datasource"], ds, "{} query datasource", title(panel));
            }
        }
    }
}

#[test]
fn every_panel_has_a_unit_and_readable_legends() {
    let d = dashboard_queries::load_dashboard();
    for panel in content_panels(&d) {
        assert!(
            panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "{} has no unit",
            title(panel)
        );
        for t in panel["targets"].as_array().into_iter().flatten() {
            let legend = t["legendFormat"].as_str().unwrap_or_default();
            assert!(
                !legend.is_empty() && legend != "__auto",
                "{} query {} has no legend",
                title(panel),
                t["refId"]
            );
        }
    }
}

#[test]
fn panels_fit_the_grid_without_overlapping() {
    let d = dashboard_queries::load_dashboard();
    // Panels inside collapsed rows have their own coordinates; the top level must tile.
    let top: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
    let rect = |p: &Value| {
        let g = &p["gridPos"];
        let n = |k: &str| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{} gridPos.{k}", title(p)))
        };
        (n("x"), n("y"), n("w"), n("h"))
    };
    for p in &top {
        let (x, _, w, h) = rect(p);
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "{} is outside the 24-column grid",
            title(p)
        );
    }
    for (i, a) in top.iter().enumerate() {
        for b in &top[i + 1..] {
            let (ax, ay, aw, ah) = rect(a);
            let (bx, by, bw, bh) = rect(b);
            let overlap = ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah;
            assert!(!overlap, "{} overlaps {}", title(a), title(b));
        }
    }
}

#[test]
fn the_rows_of_issue_5_are_there() {
    let d = dashboard_queries::load_dashboard();
    let rows: Vec<String> = all_panels(&d)
        .into_iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    for wanted in [
        "overview",
        "cpu",
        "memory",
        "pids",
        "pressure",
        "disk",
        "exec",
        "agent health",
    ] {
        assert!(
            rows.iter().any(|r| r.contains(wanted)),
            "no row about {wanted}: {rows:?}"
        );
    }
}

#[test]
fn every_query_uses_only_exported_metrics_and_the_filters() {
    let d = dashboard_queries::load_dashboard();
    let vars = Variables::new("127.0.0.1:9810", Duration::from_secs(15));
    for q in dashboard_queries::panel_queries(&d) {
        let promql = vars
            .substitute(&q.expr)
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        let metrics = metric_names(&promql);
        assert!(!metrics.is_empty(), "{q} names no metric: {promql}");
        for m in &metrics {
            assert!(
                exported(m),
                "{q} uses {m}, which the agent does not export: {promql}"
            );
        }
        assert!(
            q.expr.contains("$instance"),
            "{q} does not filter on $instance"
        );
        if metrics
            .iter()
            .any(|m| CONTAINER_METRICS.contains(&m.as_str()))
        {
            assert!(
                q.expr.contains(r#"name=~"$container""#),
                "{q} does not filter on $container"
            );
        }
    }
    for v in dashboard_queries::variable_queries(&d) {
        let promql = vars.substitute(&v.promql().unwrap()).unwrap();
        for m in metric_names(&promql) {
            assert!(
                exported(&m),
                "variable {} uses {m}, which the agent does not export",
                v.name
            );
        }
    }
}

/// Every query, variables substituted, goes through Prometheus's own parser: each
/// becomes a recording rule of a generated rule file for `promtool check rules`.
/// (JSON is YAML, so the file is written with serde_json.)
#[test]
fn every_query_parses_as_promql() {
    let d = dashboard_queries::load_dashboard();
    let vars = Variables::new("127.0.0.1:9810", Duration::from_secs(15));
    let mut rules = Vec::new();
    for q in dashboard_queries::panel_queries(&d) {
        let expr = vars
            .substitute(&q.expr)
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        rules.push(
            json!({"record": format!("dashboard:panel_{}_{}", q.panel_id, q.ref_id), "expr": expr}),
        );
    }
    for v in dashboard_queries::variable_queries(&d) {
        let expr = vars.substitute(&v.promql().unwrap()).unwrap();
        rules.push(json!({"record": format!("dashboard:variable_{}", v.name), "expr": expr}));
    }
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("queries.yml"), file.to_string()).unwrap();
    promtool(dir.path(), &["check", "rules", "queries.yml"]);
}

#[test]
fn grafana_provisioning_files_are_consistent() {
    let ds = read_yaml("provisioning/datasources/agent.yml");
    assert_eq!(ds["apiVersion"].as_u64(), Some(1));
    let source = &yaml_seq(&ds["datasources"])[0];
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    let providers = read_yaml("provisioning/dashboards/agent.yml");
    assert_eq!(providers["apiVersion"].as_u64(), Some(1));
    let provider = &yaml_seq(&providers["providers"])[0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    assert!(
        provider["options"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with('/'))
    );
}

// ------------------------------------------------------------------ helpers

#[test]
fn substitution_replaces_every_grafana_variable_form() {
    let mut vars = Variables::new("10.0.0.1:9810", Duration::from_secs(15));
    vars.container = "web".into();
    let got = vars
        .substitute(
            r#"rate(x{instance=~"$instance", name=~"${container}"}[$__rate_interval]) + y{i="[[instance]]"}[${__interval}] + increase(z[$__range])"#,
        )
        .unwrap();
    assert_eq!(
        got,
        r#"rate(x{instance=~"10.0.0.1:9810", name=~"web"}[60s]) + y{i="10.0.0.1:9810"}[15s] + increase(z[3600s])"#
    );
    assert_eq!(
        vars.substitute("${instance:regex}").unwrap(),
        r"10\.0\.0\.1:9810"
    );
    // A label_replace reference is not a variable; an unknown variable is an error.
    assert_eq!(
        vars.substitute(r#"label_replace(a, "b", "$1", "c", "(.*)")"#)
            .unwrap(),
        r#"label_replace(a, "b", "$1", "c", "(.*)")"#
    );
    assert!(vars.substitute("a[$__unknown]").is_err());
    assert!(vars.substitute("${instance:json}").is_err());
    // Subqueries are not [[variables]].
    assert_eq!(
        vars.substitute("max_over_time(a[5m:1m])").unwrap(),
        "max_over_time(a[5m:1m])"
    );

    let fast = Variables::new("a:1", Duration::from_secs(1));
    assert_eq!(
        fast.substitute("$__rate_interval $__interval_ms").unwrap(),
        "4s 1000"
    );
}

#[test]
fn metric_names_skips_functions_labels_and_keywords() {
    let names = metric_names(
        r#"sum by (name, kind) (rate(a_total{name=~"x|y", id!="z"}[5m] offset 1m))
           / on (instance, id) group_left (image) (b > bool 0.9)
           and count without (cpu) (c:rule) or vector(1) unless d @ start()
           + topk(10, e) * label_replace(f, "l", "$1", "m", "(.*)") > Inf"#,
    );
    let want: BTreeSet<String> = ["a_total", "b", "c:rule", "d", "e", "f"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, want);
}
