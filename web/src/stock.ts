// Stock: a store's levels by SKU prefix, live; a SKU's history and its
// on-hand as of an instant.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { query } from "./api";
import { el, every, field, remember, table, when } from "./dom";
import { EventType } from "./gen/tally/inventory/v1/events_pb";
import { TimeBasis, type StockLevel } from "./gen/tally/inventory/v1/query_pb";
import { failed, status } from "./main";

export function stockPage(main: HTMLElement, signal: AbortSignal): void {
  const store = field("stock-store", "Store", { required: true, autocomplete: "on" });
  const prefix = field("stock-prefix", "SKU starts with", { autocomplete: "off" });
  remember(store.input, "store");
  remember(prefix.input, "prefix");
  const form = el("form", { class: "filters", "aria-label": "Find stock" }, store.wrap, prefix.wrap, el("button", { type: "submit" }, "Show"));
  const results = el("section", { "aria-label": "Levels" });
  const detail = el("section", { "aria-label": "History" });
  main.append(el("h2", {}, "Stock"), form, results, detail);

  let selected: { sku: string; store: string } | undefined;
  const refresh = async () => {
    if (!store.input.value) {
      results.replaceChildren(el("p", {}, "Pick a store to see its stock."));
      return;
    }
    try {
      const r = await query.listStock({ storeId: store.input.value, skuPrefix: prefix.input.value, pageSize: 100 }, { signal });
      results.replaceChildren(levelsTable(r.levels, (l) => {
        selected = { sku: l.skuId, store: l.storeId };
        void showHistory(detail, selected, signal);
      }), el("p", { class: "note" }, r.nextPageToken ? "The first 100 SKUs; narrow the prefix to see others." : `${r.levels.length} SKUs, live.`));
    } catch (err) {
      failed(err);
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    status("");
    void refresh();
  });
  // Live: levels re-read twice a second while the page is open, so a sale
  // shows within a second.
  every(500, signal, refresh);
}

function levelsTable(levels: StockLevel[], open: (l: StockLevel) => void): HTMLElement {
  return table("Levels of the store", ["SKU", "On hand", "Reserved", "Available", "Version", "Updated"], levels.map((l) => {
    const b = el("button", { type: "button", class: "link", "data-sku": l.skuId }, l.skuId);
    b.addEventListener("click", () => open(l));
    return [b, String(l.onHand), String(l.reserved), el("span", { "data-available": l.skuId }, String(l.available)), String(l.skuVersion), when(l.updatedAt)];
  }));
}

async function showHistory(detail: HTMLElement, key: { sku: string; store: string }, signal: AbortSignal): Promise<void> {
  try {
    const h = await query.getStockHistory({ skuId: key.sku, storeId: key.store, pageSize: 50 }, { signal });
    const at = field("asof-at", "On hand as of", { type: "datetime-local", step: "1" });
    const out = el("output", { for: "asof-at", "aria-live": "polite" });
    const asOf = el("form", { class: "filters", "aria-label": "As of" }, at.wrap, el("button", { type: "submit" }, "Look up"), out);
    asOf.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!at.input.value) return;
      try {
        const r = await query.getStockAsOf({ skuId: key.sku, storeId: key.store, asOf: timestampFromDate(new Date(at.input.value)), basis: TimeBasis.RECORDED }, { signal });
        out.textContent = `${r.onHand} on hand (version ${r.skuVersion})`;
      } catch (err) {
        failed(err);
      }
    });
    detail.replaceChildren(
      el("h3", {}, `History of ${key.sku} at ${key.store}`),
      asOf,
      table("Newest first", ["Version", "Event", "Change", "On hand after", "Reserved after", "Recorded"], h.events.map((ev) => [
        String(ev.skuVersion), (EventType[ev.eventType] ?? String(ev.eventType)).toLowerCase().replaceAll("_", " "), signed(ev.quantityDelta),
        String(ev.onHandAfter), String(ev.reservedAfter), when(ev.recordedAt),
      ])),
    );
    detail.querySelector("h3")?.setAttribute("tabindex", "-1");
    (detail.querySelector("h3") as HTMLElement | null)?.focus();
  } catch (err) {
    failed(err);
  }
}

function signed(n: bigint): string {
  return n > 0n ? "+" + n : String(n);
}
