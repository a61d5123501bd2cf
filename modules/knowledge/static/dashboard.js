// Refreshes the dashboard's panel in place every DASHBOARD_REFRESH seconds (the body's data-refresh, in ms).
// A signed-out session (401) goes back to the sign-in page. No third-party code: shipped in the package.
(function () {
  "use strict";
  var every = parseInt(document.body.getAttribute("data-refresh"), 10) || 10000;
  var panel = document.getElementById("panel");
  function refresh() {
    fetch("/dashboard/panel", { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) {
        if (answer.status === 401) {
          window.location.assign("/dashboard/login");
          return null;
        }
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        if (html !== null && panel) {
          panel.innerHTML = html;
          document.body.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { /* the next round tries again */ })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
