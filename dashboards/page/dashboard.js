// The panels of the Grafana dashboard (fl-testbed.json), queried from the Prometheus that serves this page.
// Every panel states what it drew in data-series / data-points, which the browser test reads.
"use strict";

const SCRAPE_SECONDS = 2; // fl/metrics/prometheus.py SCRAPE_INTERVAL
const POINTS_PER_CHART = 240;
const AXIS_FORMATS = {
  s: { tickformat: "~s", ticksuffix: "s" },
  bytes: { tickformat: "~s", ticksuffix: "B" },
  percentunit: { tickformat: ".2~%" },
  short: { tickformat: ".3~g" },
};

async function prometheus(path, parameters) {
  const response = await fetch(`/api/v1/${path}?${new URLSearchParams(parameters)}`);
  const answer = await response.json();
  if (answer.status !== "success") throw new Error(`${answer.errorType}: ${answer.error}`);
  return answer.data.result;
}

// Grafana's $__rate_interval: at least four scrapes, and at least one step plus a scrape.
function withVariables(expr, stepSeconds) {
  const rateInterval = Math.max(4 * SCRAPE_SECONDS, stepSeconds + SCRAPE_SECONDS);
  return expr.replaceAll("$__rate_interval", `${rateInterval}s`);
}

function legend(format, labels) {
  const text = (format || "").replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name) => labels[name] ?? "");
  return text.trim() || JSON.stringify(labels);
}

function panelElement(panel) {
  const element = document.createElement("section");
  element.className = "panel";
  element.dataset.title = panel.title;
  element.innerHTML = `<h2></h2><div class="body"></div><div class="note"></div>`;
  element.querySelector("h2").textContent = panel.title;
  document.getElementById("panels").append(element);
  return element;
}

async function drawTimeseries(panel, element, start, end) {
  const step = Math.max(SCRAPE_SECONDS, Math.ceil((end - start) / POINTS_PER_CHART));
  const traces = [];
  for (const target of panel.targets) {
    const query = { query: withVariables(target.expr, step), start, end, step };
    for (const series of await prometheus("query_range", query)) {
      const points = series.values.filter(([, value]) => Number.isFinite(Number(value)));
      traces.push({
        type: "scatter",
        mode: "lines",
        name: legend(target.legendFormat, series.metric),
        x: points.map(([time]) => new Date(time * 1000)),
        y: points.map(([, value]) => Number(value)),
      });
    }
  }
  const drawn = traces.filter((trace) => trace.y.length > 0);
  let chart = element.querySelector(".chart");
  if (!chart) {
    chart = document.createElement("div");
    chart.className = "chart";
    element.querySelector(".body").replaceChildren(chart);
  }
  const unit = panel.fieldConfig?.defaults?.unit || "short";
  const layout = {
    margin: { l: 55, r: 10, t: 10, b: 30 },
    yaxis: { ...(AXIS_FORMATS[unit] || AXIS_FORMATS.short), rangemode: "tozero" },
    xaxis: { type: "date", range: [new Date(start * 1000), new Date(end * 1000)] },
    showlegend: true,
    legend: { orientation: "h", y: -0.15, font: { size: 10 } },
    uirevision: panel.title,
  };
  await Plotly.react(chart, drawn, layout, { displaylogo: false, responsive: true });
  return drawn;
}

async function drawStat(panel, element) {
  const tiles = [];
  for (const target of panel.targets) {
    for (const series of await prometheus("query", { query: withVariables(target.expr, SCRAPE_SECONDS) })) {
      tiles.push({ name: legend(target.legendFormat, series.metric), value: Number(series.value[1]) });
    }
  }
  const box = document.createElement("div");
  box.className = "tiles";
  for (const tile of tiles) {
    const item = document.createElement("span");
    item.className = tile.value >= 1 ? "tile" : "tile down";
    item.textContent = `${tile.name}: ${tile.value}`;
    box.append(item);
  }
  element.querySelector(".body").replaceChildren(box);
  return tiles.map((tile) => ({ y: [tile.value] }));
}

async function refresh(dashboard, elements) {
  const end = Date.now() / 1000;
  const start = end - Number(document.getElementById("range").value);
  const status = document.getElementById("status");
  let failures = 0;
  await Promise.all(
    dashboard.panels.map(async (panel, index) => {
      const element = elements[index];
      try {
        const drawn = panel.type === "stat" ? await drawStat(panel, element) : await drawTimeseries(panel, element, start, end);
        const points = drawn.reduce((sum, trace) => sum + trace.y.length, 0);
        element.dataset.series = drawn.length;
        element.dataset.points = points;
        element.querySelector(".note").textContent = drawn.length ? "" : "no data in this range";
      } catch (error) {
        failures += 1;
        element.dataset.series = element.dataset.points = 0;
        element.querySelector(".note").textContent = `query failed: ${error.message}`;
      }
    }),
  );
  status.className = failures ? "error" : "";
  status.textContent = `${failures ? `${failures} panels failed; ` : ""}updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.refreshed = Number(document.body.dataset.refreshed || 0) + 1;
}

async function start() {
  const dashboard = await (await fetch("fl-testbed.json")).json();
  document.getElementById("title").textContent = dashboard.title;
  document.title = dashboard.title;
  const elements = dashboard.panels.map(panelElement);
  const seconds = parseInt(dashboard.refresh, 10) || 5;
  const again = () => refresh(dashboard, elements);
  document.getElementById("range").addEventListener("change", again);
  await again();
  setInterval(again, seconds * 1000);
}

start().catch((error) => {
  const status = document.getElementById("status");
  status.className = "error";
  status.textContent = `the dashboard could not start: ${error.message}`;
});
