// dom.js - building the page: h() makes elements, and a few shared pieces
// (state badges, progress bars, tables, relative times) that every view uses.

// h('a', {href: '#/', class: 'x', onclick: fn, 'data-id': id}, 'text', child, [more])
export function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
        if (v === null || v === undefined || v === false) continue;
        if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
        else if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = v;
        else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, children);
    return el;
}

function append(el, children) {
    for (const c of children) {
        if (c === null || c === undefined || c === false) continue;
        if (Array.isArray(c)) append(el, c);
        else el.append(c instanceof Node ? c : String(c));
    }
}

// Replace el's content.
export function fill(el, ...children) {
    el.replaceChildren();
    append(el, children);
    return el;
}

export const STATES = ['ONGOING', 'SUCCESS', 'FAILURE', 'CANCELLED'];

// A task's state as a badge; a SUCCESS with failed subtasks shows it.
export function badge(state, partial = false) {
    const s = String(state || 'UNKNOWN');
    return h('span', { class: `badge ${partial ? 'partial' : s.toLowerCase()}`, 'data-state': s }, partial ? 'PARTIAL' : s);
}

// A progress bar: value in [0, 1], or null when the total is unknown.
export function bar(value, big = false) {
    const fill = h('span', { class: 'fill' });
    const el = h('span', { class: big ? 'progress big' : 'progress' }, fill);
    setBar(el, value);
    return el;
}

export function setBar(el, value) {
    const known = value !== null && Number.isFinite(value);
    el.classList.toggle('unknown', !known);
    const v = known ? Math.max(0, Math.min(1, value)) : 0;
    el.firstChild.style.width = `${(v * 100).toFixed(1)}%`;
    el.dataset.value = known ? v.toFixed(4) : '';
}

// A time shown as "5s ago" and kept fresh by tick(); the title holds the date.
export function ago(ms) {
    if (!ms) return h('span', { class: 'muted' }, '-');
    return h('time', { 'data-ago': ms, title: clock(ms) }, since(ms));
}

// Refresh every ago() on the page.
export function tick() {
    for (const el of document.querySelectorAll('[data-ago]')) el.textContent = since(+el.dataset.ago);
}

export function since(ms) {
    const d = Date.now() - ms;
    return d >= 0 ? `${span(d)} ago` : `in ${span(-d)}`;
}

// A duration, short: "850 ms", "12 s", "4m 05s", "2h 03m", "3d 4h".
export function span(ms) {
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = Math.floor(ms / 1000);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
    const hr = Math.floor(m / 60);
    if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, '0')}m`;
    return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

export function clock(ms) {
    const d = new Date(ms);
    const p = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
        `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function num(n) {
    return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: 1 }) : '-';
}

// "12/40 (30%)", or "12" when there is no total.
export function progressText(cur, total) {
    if (!(total > 0)) return cur > 0 ? num(cur) : '';
    return `${num(cur)}/${num(total)} (${Math.floor((100 * Math.min(cur, total)) / total)}%)`;
}

export function fraction(cur, total) {
    return total > 0 ? cur / total : null;
}

// A table: cols are [label, class?]; rows are arrays of cells (or <tr>s).
export function table(cols, rows, empty = 'Nothing to show.') {
    const body = h('tbody', {}, rows);
    if (!rows.length) body.append(h('tr', { class: 'empty' }, h('td', { colspan: cols.length }, empty)));
    return h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, cols.map(([label, cls]) => h('th', { class: cls }, label)))),
        body);
}

export function row(cells, props) {
    return h('tr', props, cells.map((c) => (c instanceof HTMLTableCellElement ? c : h('td', {}, c))));
}

export function td(cls, ...children) {
    return h('td', { class: cls }, ...children);
}

// A task id: short, monospace, linking to the task; the title holds it whole.
export function taskLink(id) {
    return h('a', { class: 'id', href: `#/task/${id}`, title: id }, id.slice(0, 8));
}

export function chips(names, max = 6) {
    const shown = names.slice(0, max).map((n) => h('span', { class: 'chip' }, n));
    if (names.length > max)
        shown.push(h('span', { class: 'chip more', title: names.slice(max).join(', ') }, `+${names.length - max}`));
    return h('span', { class: 'chips' }, shown);
}

// A "x failed" message line for a view.
export function notice(kind, text) {
    return h('p', { class: `banner ${kind}`, role: kind === 'failure' ? 'alert' : null }, text);
}
