// overview.js - the landing view: live hosts, per-handler queues (depth,
// waiting, age of the oldest waiting task) and handlers whose tasks wait for
// a host that serves them. Polled every 2 s, and sooner when events arrive.
import { api, follow, poll } from './api.js';
import { h, fill, table, row, td, num, span, ago, chips, bar } from './dom.js';

// {handler: [host ids]} from the live hosts.
export function servedBy(hosts) {
    const by = {};
    for (const host of hosts) for (const name of host.handlers || []) (by[name] ||= []).push(host.id);
    return by;
}

// Handlers with tasks queued that no live host serves (and not paused).
export function unserved(stats, hosts) {
    const by = servedBy(hosts);
    return stats.handlers.filter((q) => q.queued > 0 && !by[q.handler] && !q.paused);
}

export function unservedBanner(list) {
    if (!list.length) return null;
    return h('div', { class: 'banner warning', 'data-testid': 'unserved' },
        h('strong', {}, 'No live host serves '),
        list.map((q, i) => [i ? ', ' : '', h('a', { href: `#/tasks?handler=${encodeURIComponent(q.handler)}` }, q.handler),
            ` (${num(q.queued)} waiting${q.oldest_due_age_ms > 0 ? `, oldest ${span(q.oldest_due_age_ms)}` : ''})`]),
        ': these tasks will not run until a host with the handler starts.');
}

function card(label, value, cls = '') {
    return h('div', { class: `card ${cls}` }, h('span', { class: 'label' }, label), h('span', { class: 'value' }, value));
}

function hostsTable(hosts) {
    const rows = hosts.map((x) => row([
        td('mono', x.id),
        td('', x.machine || '-', x.pid ? h('span', { class: 'muted' }, ` pid ${x.pid}`) : null),
        td('', x.version || '-'),
        td('num', num(x.workers)),
        td('busy', bar(x.workers > 0 ? x.running / x.workers : null), h('span', { class: 'num' }, `${num(x.running)} running`)),
        td('', chips(x.handlers || [])),
        td('paused', x.paused?.length ? chips(x.paused) : h('span', { class: 'muted' }, '-')),
        td('', ago(x.started_ms)),
    ], { 'data-host': x.id }));
    return table([['Host'], ['Machine'], ['Version'], ['Workers', 'num'], ['Busy'], ['Handlers'], ['Paused'], ['Started']],
        rows, 'No live host: start bgtaskd.');
}

function queuesTable(stats, hosts) {
    const by = servedBy(hosts);
    const rows = [...stats.handlers].sort((a, b) => a.handler.localeCompare(b.handler)).map((q) => {
        const served = by[q.handler] || [];
        return row([
            td('', h('a', { href: `#/tasks?handler=${encodeURIComponent(q.handler)}` }, q.handler),
                q.paused ? [' ', h('span', { class: 'badge cancelled', title: q.reason || null }, 'paused')] : null),
            td('num', num(q.queued)),
            td('num', num(q.due)),
            td('num', q.due > 0 ? span(q.oldest_due_age_ms) : '-'),
            td('', served.length ? `${served.length} host${served.length > 1 ? 's' : ''}`
                : h('span', { class: 'badge failure' }, 'unserved')),
        ], { 'data-queue': q.handler });
    });
    return table([['Handler'], ['Unfinished', 'num'], ['Waiting', 'num'], ['Oldest waiting', 'num'], ['Served by']],
        rows, 'No unfinished tasks.');
}

export function mount(el, _params, ctx) {
    const banner = h('div');
    const cards = h('div', { class: 'cards' });
    const hostsBox = h('div');
    const queuesBox = h('div');
    el.append(
        h('h1', {}, 'Overview'),
        banner, cards,
        h('section', {}, h('h2', {}, 'Live hosts'), hostsBox),
        h('section', {}, h('h2', {}, 'Queues'),
            h('p', { class: 'hint' }, 'Unfinished counts waiting, delayed and running tasks; waiting counts those due now that no host has claimed.'),
            queuesBox));

    const p = poll(2000, async () => {
        const [{ hosts }, stats] = await Promise.all([api('/v1/hosts'), api('/v1/stats')]);
        ctx.fault('');
        const running = hosts.reduce((n, x) => n + (x.running || 0), 0);
        const workers = hosts.reduce((n, x) => n + (x.workers || 0), 0);
        const queued = stats.handlers.reduce((n, q) => n + q.queued, 0);
        const due = stats.handlers.reduce((n, q) => n + q.due, 0);
        const stuck = stats.handlers.some((q) => q.oldest_due_age_ms > 10000);
        fill(banner, unservedBanner(unserved(stats, hosts)));
        fill(cards,
            card('Live hosts', num(hosts.length), hosts.length ? '' : 'failure'),
            card('Running', `${num(running)} / ${num(workers)}`),
            card('Unfinished', num(queued)),
            card('Waiting', num(due), stuck ? 'warning' : ''),
            card('Finished (kept)', num(stats.finished)));
        fill(hostsBox, hostsTable(hosts));
        fill(queuesBox, queuesTable(stats, hosts));
    }, (e) => ctx.fault(`Cannot load the overview: ${e.message}`));
    // Events say something changed: look again soon rather than in 2 s.
    const events = follow('/v1/events', { onEvent: () => p.kick(500), onState: ctx.live.set });
    return () => {
        p.stop();
        events.stop();
    };
}
