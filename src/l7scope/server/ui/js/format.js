// Number, time and duration formatting for labels, tables and panels (pure functions).

const nf = new Intl.NumberFormat("en-US");

export function count(n) {
  return n === null || n === undefined ? "–" : nf.format(n);
}

/** 1234 -> "1.2k", 5_600_000 -> "5.6M". */
export function compact(n) {
  if (n === null || n === undefined) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(0) + "k";
  if (a >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n * 100) / 100);
}

/** Requests per second with a sensible number of digits. */
export function rate(perSecond) {
  if (!perSecond) return "0 rps";
  if (perSecond >= 100) return Math.round(perSecond) + " rps";
  if (perSecond >= 1) return perSecond.toFixed(1) + " rps";
  if (perSecond >= 0.01) return perSecond.toFixed(2) + " rps";
  return "<0.01 rps";
}

/** Ratio 0..1 -> "0.5%". */
export function pct(ratio) {
  if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return "–";
  const p = ratio * 100;
  if (p === 0) return "0%";
  if (p < 0.1) return "<0.1%";
  if (p < 10) return p.toFixed(1) + "%";
  return Math.round(p) + "%";
}

/** Nanoseconds -> "850 µs", "12.3 ms", "1.20 s". */
export function duration(ns) {
  if (ns === null || ns === undefined) return "–";
  if (ns < 1e3) return ns + " ns";
  if (ns < 1e6) return (ns / 1e3).toFixed(ns < 1e4 ? 1 : 0) + " µs";
  if (ns < 1e9) return (ns / 1e6).toFixed(ns < 1e7 ? 2 : 1) + " ms";
  return (ns / 1e9).toFixed(2) + " s";
}

export function bytes(b) {
  if (b === null || b === undefined) return "–";
  if (b < 1024) return b + " B";
  if (b < 1024 ** 2) return (b / 1024).toFixed(1) + " KiB";
  if (b < 1024 ** 3) return (b / 1024 ** 2).toFixed(1) + " MiB";
  return (b / 1024 ** 3).toFixed(2) + " GiB";
}

const pad = (n) => String(n).padStart(2, "0");

/** Epoch seconds -> local "2026-11-26 19:45:02". */
export function time(epochS) {
  if (!epochS) return "–";
  const d = new Date(epochS * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Epoch seconds -> value for <input type="datetime-local">. */
export function toLocalInput(epochS) {
  return time(epochS).replace(" ", "T");
}
