/* b24robots admin UI: parameter rows, the code editor with error markers. No build, no inline scripts. */
(function () {
  "use strict";

  function csrfToken() {
    var raw = document.body.getAttribute("hx-headers") || "{}";
    try { return JSON.parse(raw)["X-CSRF-Token"] || ""; } catch (e) { return ""; }
  }

  // --- parameter rows: add from the <template>, remove with the row's button ---------------------
  document.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-row]");
    if (add) {
      var group = add.getAttribute("data-add-row");
      var body = document.querySelector('[data-rows="' + group + '"]');
      var tpl = document.getElementById("tpl-" + group);
      var next = parseInt(body.getAttribute("data-next") || "0", 10);
      body.setAttribute("data-next", String(next + 1));
      var html = tpl.innerHTML.replace(/__i__/g, String(next));
      body.insertAdjacentHTML("beforeend", html);
      var rows = body.querySelectorAll("[data-row]");
      var first = rows[rows.length - 1].querySelector("input");
      if (first) { first.focus(); }
      return;
    }
    var remove = event.target.closest("[data-remove-row]");
    if (remove) {
      var row = remove.closest("tr");
      var after = row.nextElementSibling;
      if (after && after.classList.contains("row-error")) { after.remove(); }
      row.remove();
    }
  });

  // --- the code editor: CodeMirror 5 with Python highlighting and markers at problem lines --------
  function setup() {
    var area = document.getElementById("source");
    if (!area || typeof window.CodeMirror === "undefined") { return; }
    var cm = window.CodeMirror.fromTextArea(area, {
      mode: "python", lineNumbers: true, indentUnit: 4, tabSize: 4, indentWithTabs: false,
      gutters: ["CodeMirror-linenumbers", "problems"],
      extraKeys: { Tab: function (c) { c.replaceSelection("    "); } },
      screenReaderLabel: area.labels && area.labels[0] ? area.labels[0].textContent : "code"
    });
    window.b24rEditor = cm;
    var marked = [];
    var list = document.getElementById("problems");

    function show(problems) {
      marked.forEach(function (h) { cm.removeLineClass(h, "background", "cm-problem-line"); });
      marked = [];
      cm.clearGutter("problems");
      if (list) { list.innerHTML = ""; }
      problems.forEach(function (p) {
        var line = Math.max(0, Math.min(cm.lineCount() - 1, (p.line || 1) - 1));
        var h = cm.addLineClass(line, "background", "cm-problem-line");
        marked.push(h);
        var mark = document.createElement("span");
        mark.className = "cm-problem-marker";
        mark.textContent = "●";
        mark.title = p.message;
        cm.setGutterMarker(line, "problems", mark);
        if (list) {
          var li = document.createElement("li");
          li.className = "error-text";
          li.textContent = (list.getAttribute("data-line-label") || "line") + " " + p.line + ": " + p.message;
          li.setAttribute("data-line", String(p.line));
          list.appendChild(li);
        }
      });
    }

    var initial = document.getElementById("source-problems");
    if (initial) {
      try { show(JSON.parse(initial.textContent || "[]")); } catch (e) { /* keep the server's list */ }
    }

    // check as the user types (debounced): compile + lint on the server with the same rules as Save
    var url = area.getAttribute("data-check-url");
    var timer = null;
    cm.on("change", function () {
      if (!url) { return; }
      clearTimeout(timer);
      timer = setTimeout(function () {
        var body = new URLSearchParams();
        body.set("source", cm.getValue());
        fetch(url, {
          method: "POST", credentials: "same-origin", body: body,
          headers: { "X-CSRF-Token": csrfToken() }
        }).then(function (r) { return r.ok ? r.json() : null; })
          .then(function (data) { if (data) { show(data.problems || []); } })
          .catch(function () { /* offline: Save still checks */ });
      }, 600);
    });
    var form = area.form;
    if (form) { form.addEventListener("submit", function () { cm.save(); }); }
  }

  // --- times: stored as UTC, the server renders them in its zone; each admin reads them in their own --
  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function localTimes(root) {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    var found = Array.prototype.slice.call(root.querySelectorAll("time[data-local]"));
    if (root.matches && root.matches("time[data-local]")) { found.push(root); }
    found.forEach(function (el) {
      var d = new Date(el.getAttribute("datetime") || "");
      if (el.hasAttribute("data-zone") || isNaN(d.getTime())) { return; }
      var off = -d.getTimezoneOffset();
      var sign = off < 0 ? "-" : "+";
      off = Math.abs(off);
      el.title = (zone ? zone + " · " : "") + el.textContent;  // the server's text stays at hand
      el.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
        pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) +
        " UTC" + sign + pad(Math.floor(off / 60)) + ":" + pad(off % 60);
      el.setAttribute("data-zone", zone);
    });
  }

  function start() {
    setup();
    localTimes(document);
    // rows htmx brings in later (the live journal) carry server-zone times as well
    document.body.addEventListener("htmx:load", function (event) { localTimes(event.target); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
