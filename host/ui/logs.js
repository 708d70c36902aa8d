// logs.js - a task's log lines (what its handler wrote with bgt_log), read
// from GET /v1/tasks/<id>/logs?follow=1: the lines kept first, then new ones
// as they are written, until the task has ended and its last lines are sent.
import { follow } from './api.js';
import { h, clock } from './dom.js';

const MAX_LINES = 1000; // drawn; bgtaskd keeps fewer per task

// A "Logs" block for task id: { el, restart(), stop() }. restart() follows
// again (after a retry: the lines of the new run); lines already drawn are
// not drawn twice (each has a seq that only grows).
export function taskLogs(id) {
    const list = h('ol', { class: 'log tasklog', 'data-testid': 'logs' });
    const status = h('span', { class: 'muted', 'data-testid': 'logs-state' });
    const empty = h('p', { class: 'hint' }, 'No log lines.');
    const el = h('section', { class: 'block' }, h('div', { class: 'blockhead' }, h('h2', {}, 'Logs'), status), empty, list);
    let last = -1;
    let stream = null;

    function add(line) {
        if (!line || typeof line.seq !== 'number' || line.seq <= last) return;
        last = line.seq;
        empty.hidden = true;
        const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
        const who = `a${line.attempt ?? '?'}${line.subtask !== null && line.subtask !== undefined ? `/#${line.subtask}` : ''}`;
        list.append(h('li', { class: `lvl-${line.level}`, 'data-seq': line.seq, title: line.host ? `${line.host}` : null },
            h('time', { title: clock(line.ts_ms) }, clock(line.ts_ms).slice(11)), ' ',
            h('span', { class: 'lvl' }, line.level), ' ',
            h('span', { class: 'muted', title: `attempt ${line.attempt ?? '?'}${line.subtask !== null && line.subtask !== undefined
                ? `, subtask ${line.subtask}` : ''}` }, who), ' ', line.message));
        while (list.children.length > MAX_LINES) list.firstChild.remove();
        if (stick) list.scrollTop = list.scrollHeight;
    }

    const words = { connecting: 'connecting', live: 'following', offline: 'offline, retrying', ended: 'complete',
        unauthorized: 'token needed' };
    function restart() {
        stream?.stop();
        stream = follow(`/v1/tasks/${id}/logs?follow=1`, {
            onEvent: (name, data) => name === 'log' && add(data),
            onState: (st) => {
                status.dataset.state = st;
                status.textContent = words[st] || st;
            },
        });
    }
    restart();
    return { el, restart, stop: () => stream?.stop() };
}
