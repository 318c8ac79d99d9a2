// Heatmap: stores x the hottest SKUs by units sold in the last hour,
// each cell coloured (and labelled, for who cannot tell colours) by
// available against the reorder point.
import { query } from "./api";
import { el, every, field, remember } from "./dom";
import type { HeatmapCell } from "./gen/tally/inventory/v1/query_pb";
import { failed } from "./main";

export function heatmapPage(main: HTMLElement, signal: AbortSignal): void {
  const stores = field("heat-stores", "Stores (comma-separated; empty = all that sold)", { autocomplete: "off" });
  const minutes = field("heat-minutes", "Minutes back", { type: "number", min: "1", max: "1440" });
  remember(stores.input, "heat-stores");
  remember(minutes.input, "heat-minutes", "60");
  const form = el("form", { class: "filters", "aria-label": "Heatmap" }, stores.wrap, minutes.wrap, el("button", { type: "submit" }, "Show"));
  const grid = el("section", { "aria-label": "Sales heatmap" });
  const legend = el("p", { class: "legend" },
    el("span", { class: "cell out" }, "out"), " available ≤ 0 · ",
    el("span", { class: "cell low" }, "low"), " at or below the reorder point · ",
    el("span", { class: "cell ok" }, "ok"), " above it. Numbers are units sold.");
  main.append(el("h2", {}, "Heatmap"), form, legend, grid);

  const refresh = async () => {
    try {
      const r = await query.getSalesHeatmap({
        storeIds: stores.input.value.split(",").map((x) => x.trim()).filter(Boolean),
        windowMinutes: Number(minutes.input.value) || 60,
      }, { signal });
      if (r.skuIds.length === 0) {
        grid.replaceChildren(el("p", {}, "No sales in the window."));
        return;
      }
      const cells = new Map<string, HeatmapCell>();
      for (const c of r.cells) cells.set(c.skuId + "\u0000" + c.storeId, c);
      const head = el("tr", {}, el("th", { scope: "col" }, "SKU"), ...r.storeIds.map((s) => el("th", { scope: "col" }, s)));
      const rows = r.skuIds.map((sku) => el("tr", {}, el("th", { scope: "row" }, sku), ...r.storeIds.map((st) => {
        const c = cells.get(sku + "\u0000" + st);
        if (!c) return el("td", { class: "cell none" }, "–");
        const kind = c.available <= 0n ? "out" : c.available <= c.reorderPoint ? "low" : "ok";
        return el("td", { class: "cell " + kind, title: `${sku} at ${st}: ${c.unitsSold} sold, ${c.available} available (${kind}, reorder point ${c.reorderPoint})` },
          String(c.unitsSold), el("span", { class: "sr" }, ` sold, ${kind}`));
      })));
      grid.replaceChildren(el("div", { class: "scroll" }, el("table", { class: "heat" },
        el("caption", {}, `Hottest ${r.skuIds.length} SKUs over ${r.storeIds.length} stores`), el("thead", {}, head), el("tbody", {}, ...rows))));
    } catch (err) {
      failed(err);
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void refresh();
  });
  every(5000, signal, refresh);
}
