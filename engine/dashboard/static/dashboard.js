// engine dashboard: renders the JSON API into the page and follows the server's event stream.
// Task data is only ever put into the page as text (textContent), never parsed as markup.
(function () {
  "use strict";

  var page = document.body.dataset.page;
  // every path the page asks for is under the dashboard's --url-prefix ("" for none)
  var prefix = document.body.dataset.prefix || "";
  var csrf = document.querySelector('meta[name="csrf-token"]').content;

  // -- small helpers ------------------------------------------------------------------------
  function el(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (key) {
        var value = props[key];
        if (value === null || value === undefined) return;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = String(value);
        else if (key === "on") Object.keys(value).forEach(function (ev) { node.addEventListener(ev, value[ev]); });
        else if (key === "dataset") Object.keys(value).forEach(function (d) { node.dataset[d] = value[d]; });
        else node.setAttribute(key, value);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function cell(content, cls) {
    return el("td", {class: cls}, content === null || content === undefined ? "" : content);
  }

  function fill(tbody, rows, emptyText, columns) {
    tbody.replaceChildren();
    if (!rows.length) {
      tbody.appendChild(el("tr", {class: "empty"}, el("td", {colspan: columns, text: emptyText})));
      return;
    }
    rows.forEach(function (row) { tbody.appendChild(row); });
  }

  function when(ts) {
    if (ts === null || ts === undefined) return "";
    var d = new Date(ts * 1000);
    return d.toLocaleTimeString([], {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function whenFull(ts) {
    if (ts === null || ts === undefined) return "";
    return new Date(ts * 1000).toLocaleDateString() + " " + when(ts);
  }

  function seconds(value) {
    if (value === null || value === undefined) return "";
    return value < 1 ? (value * 1000).toFixed(1) + " ms" : value.toFixed(3) + " s";
  }

  function memory(kib) {
    if (kib === null || kib === undefined) return "";
    return kib > 1048576 ? (kib / 1048576).toFixed(2) + " GiB" : (kib / 1024).toFixed(1) + " MiB";
  }

  function stateBadge(state) {
    return el("span", {class: "state state-" + String(state).toLowerCase(), text: state});
  }

  function taskLink(id, text) {
    return el("a", {href: prefix + "/tasks/" + encodeURIComponent(id), text: text || id});
  }

  function flash(text, bad) {
    var box = document.getElementById("flash");
    box.textContent = text;
    box.className = bad ? "bad" : "good";
    box.hidden = false;
  }

  function getJSON(url) {
    return fetch(prefix + url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) {
        return r.json().then(function (body) { return {status: r.status, body: body}; });
      });
  }

  function post(url, body) {
    return fetch(prefix + url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.text().then(function (text) {
        var data;
        try { data = JSON.parse(text); } catch (e) { data = {error: text}; }
        if (!r.ok || data.ok === false) {
          flash(data.error || data.detail || text || ("failed: HTTP " + r.status), true);
          return null;
        }
        flash(data.message || "done", false);
        return data;
      });
    }, function (err) { flash("request failed: " + err, true); return null; });
  }

  // -- the event stream ---------------------------------------------------------------------
  var handlers = {overview: [], tasks: []};
  function on(name, fn) { handlers[name].push(fn); }

  // after an action, show its effect at once instead of at the next push
  function refreshOverview() {
    getJSON("/api/overview").then(function (r) {
      if (r.status === 200) handlers.overview.forEach(function (fn) { fn(r.body); });
    });
  }

  function connect() {
    var live = document.getElementById("live");
    var source = new EventSource(prefix + "/api/stream");
    source.onopen = function () { live.textContent = "live"; live.className = "live on"; };
    source.onerror = function () { live.textContent = "reconnecting…"; live.className = "live off"; };
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (ev) {
        var data = JSON.parse(ev.data);
        handlers[name].forEach(function (fn) { fn(data); });
      });
    });
  }

  // -- overview -------------------------------------------------------------------------------
  function workerRows(workers) {
    return workers.filter(function (w) { return w.online; }).map(function (w) {
      return el("tr", {"data-worker": w.name},
        cell(w.name, "name"), cell(w.host), cell(w.pool), cell(w.concurrency, "num"),
        cell(w.active, "num"), cell(w.processed, "num"), cell(w.failed, "num"),
        cell(w.load === null || w.load === undefined ? "" : w.load.toFixed(2), "num"),
        cell(memory(w.rss_kib), "num"), cell(w.age.toFixed(1) + " s ago"));
    });
  }

  function queueRows(queues, withActions, paused) {
    return queues.map(function (q) {
      var stopped = (paused || []).indexOf(q.name) >= 0;
      var row = el("tr", {"data-queue": q.name, "data-paused": stopped ? "yes" : null},
        cell(el("span", null, q.name, stopped ? el("span", {class: "state state-paused", text: "paused"}) : null), "name"),
        cell(q.waiting, "num"), cell(q.unacked, "num"),
        cell(q.delayed, "num"), cell(q.dead, "num" + (q.dead ? " bad" : "")));
      if (withActions) {
        row.appendChild(cell(el("button", {type: "button", text: "dead letters",
          on: {click: function () { showDead(q.name); }}})));
      }
      return row;
    });
  }

  function overviewPage() {
    var box = document.getElementById("chart");
    var chart = null;
    function size() { return {width: Math.max(box.clientWidth, 300), height: 260}; }
    function makeChart(data) {
      var opts = Object.assign(size(), {
        series: [
          {},
          {label: "succeeded/s", stroke: "#2e7d32", fill: "rgba(46,125,50,0.12)", width: 2},
          {label: "failed/s", stroke: "#c62828", fill: "rgba(198,40,40,0.12)", width: 2}
        ],
        axes: [{}, {label: "tasks/s"}],
        scales: {y: {range: function (u, min, max) { return [0, Math.max(max, 1)]; }}}
      });
      return new uPlot(opts, data, box);
    }
    window.addEventListener("resize", function () { if (chart) chart.setSize(size()); });
    on("overview", function (data) {
      var t = data.throughput;
      var series = [t.t, t.succeeded, t.failed];
      if (!chart) chart = makeChart(series); else chart.setData(series);
      var sum = function (xs) { return xs.reduce(function (a, b) { return a + b; }, 0); };
      var ok = sum(t.succeeded), bad = sum(t.failed);
      document.getElementById("sum-succeeded").textContent = ok;
      document.getElementById("sum-failed").textContent = bad;
      box.dataset.succeeded = ok;
      box.dataset.failed = bad;
      box.dataset.updates = Number(box.dataset.updates) + 1;
      var online = data.workers.filter(function (w) { return w.online; }).length;
      document.getElementById("workers-count").textContent = online + " online";
      fill(document.querySelector("#workers tbody"), workerRows(data.workers), "no worker online", 10);
      fill(document.querySelector("#queues tbody"), queueRows(data.queues, false, data.flow.paused), "no queue yet", 5);
    });
  }

  // -- tasks ----------------------------------------------------------------------------------
  function tasksPage() {
    var params = new URLSearchParams(location.search);
    var state = document.getElementById("filter-state");
    var name = document.getElementById("filter-name");
    var current = {state: params.get("state") || "", name: params.get("name") || "",
                   page: Number(params.get("page") || 1)};
    state.value = current.state;
    name.value = current.name;
    var loading = false, again = false, pages = 1;

    function load() {
      if (loading) { again = true; return; }
      loading = true;
      var q = new URLSearchParams();
      if (current.state) q.set("state", current.state);
      if (current.name) q.set("name", current.name);
      if (current.page > 1) q.set("page", current.page);
      history.replaceState(null, "", prefix + "/tasks" + (q.toString() ? "?" + q : ""));
      getJSON("/api/tasks?" + q).then(function (r) {
        var data = r.body;
        pages = data.pages;
        current.page = data.page;
        document.getElementById("tasks-total").textContent = data.total + " task(s)";
        document.getElementById("page-info").textContent = "page " + data.page + " of " + data.pages;
        document.getElementById("page-prev").disabled = data.page <= 1;
        document.getElementById("page-next").disabled = data.page >= data.pages;
        fill(document.querySelector("#tasks tbody"), data.tasks.map(function (t) {
          return el("tr", {"data-task": t.id, "data-state": t.state},
            cell(stateBadge(t.state)), cell(t.name, "name"), cell(taskLink(t.id), "mono"),
            cell(t.worker), cell(when(t.received)), cell(seconds(t.runtime), "num"),
            cell(t.retries, "num"), cell(t.exception ? t.exception + (t.message ? ": " + t.message : "") : "", "exception"));
        }), "no task matches", 8);
      }).finally(function () {
        loading = false;
        if (again) { again = false; load(); }
      });
    }

    state.addEventListener("change", function () { current.state = state.value; current.page = 1; load(); });
    name.addEventListener("input", function () { current.name = name.value; current.page = 1; load(); });
    document.getElementById("task-filter").addEventListener("submit", function (ev) { ev.preventDefault(); load(); });
    document.getElementById("page-prev").addEventListener("click", function () { current.page = Math.max(current.page - 1, 1); load(); });
    document.getElementById("page-next").addEventListener("click", function () { current.page = Math.min(current.page + 1, pages); load(); });
    on("tasks", load);
    load();
  }

  // -- one task -------------------------------------------------------------------------------
  function taskPage() {
    var section = document.getElementById("task");
    var id = section.dataset.taskId;
    var done = false;
    function set(field, value) { document.getElementById("task-" + field).textContent = value === null || value === undefined ? "" : value; }
    function load() {
      if (done) return;
      getJSON("/api/tasks/" + encodeURIComponent(id)).then(function (r) {
        document.getElementById("task-missing").hidden = r.status !== 404;
        if (r.status !== 200) return;
        var t = r.body;
        var badge = document.getElementById("task-state");
        badge.textContent = t.state;
        badge.className = "state state-" + t.state.toLowerCase();
        section.dataset.state = t.state;
        set("name", t.name); set("worker", t.worker); set("queue", t.queue);
        set("retries", t.retries); set("received", whenFull(t.received));
        set("started", whenFull(t.started)); set("ended", whenFull(t.ended || t.date_done));
        set("runtime", seconds(t.runtime));
        set("args", t.args === null ? "not known (no received event or dead letter holds them)" : t.args);
        set("kwargs", t.kwargs === null ? "" : t.kwargs);
        set("result", t.result);
        set("exception", t.exception ? t.exception + (t.message ? ": " + t.message : "") : "");
        set("traceback", t.traceback || "");
        var dead = t.dead_letter;
        document.getElementById("task-dead-row").hidden = !dead;
        if (dead) {
          set("dead", dead.reason + " (queue " + dead.queue + ", " + whenFull(dead.at) + ", entry " + dead.entry + ")");
          document.getElementById("task-dead-link").href = prefix + "/queues?queue=" + encodeURIComponent(dead.queue);
        }
        fill(document.querySelector("#task-timeline tbody"), t.timeline.map(function (e) {
          return el("tr", {"data-event": e.type}, cell(whenFull(e.ts)), cell(e.type), cell(e.worker), cell(e.detail));
        }), "no events seen", 4);
        // a final task changes no more (a failure once its traceback has arrived; a dead
        // letter until it is requeued, which the next "tasks" push shows)
        var final = ["SUCCESS", "FAILURE", "REVOKED"].indexOf(t.state) >= 0;
        done = final && (t.state !== "FAILURE" || !!t.traceback);
      });
    }
    document.getElementById("task-revoke").addEventListener("click", function () {
      if (confirm("Revoke task " + id + "?")) post("/api/revoke", {id: id, terminate: false});
    });
    on("tasks", load);
    load();
  }

  // -- queues and dead letters ------------------------------------------------------------------
  var deadQueue = null, deadCount = null;

  function showDead(queue, before) {
    deadQueue = queue;
    var section = document.getElementById("dead");
    section.hidden = false;
    document.getElementById("dead-queue").textContent = queue;
    var url = "/api/queues/" + encodeURIComponent(queue) + "/dead" + (before ? "?before=" + encodeURIComponent(before) : "");
    getJSON(url).then(function (r) {
      var data = r.body;
      document.getElementById("dead-total").textContent = data.total + " in all";
      var more = document.getElementById("dead-more");
      more.hidden = !data.more;
      more.onclick = function () { showDead(queue, data.next); };
      fill(document.querySelector("#dead-letters tbody"), data.letters.map(function (d) {
        var base = "/api/queues/" + encodeURIComponent(queue) + "/dead/" + encodeURIComponent(d.entry);
        var requeue = el("button", {type: "button", class: "requeue", text: "requeue", disabled: d.error ? "" : null,
          on: {click: function () { post(base + "/requeue").then(function (ok) { if (ok) { showDead(queue); refreshOverview(); } }); }}});
        var drop = el("button", {type: "button", class: "danger delete", text: "delete",
          on: {click: function () {
            if (confirm("Delete dead letter " + d.entry + " for good?")) post(base + "/delete").then(function (ok) { if (ok) { showDead(queue); refreshOverview(); } });
          }}});
        return el("tr", {"data-entry": d.entry, "data-task": d.id || ""},
          cell(d.entry, "mono"), cell(whenFull(d.at)), cell(d.reason),
          cell(d.error ? "undecodable: " + d.error : d.task, "name"),
          cell(d.id ? taskLink(d.id) : "", "mono"),
          cell(d.error ? d.preview : d.args + (d.kwargs && d.kwargs !== "{}" ? " " + d.kwargs : ""), "mono"),
          cell(d.retries, "num"), cell(el("span", {class: "actions"}, requeue, drop)));
      }), "no dead letters", 8);
    });
  }

  function showFlow(flow) {
    document.getElementById("paused").textContent = flow.paused.length ? flow.paused.join(", ") : "none";
    var names = Object.keys(flow.tasks);
    fill(document.querySelector("#limits tbody"), names.map(function (name) {
      var t = flow.tasks[name];
      return el("tr", {"data-task": name},
        cell(name, "name"), cell(t.rate === null ? "none" : t.rate),
        cell(t.tokens === null ? "" : t.tokens.toFixed(1), "num"), cell(t.waiting, "num"),
        cell(t.max_concurrency === null ? "none" : t.max_concurrency, "num"),
        cell(t.max_concurrency === null ? "" : t.slots_used + " of " + t.max_concurrency, "num"));
    }), "no task has a rate limit or max_concurrency", 6);
  }

  function queuesPage() {
    var params = new URLSearchParams(location.search);
    if (params.get("queue")) showDead(params.get("queue"));
    on("overview", function (data) {
      fill(document.querySelector("#queues tbody"), queueRows(data.queues, true, data.flow.paused), "no queue yet", 6);
      showFlow(data.flow);
      if (deadQueue) {
        var q = data.queues.filter(function (x) { return x.name === deadQueue; })[0];
        if (q && deadCount !== null && q.dead !== deadCount) showDead(deadQueue);
        deadCount = q ? q.dead : null;
      }
    });
  }

  // -- workers -------------------------------------------------------------------------------
  function workersPage() {
    // rows are kept across pushes (only their cells change) so that a typed pool size survives
    var rows = {};
    function build(w) {
      var base = "/api/workers/" + encodeURIComponent(w.name) + "/";
      var n = el("input", {type: "number", min: "1", value: "1", class: "n", "aria-label": "slots"});
      var lane = w.lanes.length > 1 ? el("select", {class: "lane", "aria-label": "lane"}) : null;
      if (lane) w.lanes.forEach(function (l) { lane.appendChild(el("option", {value: l.name, text: l.name})); });
      function resize(verb) {
        // the worker publishes its new size before it answers: show it at once
        return function () { post(base + verb, {n: Number(n.value), lane: lane ? lane.value : null}).then(refreshOverview); };
      }
      var actions = el("span", {class: "actions"}, lane, n,
        el("button", {type: "button", text: "grow", class: "grow", on: {click: resize("pool-grow")}}),
        el("button", {type: "button", text: "shrink", class: "shrink", on: {click: resize("pool-shrink")}}),
        el("button", {type: "button", text: "shut down", class: "danger shutdown", on: {click: function () {
          if (confirm("Shut down worker " + w.name + " (warm: running tasks finish)?")) post(base + "shutdown");
        }}}));
      var cells = [cell(w.name, "name"), cell(""), cell(""), cell("", "num"), cell("", "num"),
                   cell("", "num"), cell("", "num"), cell(actions)];
      var row = el("tr", {"data-worker": w.name});
      cells.forEach(function (c) { row.appendChild(c); });
      return {row: row, cells: cells, actions: actions};
    }
    on("overview", function (data) {
      var tbody = document.querySelector("#workers tbody");
      var seen = {};
      tbody.querySelectorAll("tr.empty").forEach(function (r) { r.remove(); });
      data.workers.forEach(function (w) {
        seen[w.name] = true;
        var r = rows[w.name] || (rows[w.name] = build(w));
        var c = r.cells;
        c[1].textContent = w.online ? "online" : "lost (" + w.age.toFixed(0) + " s)";
        c[1].className = w.online ? "good" : "bad";
        c[2].textContent = w.lanes.map(function (l) { return l.name + ": " + l.queues.join(",") + " on " + l.pool; }).join("; ");
        c[3].textContent = w.active;
        c[4].textContent = w.load === null || w.load === undefined ? "" : w.load.toFixed(2);
        c[5].textContent = memory(w.rss_kib);
        c[6].textContent = w.concurrency;
        r.actions.hidden = !w.online;
        if (r.row.parentNode !== tbody) tbody.appendChild(r.row);   // moving it would blur an input
      });
      Object.keys(rows).forEach(function (name) {
        if (!seen[name]) { rows[name].row.remove(); delete rows[name]; }
      });
      if (!data.workers.length) fill(tbody, [], "no worker", 8);
    });
    document.getElementById("revoke-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var id = document.getElementById("revoke-id").value.trim();
      if (id) post("/api/revoke", {id: id, terminate: document.getElementById("revoke-terminate").checked});
    });
  }

  var pages = {overview: overviewPage, tasks: tasksPage, task: taskPage, queues: queuesPage, workers: workersPage};
  if (pages[page]) pages[page]();
  connect();
})();
