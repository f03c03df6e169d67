// tramy's web UI: the worklist follows the server's event stream and re-fetches its table when
// told; the study page's heatmaps have a show/hide toggle and an opacity slider. Plain script,
// no library.
(function () {
  "use strict";

  var list = document.getElementById("worklist");
  if (list && window.EventSource) {
    var source = null;
    var refresh = function () {
      fetch(list.dataset.table + window.location.search, { credentials: "same-origin" })
        .then(function (r) {
          // A session that ended: the page reloads, and the server sends it to sign in.
          if (r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null) {
            list.innerHTML = html;
            list.dataset.updated = String(Date.now());
          }
        });
    };
    var follow = function () {
      source = new EventSource("/ui/events");
      source.addEventListener("worklist", refresh);
      // Another tab of this session took the stream, or the session ended.
      source.addEventListener("closed", function () { source.close(); });
      list.dataset.following = "yes";
    };
    // The tab in front takes the stream back, and catches up on what it missed.
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState === "visible" && source && source.readyState === EventSource.CLOSED) {
        follow();
        refresh();
      }
    });
    follow();
  }

  document.querySelectorAll("figure.overlay").forEach(function (figure) {
    var heatmap = figure.querySelector("img.heatmap");
    var toggle = figure.querySelector(".heatmap-toggle");
    var opacity = figure.querySelector(".heatmap-opacity");
    var show = function () { heatmap.hidden = !toggle.checked; };
    var blend = function () { heatmap.style.opacity = String(opacity.value / 100); };
    // The heatmap pool answers 503 when busy: ask again a little later, a few times.
    var tries = 0;
    heatmap.addEventListener("error", function () {
      var url = heatmap.getAttribute("src");
      if (!url || ++tries > 4) return;
      heatmap.removeAttribute("src");
      setTimeout(function () { heatmap.setAttribute("src", url); }, 5000 * tries);
    });
    toggle.addEventListener("change", show);
    opacity.addEventListener("input", blend);
    show();
    blend();
  });
})();
