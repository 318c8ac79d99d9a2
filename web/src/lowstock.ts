// Low stock: the live WatchLowStock list (server streaming over Connect),
// with recommended reorder quantities; new crossings are highlighted.
import { query } from "./api";
import { el, field, remember, table } from "./dom";
import { LowStockState, type LowStockItem } from "./gen/tally/inventory/v1/query_pb";
import { failed, status } from "./main";

const stateName: Record<number, string> = {
  [LowStockState.LOW]: "low",
  [LowStockState.OUT_OF_STOCK]: "out of stock",
  [LowStockState.RECOVERED]: "recovered",
};

export function lowStockPage(main: HTMLElement, signal: AbortSignal): void {
  const stores = field("low-stores", "Stores (comma-separated; empty = all)", { autocomplete: "off" });
  const prefix = field("low-prefix", "SKU starts with", { autocomplete: "off" });
  remember(stores.input, "low-stores");
  remember(prefix.input, "low-prefix");
  const form = el("form", { class: "filters", "aria-label": "Watch" }, stores.wrap, prefix.wrap, el("button", { type: "submit" }, "Watch"));
  const list = el("section", { "aria-label": "Low-stock items", "aria-live": "polite" });
  main.append(el("h2", {}, "Low stock"), form, list);

  let watch: AbortController | undefined;
  signal.addEventListener("abort", () => watch?.abort());
  const start = () => {
    watch?.abort();
    watch = new AbortController();
    void run(watch.signal);
  };
  const items = new Map<string, { item: LowStockItem; fresh: number }>();
  const render = () => {
    const rows = [...items.values()].filter((x) => x.item.state !== LowStockState.RECOVERED)
      .sort((a, b) => Number(a.item.available - b.item.available) || a.item.skuId.localeCompare(b.item.skuId));
    const now = Date.now();
    list.replaceChildren(rows.length === 0 ? el("p", {}, "Nothing at or below its reorder point.") :
      table(`${rows.length} items at or below their reorder point`, ["SKU", "Store", "State", "Available", "Reorder point", "Recommended reorder", "Sold in 7 days"],
        rows.map(({ item }) => [item.skuId, item.storeId, stateName[item.state] ?? "", String(item.available), String(item.reorderPoint),
          String(item.recommendedReorderQuantity), String(item.salesLast7Days)]),
        (i) => (now - rows[i].fresh < 10000 ? "fresh" : "")));
  };
  const run = async (s: AbortSignal) => {
    let resume = "";
    while (!s.aborted) {
      try {
        const storeIds = stores.input.value.split(",").map((x) => x.trim()).filter(Boolean);
        for await (const msg of query.watchLowStock({ storeIds, skuPrefix: prefix.input.value, resumeToken: resume }, { signal: s })) {
          if (msg.resumeToken) resume = msg.resumeToken;
          if (msg.caughtUp) {
            status("Watching: new crossings appear highlighted.");
          }
          const it = msg.item;
          if (it) {
            items.set(it.skuId + "\u0000" + it.storeId, { item: it, fresh: msg.initial ? 0 : Date.now() });
          }
          render();
        }
      } catch (err) {
        if (s.aborted) return;
        failed(err);
        await new Promise((r) => setTimeout(r, 1000)); // resume from the last token
      }
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    items.clear();
    start();
  });
  // Highlights fade after ten seconds.
  const fade = window.setInterval(render, 2000);
  signal.addEventListener("abort", () => window.clearInterval(fade));
  start();
}
