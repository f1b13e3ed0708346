// Decisions per day per reviewer as small inline SVG line charts (no library, no CDN).
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const COLOURS = ["#2563eb", "#b42318", "#067647", "#9333ea", "#c2410c", "#0e7490", "#4d7c0f", "#be185d"];

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function draw(svg) {
    const data = JSON.parse(svg.dataset.timeline || "null");
    if (!data) return;
    const names = Object.keys(data.series);
    const width = Number(svg.getAttribute("width")), height = Number(svg.getAttribute("height"));
    const left = 22, bottom = 14, legend = 80, plotW = width - left - legend, plotH = height - bottom - 6;
    if (!names.length) {
      svg.appendChild(el("text", {x: left, y: height / 2, class: "empty"}, "no decisions yet"));
      return;
    }
    const max = Math.max(1, ...names.flatMap((name) => data.series[name]));
    const x = (i) => left + (plotW * i) / Math.max(1, data.days.length - 1);
    const y = (v) => 6 + plotH - (plotH * v) / max;
    svg.appendChild(el("line", {x1: left, y1: y(0), x2: left + plotW, y2: y(0), class: "axis"}));
    svg.appendChild(el("text", {x: 2, y: y(max) + 4, class: "tick"}, String(max)));
    svg.appendChild(el("text", {x: left, y: height - 2, class: "tick"}, data.days[0].slice(5)));
    svg.appendChild(el("text", {x: left + plotW - 24, y: height - 2, class: "tick"}, data.days.at(-1).slice(5)));
    names.forEach((name, n) => {
      const colour = COLOURS[n % COLOURS.length];
      const points = data.series[name].map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      const line = el("polyline", {points, fill: "none", stroke: colour, "stroke-width": 1.5});
      line.appendChild(el("title", {}, `${name}: ${data.series[name].reduce((a, b) => a + b, 0)} decisions`));
      svg.appendChild(line);
      svg.appendChild(el("text", {x: left + plotW + 6, y: 14 + 12 * n, fill: colour, class: "legend"}, name));
    });
  }

  document.querySelectorAll("svg.timeline").forEach(draw);
})();
