// Small DOM helpers: the console has no framework.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

type Attrs = Record<string, string | boolean | undefined>;

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === "class") e.className = String(v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  e.append(...children);
  return e;
}

// field is a labelled input.
export function field(id: string, label: string, attrs: Attrs = {}): { wrap: HTMLElement; input: HTMLInputElement } {
  const input = el("input", { id, name: id, ...attrs });
  return { wrap: el("div", { class: "field" }, el("label", { for: id }, label), input), input };
}

// table builds a table with a caption, headers and rows of cells.
export function table(caption: string, headers: string[], rows: (Node | string)[][], rowClass?: (i: number) => string): HTMLElement {
  const thead = el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h))));
  const tbody = el("tbody", {}, ...rows.map((r, i) => el("tr", { class: rowClass?.(i) }, ...r.map((c) => el("td", {}, c)))));
  return el("div", { class: "scroll" }, el("table", {}, el("caption", {}, caption), thead, tbody));
}

export function when(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toLocaleString() : "";
}

// remember keeps an input's value across visits.
export function remember(input: HTMLInputElement, key: string, fallback = ""): void {
  input.value = localStorage.getItem("tally." + key) ?? fallback;
  input.addEventListener("change", () => localStorage.setItem("tally." + key, input.value));
}

// every runs fn now and then every ms until signal aborts.
export function every(ms: number, signal: AbortSignal, fn: () => Promise<void>): void {
  let timer: number | undefined;
  const tick = async () => {
    if (signal.aborted) return;
    await fn();
    if (!signal.aborted) timer = window.setTimeout(tick, ms);
  };
  signal.addEventListener("abort", () => window.clearTimeout(timer));
  void tick();
}
