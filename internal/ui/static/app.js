// shoal dashboard: live updates over Server-Sent Events. The pages work
// without this script; it only swaps in each new sample's live part.
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live || !live.dataset.events || !window.EventSource) return;
  var status = document.getElementById("live-status");
  var text = document.getElementById("live-text");
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";

  function setStatus(cls, msg) {
    if (status) { status.classList.remove("live", "down"); if (cls) status.classList.add(cls); }
    if (text) text.textContent = msg;
  }

  function swap(html) {
    // Keep what the reader is doing: open <details>, the focused control.
    var open = [];
    live.querySelectorAll("details[open]").forEach(function (d) { if (d.id) open.push(d.id); });
    var focused = document.activeElement && live.contains(document.activeElement) ? document.activeElement.id : "";
    live.innerHTML = html;
    live.querySelectorAll('input[name="csrf"]').forEach(function (i) { i.value = csrf; });
    open.forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
    if (focused) { var f = document.getElementById(focused); if (f) f.focus(); }
  }

  var es = new EventSource(live.dataset.events);
  es.addEventListener("update", function (e) {
    swap(e.data);
    setStatus("live", "Live: updated " + new Date().toLocaleTimeString() + ".");
  });
  es.addEventListener("expired", function () {
    es.close();
    window.location.href = "/ui/login?next=" + encodeURIComponent(window.location.pathname);
  });
  es.onopen = function () { setStatus("live", "Live."); };
  es.onerror = function () {
    if (es.readyState === EventSource.CLOSED) {
      setStatus("down", "Live updates stopped: reload the page.");
    } else {
      setStatus("down", "Reconnecting…");
    }
  };
})();
