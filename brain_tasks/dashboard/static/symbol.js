// Charts of the symbol page, drawn from the JSON the server embedded (no request of its own).
(function () {
  "use strict";
  const d = JSON.parse(document.getElementById("symbol-data").textContent);
  // Plotly renders a subset of HTML in labels: text from the database is shown as text, never markup.
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const config = {displaylogo: false, responsive: true};
  // Legends sit above the plot area, never over the curves.
  const legend = {orientation: "h", x: 0, y: 1.02, yanchor: "bottom"};
  const margin = {l: 60, r: 20, t: 65, b: 40};
  const title = (text) => ({text, font: {size: 13}, x: 0, xanchor: "left", y: 0.99, yanchor: "top"});
  const regimeColours = {low: "#4c78a8", normal: "#72b7b2", high: "#f58518", extreme: "#e45756"};
  const p = d.performance;
  if (p) {
    const label = d.focus ? esc(`${d.focus.model_type} v${d.focus.version}`) : "strategy";
    const foldLines = p.folds.slice(1).map((f) => ({
      type: "line", xref: "x", yref: "paper", x0: f.start, x1: f.start, y0: 0, y1: 1,
      line: {color: "#8c959f", width: 1, dash: "dot"}}));
    Plotly.newPlot("chart-equity", [
      {x: p.ts, y: p.equity, name: `${label} (out of sample)`, type: "scatter", mode: "lines", line: {width: 2.2}},
      {x: p.ts, y: p.buy_and_hold, name: "buy & hold", type: "scatter", mode: "lines", line: {width: 1.2, color: "#8c959f"}},
    ], {title: title("Equity (start = 1); dotted lines: fold boundaries"), legend, margin,
        shapes: foldLines, yaxis: {title: {text: "equity"}}, hovermode: "x unified"}, config);
    Plotly.newPlot("chart-underwater", [
      {x: p.ts, y: p.underwater, name: label, type: "scatter", mode: "lines", fill: "tozeroy", line: {width: 1}},
      {x: p.ts, y: p.bh_underwater, name: "buy & hold", type: "scatter", mode: "lines", line: {width: 1, color: "#8c959f"}},
    ], {title: title("Underwater (drawdown from peak)"), legend, margin,
        yaxis: {tickformat: ".0%"}, hovermode: "x unified"}, config);
    Plotly.newPlot("chart-sharpe", [
      {x: p.ts, y: p.rolling_sharpe, name: `rolling Sharpe (${p.rolling_window_bars} bars, annualised)`,
       type: "scatter", mode: "lines", line: {width: 1}},
    ], {title: title("Rolling Sharpe"), legend, margin, shapes: foldLines, hovermode: "x unified"},
       config);
    const byRegime = {};
    for (const s of p.regimes) {
      (byRegime[s.regime] = byRegime[s.regime] || []).push(s);
    }
    const strips = Object.entries(byRegime).map(([regime, segs]) => ({
      type: "bar", orientation: "h", name: esc(regime), y: segs.map(() => "regime"),
      base: segs.map((s) => s.start), x: segs.map((s) => new Date(s.end) - new Date(s.start)),
      marker: {color: regimeColours[regime] || "#bab0ac"}, hovertemplate: `${esc(regime)}<extra></extra>`}));
    Plotly.newPlot("chart-regime", strips, {
      title: title("Volatility regime"), barmode: "overlay", legend, showlegend: true,
      margin: {l: 60, r: 20, t: 75, b: 30}, xaxis: {type: "date", range: [p.ts[0], p.ts[p.ts.length - 1]]},
      yaxis: {showticklabels: false}}, config);
  }
  const imp = d.importance;
  if (imp && imp.features.length) {
    Plotly.newPlot("chart-importance", [{
      type: "heatmap", z: imp.z, x: imp.versions.map(esc), y: imp.features.map(esc), colorscale: "Blues",
      colorbar: {title: {text: "share"}}, hovertemplate: "%{y} in %{x}: %{z:.1%}<extra></extra>"}],
    {title: title("Share of total |importance| per version (method: " + esc([...new Set(imp.methods)].join(", ")) + ")"), margin: {l: 160, r: 20, t: 50, b: 60}, yaxis: {autorange: "reversed"}}, config);
  }
  if (d.drift && d.drift.length) {
    const rows = d.drift.slice(0, 30);
    Plotly.newPlot("chart-drift", [{
      type: "bar", x: rows.map((r) => esc(r.feature)), y: rows.map((r) => r.psi_threshold ? r.psi / r.psi_threshold : r.psi),
      marker: {color: rows.map((r) => (r.drifted ? "#e45756" : "#4c78a8"))},
      hovertemplate: "%{x}: PSI / threshold %{y:.2f}<extra></extra>", name: "PSI / threshold"}],
    {title: title("PSI relative to its threshold (red: drifted)"), margin: {l: 60, r: 20, t: 50, b: 100},
     shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: 1, y1: 1, line: {color: "#b42318", dash: "dash"}}]},
    config);
  }
  document.body.dataset.chartsDrawn = "yes";
})();
