// Tally's console: four pages over the Connect API, routed by the URL's
// hash so the binary serves one page.
import "./style.css";
import { explain, setToken, token } from "./api";
import { stockPage } from "./stock";
import { lowStockPage } from "./lowstock";
import { heatmapPage } from "./heatmap";
import { pipelinePage } from "./pipeline";

export type Page = (main: HTMLElement, signal: AbortSignal) => void;

const pages: Record<string, { title: string; page: Page }> = {
  "#/stock": { title: "Stock", page: stockPage },
  "#/low-stock": { title: "Low stock", page: lowStockPage },
  "#/heatmap": { title: "Heatmap", page: heatmapPage },
  "#/pipeline": { title: "Pipeline", page: pipelinePage },
};

const main = document.getElementById("main")!;
const statusLine = document.getElementById("status")!;
let current: AbortController | undefined;

// status shows a message (or clears it) in the page's live region.
export function status(msg: string, isError = false): void {
  statusLine.textContent = msg;
  statusLine.classList.toggle("error", isError);
}

export function failed(err: unknown): void {
  if ((err as Error)?.name === "AbortError") {
    return;
  }
  status(explain(err), true);
}

function route(): void {
  const key = pages[location.hash] ? location.hash : "#/stock";
  current?.abort();
  current = new AbortController();
  status("");
  main.replaceChildren();
  document.title = pages[key].title + " · Tally";
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
    if (a.getAttribute("href") === key) {
      a.setAttribute("aria-current", "page");
    } else {
      a.removeAttribute("aria-current");
    }
  }
  pages[key].page(main, current.signal);
}

const tokenInput = document.getElementById("token") as HTMLInputElement;
tokenInput.value = token();
document.getElementById("token-form")!.addEventListener("submit", (e) => {
  e.preventDefault();
  setToken(tokenInput.value.trim());
  status(tokenInput.value ? "Token set." : "Token cleared.");
  route();
});

window.addEventListener("hashchange", route);
route();
