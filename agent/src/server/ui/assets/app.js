// The agent's web UI: sorting and filtering of the container table, the charts of
// a container page (inline SVG from /api/containers/<key>/history), and the live
// event feed (server-sent events). No libraries; text is set with textContent only.
"use strict";

(function () {
  function sortTable(table) {
    var heads = table.querySelectorAll("thead th[data-sort]");
    heads.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var asc = !th.classList.contains("asc");
        heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var kind = th.getAttribute("data-sort");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var key = function (row) {
          var cell = row.cells[col];
          if (kind === "ratio") { return parseFloat(cell.getAttribute("data-ratio")) || 0; }
          if (kind === "number") { return parseFloat(cell.textContent) || 0; }
          return cell.textContent.toLowerCase();
        };
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          var c = x < y ? -1 : x > y ? 1 : 0;
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  function filterTable(input, table) {
    input.hidden = false;
    input.addEventListener("input", function () {
      var q = input.value.toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        var name = (row.getAttribute("data-name") || "").toLowerCase();
        row.hidden = q !== "" && name.indexOf(q) < 0;
      });
    });
  }

  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = ["#3b82c4", "#d2452f", "#2f9e5b", "#a05fc4"];

  function el(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function bytes(v) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 || v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }
  function num(v) { return v >= 100 ? v.toFixed(0) : v.toFixed(2); }

  // lines: [{label, values, dashed}]; the first is the reading, later ones limits.
  function chart(box, title, times, lines, fmt) {
    var fig = document.createElement("figure");
    var cap = document.createElement("figcaption");
    cap.textContent = title;
    fig.appendChild(cap);
    var W = 400, H = 120, L = 4, T = 12;
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" }, fig);
    var max = 0;
    lines.forEach(function (l) { l.values.forEach(function (v) { if (v > max) { max = v; } }); });
    if (max <= 0) { max = 1; }
    var t0 = times.length ? times[times.length - 1] - 900 : 0;
    var x = function (t) { return L + (W - L) * Math.max(0, t - t0) / 900; };
    var y = function (v) { return H - 2 - (H - T - 4) * v / max; };
    el("line", { x1: L, y1: H - 2, x2: W, y2: H - 2, stroke: "#ccd" }, svg);
    var top = el("text", { x: L + 2, y: 10, "font-size": 10, fill: "#556" }, svg);
    top.textContent = fmt(max);
    lines.forEach(function (l, i) {
      var pts = [];
      l.values.forEach(function (v, j) { pts.push(x(times[j]).toFixed(1) + "," + y(v).toFixed(1)); });
      if (pts.length === 0) { return; }
      var attrs = { points: pts.join(" "), fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.5 };
      if (l.dashed) { attrs["stroke-dasharray"] = "4 3"; }
      el("polyline", attrs, svg);
    });
    var legend = document.createElement("div");
    legend.className = "legend";
    lines.forEach(function (l, i) {
      var s = document.createElement("span");
      var last = l.values.length ? fmt(l.values[l.values.length - 1]) : "–";
      s.textContent = l.label + ": " + last;
      s.style.color = COLORS[i % COLORS.length];
      legend.appendChild(s);
    });
    fig.appendChild(legend);
    box.appendChild(fig);
  }

  function drawCharts(box, h) {
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var t = h.times;
    if (t.length === 0) {
      var p = document.createElement("p");
      p.className = "note";
      p.textContent = "No history yet: points come every " + h.step_seconds + " s from the agent's readings.";
      box.appendChild(p);
    }
    var limited = function (vs) { return vs.some(function (v) { return v > 0; }); };
    var mem = [{ label: "usage", values: h.memory_usage }];
    if (limited(h.memory_limit)) { mem.push({ label: "limit", values: h.memory_limit, dashed: true }); }
    chart(box, "Memory", t, mem, bytes);
    var cpu = [{ label: "cores", values: h.cpu_cores }];
    if (limited(h.cpu_quota_cores)) { cpu.push({ label: "quota", values: h.cpu_quota_cores, dashed: true }); }
    chart(box, "CPU (cores)", t, cpu, num);
    var pids = [{ label: "pids", values: h.pids }];
    if (limited(h.pids_max)) { pids.push({ label: "max", values: h.pids_max, dashed: true }); }
    chart(box, "Pids", t, pids, num);
    chart(box, "Throttled (s per s)", t, [{ label: "throttled", values: h.throttled_per_second }], num);
    chart(box, "Pressure, some (s per s)", t, [
      { label: "cpu", values: h.pressure_cpu },
      { label: "memory", values: h.pressure_memory },
      { label: "io", values: h.pressure_io }
    ], num);
    box.setAttribute("data-slots", String(t.length));
  }

  function charts(box) {
    var src = box.getAttribute("data-src");
    var load = function () {
      fetch(src, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (h) { if (h) { drawCharts(box, h); } })
        .catch(function () { /* the agent restarted; the next poll retries */ });
    };
    load();
    setInterval(load, 5000);
  }

  function feed(list) {
    var source = new EventSource(list.getAttribute("data-src"));
    list.setAttribute("data-state", "connecting");
    source.onopen = function () { list.setAttribute("data-state", "open"); };
    source.onmessage = function (m) {
      var ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      var li = document.createElement("li");
      li.className = ev.type;
      var time = new Date(ev.time_unix_ms).toISOString().substring(11, 23);
      var type = document.createElement("span");
      type.className = "type";
      type.textContent = ev.type;
      li.appendChild(document.createTextNode(time + " "));
      li.appendChild(type);
      var who = ev.container_name || ev.container_id;
      var text = " " + who + " " + (ev.exe || "");
      if (ev.kills) { text += " " + ev.kills + " killed"; }
      li.appendChild(document.createTextNode(text));
      if (ev.full) {
        var more = document.createElement("span");
        more.className = "argv";
        if (ev.full.exec) { more.textContent = " " + ev.full.exec.argv.join(" "); }
        else if (ev.full.mount) {
          var m2 = ev.full.mount;
          more.textContent = " " + m2.operation + " " + (m2.source || "") + " " + (m2.target || "") + " " + m2.result;
        }
        li.appendChild(more);
      }
      list.insertBefore(li, list.firstChild);
      while (list.children.length > 200) { list.removeChild(list.lastChild); }
    };
    source.addEventListener("notice", function (m) {
      var li = document.createElement("li");
      li.textContent = m.data;
      list.insertBefore(li, list.firstChild);
    });
  }

  var table = document.getElementById("containers");
  if (table) {
    sortTable(table);
    var input = document.getElementById("filter");
    if (input) { filterTable(input, table); }
  }
  var box = document.getElementById("charts");
  if (box) { charts(box); }
  var list = document.getElementById("feed");
  if (list) { feed(list); }
})();
