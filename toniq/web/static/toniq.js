// toniq dashboard: filters, selection, and the overview's live numbers and chart.
// Plain JavaScript, no library. Everything shown is set with textContent (never HTML).
"use strict";

document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", function () {
  // A worker filter applies as soon as it changes.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  setUpSelection();
  if (document.getElementById("rate-chart")) {
    startLiveOverview();
  }
});

function setUpSelection() {
  var all = document.querySelector("input[data-select-all]");
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input[name=ids][form=bulk]"));
  var buttons = document.querySelectorAll("button[data-needs-selection]");
  function refresh() {
    var chosen = boxes.filter(function (b) { return b.checked; }).length;
    buttons.forEach(function (button) { button.disabled = chosen === 0; });
    if (all) {
      all.checked = chosen > 0 && chosen === boxes.length;
      all.indeterminate = chosen > 0 && chosen < boxes.length;
    }
  }
  boxes.forEach(function (box) { box.addEventListener("change", refresh); });
  if (all) {
    all.addEventListener("change", function () {
      boxes.forEach(function (box) { box.checked = all.checked; });
      refresh();
    });
  }
  refresh();
}

var STATES = ["available", "scheduled", "running", "failed", "done"];

function startLiveOverview() {
  var url = document.body.dataset.statsUrl;
  var every = Math.max(0.1, parseFloat(document.body.dataset.poll) || 2) * 1000;
  function poll() {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(showStats)
      .catch(function () { /* the next poll tries again */ })
      .finally(function () { setTimeout(poll, every); });
  }
  poll();
}

function showStats(stats) {
  document.querySelectorAll("[data-total]").forEach(function (el) {
    el.textContent = String(stats.totals[el.dataset.total] || 0);
  });
  document.querySelectorAll("[data-nodes]").forEach(function (el) {
    el.textContent = String(stats.nodes);
  });
  showCounts(stats.counts);
  drawChart(stats.rate, stats.window, stats.time);
}

function showCounts(counts) {
  var tbody = document.querySelector("#counts tbody");
  if (!tbody) { return; }
  var workers = Object.keys(counts).sort();
  var rows = [];
  workers.forEach(function (worker) {
    var tr = document.createElement("tr");
    tr.dataset.worker = worker;
    var name = document.createElement("td");
    name.className = "mono";
    name.textContent = worker;
    tr.appendChild(name);
    STATES.forEach(function (state) {
      var n = counts[worker][state] || 0;
      var td = document.createElement("td");
      td.className = "num " + (n ? "has-" + state : "zero");
      td.dataset.state = state;
      td.textContent = String(n);
      tr.appendChild(td);
    });
    rows.push(tr);
  });
  if (!rows.length) {
    var tr = document.createElement("tr");
    tr.className = "empty";
    var td = document.createElement("td");
    td.colSpan = 6;
    td.textContent = "No jobs yet.";
    tr.appendChild(td);
    rows.push(tr);
  }
  tbody.replaceChildren.apply(tbody, rows);
}

var SVG = "http://www.w3.org/2000/svg";

function svg(name, attrs) {
  var el = document.createElementNS(SVG, name);
  Object.keys(attrs).forEach(function (key) { el.setAttribute(key, attrs[key]); });
  return el;
}

function niceMax(value) {
  if (value <= 1) { return 1; }
  var power = Math.pow(10, Math.floor(Math.log10(value)));
  var steps = [1, 2, 2.5, 3, 4, 5, 6, 8, 10];
  for (var i = 0; i < steps.length; i++) {
    if (value <= steps[i] * power) { return steps[i] * power; }
  }
  return 10 * power;
}

function formatRate(rate) {
  return rate >= 100 ? Math.round(rate).toString() : rate >= 10 ? rate.toFixed(1) : rate.toFixed(2);
}

function drawChart(points, windowSeconds, now) {
  var chart = document.getElementById("rate-chart");
  // viewBox units; the SVG keeps its aspect ratio, so text is not stretched.
  var width = 1000, height = 220, left = 46, top = 10, bottom = 200;
  // Until a full window of samples exists, the chart spans what there is.
  var start = Math.max(now - windowSeconds, points.length ? points[0][0] : now);
  var span = Math.max(now - start, 1);
  var peak = niceMax(points.reduce(function (m, p) { return Math.max(m, p[1]); }, 0) * 1.1);
  function yOf(rate) { return bottom - (rate / peak) * (bottom - top); }
  var children = [];
  for (var g = 0; g <= 4; g++) {
    var value = (peak * g) / 4, y = yOf(value);
    children.push(svg("line", { x1: left, x2: width, y1: y, y2: y, class: g ? "gridline" : "baseline" }));
    var label = svg("text", { x: left - 8, y: y + 4, class: "tick" });
    label.textContent = formatTick(value);
    children.push(label);
  }
  var coords = points
    .filter(function (p) { return p[0] >= start; })
    .map(function (p) {
      var x = left + ((p[0] - start) / span) * (width - left);
      return x.toFixed(1) + "," + yOf(p[1]).toFixed(1);
    });
  if (coords.length > 1) {
    var first = coords[0].split(",")[0], last = coords[coords.length - 1].split(",")[0];
    children.push(svg("polygon", {
      class: "area",
      points: first + "," + bottom + " " + coords.join(" ") + " " + last + "," + bottom,
    }));
    children.push(svg("polyline", { class: "line", points: coords.join(" ") }));
  }
  var startLabel = svg("text", { x: left, y: height - 2, class: "tick start" });
  startLabel.textContent = "−" + (span >= 120 ? Math.round(span / 60) + " min" : Math.round(span) + " s");
  var nowLabel = svg("text", { x: width, y: height - 2, class: "tick end" });
  nowLabel.textContent = "now";
  children.push(startLabel, nowLabel);
  chart.replaceChildren.apply(chart, children);
  var current = points.length ? points[points.length - 1][1] : 0;
  chart.dataset.points = String(points.length);
  setText("[data-rate-now]", formatRate(current) + " jobs/s");
}

function formatTick(value) {
  return value >= 1000 ? (value / 1000).toFixed(value % 1000 ? 1 : 0) + "k"
    : value % 1 ? value.toFixed(2).replace(/0$/, "") : String(value);
}

function setText(selector, text) {
  var el = document.querySelector(selector);
  if (el) { el.textContent = text; }
}
