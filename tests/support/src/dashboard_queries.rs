//! The queries of `dashboards/agent.json`, ready to run against a real Prometheus.
//!
//! Shared by the dashboard lint (`tests/dashboards.rs`) and end-to-end tests:
//!
//! ```ignore
//! let dashboard = dashboard_queries::load_dashboard();
//! let vars = dashboard_queries::Variables::new("127.0.0.1:9810", Duration::from_secs(1));
//! for q in dashboard_queries::panel_queries(&dashboard) {
//!     let promql = vars.substitute(&q.expr).unwrap();
//!     // q.instant: run as /api/v1/query, else /api/v1/query_range with step vars.interval
//! }
//! for v in dashboard_queries::variable_queries(&dashboard) {
//!     let promql = vars.substitute(&v.promql().unwrap()).unwrap();
//! }
//! ```
//!
//! `alert_rules_with_for` rewrites every `for:` of `dashboards/alerts.yml`, so that an
//! end-to-end run can see alerts with long `for:` durations reach the firing state.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// `dashboards/` at the root of the workspace.
pub fn dashboards_dir() -> PathBuf {
    // Lexically (the VM rig copies dashboards/ alone, without tests/support).
    let support = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    support
        .parent()
        .and_then(std::path::Path::parent)
        .expect("tests/support lives two levels below the workspace")
        .join("dashboards")
}

/// Reads and parses `dashboards/agent.json`; panics with the path and the cause.
pub fn load_dashboard() -> Value {
    let path = dashboards_dir().join("agent.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Every panel, rows included, with the panels of collapsed rows flattened in.
pub fn all_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(inner) = panel.get("panels") {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// One query (target) of one panel, as written in the dashboard (variables not substituted).
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub panel_id: u64,
    pub panel_title: String,
    pub ref_id: String,
    pub expr: String,
    pub legend: String,
    /// Grafana runs it as an instant query (`/api/v1/query`); otherwise as a range query.
    pub instant: bool,
}

impl std::fmt::Display for PanelQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "panel {} {:?} query {}",
            self.panel_id, self.panel_title, self.ref_id
        )
    }
}

/// Every query of every panel (row panels have none).
pub fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let text = |key: &str| target[key].as_str().unwrap_or_default().to_string();
            out.push(PanelQuery {
                panel_id: panel["id"].as_u64().unwrap_or_default(),
                panel_title: panel["title"].as_str().unwrap_or_default().to_string(),
                ref_id: text("refId"),
                expr: text("expr"),
                legend: text("legendFormat"),
                instant: target["instant"].as_bool().unwrap_or(false)
                    && !target["range"].as_bool().unwrap_or(false),
            });
        }
    }
    out
}

/// A templating variable of type `query` (e.g. `label_values(metric{…}, label)`).
#[derive(Debug, Clone)]
pub struct VariableQuery {
    pub name: String,
    pub query: String,
}

impl VariableQuery {
    /// The PromQL that returns the variable's values: `label_values(sel, l)` becomes
    /// `count by (l) (sel)`, whose series each carry one value of `l`.
    pub fn promql(&self) -> Result<String, String> {
        let inner = self
            .query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .ok_or_else(|| {
                format!(
                    "variable {}: not label_values(…): {}",
                    self.name, self.query
                )
            })?;
        let (selector, label) = inner.rsplit_once(',').ok_or_else(|| {
            format!(
                "variable {}: label_values needs a metric: {}",
                self.name, self.query
            )
        })?;
        Ok(format!("count by ({}) ({})", label.trim(), selector.trim()))
    }
}

/// The dashboard's query variables, in order.
pub fn variable_queries(dashboard: &Value) -> Vec<VariableQuery> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| VariableQuery {
            name: v["name"].as_str().unwrap_or_default().to_string(),
            // Grafana stores the query either as a string or as {query: "...", ...}.
            query: v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .unwrap_or_default()
                .to_string(),
        })
        .collect()
}

/// Values for the Grafana variables of the dashboard, as Grafana would set them.
#[derive(Debug, Clone)]
pub struct Variables {
    /// `$instance`: the Prometheus target label of the agent, e.g. `127.0.0.1:9810`.
    pub instance: String,
    /// `$container`: a regex on the `name` label; `.*` is the dashboard's "All".
    pub container: String,
    /// `$datasource`: a data source uid (only used in `datasource` fields).
    pub datasource: String,
    /// The data source's scrape interval (Grafana's "timeInterval" setting).
    pub scrape_interval: Duration,
    /// `$__interval`: the step of range queries.
    pub interval: Duration,
    /// `$__range`: the dashboard time range.
    pub range: Duration,
    /// Any other variable, by name (without `$`).
    pub extra: BTreeMap<String, String>,
}

impl Variables {
    /// All containers, step = scrape interval, one hour of range.
    pub fn new(instance: &str, scrape_interval: Duration) -> Self {
        Variables {
            instance: instance.to_string(),
            container: ".*".to_string(),
            datasource: "prometheus".to_string(),
            scrape_interval,
            interval: scrape_interval,
            range: Duration::from_secs(3600),
            extra: BTreeMap::new(),
        }
    }

    /// Grafana: `max($__interval + scrape interval, 4 × scrape interval)`.
    pub fn rate_interval(&self) -> Duration {
        (self.interval + self.scrape_interval).max(4 * self.scrape_interval)
    }

    fn value(&self, name: &str) -> Option<String> {
        let ms = |d: Duration| d.as_millis().to_string();
        Some(match name {
            "instance" => self.instance.clone(),
            "container" => self.container.clone(),
            "datasource" => self.datasource.clone(),
            "__interval" => prom_duration(self.interval),
            "__interval_ms" => ms(self.interval),
            "__rate_interval" => prom_duration(self.rate_interval()),
            "__rate_interval_ms" => ms(self.rate_interval()),
            "__range" => prom_duration(self.range),
            "__range_s" => self.range.as_secs().to_string(),
            "__range_ms" => ms(self.range),
            other => return self.extra.get(other).cloned(),
        })
    }

    /// Replaces `$name`, `${name}`, `${name:format}`, `[[name]]` and `[[name:format]]`
    /// with their values. An unknown variable or format is an error, so a query can
    /// never reach Prometheus with a `$` left in it. `$1`-style regex references in
    /// `label_replace` strings are left alone, as Grafana leaves them.
    pub fn substitute(&self, expr: &str) -> Result<String, String> {
        let mut out = String::with_capacity(expr.len());
        let mut rest = expr;
        while let Some(pos) = rest.find(['$', '[']) {
            out.push_str(&rest[..pos]);
            rest = &rest[pos..];
            match parse_variable(rest) {
                Some((name, _, len)) if name.starts_with(|c: char| c.is_ascii_digit()) => {
                    out.push_str(&rest[..len]);
                    rest = &rest[len..];
                }
                Some((name, format, len)) => {
                    let value = self
                        .value(name)
                        .ok_or_else(|| format!("unknown Grafana variable ${name} in: {expr}"))?;
                    out.push_str(
                        &format_value(&value, format).map_err(|e| format!("{e} in: {expr}"))?,
                    );
                    rest = &rest[len..];
                }
                None => {
                    out.push_str(&rest[..1]);
                    rest = &rest[1..];
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// A Prometheus duration: `4s`, `1500ms`.
pub fn prom_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// At the start of `s`, a variable reference: (name, format, length in bytes).
fn parse_variable(s: &str) -> Option<(&str, Option<&str>, usize)> {
    let word_len = |t: &str| {
        t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len())
    };
    if let Some(body) = s.strip_prefix("${") {
        let end = body.find('}')?;
        let inner = &body[..end];
        let (name_field, format) = match inner.split_once(':') {
            Some((n, f)) => (n, Some(f)),
            None => (inner, None),
        };
        // `${var.field}` (object fields) is not used here; keep the name part.
        let name = name_field.split('.').next()?;
        (word_len(name) == name.len() && !name.is_empty()).then_some((name, format, end + 3))
    } else if let Some(body) = s.strip_prefix("[[") {
        let end = body.find("]]")?;
        let inner = &body[..end];
        let (name, format) = match inner.split_once(':') {
            Some((n, f)) => (n, Some(f)),
            None => (inner, None),
        };
        (word_len(name) == name.len() && !name.is_empty()).then_some((name, format, end + 4))
    } else if let Some(body) = s.strip_prefix('$') {
        let len = word_len(body);
        (len > 0).then_some((&body[..len], None, len + 1))
    } else {
        None
    }
}

/// Formats one (single) value the way Grafana's `${var:format}` does.
fn format_value(value: &str, format: Option<&str>) -> Result<String, String> {
    match format {
        None | Some("raw" | "text" | "pipe" | "csv" | "glob") => Ok(value.to_string()),
        Some("regex") => Ok(value
            .chars()
            .flat_map(|c| {
                let escape = "\\^$.|?*+()[]{}/".contains(c);
                escape.then_some('\\').into_iter().chain(std::iter::once(c))
            })
            .collect()),
        Some(other) => Err(format!("unsupported variable format :{other}")),
    }
}

/// PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    // aggregation operators (may be followed by `by (…)` before their parenthesis)
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Metric names in a PromQL expression (variables already substituted): identifiers
/// outside strings, label matchers and ranges that are neither keywords nor functions.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After `by`, `on`, … the next parenthesised list holds label names.
    let mut label_list_next = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' && c != '`' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if matches!(chars[i], '"' | '\'' | '`') {
                        let quote = chars[i];
                        i += 1;
                        while i < chars.len() && chars[i] != quote {
                            i += if chars[i] == '\\' { 2 } else { 1 };
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if label_list_next => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                label_list_next = false;
            }
            c if c.is_ascii_digit() || c == '.' => {
                // numbers and durations: 0.9, 1e3, 5m, 0x1f
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let lower = word.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    // `group_left` may stand without a label list
                    label_list_next = next == Some(&'(');
                } else if next == Some(&'(') || PROMQL_WORDS.contains(&lower.as_str()) {
                    // a function call or an operator
                } else {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// `alerts.yml` with every rule's `for:` replaced by `for_` (e.g. `"0s"` or `"10s"`),
/// as YAML text for a Prometheus started by an end-to-end test.
pub fn alert_rules_with_for(rules_yaml: &str, for_: &str) -> String {
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(rules_yaml).expect("alert rules are not valid YAML");
    for group in doc["groups"].as_sequence_mut().into_iter().flatten() {
        for rule in group["rules"].as_sequence_mut().into_iter().flatten() {
            if let Some(map) = rule.as_mapping_mut()
                && map.contains_key("for")
            {
                map.insert("for".into(), for_.into());
            }
        }
    }
    serde_yaml_ng::to_string(&doc).expect("YAML serialisation cannot fail")
}
