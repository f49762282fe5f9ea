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
    "Imported rows are grey in the plots and marked in the tables.";
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

  const section = el("section", {id: "tables"});
  main.appendChild(section);
  section.appendChild(el("h2", {}, "Tables"));
  const controls = el("div", {class: "controls"});
  const chooser = el("select", {id: "table-select", "aria-label": "result file"});
  controls.appendChild(chooser);
  const filter = el("input", {id: "filter", type: "search", placeholder: "model: substring or glob (convnext*, *.in1k)", size: "40"});
  controls.appendChild(filter);
  const hideImported = el("input", {id: "hide-imported", type: "checkbox"});
  const hideLabel = el("label", {}, " hide imported");
  hideLabel.prepend(hideImported);
  controls.appendChild(hideLabel);
  const joined = new Set();
  if (joinable.length) {
    controls.appendChild(el("span", {class: "join-title"}, `join from ${metadata.name}:`));
    for (const column of joinable) {
      const box = el("input", {type: "checkbox", "data-join": column});
      box.addEventListener("change", () => { box.checked ? joined.add(column) : joined.delete(column); render(); });
      const label = el("label", {}, " " + column);
      label.prepend(box);
      controls.appendChild(label);
    }
  }
  const count = el("span", {id: "row-count", class: "count"});
  controls.appendChild(count);
  section.appendChild(controls);
  const tableNote = el("p", {class: "table-note"});
  section.appendChild(tableNote);
  const table = el("table", {id: "results-table"});
  section.appendChild(table);

  let current = 0;
  const sortState = data.tables.map(() => ({column: null, descending: false}));
  data.tables.forEach((t, i) => chooser.appendChild(el("option", {value: String(i)}, `${t.name} (${t.rows.length})`)));
  chooser.addEventListener("change", () => { current = Number(chooser.value); render(); });
  filter.addEventListener("input", () => render());
  hideImported.addEventListener("change", () => render());

  function render() {
    const t = data.tables[current];
    if (!t) { table.innerHTML = ""; count.textContent = "no tables"; return; }
    const modelIndex = t.columns.indexOf("model");
    // A column the file has already (a results file's param_count) is not joined again.
    const extra = t === metadata ? [] : joinable.filter(c => joined.has(c) && !t.columns.includes(c));
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
    const t = data.tables[current];
    const numeric = t.columns.includes(column) && t.rows.some(r => number(r[t.columns.indexOf(column)]) !== null);
    // First click: numbers high to low, text A to Z; the next click reverses.
    state.descending = state.column === column ? !state.descending : numeric;
    state.column = column;
    render();
  });
  render();
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
    const x = plot.logit ? percent(p.x[i]).toFixed(3) : p.x[i].toLocaleString();
    const y = plot.logit ? percent(p.y[i]).toFixed(3) : p.y[i].toFixed(3);
    let text = `<b>${label(data.models[p.model[i]])}</b><br>${label(plot.x_title)}: ${x}<br>${label(plot.y_title)}: ${y}`;
    if (p.gain[i] !== null) text += `<br>effective robustness: ${p.gain[i] > 0 ? "+" : ""}${p.gain[i].toFixed(2)}`;
    if (p.front[i]) text += "<br>on the Pareto front";
    return text;
  }
  function traces(plot) {
    if (plot.kind === "heatmap") {
      return [{type: "heatmap", z: plot.heat.z, x: plot.heat.columns.map(label), y: plot.heat.rows.map(label),
               colorscale: "Viridis",
               reversescale: true, colorbar: {title: {text: "error %"}},
               hovertemplate: "%{y}<br>%{x}: %{z:.2f}% error<extra></extra>"}];
    }
    const p = plot.points, out = [];
    for (const [imported, name, colour, size] of [[1, "imported", IMPORTED, 6], [0, "this store", OWN, 9]]) {
      const keep = p.model.map((_, i) => i).filter(i => p.imported[i] === imported);
      if (!keep.length) continue;
      out.push({type: "scatter", mode: "markers", name: `${name} (${keep.length})`, meta: "points",
                x: keep.map(i => p.x[i]), y: keep.map(i => p.y[i]),
                text: keep.map(i => hover(plot, i)),
                hovertemplate: "%{text}<extra></extra>",
                marker: {color: colour, size: size, opacity: imported ? 0.7 : 1}});
    }
    for (const line of plot.lines) {
      // The Pareto front's points are ringed by its line's markers (drawn over the points).
      const front = line.name === "Pareto front";
      out.push({type: "scatter", mode: front ? "lines+markers" : "lines", name: label(line.name), x: line.x, y: line.y,
                hoverinfo: "skip", line: {color: LINE, width: 1.5},
                marker: {symbol: "circle-open", size: 12, color: LINE, line: {width: 1.5}}});
    }
    return out;
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
    if (plot.x_log) base.xaxis.type = "log";
    if (plot.ticks) {
      for (const axis of [base.xaxis, base.yaxis]) {  // logit coordinates, labelled in percent
        Object.assign(axis, {tickvals: plot.ticks.vals, ticktext: plot.ticks.text, zeroline: false});
      }
    }
    return base;
  }
  function draw(plot) {
    if (!drawn.has(plot.id)) {
      const div = document.getElementById(plot.id);
      const empty = plot.kind === "heatmap" ? !plot.heat.rows.length : !plot.points.x.length;
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
    const empty = plot.kind === "heatmap" ? !plot.heat.rows.length : !plot.points.x.length;
    const div = el("div", {id: plot.id, class: empty ? "plot-area empty" : "plot-area"});
    figure.appendChild(div);
    figure.appendChild(el("a", {href: `plots/${plot.id}.svg`}, "SVG"));
    figure.appendChild(document.createTextNode(" "));
    figure.appendChild(el("a", {href: `plots/${plot.id}.png`}, "PNG"));
    plotSection.appendChild(figure);
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
