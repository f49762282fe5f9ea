// rbench's results page: tables (sort, filter by substring or glob, metadata columns joined)
// and plotly plots, drawn from the one JSON blob in #rbench-data. No network: plotly.js is
// inlined before this script.
"use strict";
(function () {
  const started = performance.now();
  const marks = {script: started};
  const data = JSON.parse(document.getElementById("rbench-data").textContent);
  marks.parsed = performance.now();
  const OWN = "#d62728", IMPORTED = "#9aa5b1", LINE = "#1f77b4";
  const STACKS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function escape(text) {  // text for innerHTML
    return String(text).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
  }
  // Text for plotly, whose labels, titles and hover text read <a href>, <span style>, <br> and
  // entities as markup (it decodes &amp; &lt; &gt; but not &quot;): every string from the files
  // that plotly draws goes through it.
  function label(text) {
    return String(text).replace(/[&<>]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;"})[c]);
  }
  function number(text) {
    if (text === "" || text === null || text === undefined) return null;
    const value = Number(String(text).replace(/,/g, ""));
    return Number.isFinite(value) ? value : null;
  }
  // A glob (*, ?, [...]) matches the whole model name, case-sensitive, as fnmatch; anything else
  // is a case-insensitive substring.
  function matcher(query) {
    query = query.trim();
    if (!query) return () => true;
    if (/[*?[]/.test(query)) {
      let source = "";
      for (let i = 0; i < query.length; i++) {
        const c = query[i];
        if (c === "*") source += ".*";
        else if (c === "?") source += ".";
        else if (c === "[") {
          const end = query.indexOf("]", i + 2);
          if (end < 0) { source += "\\["; continue; }
          let body = query.slice(i + 1, end);
          if (body[0] === "!") body = "^" + body.slice(1);
          source += "[" + body.replace(/\\/g, "\\\\") + "]";
          i = end;
        } else source += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
      }
      const pattern = new RegExp("^(?:" + source + ")$", "s");
      return name => pattern.test(name);
    }
    const lower = query.toLowerCase();
    return name => name.toLowerCase().includes(lower);
  }

  // --- header and notes -------------------------------------------------------------------
  const main = el("main");
  document.body.appendChild(main);
  main.appendChild(el("h1", {}, "rbench results"));
  const summary = el("p", {class: "summary"});
  const rowsTotal = data.tables.reduce((n, t) => n + t.rows.length, 0);
  summary.textContent = `${data.tables.length} file(s), ${rowsTotal.toLocaleString()} row(s), ${data.plots.length} plot(s). ` +
    "Your own rows are red diamonds, drawn over the imported ones (grey) on every plot where they have data, " +
    "and bold in the tables.";
  main.appendChild(summary);
  if (data.notes.length) {
    const list = el("ul", {class: "notes", id: "notes"});
    for (const note of data.notes) list.appendChild(el("li", {}, note));
    main.appendChild(list);
  }

  // --- tables -----------------------------------------------------------------------------
  const metadata = data.tables.find(t => t.name === "model_metadata.csv") ||
                   data.tables.find(t => t.name === "model_metadata-in1k.csv");
  const joinable = metadata ? data.metadata_join.filter(c => metadata.columns.includes(c)) : [];
  const metaByModel = new Map();
  if (metadata) {
    const m = metadata.columns.indexOf("model");
    for (const row of metadata.rows) metaByModel.set(row[m], row);
  }
  function metaRow(model) {  // the same tag, else its architecture's row
    return metaByModel.get(model) || metaByModel.get(model.split(".")[0]) || null;
  }

  // A table view: a chooser of `tables`, the model filter, "hide imported", the joinable
  // metadata columns, and the sortable table; its elements' ids start with `prefix`.
  function tableView(parent, tables, prefix, join) {
    const controls = el("div", {class: "controls"});
    const chooser = el("select", {id: prefix + "table-select", "aria-label": "result file"});
    controls.appendChild(chooser);
    const filter = el("input", {id: prefix + "filter", type: "search", placeholder: "model: substring or glob (convnext*, *.in1k)", size: "40"});
    controls.appendChild(filter);
    const hideImported = el("input", {id: prefix + "hide-imported", type: "checkbox"});
    if (tables.some(t => t.imported.some(Boolean))) {
      const hideLabel = el("label", {}, " hide imported");
      hideLabel.prepend(hideImported);
      controls.appendChild(hideLabel);
    }
    const joined = new Set();
    const columnsToJoin = join ? joinable : [];
    if (columnsToJoin.length) {
      controls.appendChild(el("span", {class: "join-title"}, `join from ${metadata.name}:`));
      for (const column of columnsToJoin) {
        const box = el("input", {type: "checkbox", "data-join": column});
        box.addEventListener("change", () => { box.checked ? joined.add(column) : joined.delete(column); render(); });
        const label = el("label", {}, " " + column);
        label.prepend(box);
        controls.appendChild(label);
      }
    }
    const count = el("span", {id: prefix + "row-count", class: "count"});
    controls.appendChild(count);
    parent.appendChild(controls);
    const tableNote = el("p", {class: "table-note"});
    parent.appendChild(tableNote);
    const table = el("table", {id: prefix + "results-table", class: "results-table"});
    parent.appendChild(table);

    let current = 0;
    const sortState = tables.map(() => ({column: null, descending: false}));
    tables.forEach((t, i) => chooser.appendChild(el("option", {value: String(i)}, `${t.name} (${t.rows.length})`)));
    chooser.addEventListener("change", () => { current = Number(chooser.value); render(); });
    filter.addEventListener("input", () => render());
    hideImported.addEventListener("change", () => render());

    function render() {
      const t = tables[current];
      if (!t) { table.innerHTML = ""; count.textContent = "no tables"; return; }
      const modelIndex = t.columns.indexOf("model");
      // A column the file has already (a results file's param_count) is not joined again.
      const extra = t === metadata ? [] : columnsToJoin.filter(c => joined.has(c) && !t.columns.includes(c));
      const metaIndex = extra.map(c => metadata.columns.indexOf(c));
      const columns = [...t.columns, ...extra];
      let rows = t.rows.map((row, i) => ({cells: extra.length ? [...row, ...metaIndex.map(j => {
        const meta = modelIndex >= 0 ? metaRow(row[modelIndex]) : null;
        return meta ? meta[j] : "";
      })] : row, imported: t.imported[i]}));
      const match = matcher(filter.value);
      if (modelIndex >= 0) rows = rows.filter(r => match(r.cells[modelIndex]));
      if (hideImported.checked) rows = rows.filter(r => !r.imported);
      const state = sortState[current];
      const sortIndex = columns.indexOf(state.column);
      if (sortIndex >= 0) {
        const numeric = rows.every(r => r.cells[sortIndex] === "" || number(r.cells[sortIndex]) !== null);
        const sign = state.descending ? -1 : 1;
        rows.sort((a, b) => {
          const x = a.cells[sortIndex], y = b.cells[sortIndex];
          if (x === "" || y === "") return (x === "") - (y === "");  // empty last either way
          return sign * (numeric ? number(x) - number(y) : x.localeCompare(y));
        });
      }
      const head = "<thead><tr>" + columns.map(c => {
        const mark = c === state.column ? (state.descending ? " \u25bc" : " \u25b2") : "";
        return `<th data-col="${escape(c)}"${extra.includes(c) ? ' class="joined"' : ""}>${escape(c)}${mark}</th>`;
      }).join("") + "</tr></thead>";
      const body = "<tbody>" + rows.map(r => `<tr${r.imported ? ' class="imported"' : ""}>` +
        r.cells.map((v, j) => `<td data-col="${escape(columns[j])}">${escape(v)}</td>`).join("") + "</tr>").join("") + "</tbody>";
      table.innerHTML = head + body;
      const imported = t.imported.filter(Boolean).length;
      count.textContent = `${rows.length.toLocaleString()} of ${t.rows.length.toLocaleString()} rows of ${t.name}` +
        (imported ? ` (${imported.toLocaleString()} imported)` : "");
      tableNote.textContent = modelIndex < 0 ? `${t.name} has no model column: the filter does not apply` : "";
    }
    table.addEventListener("click", event => {
      const th = event.target.closest("th");
      if (!th) return;
      const state = sortState[current];
      const column = th.dataset.col;
      const t = tables[current];
      const numeric = t.columns.includes(column) && t.rows.some(r => number(r[t.columns.indexOf(column)]) !== null);
      // First click: numbers high to low, text A to Z; the next click reverses.
      state.descending = state.column === column ? !state.descending : numeric;
      state.column = column;
      render();
    });
    render();
  }

  const section = el("section", {id: "tables"});
  main.appendChild(section);
  section.appendChild(el("h2", {}, "Tables"));
  tableView(section, data.tables, "", true);
  // The backend stacks against the reference: their own section (tables, then their plots).
  const conformance = data.tables.filter(t => t.name.startsWith("conformance-"));
  let conformanceSection = null;
  if (conformance.length) {
    conformanceSection = el("section", {id: "conformance"});
    main.appendChild(conformanceSection);
    conformanceSection.appendChild(el("h2", {}, "Backend stacks against the reference stack"));
    conformanceSection.appendChild(el("p", {class: "summary"}, "Per model and stack, on the same images as the " +
      "reference stack (the first of -b): top-1 delta (points), top-1 agreement (%), the largest and mean logit " +
      "differences, and MLPerf's pass (top-1 at least 99% of the reference's)."));
    tableView(conformanceSection, conformance, "conformance-", false);
  }
  marks.table = performance.now();

  // --- plots ------------------------------------------------------------------------------
  // plotly.js is evaluated after this script (it takes longer than the table): the page calls
  // rbenchPlots() once it is.
  window.rbenchPlots = function () {
  marks.plotly = performance.now();
  const plotSection = el("section", {id: "plots"});
  main.appendChild(plotSection);
  plotSection.appendChild(el("h2", {}, "Plots"));
  if (!data.plots.length) plotSection.appendChild(el("p", {class: "notes"}, "no plots: see the notes above"));
  const drawn = new Map();  // plot id -> promise of its drawing

  function percent(x) { return 100 / (1 + Math.exp(-x)); }  // a logit axis back to accuracy
  function hover(plot, i) {
    const p = plot.points;
    if (plot.x_category) {  // latency: the model, its p50 and whiskers
      let text = `<b>${label(data.models[p.model[i]])}</b><br>p50: ${p.y[i].toFixed(3)} ms`;
      plot.whisker_names.forEach((name, k) => { text += `<br>${label(name)}: ${p.whiskers[i][k].toFixed(3)} ms`; });
      return text;
    }
    const x = plot.logit ? percent(p.x[i]).toFixed(3) : p.x[i].toLocaleString();
    const y = plot.logit ? percent(p.y[i]).toFixed(3) : p.y[i].toFixed(3);
    let text = `<b>${label(data.models[p.model[i]])}</b><br>${label(plot.x_title)}: ${x}<br>${label(plot.y_title)}: ${y}`;
    if (p.gain[i] !== null) text += `<br>effective robustness: ${p.gain[i] > 0 ? "+" : ""}${p.gain[i].toFixed(2)}`;
    if (p.front[i]) text += "<br>on the Pareto front";
    return text;
  }
  function panelTraces(plot) {
    const out = [];
    plot.panels.forEach((panel, k) => {
      panel.series.forEach((series, j) => {
        out.push({type: "scatter", mode: "markers", name: label(series.name), legendgroup: series.name,
                  showlegend: k === 0, meta: "panel", xaxis: "x", yaxis: k ? `y${k + 1}` : "y",
                  x: plot.categories.map(label), y: series.y, cliponaxis: false,
                  marker: {symbol: "diamond", size: 10, color: STACKS[j % STACKS.length], line: {width: 1, color: "#1b1f24"}},
                  offsetgroup: series.name,
                  hovertemplate: `%{x}<br>${label(series.name)}: %{y}<extra>${label(panel.y_title)}</extra>`});
      });
    });
    return out;
  }
  function traces(plot) {
    if (plot.kind === "heatmap") {
      return [{type: "heatmap", z: plot.heat.z, x: plot.heat.columns.map(label), y: plot.heat.rows.map(label),
               colorscale: "Viridis",
               reversescale: true, colorbar: {title: {text: "error %"}},
               hovertemplate: "%{y}<br>%{x}: %{z:.2f}% error<extra></extra>"}];
    }
    if (plot.kind === "panels") return panelTraces(plot);
    const p = plot.points, out = [];
    function points(imported) {
      const keep = p.model.map((_, i) => i).filter(i => p.imported[i] === imported);
      if (!keep.length) return [];
      const x = plot.x_category ? keep.map(i => label(data.models[p.model[i]])) : keep.map(i => p.x[i]);
      const y = keep.map(i => p.y[i]);
      const colour = imported ? IMPORTED : OWN;
      const marker = imported ? {color: colour, size: 6, opacity: 0.7}
                              : {color: colour, size: 11, symbol: "diamond", line: {width: 1, color: "#1b1f24"}};
      const drawn = [];
      // Latency: the outer whisker (p99) thin, under the inner one (p90), both from the p50 up.
      const whiskers = plot.whisker_names || [];
      for (let k = whiskers.length - 1; k >= 0; k--) {
        drawn.push({type: "scatter", mode: "markers", name: `${label(whiskers[k])} (${imported ? "imported" : "yours"})`,
                    meta: "whisker", whisker: whiskers[k], x: x, y: y, hoverinfo: "skip", showlegend: false, cliponaxis: false,
                    marker: {color: colour, size: 1, opacity: 0},
                    error_y: {type: "data", symmetric: false, array: keep.map(i => p.whiskers[i][k] - p.y[i]),
                              arrayminus: keep.map(() => 0), color: colour, thickness: k ? 1 : 2.5, width: k ? 6 : 3}});
      }
      drawn.push({type: "scatter", mode: "markers", name: `${imported ? "imported" : "yours"} (${keep.length})`,
                  meta: "points", x: x, y: y, text: keep.map(i => hover(plot, i)), cliponaxis: false,
                  hovertemplate: "%{text}<extra></extra>", marker: marker});
      return drawn;
    }
    out.push(...points(1));
    for (const line of plot.lines) {
      // The Pareto front's points are ringed by its line's markers (drawn over the zoo's points).
      const front = line.name === "Pareto front";
      out.push({type: "scatter", mode: front ? "lines+markers" : "lines", name: label(line.name), x: line.x, y: line.y,
                hoverinfo: "skip", line: {color: LINE, width: 1.5},
                marker: {symbol: "circle-open", size: 16, color: LINE, line: {width: 1.5}}});
    }
    out.push(...points(0));  // the user's own on top of everything
    return out;
  }
  // A log axis labelled at 1, 2, 5 times the powers of ten that its values span, in full
  // (plotly's own labels the minor ticks with single digits: a "5" that means 0.5 or 500).
  function logAxis(values) {
    const positive = values.filter(v => v !== null && v > 0);
    const axis = {type: "log"};
    if (!positive.length) return axis;
    const low = Math.min(...positive), high = Math.max(...positive);
    const ticks = [];
    for (let e = Math.floor(Math.log10(low)) - 1; e <= Math.ceil(Math.log10(high)) + 1; e++) {
      for (const m of [1, 2, 5]) ticks.push(m * Math.pow(10, e));
    }
    // Within the values' span and a step either side; fewer labels on a wide span.
    const inside = ticks.filter(t => t >= low / 5 && t <= high * 5);
    const shown = Math.log10(high / low) > 3 ? inside.filter(t => t.toExponential().startsWith("1")) : inside;
    if (shown.filter(t => t >= low && t <= high).length < 2) return axis;  // a narrow span: plotly's own ticks
    axis.tickvals = shown;
    axis.ticktext = shown.map(t => t >= 1e6 ? `${+(t / 1e6).toPrecision(3)}M` : t >= 1e3 ? `${+(t / 1e3).toPrecision(3)}k` : `${+t.toPrecision(3)}`);
    return axis;
  }
  function layout(plot) {
    const base = {margin: {l: 60, r: 20, t: 10, b: 50}, hovermode: "closest", legend: {orientation: "h", y: -0.18},
                  xaxis: {title: {text: label(plot.x_title)}}, yaxis: {title: {text: label(plot.y_title)}}};
    if (plot.kind === "heatmap") {
      base.height = Math.min(900, 120 + 14 * plot.heat.rows.length);
      base.margin.l = 220;
      // Categories whatever the names look like (a model named 1e5 is not a number).
      base.yaxis = {type: "category", automargin: true, autorange: "reversed"};
      base.xaxis = {type: "category", tickangle: -45, automargin: true};
    }
    if (plot.kind === "panels") {
      const n = plot.panels.length;
      base.height = 140 + 190 * n;
      base.grid = {rows: n, columns: 1, pattern: "coupled", roworder: "top to bottom", ygap: 0.3};
      base.scattermode = "group";  // the stacks side by side at each model (their offsetgroup)
      base.legend = {orientation: "h", y: 1.02, yanchor: "bottom", title: {text: "stack (dashed: the reference)"}};
      base.margin.t = 40;
      base.shapes = [];
      plot.panels.forEach((panel, k) => {
        const axis = {title: {text: label(panel.y_title), font: {size: 11}}, automargin: true};
        if (panel.y_log) Object.assign(axis, logAxis(panel.series.flatMap(s => s.y)));
        if (panel.y_range) axis.range = panel.y_range;
        base[k ? `yaxis${k + 1}` : "yaxis"] = axis;
        if (panel.reference !== null) {
          base.shapes.push({type: "line", xref: "x domain", x0: 0, x1: 1, yref: k ? `y${k + 1}` : "y",
                            y0: panel.reference, y1: panel.reference, line: {color: "#57606a", width: 1, dash: "dash"}});
        }
      });
      base.xaxis = {type: "category", tickangle: -30, automargin: true};
      return base;
    }
    if (plot.x_category) {
      base.xaxis = {type: "category", tickangle: -30, automargin: true};
      // Above the plot: below it, the slanted model names would run into it.
      base.legend = {orientation: "h", y: 1.02, yanchor: "bottom", title: {text: "latency p50 (point), p90 (thick), p99 (thin)"}};
      base.margin.t = 40;
    }
    if (plot.x_log) Object.assign(base.xaxis, logAxis(plot.points.x));
    if (plot.y_log) Object.assign(base.yaxis, logAxis([...plot.points.y, ...(plot.points.whiskers || []).flat()]));
    if (plot.y_range) base.yaxis.range = plot.y_range;
    if (plot.ticks) {
      for (const axis of [base.xaxis, base.yaxis]) {  // logit coordinates, labelled in percent
        Object.assign(axis, {tickvals: plot.ticks.vals, ticktext: plot.ticks.text, zeroline: false});
      }
    }
    return base;
  }
  function isEmpty(plot) {
    if (plot.kind === "heatmap") return !plot.heat.rows.length;
    if (plot.kind === "panels") return !plot.panels.length || !plot.categories.length;
    return !plot.points.x.length;
  }
  function draw(plot) {
    if (!drawn.has(plot.id)) {
      const div = document.getElementById(plot.id);
      const empty = isEmpty(plot);
      drawn.set(plot.id, empty ? Promise.resolve(div) :
        Plotly.newPlot(div, traces(plot), layout(plot), {responsive: true, displaylogo: false}));
    }
    return drawn.get(plot.id);
  }
  // Plots are drawn as they come near the window, so a page of a whole zoo opens at once.
  const observer = "IntersectionObserver" in window ? new IntersectionObserver(entries => {
    for (const entry of entries) {
      if (entry.isIntersecting) {
        observer.unobserve(entry.target);
        draw(data.plots.find(p => p.id === entry.target.id));
      }
    }
  }, {rootMargin: "400px"}) : null;
  for (const plot of data.plots) {
    const figure = el("figure", {class: "plot"});
    figure.appendChild(el("figcaption", {}, plot.title));
    if (plot.notes.length) {
      const list = el("ul", {class: "notes"});
      for (const note of plot.notes) list.appendChild(el("li", {}, note));
      figure.appendChild(list);
    }
    const empty = isEmpty(plot);
    const div = el("div", {id: plot.id, class: empty ? "plot-area empty" : "plot-area"});
    figure.appendChild(div);
    figure.appendChild(el("a", {href: `plots/${plot.id}.svg`}, "SVG"));
    figure.appendChild(document.createTextNode(" "));
    figure.appendChild(el("a", {href: `plots/${plot.id}.png`}, "PNG"));
    (plot.kind === "panels" && conformanceSection ? conformanceSection : plotSection).appendChild(figure);
    if (observer) observer.observe(div); else draw(plot);
  }

  // For tests and measurements: `ready` resolves when the table and the plots in view are
  // drawn; `drawAll()` draws every plot.
  window.rbench = {
    data: data,
    marks: marks,
    drawAll: () => Promise.all(data.plots.map(draw)).then(() => performance.now() - started),
    ready: new Promise(resolve => requestAnimationFrame(() => {
      const inView = data.plots.filter(p => document.getElementById(p.id).getBoundingClientRect().top < window.innerHeight);
      Promise.all(inView.map(draw)).then(() => resolve(performance.now()));
    })),
  };
  };
})();
