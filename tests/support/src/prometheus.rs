//! A real Prometheus server (Debian's `/usr/bin/prometheus`, or `$PROMETHEUS`) on
//! loopback with its own temporary directory, for end-to-end tests. Killed and its
//! directory removed on drop, also when a test fails.

use crate::{free_port, http_get};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the test server scrapes and evaluates.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` targets of the one scrape job.
    pub targets: Vec<String>,
    /// The scrape job's name (the alert rules expect `agent`).
    pub job: String,
    pub scrape_interval: Duration,
    pub evaluation_interval: Duration,
    /// Contents of a rule file to load (`rule_files:`), if any.
    pub rules: Option<String>,
    /// Scrape over HTTPS, trusting this CA certificate file.
    pub tls_ca_file: Option<String>,
    /// Scrape with these basic-auth credentials (user, password).
    pub basic_auth: Option<(String, String)>,
    /// A `node` label for each target (same order), as a DaemonSet's scrape job
    /// relabels the node name into it.
    pub nodes: Option<Vec<String>>,
}

impl Config {
    /// One `agent` job scraping `target` every second, rules evaluated every second.
    pub fn new(target: &str) -> Config {
        Config {
            targets: vec![target.to_string()],
            job: "agent".to_string(),
            scrape_interval: Duration::from_secs(1),
            evaluation_interval: Duration::from_secs(1),
            rules: None,
            tls_ca_file: None,
            basic_auth: None,
            nodes: None,
        }
    }

    /// Loads `rules` (the text of a Prometheus rule file).
    pub fn with_rules(mut self, rules: impl Into<String>) -> Config {
        self.rules = Some(rules.into());
        self
    }

    /// The `prometheus.yml` text; `rules_file` is the path the rules are written to.
    pub fn to_yaml(&self, rules_file: &str) -> String {
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        // A scrape may not take longer than the interval.
        let timeout = self.scrape_interval;
        let mut yaml = format!(
            "global:\n  scrape_interval: {}\n  scrape_timeout: {}\n  evaluation_interval: {}\n",
            secs(self.scrape_interval),
            secs(timeout),
            secs(self.evaluation_interval),
        );
        if self.rules.is_some() {
            yaml.push_str(&format!("rule_files:\n  - '{rules_file}'\n"));
        }
        yaml.push_str(&format!("scrape_configs:\n  - job_name: {}\n", self.job));
        if let Some(ca) = &self.tls_ca_file {
            yaml.push_str(&format!(
                "    scheme: https\n    tls_config:\n      ca_file: '{ca}'\n"
            ));
        }
        if let Some((user, password)) = &self.basic_auth {
            yaml.push_str(&format!(
                "    basic_auth:\n      username: '{user}'\n      password: '{password}'\n"
            ));
        }
        if let Some(nodes) = &self.nodes {
            yaml.push_str("    static_configs:\n");
            for (t, node) in self.targets.iter().zip(nodes) {
                yaml.push_str(&format!(
                    "      - targets: ['{t}']\n        labels: {{node: '{node}'}}\n"
                ));
            }
            return yaml;
        }
        yaml.push_str(&format!(
            "    static_configs:\n      - targets: [{}]\n",
            self.targets
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        yaml
    }
}

/// A Prometheus server on loopback with its own data directory; killed on drop.
pub struct Prometheus {
    pub addr: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` as job `agent` every second, no rules.
    pub fn start(target: &str) -> Prometheus {
        Self::start_with(&Config::new(target))
    }

    /// Starts a server with `config` and waits until it is ready.
    pub fn start_with(config: &Config) -> Prometheus {
        let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into());
        assert!(
            Path::new(&bin).exists(),
            "{bin} not found: install Debian's `prometheus` package (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let rules_file = dir.path().join("rules.yml");
        if let Some(rules) = &config.rules {
            std::fs::write(&rules_file, rules).unwrap();
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(
            &config_file,
            config.to_yaml(&rules_file.display().to_string()),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        // Its log goes to a file in its directory, shown if it fails to start.
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut p = Prometheus { addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(&p.addr, "/-/ready", &[]), Ok((200, _))) {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited early ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: not ready after 30s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GETs a Prometheus API path and returns its `data`; panics on any error.
    pub fn api(&self, path_and_query: &str) -> Value {
        self.try_api(path_and_query)
            .unwrap_or_else(|e| panic!("{path_and_query}: {e}"))
    }

    /// GETs a Prometheus API path: its `data`, or the error Prometheus reported.
    pub fn try_api(&self, path_and_query: &str) -> Result<Value, String> {
        let (status, body) =
            http_get(&self.addr, path_and_query, &[]).map_err(|e| format!("HTTP: {e}"))?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&body)))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("HTTP {status}: {v}"));
        }
        if let Some(warnings) = v.get("warnings") {
            return Err(format!("warnings: {warnings}"));
        }
        Ok(v["data"].clone())
    }

    /// Runs an instant PromQL query.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        self.try_query(promql)
            .unwrap_or_else(|e| panic!("{promql}: {e}"))
    }

    /// Runs an instant PromQL query; a scalar or string result is one element.
    pub fn try_query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self.try_api(&format!("/api/v1/query?query={}", urlencode(promql)))?;
        Ok(result_list(&data))
    }

    /// Runs a range query over `[now - range, now]` with `step`.
    pub fn try_query_range(
        &self,
        promql: &str,
        range: Duration,
        step: Duration,
    ) -> Result<Vec<Value>, String> {
        let end = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = end - range.as_secs_f64();
        let data = self.try_api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}",
            urlencode(promql),
            step.as_secs_f64()
        ))?;
        Ok(result_list(&data))
    }

    /// The alerts of `/api/v1/alerts` (pending and firing).
    pub fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `ok` every 200 ms; panics after `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: &str, mut ok: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !ok(self) {
            assert!(
                Instant::now() < deadline,
                "prometheus: not {what} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `data.result` as a list (vector and matrix results; a scalar is one element).
fn result_list(data: &Value) -> Vec<Value> {
    match &data["result"] {
        Value::Array(a) if data["resultType"] != "scalar" && data["resultType"] != "string" => {
            a.clone()
        }
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// Percent-encodes a query parameter.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of one sample of an instant-vector result.
pub fn value_of(series: &Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}
