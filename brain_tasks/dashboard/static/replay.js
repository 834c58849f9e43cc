// Charts of a replay page, drawn from the JSON the server embedded (no request of its own).
(function () {
  "use strict";
  const d = JSON.parse(document.getElementById("replay-data").textContent);
  // Plotly renders a subset of HTML in labels: text from the database is shown as text, never markup.
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const config = {displaylogo: false, responsive: true};
  const legend = {orientation: "h", x: 0, y: 1.02, yanchor: "bottom"};
  const title = (text) => ({text, font: {size: 13}, x: 0, xanchor: "left", y: 0.99, yanchor: "top"});
  const select = document.getElementById("symbol-select");
  if (select) {
    select.addEventListener("change", () => document.getElementById("symbol-form").submit());
  }
  const fixed = {flat: "#8c959f", buy_and_hold: "#bf8700", best_composite: "#8250df"};
  const palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d"];
  const colourOf = (() => {
    const seen = {};
    return (name) => {
      if (fixed[name]) return fixed[name];
      if (!(name in seen)) seen[name] = palette[Object.keys(seen).length % palette.length];
      return seen[name];
    };
  })();
  const eventLines = (d.events || []).map((e) => ({
    type: "line", xref: "x", yref: "paper", x0: e.at, x1: e.at, y0: 0, y1: 1,
    line: {color: e.kind === "rollback" ? "#b42318" : "#1a7f37", width: 1, dash: "dot"}}));
  const curves = d.curves || {};
  const names = Object.keys(curves);
  if (names.length) {
    const traces = names.map((name) => ({
      x: curves[name].ts, y: curves[name].equity, name: esc(name), type: "scatter", mode: "lines",
      // newest:<type> takes its model type's colour, the one the timeline gives that type.
      line: {width: name === "brain" ? 2.6 : 1.2,
             color: name === "brain" ? "#1f2328" : colourOf(name.replace(/^newest:/, "")),
             dash: name.startsWith("brain[") ? "dash" : "solid"}}));
    const where = d.symbol === "*" ? "pooled portfolio" : esc(d.symbol);
    Plotly.newPlot("chart-replay-equity", traces, {
      title: title(`Equity per policy, ${where} (start = 1)` +
                   (d.symbol === "*" ? "" : "; dotted: brain's promotions (green) and rollbacks (red)")),
      legend, margin: {l: 60, r: 20, t: 75, b: 40}, shapes: d.symbol === "*" ? [] : eventLines,
      yaxis: {title: {text: "equity"}}, hovermode: "x unified"}, config);
  }
  const t = d.timeline;
  if (t && t.steps.length) {
    // One horizontal strip per regime; each step's choice spans its bars (t_k, t_k+1], coloured by model type.
    const byModel = {};
    for (const s of t.steps) {
      for (const regime of t.regimes) {
        const model = (s.models[regime] || "flat");
        const bucket = (byModel[model] = byModel[model] || {y: [], base: [], x: [], text: []});
        bucket.y.push(esc(t.regime_labels[regime]));
        bucket.base.push(s.start);
        bucket.x.push(new Date(s.end) - new Date(s.start));
        bucket.text.push(esc(`step ${s.step} (as of ${s.as_of}): ${s.choices[regime] || "flat"}; ${s.action}`));
      }
    }
    const traces = Object.entries(byModel).map(([model, b]) => ({
      type: "bar", orientation: "h", name: esc(model), y: b.y, base: b.base, x: b.x, text: b.text,
      textposition: "none", hovertemplate: "%{text}<extra></extra>",
      marker: {color: model === "flat" ? "#eaeef2" : colourOf(model), line: {color: "#fff", width: 1}}}));
    const marks = t.events.map((e) => ({
      type: "line", xref: "x", yref: "paper", x0: e.at, x1: e.at, y0: 0, y1: 1,
      line: {color: e.kind === "rollback" ? "#b42318" : "#1a7f37", width: 2}}));
    // A rollback and a promotion at the same step share one label ("rollback + promote").
    const kindsAt = {};
    for (const e of t.events) (kindsAt[e.at] = kindsAt[e.at] || []).push(e.kind);
    const notes = Object.entries(kindsAt).map(([at, kinds]) => ({
      x: at, xref: "x", y: 1, yref: "paper", yanchor: "bottom", showarrow: false, text: esc(kinds.join(" + ")),
      font: {size: 11, color: kinds.includes("rollback") ? "#b42318" : "#1a7f37"}}));
    Plotly.newPlot("chart-replay-timeline", traces, {
      title: title("brain's model per regime at each step; lines: promotions (green) and rollbacks (red)"),
      barmode: "overlay", legend: {orientation: "h", x: 0, y: -0.15}, shapes: marks, annotations: notes,
      margin: {l: 90, r: 20, t: 60, b: 60}, xaxis: {type: "date"},
      yaxis: {categoryorder: "array", categoryarray: t.regimes.map((r) => esc(t.regime_labels[r])).reverse()}},
      config);
  }
  document.body.dataset.chartsDrawn = "yes";
})();
