// Progressive enhancement of the server-rendered search page: search without reloading, keep the
// URL linkable (/?q=...&mode=...&where=...), "/" focuses the query box. Without JavaScript the form works as a GET.
// The results are the server's own rendering of /?q=... (title lines, snippets, the weak-results
// note, and the server's one-line error for a bad filter), so the page looks the same with and
// without JavaScript.
(function () {
  "use strict";
  var form = document.getElementById("search");
  var q = document.getElementById("q");
  var k = document.getElementById("k");
  var mode = document.getElementById("mode");
  var where = document.getElementById("where");
  var hits = document.getElementById("hits");
  var status = document.getElementById("status");
  if (!form || !window.fetch || !window.DOMParser) { return; }

  function current() {
    return { q: q.value, k: k.value || "10", mode: mode ? mode.value : "dense", where: where ? where.value : "" };
  }

  function pageUrl(s) {
    return "/?q=" + encodeURIComponent(s.q) + (s.k && s.k !== "10" ? "&k=" + encodeURIComponent(s.k) : "") +
      (s.mode && s.mode !== "dense" ? "&mode=" + encodeURIComponent(s.mode) : "") +
      (s.where && s.where.trim() ? "&where=" + encodeURIComponent(s.where) : "");
  }

  function replaceFrom(doc, id, target) {
    var src = doc.getElementById(id);
    target.textContent = "";
    if (!src) { return; }
    Array.prototype.slice.call(src.childNodes).forEach(function (node) {
      target.appendChild(document.importNode(node, true));
    });
  }

  function showError(message) {
    hits.textContent = "";
    var p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = message;
    hits.appendChild(p);
    status.textContent = "";
  }

  function run(s, push) {
    if (!s.q.trim()) { return; }
    var url = pageUrl(s);
    document.title = s.q + " \u2014 embedkit search";
    if (push) { history.pushState(s, "", url); }
    status.textContent = "Searching\u2026";
    fetch(url, { headers: { "Accept": "text/html" } })
      .then(function (resp) { return resp.text(); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        if (!doc.getElementById("hits")) { showError("the server sent an unexpected answer"); return; }
        replaceFrom(doc, "hits", hits);
        replaceFrom(doc, "status", status);
      })
      .catch(function () { showError("the server did not answer"); });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    run(current(), true);
  });

  window.addEventListener("popstate", function (ev) {
    var state = ev.state || {};
    var params = new URLSearchParams(location.search);
    q.value = state.q || params.get("q") || "";
    k.value = state.k || params.get("k") || "10";
    if (mode) { mode.value = state.mode || params.get("mode") || "dense"; }
    if (where) { where.value = state.where !== undefined ? state.where : (params.get("where") || ""); }
    if (q.value) { run(current(), false); } else { hits.textContent = ""; }
  });

  document.addEventListener("keydown", function (ev) {
    var t = ev.target;
    var typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable);
    if (ev.key === "/" && !typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
      ev.preventDefault();
      q.focus();
      q.select();
    } else if (ev.key === "Escape" && t === q) {
      q.blur();
    }
  });
})();
