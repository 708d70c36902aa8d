// handlers.js - every handler a live host serves or a queue holds: which
// hosts serve it with how many workers, its unfinished and waiting tasks,
// the age of its oldest waiting task, and links to its tasks.
import { api, follow, poll } from './api.js';
import { h, fill, table, row, td, num, span, chips } from './dom.js';
import { unserved, unservedBanner } from './overview.js';

function summary(hosts, stats) {
    const by = new Map();
    const get = (name) => {
        if (!by.has(name)) by.set(name, { name, hosts: [], workers: 0, running: 0, queued: 0, due: 0, oldest: 0 });
        return by.get(name);
    };
    for (const x of hosts)
        for (const name of x.handlers || []) {
            const e = get(name);
            e.hosts.push(x.id);
            e.workers += x.workers || 0;
        }
    for (const q of stats.handlers) {
        const e = get(q.handler);
        e.queued = q.queued;
        e.due = q.due;
        e.oldest = q.oldest_due_age_ms;
    }
    return [...by.values()].sort((a, b) => a.name.localeCompare(b.name));
}

export function mount(el, _params, ctx) {
    const banner = h('div');
    const box = h('div');
    el.append(h('h1', {}, 'Handlers'), banner,
        h('p', { class: 'hint' }, 'Workers are those of the hosts that serve the handler, shared with their other handlers.'),
        box);
    const p = poll(3000, async () => {
        const [{ hosts }, stats] = await Promise.all([api('/v1/hosts'), api('/v1/stats')]);
        ctx.fault('');
        fill(banner, unservedBanner(unserved(stats, hosts)));
        const rows = summary(hosts, stats).map((e) => {
            const tasks = `#/tasks?handler=${encodeURIComponent(e.name)}`;
            return row([
                td('mono', e.name),
                td('', e.hosts.length ? chips(e.hosts, 4) : h('span', { class: 'badge failure' }, 'unserved')),
                td('num', num(e.workers)),
                td('num', num(e.queued)),
                td('num', num(e.due)),
                td('num', e.due > 0 ? span(e.oldest) : '-'),
                td('links', h('a', { href: tasks }, 'tasks'), ' · ',
                    h('a', { href: `${tasks}&state=ONGOING` }, 'unfinished'), ' · ',
                    h('a', { href: `${tasks}&state=FAILURE` }, 'failed')),
            ], { 'data-handler': e.name, 'data-served': e.hosts.length ? 'yes' : 'no' });
        });
        fill(box, table([['Handler'], ['Served by'], ['Workers', 'num'], ['Unfinished', 'num'], ['Waiting', 'num'],
            ['Oldest waiting', 'num'], ['Tasks']], rows, 'No handlers: no live host, and nothing queued.'));
    }, (e) => ctx.fault(`Cannot load the handlers: ${e.message}`));
    const events = follow('/v1/events', { onEvent: () => p.kick(1000), onState: ctx.live.set });
    return () => {
        p.stop();
        events.stop();
    };
}
