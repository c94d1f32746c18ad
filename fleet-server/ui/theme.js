// RVM Fleet web view: light or dark. Loaded in <head> without `defer`, so the page never
// flashes the wrong theme. The theme follows the system setting (prefers-color-scheme) until
// the viewer picks one with the header's toggle; the choice is kept in localStorage
// ("rvmTheme": "light" or "dark"; absent: follow the system). app.css keys everything on
// <html data-theme>.
"use strict";
(() => {
  const KEY = "rvmTheme";
  const system = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  const chosen = () => {
    const v = localStorage.getItem(KEY);
    return v === "light" || v === "dark" ? v : null;
  };
  const effective = () => chosen() || (system && system.matches ? "dark" : "light");
  function apply() {
    document.documentElement.dataset.theme = effective();
    const b = document.getElementById("theme-toggle");
    if (b) {
      const t = effective();
      b.textContent = t === "dark" ? "☾" : "☀";
      b.title = `${t} theme (${chosen() ? "your choice" : "the system's"}); click for ${t === "dark" ? "light" : "dark"}`;
      b.setAttribute("aria-label", b.title);
    }
    // charts and sparklines are drawn with the theme's colours: redraw them
    window.dispatchEvent(new Event("rvm-theme"));
  }
  // Picks the other theme; picking the system's own theme again goes back to following it.
  function toggle() {
    const next = effective() === "dark" ? "light" : "dark";
    const sys = system && system.matches ? "dark" : "light";
    if (next === sys) localStorage.removeItem(KEY);
    else localStorage.setItem(KEY, next);
    apply();
  }
  if (system && system.addEventListener) system.addEventListener("change", apply);
  apply();
  document.addEventListener("DOMContentLoaded", () => {
    const b = document.createElement("button");
    b.id = "theme-toggle";
    b.type = "button";
    b.className = "theme-toggle";
    b.addEventListener("click", toggle);
    const me = document.getElementById("me");
    (me ? me.parentNode : document.body).insertBefore(b, me);
    apply();
  });
  window.__fleetTheme = { effective, toggle };
})();
