// Progressive enhancement of the server-rendered search page: search without reloading, keep the
// URL linkable (/?q=...), "/" focuses the query box. Without JavaScript the form works as a GET.
(function () {
  "use strict";
  var form = document.getElementById("search");
  var q = document.getElementById("q");
  var k = document.getElementById("k");
  var hits = document.getElementById("hits");
  var status = document.getElementById("status");
  if (!form || !window.fetch) { return; }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function escapeRe(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

  function queryWords(query) {
    var seen = {}, out = [];
    (query.match(/[\p{L}\p{N}_]+/gu) || []).forEach(function (w) {
      w = w.toLowerCase();
      if (w.length >= 2 && !seen[w]) { seen[w] = true; out.push(w); }
    });
    return out.sort(function (a, b) { return b.length - a.length || (a < b ? -1 : 1); });
  }

  // the same rule as the server: a query word and its continuations, case-insensitive
  function highlighted(text, query) {
    var p = el("p", "text");
    var words = queryWords(query);
    if (!words.length) { p.textContent = text; return p; }
    var re = new RegExp("(?<![\\p{L}\\p{N}_])(?:" + words.map(escapeRe).join("|") + ")[\\p{L}\\p{N}_]*", "giu");
    var last = 0, m;
    while ((m = re.exec(text)) !== null) {
      if (m[0].length === 0) { re.lastIndex++; continue; }
      p.appendChild(document.createTextNode(text.slice(last, m.index)));
      p.appendChild(el("mark", null, m[0]));
      last = m.index + m[0].length;
    }
    p.appendChild(document.createTextNode(text.slice(last)));
    return p;
  }

  function setStatus(text, query) {
    status.textContent = text + " ";
    var a = el("a", "permalink", "link to these results");
    a.href = query ? "/?q=" + encodeURIComponent(query) : "/";
    status.appendChild(a);
  }

  function render(data, query) {
    hits.textContent = "";
    var results = data.hits || [];
    if (!results.length) {
      hits.appendChild(el("p", "empty", "No results."));
    } else {
      var ol = el("ol", "results");
      results.forEach(function (r, i) {
        var li = el("li", "result");
        li.id = "r" + (i + 1);
        var head = el("div", "head");
        var a = el("a", "doc-id", r.id);
        a.href = "/api/documents/" + encodeURIComponent(r.id);
        head.appendChild(a);
        var s = el("span", "score", r.score.toFixed(4));
        s.title = "cosine similarity";
        head.appendChild(s);
        li.appendChild(head);
        li.appendChild(highlighted(r.text, query));
        if (r.metadata && Object.keys(r.metadata).length) {
          var dl = el("dl", "meta");
          Object.keys(r.metadata).forEach(function (key) {
            var v = r.metadata[key];
            dl.appendChild(el("dt", null, key));
            dl.appendChild(el("dd", null, typeof v === "string" ? v : JSON.stringify(v)));
          });
          li.appendChild(dl);
        }
        ol.appendChild(li);
      });
      hits.appendChild(ol);
    }
    var n = results.length;
    setStatus(n + " result" + (n === 1 ? "" : "s") + " in " + data.took_ms.toFixed(1) + " ms", query);
  }

  function showError(message) {
    hits.textContent = "";
    var p = el("p", "error", message);
    p.setAttribute("role", "alert");
    hits.appendChild(p);
  }

  function run(query, kval, push) {
    if (!query.trim()) { return; }
    var url = "/api/search?q=" + encodeURIComponent(query) + "&k=" + encodeURIComponent(kval);
    document.title = query + " \u2014 embedkit search";
    if (push) { history.pushState({ q: query, k: kval }, "", "/?q=" + encodeURIComponent(query) + (kval !== "10" ? "&k=" + encodeURIComponent(kval) : "")); }
    setStatus("Searching\u2026", query);
    fetch(url, { headers: { "Accept": "application/json" } })
      .then(function (resp) {
        return resp.json().then(function (body) { return { ok: resp.ok, body: body }; });
      })
      .then(function (r) {
        if (r.ok) { render(r.body, query); }
        else { showError((r.body && r.body.error && r.body.error.message) || "search failed"); setStatus("", query); }
      })
      .catch(function () { showError("the server did not answer"); setStatus("", query); });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    run(q.value, k.value || "10", true);
  });

  window.addEventListener("popstate", function (ev) {
    var state = ev.state || {};
    var params = new URLSearchParams(location.search);
    q.value = state.q || params.get("q") || "";
    k.value = state.k || params.get("k") || "10";
    if (q.value) { run(q.value, k.value, false); } else { hits.textContent = ""; }
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
