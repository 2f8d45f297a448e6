//! The UI's server-rendered HTML: the container table on `/` and a container's
//! page. Everything that comes from outside (names, images, ids, paths, flag
//! values) goes through [`escape`]; bar widths are inline styles, so the table
//! reads the same without JavaScript.

use super::history::{RING_BYTES, SLOTS, STEP, Series};
use std::fmt::Write;

/// HTML-escapes `s` into `out` (text and double-quoted attribute values alike).
pub fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// Percent-encodes a path for a URL: unreserved characters and `/` stay.
pub fn url_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8 or an escape is bad.
pub fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `1.5 GiB`, `300 MiB`, `12 KiB`.
pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v.max(0.0);
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The link key of a container: its id without the leading `/`.
pub fn link(series: &Series) -> String {
    format!(
        "/containers/{}",
        url_path(series.id.strip_prefix('/').unwrap_or(&series.id))
    )
}

/// What the machine offers, for the bars of containers without a limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capacity {
    pub cores: f64,
    pub memory: f64,
}

/// A bar: usage against `limit`, or against the machine's `capacity` when there
/// is no limit (then marked so); no bar when neither is known.
fn bar(out: &mut String, kind: &str, used: Option<f64>, limit: f64, capacity: f64, text: &str) {
    let (of, class) = if limit > 0.0 {
        (limit, "limit")
    } else {
        (capacity, "nolimit")
    };
    let ratio = match used {
        Some(u) if of > 0.0 => (u / of).clamp(0.0, 1.0),
        _ => 0.0,
    };
    let hot = if class == "limit" && ratio >= 0.9 {
        " hot"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<td class=\"meter {class}{hot}\" data-kind=\"{kind}\" data-ratio=\"{ratio:.4}\">\
         <div class=\"bar\"><span style=\"width:{:.2}%\"></span></div><small>",
        ratio * 100.0
    );
    escape(out, text);
    out.push_str("</small></td>");
}

/// Header shared by every page: title, links, version.
pub fn head(out: &mut String, title: &str, version: &str) {
    out.push_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><link rel=\"icon\" href=\"data:,\"><title>",
    );
    escape(out, title);
    out.push_str(
        "</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body>\
         <header><h1><a href=\"/\">agent</a></h1><nav><a href=\"/metrics\">/metrics</a> \
         <a href=\"/healthz\">/healthz</a></nav><span class=\"version\">version ",
    );
    escape(out, version);
    out.push_str("</span></header><main>");
}

pub fn tail(out: &mut String) {
    out.push_str("</main><script src=\"/ui/app.js\"></script></body></html>\n");
}

/// The live feed's list; `container` (a key) limits it to one container.
pub fn feed(out: &mut String, container: Option<&str>, full: bool) {
    out.push_str("<section><h2>Live events</h2><p class=\"note\">");
    if full {
        out.push_str(
            "Exec, mount and OOM events as they happen, in full (this request was authenticated).",
        );
    } else {
        out.push_str("Exec, mount and OOM events as they happen: type, container and executable name only. Arguments and paths need the basic auth of <code>--web.config.file</code>.");
    }
    out.push_str("</p><ol id=\"feed\" data-src=\"/events");
    if let Some(key) = container {
        out.push_str("?container=");
        escape(out, &url_path(key));
    }
    out.push_str("\"></ol><noscript>The live feed needs JavaScript.</noscript></section>");
}

/// The table of every container on `/`.
pub fn index(
    series: &mut [&Series],
    capacity: Capacity,
    version: &str,
    flags: &[(String, String)],
    full_events: bool,
) -> String {
    series.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    let mut out = String::with_capacity(4096 + series.len() * 1200);
    head(&mut out, "agent", version);
    let _ = write!(
        out,
        "<section><h2>Containers</h2><p class=\"note\">{} containers. History: the last {} minutes at {} s, {} bytes per container.</p>\
         <input id=\"filter\" type=\"search\" placeholder=\"filter by name\" hidden>\
         <table id=\"containers\"><thead><tr>\
         <th data-sort=\"text\">Name</th><th data-sort=\"text\">Image</th><th data-sort=\"text\">Runtime</th>\
         <th data-sort=\"text\">Status</th><th data-sort=\"ratio\">Memory</th><th data-sort=\"ratio\">CPU</th>\
         <th data-sort=\"ratio\">Pids</th><th data-sort=\"number\">Throttled periods</th><th data-sort=\"number\">OOM kills</th>\
         </tr></thead><tbody>",
        series.len(),
        SLOTS as u64 * STEP.as_secs() / 60,
        STEP.as_secs(),
        RING_BYTES,
    );
    for s in series.iter() {
        let l = &s.latest;
        let name = if s.name.is_empty() { &s.id } else { &s.name };
        out.push_str("<tr data-name=\"");
        escape(&mut out, name);
        out.push_str("\" data-id=\"");
        escape(&mut out, &s.id);
        out.push_str("\"><td class=\"name\"><a href=\"");
        escape(&mut out, &link(s));
        out.push_str("\">");
        escape(&mut out, name);
        out.push_str("</a></td><td>");
        escape(&mut out, &s.image);
        out.push_str("</td><td>");
        escape(&mut out, s.runtime);
        out.push_str("</td><td>");
        out.push_str(if l.processes > 0.0 {
            "running"
        } else {
            "no processes"
        });
        out.push_str("</td>");
        let limit = |v: f64, f: &dyn Fn(f64) -> String| {
            if v > 0.0 { f(v) } else { "no limit".to_owned() }
        };
        bar(
            &mut out,
            "memory",
            Some(l.memory_usage),
            l.memory_limit,
            capacity.memory,
            &format!(
                "{} / {}",
                bytes(l.memory_usage),
                limit(l.memory_limit, &bytes)
            ),
        );
        let cores = |v: f64| format!("{v:.2} cores");
        bar(
            &mut out,
            "cpu",
            l.cpu_cores,
            l.cpu_quota_cores,
            capacity.cores,
            &format!(
                "{} / {}",
                l.cpu_cores.map_or("–".to_owned(), cores),
                limit(l.cpu_quota_cores, &cores)
            ),
        );
        bar(
            &mut out,
            "pids",
            Some(l.pids),
            l.pids_max,
            0.0,
            &format!(
                "{} / {}",
                l.pids,
                limit(l.pids_max, &|v: f64| format!("{v}"))
            ),
        );
        let _ = write!(
            out,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            l.throttled_periods, l.oom_events
        );
    }
    out.push_str("</tbody></table></section>");
    feed(&mut out, None, full_events);
    out.push_str("<section><h2>Flags in effect</h2><table class=\"flags\">");
    for (k, v) in flags {
        out.push_str("<tr><th>");
        escape(&mut out, k);
        out.push_str("</th><td><code>");
        escape(&mut out, v);
        out.push_str("</code></td></tr>");
    }
    out.push_str("</table></section>");
    tail(&mut out);
    out
}

/// A row of a key/value table.
pub fn row(out: &mut String, key: &str, value: &str) {
    out.push_str("<tr><th>");
    escape(out, key);
    out.push_str("</th><td><code>");
    escape(out, value);
    out.push_str("</code></td></tr>");
}

/// A container's page: its identity and limits, the charts (drawn by the script
/// from `/api/containers/<key>/history`), what `agent inspect` knows about the
/// agent's own containers (`inspect`: rows already rendered), and its feed.
pub fn container(
    s: &Series,
    key: &str,
    inspect: Option<&str>,
    version: &str,
    full_events: bool,
) -> String {
    let mut out = String::with_capacity(8192);
    let name = if s.name.is_empty() { &s.id } else { &s.name };
    head(&mut out, name, version);
    out.push_str("<section><h2>");
    escape(&mut out, name);
    out.push_str("</h2><table class=\"flags\">");
    let l = &s.latest;
    let limit = |v: f64, f: &dyn Fn(f64) -> String| {
        if v > 0.0 { f(v) } else { "no limit".to_owned() }
    };
    row(&mut out, "id", &s.id);
    row(&mut out, "image", &s.image);
    row(&mut out, "runtime", s.runtime);
    row(
        &mut out,
        "memory",
        &format!(
            "{} of {}",
            bytes(l.memory_usage),
            limit(l.memory_limit, &bytes)
        ),
    );
    row(
        &mut out,
        "cpu quota",
        &limit(l.cpu_quota_cores, &|v| format!("{v:.2} cores")),
    );
    row(
        &mut out,
        "pids",
        &format!("{} of {}", l.pids, limit(l.pids_max, &|v| format!("{v}"))),
    );
    row(
        &mut out,
        "throttled",
        &format!(
            "{} periods, {:.1} s",
            l.throttled_periods, l.throttled_seconds
        ),
    );
    row(&mut out, "OOM kills", &format!("{}", l.oom_events));
    out.push_str("</table></section><section><h2>Last 15 minutes</h2>");
    if s.has_history() {
        out.push_str("<div id=\"charts\" data-src=\"/api/containers/");
        escape(&mut out, &url_path(key));
        out.push_str("/history\"></div><noscript>The charts need JavaScript; the table above has the latest values.</noscript>");
    } else {
        let _ = write!(
            out,
            "<p>No history: the UI keeps charts for {} containers, and this one came after them.</p>",
            super::history::MAX_RINGS
        );
    }
    out.push_str("</section>");
    if let Some(rows) = inspect {
        out.push_str("<section><h2>Launched by the agent</h2><table class=\"flags\">");
        out.push_str(rows);
        out.push_str("</table></section>");
    }
    feed(&mut out, Some(key), full_events);
    tail(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = String::new();
        escape(&mut out, s);
        out
    }

    #[test]
    fn hostile_text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"\u{7}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\u{fffd}"
        );
    }

    #[test]
    fn urls_round_trip() {
        let key = "docker/ab c\"<>%";
        let path = url_path(key);
        assert_eq!(path, "docker/ab%20c%22%3C%3E%25");
        assert_eq!(url_decode(&path).as_deref(), Some(key));
        assert_eq!(url_decode("%zz"), None);
        assert_eq!(url_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(256.0 * 1024.0 * 1024.0), "256 MiB");
    }
}
