// Runs before the first paint (a classic, blocking script) so the page never flashes the wrong theme.
// The choice ("auto", "light", "dark") is kept in localStorage; "auto" follows the system setting.
(function () {
  "use strict";
  var media = window.matchMedia("(prefers-color-scheme: dark)");
  function choice() {
    try {
      return localStorage.getItem("daehwa.theme") || "auto";
    } catch (e) {
      return "auto";
    }
  }
  function apply() {
    var c = choice();
    var dark = c === "dark" || (c === "auto" && media.matches);
    document.documentElement.setAttribute("data-theme", dark ? "dark" : "light");
  }
  apply();
  media.addEventListener("change", apply);
  window.daehwaTheme = { apply: apply, choice: choice };
})();
