// overview.js - the landing view: live hosts, per-handler queues (depth,
// waiting, age of the oldest waiting task), handlers whose tasks wait for a
// host that serves them, and charts of the tasks that ended (GET /v1/history).
// Polled every 2 s (the history every 15 s), and sooner when events arrive.
import { api, follow, poll, isTerminalEvent } from './api.js';
import { h, fill, table, row, td, num, span, ago, chips, bar, notice } from './dom.js';
import { throughput, byHandler, legend } from './chart.js';

// The chart ranges: [since, label, step].
const RANGES = [['1h', '1 h', '1m'], ['24h', '24 h', '30m'], ['7d', '7 d', '6h']];
let range = '1h'; // kept while the tab lives, across views

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

function card(label, value, cls = '', sub = null) {
    return h('div', { class: `card ${cls}` }, h('span', { class: 'label' }, label), h('span', { class: 'value' }, value),
        sub ? h('span', { class: 'sub' }, sub) : null);
}

// A card of the tasks that ended since stats.outcomes_since_ms, by outcome
// (GET /v1/stats counts them from the history).
function endedCard(stats) {
    const o = stats.outcomes;
    if (!o) return null;
    const total = o.success + o.partial_success + o.failure + o.cancelled;
    const hours = stats.outcomes_since_ms ? Math.round((Date.now() - stats.outcomes_since_ms) / 3600000) : 0;
    const parts = [[o.success, 'succeeded'], [o.partial_success, 'partial'], [o.failure, 'failed'], [o.cancelled, 'cancelled']]
        .filter(([n]) => n > 0).map(([n, w]) => `${num(n)} ${w}`).join(' · ');
    return card(hours > 0 ? `Ended in ${hours} h` : 'Ended', num(total), '', parts || null);
}

// The "Tasks ended" section: range buttons and the two charts.
function historySection(ctx) {
    const box = h('div', { class: 'charts' });
    const buttons = RANGES.map(([since, label]) => h('button', { type: 'button', class: 'ghost', 'data-range': since,
        'aria-pressed': String(since === range), onclick: () => {
            range = since;
            for (const b of buttons) b.setAttribute('aria-pressed', String(b.dataset.range === range));
            p.kick(0);
        } }, label));
    const p = poll(15000, async () => {
        const [since, , step] = RANGES.find((r) => r[0] === range);
        const hist = await api(`/v1/history?since=${since}&step=${step}`);
        fill(box,
            h('div', { class: 'chartbox' }, h('h3', {}, `Per ${step === '1m' ? 'minute' : step}`), throughput(hist)),
            h('div', { class: 'chartbox' }, h('h3', {}, 'Per handler'), byHandler(hist)),
            legend());
    }, (e) => fill(box, notice('failure', `Cannot read the history: ${e.message}`)));
    const el = h('section', {},
        h('div', { class: 'titlebar' }, h('h2', {}, 'Tasks ended'), h('div', { class: 'segmented' }, buttons)), box);
    return { el, poll: p };
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
    // stats lists handlers with finished tasks too: a queue is one with unfinished tasks (or paused).
    const queues = stats.handlers.filter((q) => q.queued > 0 || q.paused);
    const rows = queues.sort((a, b) => a.handler.localeCompare(b.handler)).map((q) => {
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
    const history = historySection(ctx);
    el.append(
        h('h1', {}, 'Overview'),
        banner, cards, history.el,
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
            card('Finished (kept)', num(stats.finished)),
            endedCard(stats));
        fill(hostsBox, hostsTable(hosts));
        fill(queuesBox, queuesTable(stats, hosts));
    }, (e) => ctx.fault(`Cannot load the overview: ${e.message}`));
    // Events say something changed: look again soon rather than in 2 s.
    const onEvent = (name) => {
        p.kick(500);
        if (isTerminalEvent(name)) history.poll.kick(1000);
    };
    const events = follow('/v1/events', { onEvent, onState: ctx.live.set });
    return () => {
        p.stop();
        history.poll.stop();
        events.stop();
    };
}
