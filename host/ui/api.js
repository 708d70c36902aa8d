// api.js - talking to bgtaskd: the bearer token, JSON calls, and event streams
// read with fetch (not EventSource, which cannot send an Authorization header).
// The token lives in sessionStorage (this tab only) and never goes into a URL.

const TOKEN_KEY = 'bgtask.token';

export class ApiError extends Error {
    constructor(status, code, message) {
        super(message);
        this.status = status; // 0 when bgtaskd could not be reached
        this.code = code;
    }
}

export const token = {
    get: () => sessionStorage.getItem(TOKEN_KEY) || '',
    set: (t) => (t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY)),
};

const unauthorized = new Set();

// fn(err) runs whenever bgtaskd answers 401 (no token, or a wrong one).
export function onUnauthorized(fn) {
    unauthorized.add(fn);
}

function headers(extra) {
    const h = new Headers(extra);
    const t = token.get();
    if (t) h.set('Authorization', `Bearer ${t}`);
    return h;
}

// The ApiError for a response that is not 2xx, from bgtaskd's JSON error body.
async function failure(res) {
    let code = `http_${res.status}`;
    let message = `${res.status} ${res.statusText}`;
    try {
        const j = await res.json();
        if (j && j.error) ({ code, message } = j.error);
    } catch {
        // not JSON: keep the status line
    }
    const err = new ApiError(res.status, code, message);
    if (res.status === 401) for (const fn of unauthorized) fn(err);
    return err;
}

async function send(path, init) {
    try {
        return await fetch(path, { cache: 'no-store', ...init });
    } catch (e) {
        if (e.name === 'AbortError') throw e;
        throw new ApiError(0, 'network', `cannot reach bgtaskd (${e.message})`);
    }
}

// A JSON call: resolves with the parsed answer, rejects with an ApiError.
export async function api(path, { method = 'GET', body, signal } = {}) {
    const init = { method, signal, headers: headers() };
    if (body !== undefined) {
        init.headers.set('Content-Type', 'application/json');
        init.body = JSON.stringify(body);
    }
    const res = await send(path, init);
    if (!res.ok) throw await failure(res);
    return res.json();
}

// Read one Server-Sent Events response until it ends: onOpen() once the
// server has accepted it, then onEvent(name, data, id) per event (data parsed
// as JSON when it is JSON). Rejects with an ApiError, or an AbortError.
export async function stream(path, { onOpen, onEvent, signal }) {
    const res = await send(path, { signal, headers: headers({ Accept: 'text/event-stream' }) });
    if (!res.ok) throw await failure(res);
    onOpen?.();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let name = '';
    let data = [];
    let id = null;
    for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buf += value;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
            let line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.endsWith('\r')) line = line.slice(0, -1);
            if (line === '') {
                if (data.length) {
                    const text = data.join('\n');
                    let parsed = text;
                    try {
                        parsed = JSON.parse(text);
                    } catch {
                        // keep the text
                    }
                    onEvent(name || 'message', parsed, id);
                }
                name = '';
                data = [];
                continue;
            }
            if (line.startsWith(':')) continue; // a keep-alive comment
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            let val = colon < 0 ? '' : line.slice(colon + 1);
            if (val.startsWith(' ')) val = val.slice(1);
            if (field === 'event') name = val;
            else if (field === 'data') data.push(val);
            else if (field === 'id') id = val;
        }
    }
}

function pause(ms, signal) {
    return new Promise((resolve) => {
        const t = setTimeout(resolve, ms);
        signal.addEventListener('abort', () => {
            clearTimeout(t);
            resolve();
        });
    });
}

// Keep an event stream open: reconnect with backoff (1 s doubling to 10 s)
// when it drops, call onOpen on every (re)connection so the caller can
// reload what it shows, and onState with 'connecting', 'live', 'offline',
// 'ended' (after server_close: a task stream is over) or 'unauthorized'.
// Returns { stop() }.
export function follow(path, { onEvent, onOpen, onState }) {
    const ctl = new AbortController();
    (async () => {
        let delay = 1000;
        while (!ctl.signal.aborted) {
            let closed = false;
            onState?.('connecting');
            try {
                await stream(path, {
                    signal: ctl.signal,
                    onOpen: () => {
                        delay = 1000;
                        onState?.('live');
                        onOpen?.();
                    },
                    onEvent: (name, data, id) => {
                        if (name === 'server_close') closed = true;
                        else onEvent(name, data, id);
                    },
                });
            } catch (e) {
                if (ctl.signal.aborted) return;
                if (e.status === 401) {
                    onState?.('unauthorized');
                    return;
                }
                onState?.('offline', e);
            }
            if (ctl.signal.aborted) return;
            if (closed) {
                onState?.('ended');
                return;
            }
            await pause(delay, ctl.signal);
            delay = Math.min(delay * 2, 10000);
        }
    })();
    return { stop: () => ctl.abort() };
}

// Call fn now and then every `ms` until stop(); a call that fails is
// reported to onError and the polling goes on. kick() asks for a call soon
// (coalesced: many kicks make one call), for when something changed.
export function poll(ms, fn, onError) {
    let timer = null;
    let stopped = false;
    let running = false;
    let kicked = false; // a call soon is already planned
    const plan = (after) => {
        clearTimeout(timer);
        timer = setTimeout(run, after);
    };
    const run = async () => {
        timer = null;
        running = true;
        kicked = false;
        try {
            await fn();
        } catch (e) {
            if (!stopped) onError?.(e);
        }
        running = false;
        if (!stopped && !kicked) plan(ms);
        else if (!stopped) plan(250); // kicked while running: once more, a little later
    };
    plan(0);
    return {
        kick(after = 250) {
            if (stopped || kicked) return;
            kicked = true;
            if (!running) plan(after);
        },
        stop() {
            stopped = true;
            clearTimeout(timer);
        },
    };
}

export const isTerminalEvent = (name) =>
    name === 'bgtask_done' ||
    name === 'bgtask_failed' ||
    name === 'bgtask_cancelled' ||
    name === 'bgtask_partial_success';
