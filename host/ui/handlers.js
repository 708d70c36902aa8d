// handlers.js - every handler a live host serves or a queue holds
// (GET /v1/handlers): which hosts serve it with how many workers, its
// unfinished and waiting tasks, the age of its oldest waiting task, and links
// to its tasks.
import { api, follow, poll } from './api.js';
import { h, fill, table, row, td, num, span, chips } from './dom.js';
import { unservedBanner } from './overview.js';

export function mount(el, _params, ctx) {
    const banner = h('div');
    const box = h('div');
    el.append(h('h1', {}, 'Handlers'), banner,
        h('p', { class: 'hint' }, 'Workers are those of the hosts that serve the handler, shared with their other handlers.'),
        box);
    const p = poll(3000, async () => {
        const { handlers } = await api('/v1/handlers');
        ctx.fault('');
        fill(banner, unservedBanner(handlers.filter((e) => !e.hosts.length && e.queued > 0)));
        const rows = handlers.map((e) => {
            const tasks = `#/tasks?handler=${encodeURIComponent(e.handler)}`;
            return row([
                td('mono', e.handler),
                td('', e.hosts.length ? chips(e.hosts, 4) : h('span', { class: 'badge failure' }, 'unserved')),
                td('num', num(e.workers)),
                td('num', num(e.queued)),
                td('num', num(e.due)),
                td('num', e.due > 0 ? span(e.oldest_due_age_ms) : '-'),
                td('links', h('a', { href: tasks }, 'tasks'), ' · ',
                    h('a', { href: `${tasks}&state=ONGOING` }, 'unfinished'), ' · ',
                    h('a', { href: `${tasks}&state=FAILURE` }, 'failed')),
            ], { 'data-handler': e.handler, 'data-served': e.hosts.length ? 'yes' : 'no' });
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
