// Fleet overview views (issue 22 item 5): filter by retailer and model version beside the
// overview's own site, tag and status filters, group by retailer, store, state, model version
// or tag (the list sorted group by group, a summary of each group above it: click one to
// filter to it), and every choice saved in the URL (#/?retailer=coop&group=store&sort=-cpu), so a view
// is a link to share or bookmark. app.js's Overview calls the hooks below; the retailer of a
// machine comes from its store (GET /api/v1/estate, which a scoped token sees cut to its scope).
(() => {
  const UI = window.__fleetUi;
  if (!UI) return;
  const { esc, api } = UI;
  // `cols`: the overview's extra columns (ui/columns.js)
  const KEYS = ["q", "site", "tag", "status", "retailer", "model", "group", "cols"];
  const GROUPS = { retailer: "Retailer", site: "Store", status: "State", model: "Model version", tag: "Tag" };
  const RANK = { offline: 3, stale: 2, degraded: 1, online: 0 };
  // store id -> retailer id, and retailer names, once per page load (refetched on mount)
  const estate = { retailerOf: new Map(), names: new Map() };

  const retailerOf = (d) => (d.site && estate.retailerOf.get(d.site)) || "";
  const keyOf = (d, g) => {
    if (g === "retailer") return [retailerOf(d)];
    if (g === "site") return [d.site || ""];
    if (g === "status") return [d.status];
    if (g === "model") return [d.vision_model_version || ""];
    if (g === "tag") return d.tags && d.tags.length ? d.tags : [""];
    return [""];
  };

  UI.overviewViews = {
    // Reads the view from the URL into the overview's state `o` (a link opens its view).
    fromHash(o) {
      // the URL this overview owns: a render never rewrites a URL someone else just set
      this.owned = location.hash;
      const i = location.hash.indexOf("?");
      if (i < 0) return;
      const p = new URLSearchParams(location.hash.slice(i + 1));
      for (const k of KEYS) if (p.has(k)) o[k] = p.get(k);
      // the sort: `sort=cpu` ascending, `sort=-cpu` descending
      const sort = p.get("sort");
      if (sort && /^-?[a-z][a-z0-9-]*$/.test(sort)) {
        o.dir = sort.startsWith("-") ? -1 : 1;
        o.sort = sort.replace(/^-/, "");
      }
    },
    // Writes the view into the URL without a navigation.
    toHash(o) {
      const p = new URLSearchParams();
      for (const k of KEYS) if (o[k]) p.set(k, o[k]);
      if (o.sort !== "status" || o.dir !== 1) p.set("sort", (o.dir < 0 ? "-" : "") + o.sort);
      const h = p.toString() ? `#/?${p}` : "#/";
      if (location.hash === h || location.hash !== this.owned) return;
      history.replaceState(null, "", h);
      this.owned = h;
    },
    toolbar(o) {
      const sel = (id, label, opts) =>
        `<label>${label} <select id="${id}">${opts.map(([v, t]) => `<option value="${esc(v)}"${v === (o[id.slice(3)] || "") ? " selected" : ""}>${esc(t)}</option>`).join("")}</select></label>`;
      return (
        sel("ov-retailer", "Retailer", [["", "any"]]) +
        sel("ov-model", "Model", [["", "any"]]) +
        sel("ov-group", "Group by", [["", "none"], ...Object.entries(GROUPS)])
      );
    },
    // Wires the selects and the group summary to the overview `view`.
    mount(view, o) {
      for (const k of ["retailer", "model", "group"])
        document.getElementById(`ov-${k}`).addEventListener("change", (e) => {
          o[k] = e.target.value;
          view.schedule(true);
        });
      document.getElementById("ov-groups").addEventListener("click", (e) => {
        const g = e.target.closest("[data-group-value]");
        if (!g || !o.group) return;
        o[o.group] = g.dataset.groupValue;
        const sel = document.getElementById(`ov-${o.group}`);
        if (sel) sel.value = o[o.group];
        view.schedule(true);
      });
      api("/api/v1/estate")
        .then((e) => {
          estate.retailerOf = new Map(e.stores.map((s) => [s.id, s.retailer]));
          estate.names = new Map(e.retailers.map((r) => [r.id, r.name]));
          // only while the overview is still the page shown
          if (document.getElementById("ov-groups")) view.schedule(true);
        })
        .catch(() => {}); // an older server without the estate: no retailer filter
    },
    matches(d, o) {
      if (o.retailer && retailerOf(d) !== o.retailer) return false;
      if (o.model && (d.vision_model_version || "") !== o.model) return false;
      return true;
    },
    // After the overview filtered and sorted `list`: the options, the groups, the URL.
    after(list, all, o) {
      const opts = (id, values, cur, name = (v) => v) => {
        const el = document.getElementById(id);
        const html = `<option value="">any</option>` + [...values].sort().map((v) => `<option value="${esc(v)}"${v === cur ? " selected" : ""}>${esc(name(v))}</option>`).join("");
        if (el && el.dataset.html !== html) el.innerHTML = el.dataset.html = html;
      };
      const retailers = new Set(), models = new Set();
      for (const d of all) {
        if (retailerOf(d)) retailers.add(retailerOf(d));
        if (d.vision_model_version) models.add(d.vision_model_version);
      }
      opts("ov-retailer", retailers, o.retailer, (r) => estate.names.get(r) || r);
      opts("ov-model", models, o.model);
      const box = document.getElementById("ov-groups");
      let out = list;
      if (!o.group || !GROUPS[o.group]) box.innerHTML = "";
      else {
        const groups = new Map();
        for (const d of list)
          for (const k of keyOf(d, o.group)) {
            const g = groups.get(k) || { n: 0, worst: "online", rows: [] };
            g.n++;
            g.rows.push(d);
            if (RANK[d.status] > RANK[g.worst]) g.worst = d.status;
            groups.set(k, g);
          }
        const keys = [...groups.keys()].sort((a, b) => (a === "") - (b === "") || a.localeCompare(b));
        const label = (k) => (k === "" ? "(none)" : o.group === "retailer" ? estate.names.get(k) || k : k);
        box.innerHTML = keys
          .map((k) => `<button class="ov-group" data-group-value="${esc(k)}" data-state="${groups.get(k).worst}"><span class="st ${groups.get(k).worst}">${esc(label(k))}</span> ${groups.get(k).n}</button>`)
          .join(" ");
        // group by group (a machine with several tags is listed under its first)
        const seen = new Set();
        out = [];
        for (const k of keys)
          for (const d of groups.get(k).rows)
            if (!seen.has(d.id)) {
              seen.add(d.id);
              out.push(d);
            }
      }
      this.toHash(o);
      return out;
    },
  };
})();
