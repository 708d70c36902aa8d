// tasks.js - the task list: filters by state and handler (kept in the URL),
// rows patched in place from /v1/events as tasks progress and end, and the
// list read again when a task it does not show yet appears.
import { api, follow, poll, isTerminalEvent } from './api.js';
import { h, fill, badge, bar, setBar, ago, num, progressText, fraction, taskLink, STATES } from './dom.js';

const LIMITS = [20, 50, 100, 200, 500];
const ENDED = { bgtask_done: 'SUCCESS', bgtask_partial_success: 'SUCCESS', bgtask_failed: 'FAILURE', bgtask_cancelled: 'CANCELLED' };

// The cells of a row that patch() redraws.
function cells() {
    return {
        state: h('td', {}),
        progress: bar(null),
        ptext: h('span', { class: 'ptext' }),
        attempt: h('td', { class: 'num' }),
        message: h('td', { class: 'message' }),
        updated: h('td', {}),
    };
}

// Draw the task t into the row r (made by makeRow).
function patch(r, t) {
    r.task = t;
    const partial = t.state === 'SUCCESS' && t.sub_failure > 0;
    r.tr.dataset.state = t.state;
    fill(r.c.state, badge(t.state, partial));
    setBar(r.c.progress, t.state === 'SUCCESS' && !(t.progress_total > 0) ? 1 : fraction(t.progress_current, t.progress_total));
    r.c.progress.classList.toggle('done', t.state !== 'ONGOING');
    r.c.ptext.textContent = progressText(t.progress_current, t.progress_total);
    r.c.attempt.textContent = t.max_attempts ? `${t.attempt}/${t.max_attempts}` : String(t.attempt);
    const text = t.error || t.message || '';
    r.c.message.textContent = text;
    r.c.message.title = text;
    r.c.message.classList.toggle('failure', !!t.error);
    fill(r.c.updated, ago(t.finished_ms || t.updated_ms || t.created_ms));
}

function makeRow(t) {
    const c = cells();
    const tr = h('tr', { 'data-task': t.id },
        h('td', {}, taskLink(t.id)),
        h('td', {}, t.handler, t.kind === 'parallel' ? h('span', { class: 'muted' }, ' ∥') : null),
        c.state,
        h('td', { class: 'pcell' }, c.progress, c.ptext),
        c.attempt, c.message, c.updated);
    const r = { tr, c, task: t };
    patch(r, t);
    return r;
}

function filters(params, known) {
    const state = h('select', { name: 'state', 'aria-label': 'State' },
        h('option', { value: '' }, 'Any state'),
        STATES.map((s) => h('option', { value: s, selected: params.get('state') === s }, s)));
    const handler = h('input', { name: 'handler', list: 'handler-names', placeholder: 'Any handler',
        value: params.get('handler') || '', 'aria-label': 'Handler', spellcheck: 'false' });
    const limit = h('select', { name: 'limit', 'aria-label': 'Rows' },
        LIMITS.map((n) => h('option', { value: n, selected: String(n) === (params.get('limit') || '50') }, `${n} rows`)));
    const form = h('form', { class: 'filters' }, state, handler, limit,
        h('datalist', { id: 'handler-names' }, known.map((n) => h('option', { value: n }))),
        h('button', { type: 'submit' }, 'Apply'));
    const go = (ev) => {
        ev?.preventDefault();
        const q = new URLSearchParams();
        if (state.value) q.set('state', state.value);
        if (handler.value.trim()) q.set('handler', handler.value.trim());
        if (limit.value !== '50') q.set('limit', limit.value);
        const s = q.toString();
        location.hash = s ? `#/tasks?${s}` : '#/tasks';
    };
    form.addEventListener('submit', go);
    state.addEventListener('change', go);
    limit.addEventListener('change', go);
    return form;
}

export function mount(el, params, ctx) {
    const state = params.get('state') || '';
    const handler = params.get('handler') || '';
    const limit = Number(params.get('limit')) || 50;
    const rows = new Map(); // task id -> row
    const tbody = h('tbody');
    const count = h('span', { class: 'muted' });
    const filterBox = h('div');
    el.append(
        h('div', { class: 'titlebar' }, h('h1', {}, 'Tasks'), count),
        filterBox,
        h('table', { class: 'grid tasks' },
            h('thead', {}, h('tr', {}, ['Task', 'Handler', 'State', 'Progress', 'Attempt', 'Message', 'Updated'].map((x) => h('th', {}, x)))),
            tbody));
    fill(filterBox, filters(params, []));
    api('/v1/hosts').then(({ hosts }) => {
        const names = [...new Set(hosts.flatMap((x) => x.handlers || []))].sort();
        fill(filterBox, filters(params, names));
    }).catch(() => {});

    const q = new URLSearchParams({ limit: String(limit) });
    if (state) q.set('state', state);
    if (handler) q.set('handler', handler);
    const list = poll(15000, async () => {
        const { tasks } = await api(`/v1/tasks?${q}`);
        ctx.fault('');
        const seen = new Set();
        const order = tasks.map((t) => {
            seen.add(t.id);
            let r = rows.get(t.id);
            if (r) patch(r, t);
            else rows.set(t.id, (r = makeRow(t)));
            return r.tr;
        });
        for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
        tbody.replaceChildren(...order);
        if (!order.length)
            tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: 7 }, 'No tasks match.')));
        count.textContent = `${num(order.length)} shown${order.length >= limit ? ` (the newest ${limit})` : ''}`;
    }, (e) => ctx.fault(`Cannot list tasks: ${e.message}`));

    const onEvent = (name, d) => {
        const r = rows.get(d.task_id);
        if (!r) {
            // A task this list does not show yet: read the list again if it could belong here.
            const ends = ENDED[name];
            if (!state || state === (ends || 'ONGOING')) list.kick(300);
            return;
        }
        const t = { ...r.task, attempt: d.attempt ?? r.task.attempt, message: d.message ?? r.task.message };
        if (name === 'bgtask_updated') {
            t.state = 'ONGOING';
            t.progress_current = d.current_progress;
            t.progress_total = d.total_progress;
            t.updated_ms = d.ts_ms;
            t.finished_ms = 0;
            t.error = null;
        } else if (isTerminalEvent(name)) {
            t.state = ENDED[name];
            t.finished_ms = d.ts_ms;
            if (name === 'bgtask_failed') t.error = d.message;
            list.kick(1000); // the record has more (result, counts)
        }
        patch(r, t);
    };
    const path = handler ? `/v1/events?handler=${encodeURIComponent(handler)}` : '/v1/events';
    const events = follow(path, { onEvent, onState: ctx.live.set, onOpen: () => list.kick(0) });
    return () => {
        list.stop();
        events.stop();
    };
}
