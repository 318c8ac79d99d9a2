// Pipeline: how far the read model trails the log, from
// GetProjectionStatus (not /metrics).
import { query } from "./api";
import { el, every, table, when } from "./dom";
import { failed } from "./main";

export function pipelinePage(main: HTMLElement, signal: AbortSignal): void {
  const summary = el("dl", { class: "summary" });
  const parts = el("section", { "aria-label": "Partitions" });
  const bq = el("section", { "aria-label": "BigQuery" });
  const dead = el("section", { "aria-label": "Dead letters" });
  main.append(el("h2", {}, "Pipeline"), summary, parts, bq, dead);
  every(1000, signal, async () => {
    try {
      const s = await query.getProjectionStatus({}, { signal });
      const v = s.visibility;
      const stat = (name: string, value: string, id: string) => [el("dt", {}, name), el("dd", { id }, value)];
      summary.replaceChildren(
        ...stat("Log records/s", s.logRecordsPerSecond.toFixed(0), "rate"),
        ...stat("Projector lag (records)", String(s.totalLag), "lag"),
        ...stat("Write→query visibility", v ? `p50 ${v.p50Ms} ms · p99 ${v.p99Ms} ms` : "no transaction yet", "visibility"),
        ...stat("Dead letters", String(s.deadLetterCount), "dlq"),
      );
      parts.replaceChildren(table("PostgreSQL projection by partition", ["Partition", "Next offset", "End offset", "Lag (records)", "Lag (time)", "Newest projected event"],
        s.partitions.map((p) => [String(p.partition), String(p.nextOffset), String(p.endOffset), String(p.lag),
          lagTime(p.lag, p.newestAgeMs), p.newestRecordedAt ? seconds(p.newestAgeMs) + " ago" : "–"])));
      bq.replaceChildren(...(s.bigqueryPartitions.length === 0 ? [] : [table(`BigQuery projection by partition (lag ${s.bigqueryTotalLag} records, as of its last flush)`,
        ["Partition", "Next offset", "End offset", "Lag (records)", "Newest event age"],
        s.bigqueryPartitions.map((p) => [String(p.partition), String(p.nextOffset), String(p.endOffset), String(p.lag),
          p.newestRecordedAt ? seconds(p.newestAgeMs) : "–"]))]));
      dead.replaceChildren(s.recentDeadLetters.length === 0 ? el("p", {}, "No dead letters.") :
        table("Newest dead letters", ["Partition/offset", "SKU", "Version", "Error", "When"], s.recentDeadLetters.map((d) => [
          `${d.partition}/${d.offset}`, d.skuId, String(d.skuVersion), d.error, when(d.deadLetteredAt)])));
    } catch (err) {
      failed(err);
    }
  });
}

// lagTime is how far behind a partition is in time: caught up, 0; else
// the age of its newest projected event (what follows was written after it).
function lagTime(lag: bigint, ageMs: bigint): string {
  return lag === 0n ? "0.0 s" : seconds(ageMs);
}

function seconds(ms: bigint): string {
  return (Number(ms) / 1000).toFixed(1) + " s";
}
