// The OMA console's own script: confirmation of destructive actions, the CSRF header for htmx
// requests, and the throughput sparklines drawn from the samples the page has polled.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  }, true);

  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { event.detail.headers["X-CSRF-Token"] = meta.content; }
  });

  var samples = {};  // job id → [[seconds, bytes per second], ...]
  var WINDOW = 120;  // samples kept per job

  function draw(svg) {
    var job = svg.getAttribute("data-job");
    var rate = parseFloat(svg.getAttribute("data-rate") || "0");
    var done = svg.getAttribute("data-done") || "";
    var list = samples[job] || (samples[job] = []);
    var last = list[list.length - 1];
    if (!last || last[2] !== done) {
      list.push([Date.now() / 1000, rate, done]);
      if (list.length > WINDOW) { list.shift(); }
    }
    var width = 240, height = 40;
    var t0 = list[0][0], t1 = Math.max(list[list.length - 1][0], t0 + 1);
    var peak = Math.max.apply(null, list.map(function (s) { return s[1]; }).concat([1]));
    var points = list.map(function (s) {
      var x = (s[0] - t0) / (t1 - t0) * width;
      var y = height - (s[1] / peak) * (height - 2) - 1;
      return x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    var line = svg.querySelector("polyline");
    if (!line) {
      line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      svg.appendChild(line);
    }
    line.setAttribute("points", list.length > 1 ? points : "0," + (height - 1) + " " + width + "," + (height - 1));
    svg.setAttribute("data-samples", String(list.length));
  }

  function drawAll() {
    document.querySelectorAll("svg.spark[data-job]").forEach(draw);
  }
  document.addEventListener("DOMContentLoaded", drawAll);
  document.addEventListener("htmx:afterSettle", drawAll);
})();
