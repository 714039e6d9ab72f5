"use strict";
(function () {
  var list = document.getElementById("hosts");
  var rows = Array.prototype.slice.call(list.querySelectorAll("details.host"));
  var text = document.getElementById("filter");
  var outcome = document.getElementById("outcome");
  var chip = document.getElementById("cause-chip");
  var cause = null;  // an exact cause from the "by cause" table, or null

  function apply() {
    var words = text.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function (row) {
      var d = row.dataset;
      var ok = (!outcome.value || d.outcome === outcome.value) && (cause === null || d.cause === cause) &&
        words.every(function (w) { return d.search.indexOf(w) !== -1; });
      row.hidden = !ok;
      if (ok) { shown += 1; }
    });
    document.getElementById("shown").textContent = shown;
    chip.hidden = cause === null;
    document.getElementById("cause-text").textContent = cause === null ? "" : (cause || "(no cause given)");
  }

  function showHosts(outcomeValue, causeValue, textValue) {
    outcome.value = outcomeValue;
    cause = causeValue;
    text.value = textValue;
    apply();
    document.getElementById("filter").scrollIntoView({ block: "start" });
  }

  text.addEventListener("input", apply);
  outcome.addEventListener("change", apply);
  document.getElementById("cause-clear").addEventListener("click", function () { cause = null; apply(); });
  document.querySelectorAll("[data-filter-outcome]").forEach(function (el) {
    el.addEventListener("click", function () {
      var d = el.dataset;
      showHosts(d.filterOutcome, d.filterCause === undefined ? null : d.filterCause, "");
    });
  });
  document.querySelectorAll("[data-filter-text]").forEach(function (el) {
    el.addEventListener("click", function () { showHosts("", null, el.dataset.filterText); });
  });
  document.getElementById("expand").addEventListener("click", function () {
    rows.forEach(function (row) { if (!row.hidden) { row.open = true; } });
  });
  document.getElementById("collapse").addEventListener("click", function () {
    rows.forEach(function (row) { row.open = false; });
  });

  var sortKey = null;
  var direction = 1;
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  document.querySelectorAll(".head button[data-sort]").forEach(function (button) {
    button.addEventListener("click", function () {
      var key = button.dataset.sort;
      var numeric = button.dataset.type === "num";
      direction = key === sortKey ? -direction : 1;
      sortKey = key;
      rows.sort(function (a, b) {
        var x = a.dataset[key], y = b.dataset[key];
        var c = numeric ? Number(x) - Number(y) : collator.compare(x, y);
        return direction * c || Number(a.dataset.order) - Number(b.dataset.order);
      });
      var fragment = document.createDocumentFragment();
      rows.forEach(function (row) { fragment.appendChild(row); });
      list.appendChild(fragment);
      document.querySelectorAll(".head button[data-sort]").forEach(function (other) {
        if (other === button) {
          other.setAttribute("aria-sort", direction === 1 ? "ascending" : "descending");
        } else {
          other.removeAttribute("aria-sort");
        }
      });
    });
  });

  function openTarget() {
    var target = location.hash ? document.getElementById(location.hash.slice(1)) : null;
    if (target && target.tagName === "DETAILS") { target.open = true; }
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();
})();
