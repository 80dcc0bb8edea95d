// The "Run check now" button: start a run through the JSON API (session cookie + CSRF
// header), poll its state, list progress lines as text (never as HTML), show the report.
(function () {
  var section = document.getElementById("run");
  if (!section) return;
  var button = document.getElementById("run-check");
  var state = document.getElementById("run-state");
  var list = document.getElementById("progress");
  var where = document.getElementById("run-report");
  var installId = section.dataset.installId;
  var csrf = section.dataset.csrf;

  function line(event) {
    if (event.event === "started") return "started " + event.check_id + (event.title ? " (" + event.title + ")" : "");
    if (event.event === "note") return event.check_id + ": " + event.text;
    if (event.event === "finished" && event.result) return event.result.status.toUpperCase() + " " + event.result.id + ": " + event.result.summary;
    if (event.event === "delivered") return "delivered: " + event.summary;
    return JSON.stringify(event);
  }

  function poll(runId, shown) {
    fetch("/api/v1/runs/" + encodeURIComponent(runId), {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (run) {
        state.textContent = run.state + (run.error ? ": " + run.error : "");
        (run.events || []).slice(shown).forEach(function (event) {
          var li = document.createElement("li");
          li.textContent = line(event);
          list.appendChild(li);
        });
        shown = (run.events || []).length;
        if (run.report_stored) {
          var a = document.createElement("a");
          a.href = "/reports/" + encodeURIComponent(run.report_id);
          a.id = "run-report-link";
          a.textContent = "report " + run.report_id;
          where.textContent = "";
          where.appendChild(a);
          var frame = document.createElement("iframe");
          frame.id = "run-report-frame";
          frame.src = a.href;
          where.appendChild(frame);
          button.disabled = false;
          return;
        }
        if (run.state === "failed") { button.disabled = false; return; }
        setTimeout(function () { poll(runId, shown); }, 500);
      })
      .catch(function () { setTimeout(function () { poll(runId, shown); }, 1000); });
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    list.textContent = "";
    where.textContent = "";
    state.textContent = "requesting";
    fetch("/api/v1/pcs/" + encodeURIComponent(installId) + "/checks", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify({profile: document.getElementById("run-profile").value})
    }).then(function (r) { return r.json().then(function (body) { return [r.status, body]; }); })
      .then(function (answer) {
        if (answer[0] !== 202) { state.textContent = answer[1].error || ("HTTP " + answer[0]); button.disabled = false; return; }
        state.textContent = answer[1].state;
        poll(answer[1].run_id, 0);
      });
  });
})();
