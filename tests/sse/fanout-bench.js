#!/usr/bin/env node
// fanout-bench.js - SSE fan-out: events/s that bgtaskd delivers to many
// clients following one task.
//
//   node tests/sse/fanout-bench.js [--clients 200] [--steps 20000] [--seconds 4]
//                                  [--url http://127.0.0.1:9464] [--token T] [--raw]
//
// Without --url it starts its own redis-server and bgtaskd (from $BUILD,
// default build/) on free loopback ports, with tasks.progress_interval = 0 so
// every progress report becomes an event, and stops them at the end.
// It connects the clients to /events/background-task for a demo.sleep task
// submitted with a short delay, waits until every client has its opening
// event, then times the live events (those with a stream id) from the first
// one to the last client's server_close. Clients are the npm `eventsource`
// package, or with --raw plain HTTP streams counted by their blank lines (a
// cheaper client, to tell the server's limit from the client's).
// Prints one line: "SSE fan-out: N events/s delivered to C clients (...)".
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');
const { EventSource } = require('eventsource');

function parseArgs(argv) {
    const o = { clients: 200, steps: 20000, seconds: 4, url: null, token: null, raw: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--clients') o.clients = parseInt(argv[++i], 10);
        else if (a === '--steps') o.steps = parseInt(argv[++i], 10);
        else if (a === '--seconds') o.seconds = parseFloat(argv[++i]);
        else if (a === '--url') o.url = argv[++i].replace(/\/$/, '');
        else if (a === '--token') o.token = argv[++i];
        else if (a === '--raw') o.raw = true;
        else throw new Error(`unknown argument ${a}`);
    }
    return o;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

async function waitFor(what, fn, timeoutMs) {
    const end = Date.now() + timeoutMs;
    for (;;) {
        if (await fn()) return;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await sleep(50);
    }
}

function request(url, method, token, body) {
    return new Promise((resolve, reject) => {
        const headers = {};
        if (token) headers.Authorization = `Bearer ${token}`;
        if (body) headers['Content-Type'] = 'application/json';
        const req = http.request(url, { method, headers }, (res) => {
            let text = '';
            res.on('data', (d) => (text += d));
            res.on('end', () => resolve({ status: res.statusCode, text }));
        });
        req.on('error', reject);
        if (body) req.write(JSON.stringify(body));
        req.end();
    });
}

// Our own redis-server and bgtaskd, killed by pid at the end.
async function startServers() {
    const root = path.resolve(__dirname, '..', '..');
    const build = path.resolve(root, process.env.BUILD || 'build');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bgtask-fanout-'));
    const rport = await freePort();
    const hport = await freePort();
    const procs = [];
    const redis = spawn('redis-server', ['--port', String(rport), '--bind', '127.0.0.1',
        '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
    procs.push(redis);
    await waitFor('redis-server', () => new Promise((resolve) => {
        const c = net.connect(rport, '127.0.0.1', () => { c.end(); resolve(true); });
        c.on('error', () => resolve(false));
    }), 10000);
    const conf = path.join(dir, 'bgtaskd.conf');
    fs.writeFileSync(conf, [
        `redis: { url = "redis://127.0.0.1:${rport}/0"; };`,
        'host: { workers = 2; log_level = "warning"; shutdown_grace = 2.0; };',
        'tasks: { progress_interval = 0.0; };',
        'events: { maxlen = 1000000; };',
        `plugins: { dir = "${path.join(build, 'plugins')}"; load = ( { name = "demo"; } ); };`,
        `http: { listen = "127.0.0.1:${hport}"; max_connections = 4096; max_connections_per_client = 4096; };`,
        '',
    ].join('\n'));
    const log = fs.openSync(path.join(dir, 'bgtaskd.log'), 'w');
    const host = spawn(path.join(build, 'bin', 'bgtaskd'), ['-c', conf],
        { stdio: ['ignore', 'ignore', log] });
    procs.push(host);
    const url = `http://127.0.0.1:${hport}`;
    await waitFor('bgtaskd /healthz', async () => {
        try {
            return (await request(`${url}/healthz`, 'GET')).status === 200;
        } catch (e) {
            return false;
        }
    }, 15000);
    const stop = async () => {
        for (const p of procs.reverse()) {
            if (p.exitCode !== null) continue;
            p.kill('SIGTERM');
            const t = setTimeout(() => p.kill('SIGKILL'), 5000);
            await new Promise((r) => p.once('exit', r));
            clearTimeout(t);
        }
        fs.rmSync(dir, { recursive: true, force: true });
    };
    return { url, stop };
}

// One client: resolves its counts once server_close arrives.
function eventsourceClient(url, token, st) {
    return new Promise((resolve) => {
        const c = { opening: false, live: 0, closed: false };
        const es = new EventSource(url, {
            fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers,
                ...(token ? { Authorization: `Bearer ${token}` } : {}) } }),
        });
        const onEvent = (ev) => {
            if (!ev.lastEventId || ev.lastEventId === st.openingId) {
                c.opening = true;
                return;
            }
            if (!st.t0) st.t0 = process.hrtime.bigint();
            c.live++;
        };
        for (const n of ['bgtask_updated', 'bgtask_done', 'bgtask_failed', 'bgtask_cancelled']) {
            es.addEventListener(n, onEvent);
        }
        es.addEventListener('server_close', () => {
            es.close();
            st.t1 = process.hrtime.bigint();
            resolve(c);
        });
        es.addEventListener('error', (e) => {
            es.close();
            c.error = e.message || String(e.code);
            resolve(c);
        });
        st.clients.push(c);
    });
}

// A cheaper client: counts events with an "id:" line, no parsing beyond that.
function rawClient(url, token, st) {
    return new Promise((resolve) => {
        const c = { opening: false, live: 0, closed: false };
        const headers = { Accept: 'text/event-stream' };
        if (token) headers.Authorization = `Bearer ${token}`;
        let tail = '';
        const req = http.get(url, { headers, agent: false }, (res) => {
            res.setEncoding('utf8');
            res.on('data', (chunk) => {
                const text = tail + chunk;
                const blocks = text.split('\n\n');
                tail = blocks.pop();
                for (const b of blocks) {
                    if (b.startsWith('event: server_close')) {
                        st.t1 = process.hrtime.bigint();
                    } else if (b.includes('\nid: ')) {
                        if (!st.t0) st.t0 = process.hrtime.bigint();
                        c.live++;
                    } else if (b.startsWith('event: ')) {
                        c.opening = true;
                    }
                }
            });
            res.on('end', () => resolve(c));
        });
        req.on('error', (e) => {
            c.error = e.message;
            resolve(c);
        });
        st.clients.push(c);
    });
}

async function main() {
    const o = parseArgs(process.argv.slice(2));
    const servers = o.url ? { url: o.url, stop: async () => {} } : await startServers();
    try {
        // A delay long enough for every client to connect before the first step.
        const delay = 2 + o.clients / 200;
        const sub = await request(`${servers.url}/v1/tasks`, 'POST', o.token, {
            handler: 'demo.sleep', args: { seconds: o.seconds, steps: o.steps }, delay_s: delay,
        });
        if (sub.status !== 202) throw new Error(`submit: ${sub.status} ${sub.text}`);
        const id = JSON.parse(sub.text).task_id;
        const st = { clients: [], t0: null, t1: null, openingId: null };
        const url = `${servers.url}/events/background-task?taskId=${id}`;
        const done = [];
        for (let i = 0; i < o.clients; i++) {
            done.push(o.raw ? rawClient(url, o.token, st) : eventsourceClient(url, o.token, st));
        }
        await waitFor('every client to get its opening event',
            () => st.clients.every((c) => c.opening), delay * 1000);
        const results = await Promise.all(done);
        const errors = results.filter((c) => c.error);
        if (errors.length) throw new Error(`${errors.length} client(s) failed: ${errors[0].error}`);
        const counts = results.map((c) => c.live);
        const total = counts.reduce((a, b) => a + b, 0);
        const secs = Number(st.t1 - st.t0) / 1e9;
        const per = Math.max(...counts);
        console.log(`SSE fan-out: ${Math.round(total / secs)} events/s delivered to ${o.clients} ` +
            `clients (${per} live events per client, min ${Math.min(...counts)}, in ` +
            `${secs.toFixed(2)} s; task of ${o.steps} steps over ${o.seconds} s; ` +
            `${o.raw ? 'raw HTTP' : 'eventsource'} clients)`);
    } finally {
        await servers.stop();
    }
}

main().catch((e) => {
    process.stderr.write(`fanout-bench: ${e.message}\n`);
    process.exit(1);
});
