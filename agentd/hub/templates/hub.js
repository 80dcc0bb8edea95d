// The hub's pages, progressively enhanced (every page works without this file):
// - times shown in the viewer's own time zone (<time datetime>);
// - the fleet page refreshes its counts and rows by itself;
// - the PC page's "Run check now": start a run through the JSON API (session cookie +
//   CSRF header), one progress row per check, poll until the run ends (and only then
//   stop), pick up a run still in progress after a reload. Text is set as text, never HTML.
(function () {
  function localTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      var exact = when.toLocaleString(undefined, {year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"});
      if (el.dataset.relative) el.title = exact; else el.textContent = exact;
    });
  }
  localTimes(document);

  // -- the fleet page: counts and rows refresh by themselves --------------------------------
  var fleet = document.getElementById("fleet");
  if (fleet && fleet.dataset.refreshS) {
    var every = Math.max(10, parseInt(fleet.dataset.refreshS, 10) || 30) * 1000;
    var refresh = function () {
      if (document.hidden) { setTimeout(refresh, every); return; }
      fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          ["counts", "fleet-body", "sites", "refreshed"].forEach(function (id) {
            var now = document.getElementById(id), next = fresh.getElementById(id);
            if (now && next) { localTimes(next); now.replaceWith(document.importNode(next, true)); }
          });
        })
        .catch(function () {})
        .then(function () { setTimeout(refresh, every); });
    };
    setTimeout(refresh, every);
  }

  // -- the PC page: runs ------------------------------------------------------------------
  var section = document.getElementById("run");
  if (!section) return;
  var button = document.getElementById("run-check");
  var state = document.getElementById("run-state");
  var list = document.getElementById("progress");
  var where = document.getElementById("run-report");
  var installId = section.dataset.installId;
  var csrf = section.dataset.csrf;
  var NAMES = {requested: "requested", sent: "sent to the PC", running: "running", done: "done", failed: "failed",
               offline: "PC went offline", timed_out: "timed out"};

  function row(checkId) {
    var key = checkId || "(run)";
    var li = list.querySelector('li[data-check="' + CSS.escape(key) + '"]');
    if (!li) {
      li = document.createElement("li");
      li.dataset.check = key;
      var badge = document.createElement("span");
      badge.className = "badge";
      var text = document.createElement("span");
      text.className = "text";
      var note = document.createElement("span");
      note.className = "note";
      li.appendChild(badge);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(text);
      li.appendChild(note);
      list.appendChild(li);
    }
    return li;
  }

  function show(event) {
    var li;
    if (event.event === "started") {
      li = row(event.check_id);
      li.querySelector(".badge").textContent = "RUNNING";
      li.querySelector(".text").textContent = event.check_id + (event.title ? " (" + event.title + ")" : "");
    } else if (event.event === "note") {
      li = row(event.check_id);
      li.querySelector(".note").textContent = " · " + event.text;
    } else if (event.event === "finished" && event.result) {
      li = row(event.result.id);
      li.querySelector(".badge").textContent = (event.result.status || "").toUpperCase();
      li.querySelector(".badge").className = "badge status-" + event.result.status;
      li.querySelector(".text").textContent = event.result.id + ": " + event.result.summary;
    } else if (event.event === "delivered") {
      li = row("(delivered)");
      li.querySelector(".badge").textContent = "SENT";
      li.querySelector(".text").textContent = "report delivered: " + event.summary;
    } else if (event.event === "capped") {
      li = row("(capped)");
      li.querySelector(".badge").textContent = "NOTE";
      li.querySelector(".text").textContent = event.text;
    }
  }

  function refreshRuns() {
    fetch(window.location.pathname, {credentials: "same-origin"})
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("runs");
        var now = document.getElementById("runs");
        if (next && now) { localTimes(next); now.replaceWith(document.importNode(next, true)); }
      }).catch(function () {});
  }

  function ended(run) {
    button.disabled = false;
    list.querySelectorAll("li .badge").forEach(function (badge) {  // checks the run never finished
      if (badge.textContent === "RUNNING") { badge.textContent = "NOT DONE"; badge.className = "badge status-fail"; }
    });
    section.dataset.activeRun = "";
    refreshRuns();
    if (run.report_stored) {
      var a = document.createElement("a");
      a.href = "/reports/" + encodeURIComponent(run.report_id);
      a.id = "run-report-link";
      a.textContent = "report " + run.report_id;
      where.textContent = "";
      where.appendChild(a);
      var frame = document.createElement("iframe");
      frame.id = "run-report-frame";
      frame.title = "the run's report";
      frame.src = a.href;
      where.appendChild(frame);
    }
  }

  function poll(runId, after, delay) {
    fetch("/api/v1/runs/" + encodeURIComponent(runId) + "?after=" + after, {credentials: "same-origin"})
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (run) {
        state.textContent = (NAMES[run.state] || run.state) + (run.error ? ": " + run.error : "");
        state.dataset.state = run.state;
        (run.events || []).forEach(function (event) { show(event); after = Math.max(after, event.seq); });
        // done but the report not stored yet (it travels through the PC's spool): a few more looks
        if (run.ended && (run.state !== "done" || run.report_stored || delay > 5000)) { ended(run); return; }
        setTimeout(function () { poll(runId, after, run.ended ? delay * 2 : 700); }, run.ended ? delay : 700);
      })
      .catch(function () { setTimeout(function () { poll(runId, after, Math.min(delay * 2, 10000)); }, delay); });
  }

  function follow(runId) {
    button.disabled = true;
    list.textContent = "";
    where.textContent = "";
    section.dataset.activeRun = runId;
    poll(runId, 0, 700);
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    state.textContent = "requesting";
    fetch("/api/v1/pcs/" + encodeURIComponent(installId) + "/checks", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify({profile: document.getElementById("run-profile").value})
    }).then(function (r) { return r.json().then(function (body) { return [r.status, body]; }); })
      .then(function (answer) {
        if (answer[0] !== 202) { state.textContent = answer[1].error || ("HTTP " + answer[0]); button.disabled = false; return; }
        state.textContent = NAMES[answer[1].state] || answer[1].state;
        follow(answer[1].run_id);
        refreshRuns();
      })
      .catch(function () { state.textContent = "the hub did not answer; try again"; button.disabled = false; });
  });

  if (section.dataset.activeRun) follow(section.dataset.activeRun);  // a reload picks the run up
})();
