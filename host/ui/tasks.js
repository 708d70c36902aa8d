// tasks.js - the task list: filters by state, handler and time (kept in the
// URL), pages of the newest first with "Load more" (the listing's cursor),
// rows patched in place from /v1/events as tasks progress and end, and the
// first page read again when a task it does not show yet appears.
import { api, follow, poll, isTerminalEvent } from './api.js';
import { h, fill, badge, bar, setBar, ago, num, progressText, fraction, taskLink, STATES } from './dom.js';

const LIMITS = [20, 50, 100, 200, 500];
// Choices offered for since/until; any time bgtaskd takes can be typed.
const TIMES = ['15m', '1h', '6h', '24h', '7d'];
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
    const time = (name, label) => h('input', { name, list: 'time-choices', placeholder: label, class: 'time',
        value: params.get(name) || '', 'aria-label': label, spellcheck: 'false',
        title: 'A time (2026-12-03T17:00:00Z, or ms since the epoch) or how long ago (30m, 24h, 7d)' });
    const since = time('since', 'Since (e.g. 24h)');
    const until = time('until', 'Until');
    const limit = h('select', { name: 'limit', 'aria-label': 'Rows' },
        LIMITS.map((n) => h('option', { value: n, selected: String(n) === (params.get('limit') || '50') }, `${n} per page`)));
    const form = h('form', { class: 'filters' }, state, handler, since, until, limit,
        h('datalist', { id: 'handler-names' }, known.map((n) => h('option', { value: n }))),
        h('datalist', { id: 'time-choices' }, TIMES.map((t) => h('option', { value: t }))),
        h('button', { type: 'submit' }, 'Apply'));
    const go = (ev) => {
        ev?.preventDefault();
        const q = new URLSearchParams();
        if (state.value) q.set('state', state.value);
        if (handler.value.trim()) q.set('handler', handler.value.trim());
        if (since.value.trim()) q.set('since', since.value.trim());
        if (until.value.trim()) q.set('until', until.value.trim());
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
    let order = []; // the rows shown, newest first
    let paged = false; // "Load more" has added pages after the first
    let cursor = null; // where the next page starts; null at the end
    const tbody = h('tbody');
    const count = h('span', { class: 'muted', 'data-testid': 'count' });
    const filterBox = h('div');
    const more = h('button', { type: 'button', 'data-action': 'more', hidden: true }, 'Load more');
    const moreNote = h('span', { class: 'muted' });
    el.append(
        h('div', { class: 'titlebar' }, h('h1', {}, 'Tasks'), count),
        filterBox,
        h('table', { class: 'grid tasks' },
            h('thead', {}, h('tr', {}, ['Task', 'Handler', 'State', 'Progress', 'Attempt', 'Message', 'Updated'].map((x) => h('th', {}, x)))),
            tbody),
        h('div', { class: 'more' }, more, moreNote));
    fill(filterBox, filters(params, []));
    api('/v1/handlers').then(({ handlers }) => {
        fill(filterBox, filters(params, handlers.map((e) => e.handler)));
    }).catch(() => {});

    const q = new URLSearchParams({ limit: String(limit) });
    for (const k of ['state', 'handler', 'since', 'until']) if (params.get(k)) q.set(k, params.get(k));

    // The row of t, patched or made.
    const rowOf = (t) => {
        let r = rows.get(t.id);
        if (r) patch(r, t);
        else rows.set(t.id, (r = makeRow(t)));
        return r;
    };
    function draw() {
        const ids = new Set(order.map((r) => r.task.id));
        for (const id of [...rows.keys()]) if (!ids.has(id)) rows.delete(id);
        tbody.replaceChildren(...order.map((r) => r.tr));
        if (!order.length)
            tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: 7 }, 'No tasks match.')));
        count.textContent = `${num(order.length)} shown${cursor ? ', newest first: more below' : ''}`;
        more.hidden = !cursor;
    }

    // The first page, read again on events and every 15 s. Pages that "Load
    // more" added stay below it.
    const list = poll(15000, async () => {
        const page = await api(`/v1/tasks?${q}`);
        ctx.fault('');
        const head = page.tasks.map(rowOf);
        if (paged) {
            const inHead = new Set(head.map((r) => r.task.id));
            order = head.concat(order.filter((r) => !inHead.has(r.task.id)));
        } else {
            order = head;
            cursor = page.next_cursor ?? null;
        }
        draw();
    }, (e) => ctx.fault(`Cannot list tasks: ${e.message}`));

    more.addEventListener('click', async () => {
        more.disabled = true;
        moreNote.textContent = '';
        try {
            const page = await api(`/v1/tasks?${q}&cursor=${encodeURIComponent(cursor)}`);
            const shown = new Set(order.map((r) => r.task.id));
            order = order.concat(page.tasks.filter((t) => !shown.has(t.id)).map(rowOf));
            paged = true;
            cursor = page.next_cursor ?? null;
            draw();
        } catch (e) {
            moreNote.textContent = `Cannot load more: ${e.message}`;
        }
        more.disabled = false;
    });

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
