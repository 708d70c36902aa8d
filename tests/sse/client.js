#!/usr/bin/env node
// client.js - SSE clients for bgtask's tests, built on the npm `eventsource`
// package (a maintained EventSource implementation nobody here wrote).
//
//   node client.js URL [--token T] [--last-event-id ID] [--clients N]
//                      [--timeout S] [--quiet]
//
// Opens N EventSource connections to URL and prints one JSON line per thing
// that happens, for the test to parse:
//   {"open": i}                                  connection i is open
//   {"client": i, "event": NAME, "data": {...}, "id": "..."}  an event
//   {"error": i, "status": CODE, "message": "..."}           a refused or lost connection
//   {"summary": {"clients": N, "opened": n, "closed": n, "terminal": n, "errors": n}}
// A client closes itself after `server_close` (as Backend.AI's clients do)
// and on any error (no automatic reconnection). With --quiet only the open
// lines and the summary are printed. Exits 0 once every client has closed,
// 1 on timeout (default 60 s).
'use strict';

const { EventSource } = require('eventsource');

const NAMES = ['bgtask_updated', 'bgtask_done', 'bgtask_failed', 'bgtask_cancelled',
    'bgtask_partial_success', 'server_close'];
const TERMINAL = new Set(['bgtask_done', 'bgtask_failed', 'bgtask_cancelled',
    'bgtask_partial_success']);

function parseArgs(argv) {
    const o = { url: null, token: null, lastEventId: null, clients: 1, timeout: 60, quiet: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--token') o.token = argv[++i];
        else if (a === '--last-event-id') o.lastEventId = argv[++i];
        else if (a === '--clients') o.clients = parseInt(argv[++i], 10);
        else if (a === '--timeout') o.timeout = parseFloat(argv[++i]);
        else if (a === '--quiet') o.quiet = true;
        else if (!o.url && !a.startsWith('--')) o.url = a;
        else throw new Error(`unknown argument ${a}`);
    }
    if (!o.url || !(o.clients >= 1)) throw new Error('usage: client.js URL [--clients N] ...');
    return o;
}

function main() {
    let o;
    try {
        o = parseArgs(process.argv.slice(2));
    } catch (e) {
        process.stderr.write(`client.js: ${e.message}\n`);
        process.exit(2);
    }
    const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
    const stats = { clients: o.clients, opened: 0, closed: 0, terminal: 0, errors: 0 };
    const headers = {};
    if (o.token) headers.Authorization = `Bearer ${o.token}`;
    if (o.lastEventId) headers['Last-Event-ID'] = o.lastEventId;
    const finish = () => {
        if (stats.closed < o.clients) return;
        out({ summary: stats });
        clearTimeout(timer);
        process.exitCode = 0;
    };
    const timer = setTimeout(() => {
        out({ summary: stats, timeout: true });
        process.exit(1);
    }, o.timeout * 1000);

    for (let i = 0; i < o.clients; i++) {
        let done = false;
        const es = new EventSource(o.url, {
            fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, ...headers } }),
        });
        const close = () => {
            if (done) return;
            done = true;
            es.close();
            stats.closed++;
            finish();
        };
        es.addEventListener('open', () => {
            stats.opened++;
            out({ open: i });
        });
        for (const name of NAMES) {
            es.addEventListener(name, (ev) => {
                let data = ev.data;
                try {
                    data = JSON.parse(ev.data);
                } catch (e) {
                    // keep the raw text: the test will say it is not JSON
                }
                if (TERMINAL.has(name)) stats.terminal++;
                if (!o.quiet) out({ client: i, event: name, data, id: ev.lastEventId });
                if (name === 'server_close') close();
            });
        }
        es.addEventListener('error', (ev) => {
            stats.errors++;
            out({ error: i, status: ev.code === undefined ? null : ev.code, message: ev.message || '' });
            close();
        });
    }
}

main();
