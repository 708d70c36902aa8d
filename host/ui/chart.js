// chart.js - the history charts, drawn as SVG by the page (no library):
// tasks ended per step, stacked by outcome, and each handler's outcomes over
// the range. Both read one answer of GET /v1/history.

const NS = 'http://www.w3.org/2000/svg';
export const OUTCOMES = ['success', 'partial_success', 'failure', 'cancelled'];
const LABEL = { success: 'success', partial_success: 'partial', failure: 'failure', cancelled: 'cancelled' };

function s(tag, attrs, ...children) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
    return el;
}

// The number of buckets of a history answer.
function buckets(hist) {
    const first = hist.handlers[0];
    if (first) return first.success.length;
    return Math.max(0, Math.ceil((hist.until_ms - hist.since_ms) / (hist.step_s * 1000)));
}

// Per outcome, the counts of every handler summed bucket by bucket.
export function totals(hist) {
    const n = buckets(hist);
    const out = Object.fromEntries(OUTCOMES.map((o) => [o, new Array(n).fill(0)]));
    for (const e of hist.handlers)
        for (const o of OUTCOMES) (e[o] || []).forEach((v, i) => { if (i < n) out[o][i] += v; });
    return out;
}

// The top of the scale: the smallest of 1, 2, 4, 6, 8 × 10^k at or above v
// (even, so that its half, the middle line, is a whole count too).
function roundUp(v) {
    if (v <= 1) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 4, 6, 8, 10].map((m) => m * p).find((x) => x >= v);
}

function timeLabel(ms, stepS) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    const hm = `${p(d.getHours())}:${p(d.getMinutes())}`;
    return stepS >= 3600 ? `${p(d.getMonth() + 1)}-${p(d.getDate())} ${hm}` : hm;
}

// Tasks ended per step, stacked by outcome; each bar segment carries
// data-outcome, data-count and data-ms (the start of its step).
export function throughput(hist) {
    const W = 720, H = 190, L = 40, R = 8, T = 10, B = 22;
    const sums = totals(hist);
    const n = buckets(hist);
    const stack = Array.from({ length: n }, (_, i) => OUTCOMES.reduce((t, o) => t + sums[o][i], 0));
    const top = roundUp(Math.max(0, ...stack));
    const bw = (W - L - R) / Math.max(1, n);
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-testid': 'throughput',
        'aria-label': `Tasks ended per ${hist.step_s >= 3600 ? `${hist.step_s / 3600} h` : `${hist.step_s / 60} min`}, by outcome` });
    for (const v of top > 1 ? [0, top / 2, top] : [0, top]) {
        svg.append(s('line', { class: 'grid-line', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
            s('text', { class: 'axis', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, v));
    }
    const stepMs = hist.step_s * 1000;
    for (let i = 0; i < n; i++) {
        let base = 0;
        const at = hist.since_ms + i * stepMs;
        for (const o of OUTCOMES) {
            const c = sums[o][i];
            if (!c) continue;
            svg.append(s('rect', { class: `seg ${o}`, x: (L + i * bw + bw * 0.12).toFixed(2), width: Math.max(1, bw * 0.76).toFixed(2),
                y: y(base + c).toFixed(2), height: (y(base) - y(base + c)).toFixed(2),
                'data-outcome': o, 'data-count': c, 'data-ms': at },
            s('title', {}, `${timeLabel(at, hist.step_s)}: ${c} ${LABEL[o]}`)));
            base += c;
        }
    }
    for (const i of new Set(n ? [0, Math.floor(n / 2), n - 1] : [])) {
        svg.append(s('text', { class: 'axis', x: L + i * bw + bw / 2, y: H - 6, 'text-anchor': 'middle' },
            timeLabel(hist.since_ms + i * stepMs, hist.step_s)));
    }
    return svg;
}

// One horizontal bar per handler: its outcomes over the whole range, longest first.
export function byHandler(hist) {
    const rows = hist.handlers.map((e) => {
        const c = Object.fromEntries(OUTCOMES.map((o) => [o, (e[o] || []).reduce((a, b) => a + b, 0)]));
        return { handler: e.handler, c, total: OUTCOMES.reduce((t, o) => t + c[o], 0) };
    }).filter((r) => r.total > 0).sort((a, b) => b.total - a.total || a.handler.localeCompare(b.handler));
    const W = 520, RH = 22, LW = 170, NW = 60;
    const H = Math.max(1, rows.length) * RH + 4;
    const max = Math.max(1, ...rows.map((r) => r.total));
    const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-testid': 'outcomes',
        'aria-label': 'Tasks ended per handler, by outcome' });
    if (!rows.length)
        svg.append(s('text', { class: 'axis', x: 4, y: 16 }, 'No task ended in this range.'));
    rows.forEach((r, k) => {
        const y = 2 + k * RH;
        const g = s('g', { 'data-handler': r.handler });
        g.append(s('text', { class: 'label', x: LW - 8, y: y + 15, 'text-anchor': 'end' }, r.handler));
        let x = LW;
        for (const o of OUTCOMES) {
            if (!r.c[o]) continue;
            const w = ((W - LW - NW) * r.c[o]) / max;
            g.append(s('rect', { class: `seg ${o}`, x: x.toFixed(2), y: y + 3, width: Math.max(1, w).toFixed(2), height: RH - 8,
                'data-outcome': o, 'data-count': r.c[o] }, s('title', {}, `${r.handler}: ${r.c[o]} ${LABEL[o]}`)));
            x += w;
        }
        g.append(s('text', { class: 'axis', x: x + 6, y: y + 15 }, r.total));
        svg.append(g);
    });
    return svg;
}

// The colour key of both charts.
export function legend() {
    const key = document.createElement('div');
    key.className = 'legend';
    for (const o of OUTCOMES) {
        const chip = document.createElement('span');
        chip.className = `chip ${o === 'partial_success' ? 'partial' : o}`;
        chip.textContent = LABEL[o];
        key.append(chip);
    }
    return key;
}
