// handlers.js - every handler a live host serves, a queue holds or a pause
// names (GET /v1/handlers): which hosts serve it with how many workers, its
// unfinished and waiting tasks, the age of its oldest waiting task, its
// outcomes in the last hour, whether it is paused, links to its tasks, and
// the operations on its tasks: pause and resume, retry of the failed ones,
// purge of finished records, cancel of the unfinished ones (each bulk one
// confirmed with its dry run's count).
import { api, follow, poll } from './api.js';
import { h, fill, table, row, td, num, span, chips, clock, notice } from './dom.js';
import { unservedBanner } from './overview.js';
import { bulkPanel } from './ops.js';

const enc = encodeURIComponent;

// The bulk operations of the handler name, as ops.js panels.
const OPS = {
    retry: (name) => ({
        name: 'retry',
        title: `Retry the finished tasks of ${name} that failed or were cancelled`,
        path: '/v1/tasks/retry',
        fields: [
            { name: 'state', label: 'State', value: 'FAILURE',
                options: [['FAILURE', 'failed'], ['CANCELLED', 'cancelled'], ['both', 'failed or cancelled']] },
            { name: 'since', label: 'Ended in the last', value: '24h',
                options: [['1h', 'hour'], ['24h', '24 hours'], ['7d', '7 days'], ['', 'any time']] },
        ],
        body: (v) => ({ handler: name, state: v.state === 'both' ? ['FAILURE', 'CANCELLED'] : v.state, since: v.since || undefined }),
        verb: 'Retry',
        done: (r) => `Retried ${num(r.retried)} of ${num(r.matched)} matched${r.truncated ? ' (more match: run it again)' : ''}.`,
    }),
    purge: (name) => ({
        name: 'purge',
        title: `Delete the records of finished tasks of ${name}`,
        path: '/v1/tasks/purge',
        fields: [
            { name: 'state', label: 'State', value: '',
                options: [['', 'any finished'], ['SUCCESS', 'succeeded'], ['FAILURE', 'failed'], ['CANCELLED', 'cancelled']] },
            { name: 'older_than', label: 'Ended more than', value: '7d',
                options: [['0s', '0 s ago (all)'], ['1h', '1 hour ago'], ['24h', '24 hours ago'], ['7d', '7 days ago']] },
        ],
        body: (v) => ({ handler: name, state: v.state || undefined, older_than: v.older_than }),
        verb: 'Delete',
        noun: 'record',
        danger: true,
        done: (r) => `Deleted ${num(r.deleted)} record${r.deleted === 1 ? '' : 's'} of ${num(r.matched)} matched` +
            `${r.truncated ? ' (more match: run it again)' : ''}.`,
    }),
    cancel: (name) => ({
        name: 'cancel',
        title: `Cancel every unfinished task of ${name} (running ones are asked to stop)`,
        path: '/v1/tasks/cancel',
        fields: [],
        body: () => ({ handler: name }),
        verb: 'Cancel',
        danger: true,
        done: (r) => `Cancelled ${num(r.cancelled)}; asked ${num(r.cancel_requested)} running to stop` +
            `${r.truncated ? ' (more match: run it again)' : ''}.`,
    }),
};

// "120 ok · 2 failed" from an entry's last_hour.
function lastHour(c) {
    if (!c) return '-';
    const parts = [[c.success, 'ok'], [c.partial_success, 'partial'], [c.failure, 'failed'], [c.cancelled, 'cancelled']]
        .filter(([n]) => n > 0);
    if (!parts.length) return h('span', { class: 'muted' }, '0');
    return parts.map(([n, w], i) => [i ? ' · ' : '', h('span', { class: `lh-${w}` }, `${num(n)} ${w}`)]);
}

export function mount(el, _params, ctx) {
    const banner = h('div');
    const box = h('div');
    const panel = h('div', { class: 'panelbox' });
    el.append(h('h1', {}, 'Handlers'), banner,
        h('p', { class: 'hint' }, 'Workers are those of the hosts that serve the handler, shared with their other handlers. ' +
            'A paused handler keeps its queue: no host claims its tasks until it is resumed; running ones finish.'),
        panel, box);

    const close = () => fill(panel);
    const openBulk = (op, name) => fill(panel, bulkPanel(OPS[op](name), { onClose: close, onDone: () => p.kick(0) }));

    function openPause(e) {
        const reason = h('input', { name: 'reason', maxlength: 200, placeholder: 'Reason (optional)', spellcheck: 'false' });
        const result = h('div');
        const go = h('button', { type: 'button', class: 'danger', 'data-action': 'confirm', onclick: async () => {
            go.disabled = true;
            try {
                const text = reason.value.trim();
                await api(`/v1/handlers/${enc(e.handler)}/pause`, { method: 'POST', body: text ? { reason: text } : {} });
                close();
                p.kick(0);
            } catch (err) {
                fill(result, notice('failure', err.message));
                go.disabled = false;
            }
        } }, 'Pause');
        fill(panel, h('div', { class: 'oppanel', role: 'dialog', 'data-testid': 'op', 'data-op': 'pause' },
            h('div', { class: 'ophead' }, h('strong', {}, `Pause ${e.handler}`),
                h('button', { type: 'button', class: 'ghost', 'data-action': 'close', onclick: close }, 'Close')),
            h('p', {}, `No host will claim its tasks until it is resumed: ${num(e.due)} waiting stay queued, ` +
                'new submissions are accepted and wait; attempts running now finish.'),
            h('div', { class: 'oprow' }, reason, go), result));
        reason.focus();
    }

    async function resume(e, button) {
        button.disabled = true;
        try {
            await api(`/v1/handlers/${enc(e.handler)}/resume`, { method: 'POST' });
            ctx.fault('');
        } catch (err) {
            ctx.fault(`Cannot resume ${e.handler}: ${err.message}`);
        }
        p.kick(0);
    }

    function actions(e) {
        const b = (op, label, onclick, cls = '') => h('button', { type: 'button', class: `small ${cls}`, 'data-action': op, onclick }, label);
        return td('actions',
            e.paused ? b('resume', 'Resume', (ev) => resume(e, ev.currentTarget), 'primary') : b('pause', 'Pause…', () => openPause(e)),
            b('retry', 'Retry…', () => openBulk('retry', e.handler)),
            b('purge', 'Purge…', () => openBulk('purge', e.handler)),
            b('cancel', 'Cancel all…', () => openBulk('cancel', e.handler)));
    }

    const p = poll(3000, async () => {
        const { handlers } = await api('/v1/handlers');
        ctx.fault('');
        fill(banner, unservedBanner(handlers.filter((e) => e.unserved)));
        const rows = handlers.map((e) => {
            const tasks = `#/tasks?handler=${enc(e.handler)}`;
            const paused = e.paused ? h('span', { class: 'badge cancelled', 'data-testid': 'paused',
                title: `paused ${e.paused_ms ? clock(e.paused_ms) : ''}${e.reason ? `: ${e.reason}` : ''}` }, 'paused') : null;
            return row([
                td('mono', e.handler, ' ', paused),
                td('', e.hosts.length ? chips(e.hosts, 4) : h('span', { class: 'badge failure' }, 'unserved')),
                td('num', num(e.workers)),
                td('num', num(e.queued)),
                td('num', num(e.due)),
                td('num', e.due > 0 ? span(e.oldest_due_age_ms) : '-'),
                td('', lastHour(e.last_hour)),
                td('links', h('a', { href: tasks }, 'tasks'), ' · ',
                    h('a', { href: `${tasks}&state=ONGOING` }, 'unfinished'), ' · ',
                    h('a', { href: `${tasks}&state=FAILURE` }, 'failed')),
                actions(e),
            ], { 'data-handler': e.handler, 'data-served': e.hosts.length ? 'yes' : 'no', 'data-paused': e.paused ? 'yes' : 'no' });
        });
        fill(box, table([['Handler'], ['Served by'], ['Workers', 'num'], ['Unfinished', 'num'], ['Waiting', 'num'],
            ['Oldest waiting', 'num'], ['Last hour'], ['Tasks'], ['']], rows, 'No handlers: no live host, and nothing queued.'));
    }, (e) => ctx.fault(`Cannot load the handlers: ${e.message}`));
    const events = follow('/v1/events', { onEvent: () => p.kick(1000), onState: ctx.live.set });
    return () => {
        p.stop();
        events.stop();
    };
}
