// The discovery dashboard: fetches the overview (JSON, same origin) every
// refresh interval and draws services, instances, scores, response-time
// sparklines and cache hit rates, and a service's configuration history on
// demand. No external resources; data is inserted as text, never as HTML.
(function () {
  "use strict";
  var refresh = parseInt(document.body.getAttribute("data-refresh-ms"), 10) || 1500;

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") { e.textContent = attrs[k]; } else { e.setAttribute(k, attrs[k]); }
      });
    }
    (children || []).forEach(function (c) { if (c) { e.appendChild(c); } });
    return e;
  }

  function ms(v) {
    if (!v) { return "–"; }
    return v < 1 ? v.toFixed(2) + " ms" : v < 100 ? v.toFixed(1) + " ms" : Math.round(v) + " ms";
  }

  function ago(ts, now) {
    if (!ts) { return "never"; }
    var s = Math.max(0, (now - Date.parse(ts)) / 1000);
    return s < 1 ? "just now" : s < 60 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago";
  }

  function badge(status) {
    return el("span", { "class": "badge status-" + status, text: status });
  }

  // a service's "warning" means some of its instances cannot be picked
  function serviceBadge(status) {
    var b = badge(status);
    if (status === "warning") { b.textContent = "degraded"; }
    return b;
  }

  function scoreBar(score) {
    var bar = el("span", { "class": "score", title: score.toFixed(2) }, [el("span")]);
    bar.firstChild.style.width = Math.round(score * 100) + "%";
    return el("span", null, [bar, document.createTextNode(score.toFixed(2))]);
  }

  function sparkline(points) {
    var ns = "http://www.w3.org/2000/svg", w = 100, h = 22;
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("data-points", points.length);
    if (points.length > 0) {
      var max = Math.max.apply(null, points) || 1, step = points.length > 1 ? w / (points.length - 1) : 0;
      var pts = points.map(function (p, i) {
        return (i * step).toFixed(1) + "," + (h - 1 - (p / max) * (h - 2)).toFixed(1);
      });
      if (points.length === 1) { pts.push(w + "," + pts[0].split(",")[1]); }
      var line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", pts.join(" "));
      svg.appendChild(line);
    }
    return svg;
  }

  function instanceRow(inst, now) {
    var tr = el("tr", { "class": "instance status-" + inst.status, "data-instance": inst.id, "data-status": inst.status }, [
      el("td", { text: inst.id }),
      el("td", { text: inst.addr }),
      el("td", null, [badge(inst.status)]),
      el("td", null, [scoreBar(inst.score)]),
      el("td", { text: ms(inst.response_time_ms) }),
      el("td", null, [sparkline(inst.rtt_ms || [])]),
      el("td", { text: ago(inst.last_check, now) }),
      el("td", { "class": "err", text: inst.last_error || "" })
    ]);
    return tr;
  }

  // The configuration of a service: its kept versions (GET
  // services/{name}/config/history), fetched when its disclosure is opened
  // and at every refresh while it stays open. configs remembers, by service,
  // the open ones and what they last showed, as every refresh draws the
  // page anew.
  var configs = {};

  function versionItem(v, now) {
    return el("li", { "data-config-revision": String(v.config_revision) }, [
      el("div", { "class": "muted", text: "config revision " + v.config_revision + " · " + ago(v.created_at, now) }),
      el("pre", { text: JSON.stringify(v.config, null, 2) })
    ]);
  }

  function fillConfig(box, c, now) {
    if (c.error) {
      box.replaceChildren(el("p", { "class": "error", text: c.error }));
    } else if (!c.history) {
      box.replaceChildren(el("p", { "class": "muted", text: "loading…" }));
    } else if (c.history.versions.length === 0) {
      box.replaceChildren(el("p", { "class": "muted", text: "no configuration" }));
    } else {
      box.replaceChildren(el("ol", { "class": "versions" }, c.history.versions.map(function (v) { return versionItem(v, now); })));
    }
  }

  function loadConfig(name, box, now) {
    fetch("services/" + encodeURIComponent(name) + "/config/history", { cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) { throw new Error(body.error || "configuration: HTTP " + r.status); }
          return body;
        });
      })
      .then(function (h) { return { history: h }; }, function (e) { return { error: String(e.message || e) }; })
      .then(function (c) {
        if (configs[name]) {
          configs[name] = c;
          if (box.isConnected) { fillConfig(box, c, now); }
        }
      });
  }

  function configBlock(name, now) {
    var box = el("div", { "class": "config-body" });
    var d = el("details", { "class": "config", "data-config": name }, [el("summary", { text: "configuration" }), box]);
    var c = configs[name];
    if (c) {
      d.open = true;
      fillConfig(box, c, now);
      loadConfig(name, box, now);
    }
    d.addEventListener("toggle", function () {
      if (d.open && !configs[name]) {
        configs[name] = {};
        fillConfig(box, configs[name], now);
        loadConfig(name, box, now);
      } else if (!d.open) {
        delete configs[name];
      }
    });
    return d;
  }

  function serviceBlock(svc, now) {
    var head = el("tr", null, ["instance", "address", "status", "score", "response", "history", "last check", "last error"].map(function (h) {
      return el("th", { text: h });
    }));
    var body = el("tbody", null, svc.instances.map(function (i) { return instanceRow(i, now); }));
    var facts = "score " + svc.score.toFixed(2) + " · " + ms(svc.response_time_ms) + " · " + svc.method +
      " · " + svc.usable + "/" + svc.live + " usable · rev " + svc.revision + " · checked " + ago(svc.last_check, now);
    return el("section", { "class": "service status-" + svc.status, "data-service": svc.name, "data-status": svc.status }, [
      el("h2", null, [el("span", { text: svc.name }), serviceBadge(svc.status), el("span", { "class": "facts", text: facts })]),
      el("table", null, [el("thead", null, [head]), body]),
      configBlock(svc.name, now)
    ]);
  }

  function render(ov) {
    var now = Date.parse(ov.at) || Date.now();
    document.getElementById("total").textContent = ov.total_services;
    document.getElementById("healthy").textContent = ov.healthy_services;
    document.getElementById("degraded").textContent = ov.degraded_services;
    document.getElementById("unhealthy").textContent = ov.unhealthy_services;
    document.getElementById("avg-rt").textContent = ms(ov.avg_response_time_ms);
    var cache = document.getElementById("cache");
    cache.replaceChildren.apply(cache, ov.cache.map(function (l) {
      return el("div", { "class": "card", "data-layer": l.layer }, [
        el("div", { "class": "label", text: l.layer + " (" + l.name + ") hit rate" }),
        el("div", { "class": "value", text: (l.hit_rate * 100).toFixed(1) + "%" })
      ]);
    }));
    var list = document.getElementById("services");
    list.replaceChildren.apply(list, ov.services.map(function (s) { return serviceBlock(s, now); }));
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString() +
      (ov.from_cache ? " · database unreachable: cached services" : "");
    document.body.setAttribute("data-loaded", "true");
  }

  function tick() {
    fetch("overview", { cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("overview: HTTP " + r.status); }
        return r.json();
      })
      .then(function (ov) {
        document.getElementById("error").hidden = true;
        render(ov);
      })
      .catch(function (e) {
        var p = document.getElementById("error");
        p.textContent = String(e.message || e);
        p.hidden = false;
      })
      .then(function () { setTimeout(tick, refresh); });
  }
  tick();
}());
