"""The page's script: plain JavaScript (no framework, nothing fetched from elsewhere). It follows /events
(server-sent events; the browser reconnects by itself) and draws the board; all text goes in through textContent,
never as HTML. Keyboard: arrows or j/k move between studies, r jumps to the next one that needs review, Home/End,
Enter folds a study's findings."""

from __future__ import annotations

JS = r"""
"use strict";
(function () {
  var studiesEl = document.getElementById("studies");
  var emptyEl = document.getElementById("empty");
  var connEl = document.getElementById("conn");
  var summaryEl = document.getElementById("summary");
  var modelEl = document.getElementById("model");
  var noticeEl = document.getElementById("notice");
  var folded = {};
  var displayUp = false;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function clock(unix) {
    if (!unix) { return ""; }
    var d = new Date(unix * 1000), now = new Date();
    var t = d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
    return d.toDateString() === now.toDateString() ? t : d.toLocaleDateString() + " " + t;
  }
  function seconds(s) { return s < 10 ? s.toFixed(1) + " s" : Math.round(s) + " s"; }

  function who(series) {
    var box = el("div", "who");
    var id = series.identity;
    if (id) {
      box.appendChild(el("h2", "name", id.patient_name || "(no patient name)"));
      box.appendChild(el("p", "ids", "ID " + (id.patient_id || "-") + "  \u00b7  Acc " + (id.accession_number || "-")));
    } else {
      var h = el("h2", "withheld", series.kind === "scored" ? "Patient identity not shown" : "Series not scored");
      h.title = series.identity_withheld;
      box.appendChild(h);
    }
    var when = series.kind === "scored" ?
      "scored " + clock(series.scored_at) + ", " + seconds(series.scan_to_score_s) + " after the last image" :
      "failed " + clock(series.scored_at);
    var where = [series.station && ("Station " + series.station), series.description, series.manufacturer,
      series.images + " images", when];
    box.appendChild(el("p", "meta", where.filter(Boolean).join("  \u00b7  ")));
    box.appendChild(el("p", "sr sr-" + series.sr.state, series.sr.text));
    return box;
  }

  function thumbs(series) {
    var box = el("div", "thumbs");
    if (!series.thumbs.length) {
      box.appendChild(el("div", "none", series.kind === "scored" ? "No images kept for this series" : "Not scored"));
      return box;
    }
    series.thumbs.forEach(function (t) {
      var fig = el("figure");
      var img = el("img");
      img.src = t.url;
      img.width = 104; img.height = 104;
      img.alt = t.label + " slice as the model saw it";
      fig.appendChild(img);
      fig.appendChild(el("figcaption", null, t.label));
      box.appendChild(fig);
    });
    return box;
  }

  function findings(series) {
    var box = el("div", "findings");
    if (!series.findings.length) { return box; }
    if (series.not_assessable) {  // its scores mean nothing: not drawn, so nobody reads them as findings
      box.appendChild(el("p", "none", "No finding is reported for a series that could not be assessed."));
      return box;
    }
    var head = el("div", "head");
    head.appendChild(el("span", null, "Finding \u00b7 probability"));
    head.appendChild(el("span", null, "| threshold   \u2691 near threshold or rare"));
    box.appendChild(head);
    var list = el("ul");
    series.findings.forEach(function (f) {
      var cls = "f" + (f.positive ? " pos" : "") + (f.flagged ? " flag" : "");
      var row = el("li", cls);
      row.setAttribute("aria-label", f.name + ": probability " + f.probability.toFixed(2) +
        (f.positive ? ", positive" : ", negative") + (f.flagged ? ", flagged for review" : ""));
      var name = el("span", "name", f.name);
      name.title = f.name;
      row.appendChild(name);
      row.appendChild(el("span", "flag", f.flagged ? "\u2691" : ""));
      var track = el("span", "track");
      var fill = el("span", "fill");
      fill.style.width = Math.max(0, Math.min(1, f.probability)) * 100 + "%";
      var mark = el("span", "mark");
      mark.style.left = "calc(50% - 1px)";
      mark.title = "threshold";
      track.appendChild(fill);
      track.appendChild(mark);
      row.appendChild(track);
      row.appendChild(el("span", "val", f.probability.toFixed(2)));
      list.appendChild(row);
    });
    box.appendChild(list);
    return box;
  }

  function band(study) {
    var s = study.series;
    var na = s.filter(function (x) { return x.not_assessable; });
    var review = s.filter(function (x) { return x.needs_review; });
    if (na.length) {
      var b = el("div", "band band-review");
      b.appendChild(el("span", null, "NEEDS REVIEW"));
      b.appendChild(el("span", "why", "not assessable: no finding is reported"));
      return b;
    }
    if (review.length) {
      var r = el("div", "band band-review");
      r.appendChild(el("span", null, "NEEDS REVIEW"));
      var n = review.reduce(function (sum, x) { return sum + x.review.length; }, 0);
      r.appendChild(el("span", "why", n ? n + " reason" + (n === 1 ? "" : "s") + " below" : "a human must look"));
      return r;
    }
    return el("div", "band band-ok", "No review needed");
  }

  function card(study) {
    var naAny = study.series.some(function (x) { return x.not_assessable; });
    var a = el("article", "study" + (study.needs_review ? " needs-review" : "") +
      (naAny ? " not-assessable" : "") + (folded[study.id] ? " collapsed" : ""));
    a.tabIndex = 0;
    a.dataset.id = study.id;
    a.dataset.review = study.needs_review ? "yes" : "no";
    var first = study.series[0];
    var name = first.identity ? first.identity.patient_name : "patient identity not shown";
    a.setAttribute("aria-label", (study.needs_review ? "Needs review. " : "") + name);
    a.appendChild(band(study));
    study.series.forEach(function (series) {
      var sec = el("section", "series");
      sec.dataset.series = series.key;
      sec.appendChild(who(series));
      sec.appendChild(thumbs(series));
      sec.appendChild(findings(series));
      if (series.not_assessable) { sec.appendChild(el("p", "na-text", series.not_assessable)); }
      if (series.review.length) {
        var ul = el("ul", "reasons" + (series.review.length > 2 ? " many" : ""));
        series.review.forEach(function (text) { ul.appendChild(el("li", null, text)); });
        sec.appendChild(ul);
      }
      a.appendChild(sec);
    });
    return a;
  }

  function connection(c) {
    var words = {
      live: "Live: connected to the appliance",
      connecting: "Connecting to the appliance\u2026",
      reconnecting: "Reconnecting to the appliance\u2026 (since " + clock(c.since) + ")",
      refused: "The appliance refuses this display: " + c.detail
    };
    connEl.className = "conn conn-" + c.state;
    connEl.textContent = words[c.state] || c.state;
    connEl.title = c.detail ? connEl.textContent + " " + c.detail : connEl.textContent;
  }

  function render(state) {
    displayUp = true;
    connection(state.connection);
    var m = state.model;
    modelEl.textContent = m.bundle ? "model " + m.bundle + (m.mode === "shadow" ? " (shadow mode)" : "") : "";
    var n = state.studies.length;
    var nReview = state.studies.filter(function (s) { return s.needs_review; }).length;
    summaryEl.textContent = "";
    summaryEl.appendChild(el("span", null, n + (n === 1 ? " study  " : " studies  ")));
    if (nReview) { summaryEl.appendChild(el("span", "n-review", nReview + " need" + (nReview === 1 ? "s" : "") +
      " review")); }
    document.title = (nReview ? "(" + nReview + " to review) " : "") + "ScanSide results";
    var focusedId = document.activeElement && document.activeElement.dataset ?
      document.activeElement.dataset.id : null;
    var withheld = null;
    state.studies.forEach(function (st) {
      st.series.forEach(function (x) { if (!x.identity && x.identity_withheld) { withheld = x.identity_withheld; } });
    });
    noticeEl.hidden = !withheld;
    noticeEl.textContent = withheld ? "Patient name, ID and accession number are not shown on this display: " +
      withheld + "." : "";
    var cards = state.studies.map(card);
    studiesEl.replaceChildren.apply(studiesEl, cards);
    emptyEl.hidden = n > 0;
    if (focusedId) {
      var again = studiesEl.querySelector('[data-id="' + focusedId + '"]');
      if (again) { again.focus({preventScroll: true}); }
    }
  }

  function cardsList() { return Array.prototype.slice.call(studiesEl.querySelectorAll(".study")); }
  function move(to) {
    var cs = cardsList();
    if (!cs.length) { return; }
    var i = cs.indexOf(document.activeElement);
    var j = to(i, cs);
    if (j >= 0 && j < cs.length) { cs[j].focus(); cs[j].scrollIntoView({block: "nearest"}); }
  }
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    var k = e.key;
    if (k === "ArrowDown" || k === "j") { move(function (i) { return i + 1; }); }
    else if (k === "ArrowUp" || k === "k") { move(function (i) { return Math.max(i - 1, 0); }); }
    else if (k === "Home") { move(function () { return 0; }); }
    else if (k === "End") { move(function (i, cs) { return cs.length - 1; }); }
    else if (k === "r") {
      move(function (i, cs) {
        for (var n = 1; n <= cs.length; n++) {
          var j = (i + n + cs.length) % cs.length;
          if (cs[j].dataset.review === "yes") { return j; }
        }
        return -1;
      });
    } else if ((k === "Enter" || k === " ") && document.activeElement.classList.contains("study")) {
      var id = document.activeElement.dataset.id;
      folded[id] = !folded[id];
      document.activeElement.classList.toggle("collapsed", folded[id]);
    } else { return; }
    e.preventDefault();
  });

  var source = new EventSource("/events");
  source.onmessage = function (e) { render(JSON.parse(e.data)); };
  source.onerror = function () {
    if (!displayUp) { return; }
    connEl.className = "conn conn-display";
    connEl.textContent = "This display's server is not answering; retrying\u2026";
  };
})();
"""
