// app.js - the dashboard's shell: the token screen, the router (#/, #/tasks,
// #/task/<id>, #/handlers) and the live indicator. Each view is a module
// whose mount(el, params, ctx) draws into el and returns a function that
// stops its streams and timers.
import { api, token, onUnauthorized } from './api.js';
import { fill, tick } from './dom.js';
import * as overview from './overview.js';
import * as tasks from './tasks.js';
import * as task from './task.js';
import * as handlers from './handlers.js';

const $ = (id) => document.getElementById(id);
const routes = [
    { re: /^#?\/?$/, nav: 'overview', view: overview },
    { re: /^#\/tasks(?:\?(.*))?$/, nav: 'tasks', view: tasks },
    { re: /^#\/task\/([0-9a-fA-F-]{36})$/, nav: 'tasks', view: task },
    { re: /^#\/handlers$/, nav: 'handlers', view: handlers },
];

let unmount = null;
let locked = false; // the token screen is up

// What a view reports about its live stream, shown in the bar.
const live = {
    set(state) {
        const el = $('live');
        el.dataset.state = state;
        el.textContent = { live: 'live', connecting: 'connecting', offline: 'offline',
            ended: 'finished', unauthorized: 'token needed', idle: 'idle' }[state] || state;
    },
};

function fault(message) {
    const el = $('fault');
    el.hidden = !message;
    el.textContent = message || '';
}

function route() {
    if (locked) return;
    unmount?.();
    unmount = null;
    fault('');
    const hash = location.hash || '#/';
    const r = routes.find((x) => x.re.test(hash));
    for (const a of document.querySelectorAll('[data-nav]'))
        a.classList.toggle('active', r && a.dataset.nav === r.nav);
    const el = fill($('view'));
    if (!r) {
        el.append(Object.assign(document.createElement('p'), { className: 'banner failure', textContent: `No such page: ${hash}` }));
        return;
    }
    const m = hash.match(r.re);
    const params = r.nav === 'tasks' && r.view === tasks ? new URLSearchParams(m[1] || '') : m[1];
    live.set('idle');
    unmount = r.view.mount(el, params, { live, fault });
}

function lock(message) {
    if (!locked) {
        unmount?.();
        unmount = null;
    }
    locked = true;
    live.set('unauthorized');
    $('view').replaceChildren();
    $('login').hidden = false;
    $('signout').hidden = true;
    const err = $('login-error');
    err.hidden = !message;
    err.textContent = message || '';
    $('token').value = '';
    $('token').focus();
}

function unlock() {
    locked = false;
    $('login').hidden = true;
    $('signout').hidden = !token.get();
    route();
}

// Ask bgtaskd something small: does it take us (no token, or this one)?
async function probe() {
    try {
        await api('/v1/hosts');
        unlock();
    } catch (e) {
        if (e.status !== 401) {
            unlock(); // the view will say what is wrong
            fault(e.message);
        }
        // 401: the handler below has put the token screen up
    }
}

onUnauthorized(() => {
    const had = token.get();
    if (locked && !had) return; // another call's 401 has put the screen up, and said why
    token.set('');
    lock(had ? 'bgtaskd refused this token (401 Unauthorized). Enter it again.' : '');
});

$('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (!t) return;
    token.set(t);
    probe();
});

$('signout').addEventListener('click', () => {
    token.set('');
    lock('');
    probe();
});

window.addEventListener('hashchange', route);
setInterval(tick, 1000);
probe();
