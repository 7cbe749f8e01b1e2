/* Track Delivery page for eximtrack: plain JS, no build step, no CDN. Talks to /api/v1 with the API token
   (sessionStorage) as "Authorization: Bearer"; choices (columns, rows per page, sort, message types) are
   remembered in localStorage. Times are shown in the viewer's time zone. */
(function () {
  "use strict";

  var TOKEN_KEY = "eximtrack.token";
  var PREFS_KEY = "eximtrack.prefs";
  var TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

  var EVENTS = {
    success: ["✓", "Success"],
    filtered: ["⊘", "Filtered"],
    archive: ["▣", "Archived"],
    defer: ["↻", "Deferred"],
    failure: ["✕", "Failure"],
    rejected: ["⊗", "Rejected (blocked at SMTP time)"],
    inprogress: ["…", "In Progress"],
  };

  // [key, header, sort field, visible by default, group]
  var COLUMNS = [
    ["event", "Event", "type", true, "cpanel"],
    ["user", "User", "user", false, "cpanel"],
    ["domain", "Domain", "domain", false, "cpanel"],
    ["email", "From Address", "email", true, "cpanel"],
    ["sender", "Sender", "sender", false, "cpanel"],
    ["sendunixtime", "Sent Time", "sendunixtime", true, "cpanel"],
    ["senderhost", "Sender Host", "senderhost", false, "cpanel"],
    ["senderip", "Sender IP", "senderip", false, "cpanel"],
    ["senderauth", "Authentication", "senderauth", false, "cpanel"],
    ["spamscore", "Spam Score", "spamscore", true, "cpanel"],
    ["recipient", "Recipient", "recipient", true, "cpanel"],
    ["deliveryuser", "Delivery User", "deliveryuser", false, "cpanel"],
    ["deliverydomain", "Delivery Domain", "deliverydomain", false, "cpanel"],
    ["deliveredto", "Delivered To", "deliveredto", false, "cpanel"],
    ["router", "Router", "router", false, "cpanel"],
    ["transport", "Transport", "transport", false, "cpanel"],
    ["actionunixtime", "Out Time", "actionunixtime", false, "cpanel"],
    ["msgid", "ID", "msgid", false, "cpanel"],
    ["host", "Delivery Host", "host", false, "cpanel"],
    ["ip", "Delivery IP", "ip", false, "cpanel"],
    ["size", "Size", "size", false, "cpanel"],
    ["result", "Result", "message", true, "cpanel"],
    ["server", "Server", "server", false, "extra"],
    ["subject", "Subject", "subject", false, "extra"],
    ["message_id", "Message-ID", "message_id", false, "extra"],
    ["confirmation", "SMTP Reply", "confirmation", false, "extra"],
    ["tls", "TLS", "tls", false, "extra"],
    ["queue_time", "Queue Time", "queue_time", false, "extra"],
    ["delivery_time", "Delivery Time", "delivery_time", false, "extra"],
    ["attempts", "Attempts", "attempts", false, "extra"],
    ["actions", "Actions", null, true, "fixed"],
  ];

  // every field of a row, for the details popup
  var FIELD_LABELS = [
    ["type", "Event"], ["server", "Server"], ["msgid", "ID"], ["email", "From Address"], ["sender", "Sender"],
    ["user", "User"], ["domain", "Domain"], ["owner", "Owner"], ["sendunixtime", "Sent Time"],
    ["senderhost", "Sender Host"], ["senderip", "Sender IP"], ["senderauth", "Authentication"],
    ["spamscore", "Spam Score"], ["size", "Size"], ["subject", "Subject"], ["message_id", "Message-ID"],
    ["protocol", "Protocol"], ["parent_msgid", "Bounce of"], ["recipient", "Recipient"],
    ["deliveredto", "Delivered To"], ["deliveryuser", "Delivery User"], ["deliverydomain", "Delivery Domain"],
    ["deliveryowner", "Delivery Owner"], ["router", "Router"], ["transport", "Transport"],
    ["host", "Delivery Host"], ["ip", "Delivery IP"], ["transport_is_remote", "Remote Delivery"],
    ["actionunixtime", "Out Time"], ["message", "Result"], ["confirmation", "SMTP Reply"], ["tls", "TLS"],
    ["queue_time", "Queue Time"], ["delivery_time", "Delivery Time"], ["attempts", "Attempts"],
    ["frozen", "Frozen"], ["event_id", "Event ID"],
  ];

  var $ = function (id) { return document.getElementById(id); };

  var defaults = {
    columns: COLUMNS.filter(function (c) { return c[3]; }).map(function (c) { return c[0]; }),
    rows: 25,
    sort: "sendunixtime:desc",
    show: { success: false, defer: false, failure: true, inprogress: false },
  };
  var prefs = loadPrefs();
  var state = { cursors: [null], page: 0, rows: [], total: null, next: null, params: null, link: {} };

  // Filters a link may carry in its query string (an alert's "Track Delivery" link): passed to the search
  // as they are, shown above the form with a Clear button. The four message types set the checkboxes.
  var LINK_FILTERS = ["user", "domain", "email", "sender", "recipient", "server", "deliverydomain", "msgid",
    "startdate", "enddate"];
  var LINK_TYPES = ["success", "defer", "failure", "inprogress"];
  function readLink(search) {
    var q = new URLSearchParams(search || "");
    var link = {};
    LINK_FILTERS.forEach(function (k) { if (q.get(k)) { link[k] = q.get(k); } });
    var types = LINK_TYPES.filter(function (k) { return q.get(k) === "1"; });
    if (types.length) {
      prefs.show = {};
      LINK_TYPES.forEach(function (k) { prefs.show[k] = types.indexOf(k) >= 0; });
      applyShow();
    }
    return link;
  }
  function showLink() {
    var keys = Object.keys(state.link);
    $("link-filter").hidden = !keys.length;
    $("link-filter-text").textContent = keys.map(function (k) {
      return k + " " + (k === "startdate" || k === "enddate" ? fmtTime(Number(state.link[k])) : state.link[k]);
    }).join(", ");
  }

  function loadPrefs() {
    var p = {};
    try { p = JSON.parse(localStorage.getItem(PREFS_KEY) || "{}") || {}; } catch (e) { p = {}; }
    return {
      columns: Array.isArray(p.columns) ? p.columns : defaults.columns.slice(),
      rows: [10, 25, 50, 100, 250, 500, 1000].indexOf(p.rows) >= 0 ? p.rows : defaults.rows,
      sort: typeof p.sort === "string" ? p.sort : defaults.sort,
      show: p.show && typeof p.show === "object" ? p.show : Object.assign({}, defaults.show),
    };
  }
  function savePrefs() { try { localStorage.setItem(PREFS_KEY, JSON.stringify(prefs)); } catch (e) { /* private mode */ } }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function api(path, params) {
    var qs = params ? "?" + new URLSearchParams(params).toString() : "";
    return fetch(path + qs, { headers: { Authorization: "Bearer " + token() } }).then(function (resp) {
      if (resp.status === 401) { signOut("Your token was not accepted. Sign in again."); throw new Error("unauthorized"); }
      return resp;
    });
  }
  function apiJson(path, params) {
    return api(path, params).then(function (resp) {
      return resp.json().then(function (body) {
        if (!resp.ok) { throw new Error(body.error || ("HTTP " + resp.status)); }
        return body;
      });
    });
  }

  // ------------------------------------------------------------------------------------------ formatting
  function fmtTime(t) {
    if (!t) { return ""; }
    var d = new Date(t * 1000);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function fmtSize(n) {
    if (n === null || n === undefined) { return ""; }
    if (n < 1024) { return n + " B"; }
    if (n < 1048576) { return (n / 1024).toFixed(1) + " KiB"; }
    return (n / 1048576).toFixed(1) + " MiB";
  }
  function resultText(r) {
    if (r.message) { return r.message; }
    if (r.confirmation) { return r.confirmation; }
    return { success: "Accepted", filtered: "Filtered", archive: "Archived", inprogress: "In progress",
      defer: "Deferred", failure: "Failed", rejected: "Rejected" }[r.type] || "";
  }
  function cellValue(key, r) {
    switch (key) {
      case "sendunixtime": return fmtTime(r.sendunixtime || r.actionunixtime);
      case "actionunixtime": return fmtTime(r.actionunixtime);
      case "email": return r.email || "<>";
      case "size": return fmtSize(r.size);
      case "spamscore": return r.spamscore === null || r.spamscore === undefined ? "" : String(r.spamscore);
      case "queue_time": case "delivery_time": return r[key] === null || r[key] === undefined ? "" : r[key] + " s";
      case "result": return resultText(r);
      default: return r[key] === null || r[key] === undefined ? "" : String(r[key]);
    }
  }
  function fieldValue(key, r) {
    if (key === "sendunixtime" || key === "actionunixtime") { return r[key] ? fmtTime(r[key]) + " (" + TZ + ")" : ""; }
    if (key === "type") { return (EVENTS[r.type] || ["", r.type])[1]; }
    if (key === "size") { return r.size + " bytes"; }
    if (key === "transport_is_remote" || key === "frozen") { return r[key] ? "Yes" : "No"; }
    return cellValue(key, r);
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); }); }
    if (text !== undefined && text !== null) { e.textContent = text; }
    return e;
  }
  function eventIcon(type) {
    var ev = EVENTS[type] || ["?", type];
    var span = el("span", { class: "event event-" + type, title: ev[1], "aria-label": ev[1], "data-type": type }, ev[0]);
    return span;
  }

  // ------------------------------------------------------------------------------------------ table
  function visibleColumns() {
    return COLUMNS.filter(function (c) { return c[4] === "fixed" || prefs.columns.indexOf(c[0]) >= 0; });
  }
  function renderHead() {
    var tr = $("head");
    tr.textContent = "";
    var parts = prefs.sort.split(":");
    visibleColumns().forEach(function (c) {
      var th = el("th", { scope: "col", "data-col": c[0] }, c[1]);
      if (c[2]) {
        th.className = "sortable";
        th.setAttribute("tabindex", "0");
        th.setAttribute("title", "Sort by " + c[1]);
        if (parts[0] === c[2]) { th.setAttribute("aria-sort", parts[1] === "asc" ? "ascending" : "descending"); }
        var sortBy = function () {
          var dir = parts[0] === c[2] ? (parts[1] === "asc" ? "desc" : "asc")
            : (c[2] === "sendunixtime" || c[2] === "actionunixtime" ? "desc" : "asc");
          prefs.sort = c[2] + ":" + dir;
          savePrefs();
          runReport();
        };
        th.addEventListener("click", sortBy);
        th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sortBy(); } });
      }
      tr.appendChild(th);
    });
  }
  function renderBody() {
    var tbody = $("body");
    tbody.textContent = "";
    var cols = visibleColumns();
    if (!state.rows.length) {
      var td = el("td", { colspan: String(cols.length), class: "empty" }, "No results match your search.");
      var tr0 = el("tr");
      tr0.appendChild(td);
      tbody.appendChild(tr0);
      return;
    }
    state.rows.forEach(function (r, i) {
      var tr = el("tr", { "data-type": r.type, "data-msgid": r.msgid });
      cols.forEach(function (c) {
        var td = el("td", { "data-col": c[0] });
        if (c[0] === "event") {
          td.appendChild(eventIcon(r.type));
        } else if (c[0] === "actions") {
          var b = el("button", { type: "button", class: "btn btn-link details-btn", "data-row": String(i), title: "Delivery Event Details" }, "Details");
          b.addEventListener("click", function () { openDetails(r); });
          td.appendChild(b);
        } else {
          td.textContent = cellValue(c[0], r);
          if (c[0] === "result") { td.className = "result"; }
          if (c[0] === "sendunixtime" || c[0] === "actionunixtime") { td.className = "nowrap"; }
        }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }
  function renderPager() {
    var start = state.page * prefs.rows;
    var pages = state.total === null ? null : Math.max(1, Math.ceil(state.total / prefs.rows));
    $("page-info").textContent = "Page " + (state.page + 1) + (pages ? " of " + pages : "");
    $("prev").disabled = state.page === 0;
    $("next").disabled = !state.next;
    if (state.total === null) { $("status").textContent = ""; return; }
    $("status").textContent = state.total === 0 ? "0 results"
      : "Showing " + (start + 1) + "–" + (start + state.rows.length) + " of " + state.total + " results";
  }
  function renderColumnsMenu() {
    var menu = $("columns-menu");
    menu.textContent = "";
    [["cpanel", "Track Delivery columns"], ["extra", "More columns"]].forEach(function (g) {
      menu.appendChild(el("div", { class: "menu-head" }, g[1]));
      COLUMNS.filter(function (c) { return c[4] === g[0]; }).forEach(function (c) {
        var label = el("label");
        var cb = el("input", { type: "checkbox", "data-col": c[0], id: "col-" + c[0] });
        cb.checked = prefs.columns.indexOf(c[0]) >= 0;
        cb.addEventListener("change", function () {
          prefs.columns = COLUMNS.filter(function (x) {
            var box = document.getElementById("col-" + x[0]);
            return box ? box.checked : false;
          }).map(function (x) { return x[0]; });
          savePrefs();
          renderHead();
          renderBody();
        });
        label.appendChild(cb);
        label.appendChild(document.createTextNode(" " + c[1]));
        menu.appendChild(label);
      });
    });
  }

  // ------------------------------------------------------------------------------------------ search
  function typeBoxes() { return Array.prototype.slice.call(document.querySelectorAll("#types input[type=checkbox]")); }
  function applyShow() { typeBoxes().forEach(function (cb) { cb.checked = !!prefs.show[cb.dataset.flag]; }); }
  function readShow() {
    var show = {};
    typeBoxes().forEach(function (cb) { show[cb.dataset.flag] = cb.checked; });
    return show;
  }
  function toEpoch(value) {
    if (!value) { return null; }
    var t = new Date(value).getTime();  // datetime-local: the viewer's zone
    return isNaN(t) ? null : String(t / 1000);
  }
  function buildParams() {
    var show = readShow();
    var p = {};
    Object.keys(show).forEach(function (k) { p[k] = show[k] ? "1" : "0"; });
    var match = $("f-match").value;
    var recipient = $("recipient").value.trim();
    if (recipient) { p.recipient = recipient; p.recipient_searchmatch = match; }
    [["f-email", "email"], ["f-subject", "subject"], ["f-message_id", "message_id"], ["f-msgid", "msgid"], ["f-all", "all"]].forEach(function (f) {
      var v = $(f[0]).value.trim();
      if (v) { p[f[1]] = v; p[f[1] + "_searchmatch"] = f[1] === "all" || f[1] === "subject" ? (match === "eq" ? "contains" : match) : match; }
    });
    if ($("f-server").value) { p.server = $("f-server").value; }
    if ($("f-deliverytype").value !== "all") { p.deliverytype = $("f-deliverytype").value; }
    var s = toEpoch($("f-start").value), e = toEpoch($("f-end").value);
    if (s) { p.startdate = s; }
    if (e) { p.enddate = e; }
    Object.keys(state.link).forEach(function (k) { if (!p[k]) { p[k] = state.link[k]; } });
    p.sort = prefs.sort;
    return p;
  }
  function showError(msg) {
    $("error").textContent = msg || "";
    $("error").hidden = !msg;
  }
  function runReport() {
    var show = readShow();
    var any = Object.keys(show).some(function (k) { return show[k]; });
    $("type-error").hidden = any;
    if (!any) { return Promise.resolve(); }
    prefs.show = show;
    savePrefs();
    state.params = buildParams();
    state.cursors = [null];
    state.page = 0;
    state.total = null;
    return loadPage(true);
  }
  function loadPage(withTotal) {
    var p = Object.assign({}, state.params, { limit: String(prefs.rows) });
    var cursor = state.cursors[state.page];
    if (cursor) { p.cursor = cursor; }
    if (withTotal) { p.with_total = "1"; }
    showError("");
    $("status").textContent = "Loading…";
    document.body.setAttribute("data-loading", "1");
    return apiJson("/api/v1/search", p).then(function (res) {
      state.rows = res.rows;
      state.next = res.next_cursor;
      if (res.total !== undefined) { state.total = res.total; }
      state.cursors[state.page + 1] = res.next_cursor;
      renderHead();
      renderBody();
      renderPager();
    }).catch(function (err) {
      if (err.message !== "unauthorized") { showError(err.message); $("status").textContent = ""; }
    }).then(function () { document.body.removeAttribute("data-loading"); });
  }

  function exportCsv() {
    if (!state.params) { return; }
    var p = Object.assign({}, state.params);
    $("export").disabled = true;
    api("/api/v1/search.csv", p).then(function (resp) {
      if (!resp.ok) { return resp.json().then(function (b) { throw new Error(b.error); }); }
      var name = "eximtrack.csv";
      var m = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
      if (m) { name = m[1]; }
      return resp.blob().then(function (blob) {
        var a = el("a", { href: URL.createObjectURL(blob), download: name });
        document.body.appendChild(a);
        a.click();
        setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
      });
    }).catch(function (err) { if (err.message !== "unauthorized") { showError(err.message); } })
      .then(function () { $("export").disabled = false; });
  }

  // ------------------------------------------------------------------------------------------ details
  var lastFocus = null;
  function openDetails(r) {
    lastFocus = document.activeElement;
    var table = $("details-fields");
    table.textContent = "";
    FIELD_LABELS.forEach(function (f) {
      var tr = el("tr", { "data-field": f[0] });
      tr.appendChild(el("th", { scope: "row" }, f[1]));
      var td = el("td");
      if (f[0] === "type") { td.appendChild(eventIcon(r.type)); td.appendChild(document.createTextNode(" " + fieldValue("type", r))); }
      else { td.textContent = fieldValue(f[0], r); }
      tr.appendChild(td);
      table.appendChild(tr);
    });
    $("timeline").textContent = "";
    $("loglines").textContent = "";
    $("timeline-status").textContent = "Loading the message's timeline…";
    $("overlay").hidden = false;
    document.body.classList.add("modal-open");
    $("details-close").focus();
    apiJson("/api/v1/message/" + encodeURIComponent(r.server) + "/" + encodeURIComponent(r.msgid)).then(function (m) {
      renderTimeline(m);
    }).catch(function (err) {
      if (err.message !== "unauthorized") { $("timeline-status").textContent = err.message; }
    });
  }
  function renderTimeline(m) {
    var box = $("timeline");
    box.textContent = "";
    var a = m.arrival && m.arrival[0];
    $("timeline-status").textContent = a
      ? "Arrived " + fmtTime(a.sendunixtime) + " on " + m.server + " from " + (a.email || "<>") +
        (a.senderip ? " [" + a.senderip + "]" : "") + (a.subject ? " — " + a.subject : "")
      : "Message " + m.msgid + " on " + m.server;
    var t = el("table", { class: "grid-table timeline", id: "timeline-table" });
    var head = el("tr");
    ["Time", "Event", "Recipient", "Delivered To", "Router / Transport", "Host", "Result"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    var thead = el("thead");
    thead.appendChild(head);
    t.appendChild(thead);
    var tb = el("tbody");
    (m.attempts || []).forEach(function (e) {
      var tr = el("tr", { "data-type": e.type });
      tr.appendChild(el("td", { class: "nowrap" }, fmtTime(e.actionunixtime)));
      var ev = el("td");
      ev.appendChild(eventIcon(e.type));
      ev.appendChild(document.createTextNode(" " + (EVENTS[e.type] || ["", e.type])[1]));
      tr.appendChild(ev);
      tr.appendChild(el("td", null, e.recipient || "(whole message)"));
      tr.appendChild(el("td", null, e.deliveredto));
      tr.appendChild(el("td", null, [e.router, e.transport].filter(Boolean).join(" / ")));
      tr.appendChild(el("td", null, [e.host, e.ip ? "[" + e.ip + "]" : ""].filter(Boolean).join(" ")));
      tr.appendChild(el("td", { class: "result" }, resultText(e)));
      tb.appendChild(tr);
    });
    t.appendChild(tb);
    box.appendChild(t);
    if (m.children && m.children.length) {
      box.appendChild(el("h3", null, "Bounces / DSNs about this message"));
      var ul = el("ul", { id: "children" });
      m.children.forEach(function (c) {
        ul.appendChild(el("li", null, fmtTime(c.sendunixtime) + "  " + c.msgid + "  " + (EVENTS[c.type] || ["", c.type])[1] + " → " + c.recipient));
      });
      box.appendChild(ul);
    }
    $("loglines").textContent = (m.lines || []).map(function (l) { return l.line; }).join("\n") ||
      "(raw log lines are shown to the sending account only)";
  }
  function closeDetails() {
    $("overlay").hidden = true;
    document.body.classList.remove("modal-open");
    if (lastFocus && lastFocus.focus) { lastFocus.focus(); }
  }

  // ------------------------------------------------------------------------------------------ sign in
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("app").hidden = true;
    $("whoami").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-error").hidden = !message;
    $("token").focus();
  }
  function start() {
    if (!token()) { signOut(); return; }
    apiJson("/api/v1/whoami").then(function (me) {
      var who = me.role === "root" ? "root (all servers)" : me.role === "reseller" ? "reseller " + me.reseller
        : me.role === "user" ? "cPanel account " + me.user : "webmail " + me.address;
      $("whoami-text").textContent = "Signed in as " + me.name + " — " + who;
      $("whoami").hidden = false;
      $("retention").textContent = me.retention_days === null || me.retention_days === undefined ? ""
        : me.retention_days === 0 ? "Data is kept until you delete it." : "Data is retained for " + me.retention_days + " days.";
      $("login").hidden = true;
      $("app").hidden = false;
      apiJson("/api/v1/servers").then(function (res) {
        var sel = $("f-server");
        while (sel.options.length > 1) { sel.remove(1); }
        res.servers.forEach(function (s) { sel.appendChild(el("option", { value: s }, s)); });
      }).catch(function () { /* the filter stays "All servers" */ });
      loadAlerts();
      showLink();
      runReport();
    }).catch(function (err) { if (err.message !== "unauthorized") { signOut(err.message); } });
  }

  // ------------------------------------------------------------------------------------------ alerts
  function loadAlerts() {
    apiJson("/api/v1/alerts", { state: "firing", limit: "20" }).then(function (res) {
      var list = $("alerts-list");
      list.textContent = "";
      res.alerts.forEach(function (a) {
        var li = el("li", { "data-rule": a.rule }, "");
        li.appendChild(el("strong", {}, a.rule + ": "));
        li.appendChild(document.createTextNode(a.summary + " (since " + fmtTime(Date.parse(a.started_at) / 1000) + ") "));
        if (a.link) {
          var show = el("button", { type: "button", "class": "btn btn-link" }, "Show messages");
          show.addEventListener("click", function () {
            state.link = readLink(a.link.slice(a.link.indexOf("?")));
            showLink();
            runReport();
          });
          li.appendChild(show);
        }
        list.appendChild(li);
      });
      $("alerts").hidden = !res.alerts.length;
    }).catch(function () { $("alerts").hidden = true; /* no alerts table or no rights: no panel */ });
  }

  // ------------------------------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", function () {
    $("tz").textContent = TZ;
    $("rows-per-page").value = String(prefs.rows);
    applyShow();
    renderColumnsMenu();
    renderHead();

    $("login-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var t = $("token").value.trim();
      if (!t) { return; }
      sessionStorage.setItem(TOKEN_KEY, t);
      $("token").value = "";
      start();
    });
    $("signout").addEventListener("click", function () { signOut(); });
    state.link = readLink(window.location.search);
    $("link-filter-clear").addEventListener("click", function () {
      state.link = {};
      showLink();
      if (window.history && window.location.search) { window.history.replaceState(null, "", window.location.pathname); }
      runReport();
    });
    $("search-form").addEventListener("submit", function (e) { e.preventDefault(); runReport(); });
    $("show-all").addEventListener("click", function () {
      typeBoxes().forEach(function (cb) { cb.checked = true; });
      runReport();
    });
    $("show-blocked").addEventListener("click", function () {
      typeBoxes().forEach(function (cb) { cb.checked = cb.dataset.flag === "failure"; });
      runReport();
    });
    typeBoxes().forEach(function (cb) {
      cb.addEventListener("change", function () {
        var any = typeBoxes().some(function (x) { return x.checked; });
        $("type-error").hidden = any;
      });
    });
    $("rows-per-page").addEventListener("change", function () {
      prefs.rows = parseInt($("rows-per-page").value, 10);
      savePrefs();
      runReport();
    });
    $("next").addEventListener("click", function () {
      if (!state.next) { return; }
      state.page += 1;
      loadPage(false);
    });
    $("prev").addEventListener("click", function () {
      if (state.page === 0) { return; }
      state.page -= 1;
      loadPage(false);
    });
    $("columns-button").addEventListener("click", function () {
      var menu = $("columns-menu");
      menu.hidden = !menu.hidden;
      $("columns-button").setAttribute("aria-expanded", String(!menu.hidden));
    });
    document.addEventListener("click", function (e) {
      if (!$("columns-menu").hidden && !e.target.closest(".dropdown")) {
        $("columns-menu").hidden = true;
        $("columns-button").setAttribute("aria-expanded", "false");
      }
    });
    $("export").addEventListener("click", exportCsv);
    $("details-close").addEventListener("click", closeDetails);
    $("details-x").addEventListener("click", closeDetails);
    $("overlay").addEventListener("click", function (e) { if (e.target === $("overlay")) { closeDetails(); } });
    document.addEventListener("keydown", function (e) { if (e.key === "Escape" && !$("overlay").hidden) { closeDetails(); } });
    $("details-print").addEventListener("click", function () {
      document.body.classList.add("printing");
      window.print();
      document.body.classList.remove("printing");
    });
    start();
  });
})();
