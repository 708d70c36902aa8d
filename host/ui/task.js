// task.js - one task: its record, progress, attempts, result or error, the
// subtasks of a parallel task, its log lines, what happened while the page
// was open, and the actions: cancel; retry (a failed or cancelled single
// task runs again, a parallel task its failed subtasks); delete the record
// of a finished task. Follows /events/background-task?taskId=<id> (read with
// fetch).
import { api, follow, poll, isTerminalEvent } from './api.js';
import { h, fill, badge, bar, setBar, ago, clock, span, num, progressText, fraction, notice } from './dom.js';
import { taskLogs } from './logs.js';

const SUB_STATES = ['PENDING', 'RUNNING', 'SUCCESS', 'FAILURE', 'CANCELLED'];
const SUB_LIMIT = 1000;

function pretty(v) {
    return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
}

function facts(t) {
    const items = [
        ['Handler', h('a', { href: `#/tasks?handler=${encodeURIComponent(t.handler)}` }, t.handler)],
        ['Kind', t.kind === 'parallel'
            ? `parallel${t.parallelism && t.parallelism !== '0' ? `, ${t.parallelism} at once` : ''}${t.on_failure ? `, ${t.on_failure}` : ''}`
            : t.kind || 'single'],
        ['Attempt', t.retries > 0
            ? `${t.attempt} (retried ${t.retries === 1 ? 'once' : `${t.retries} times`} by an operator; ` +
                `${t.max_attempts || 'the default'} attempts after each retry)`
            : `${t.attempt} of ${t.max_attempts || 'default'}${t.released ? ` (${t.released} released at shutdown)` : ''}`],
        ['Owner', t.owner || '-'],
        ['Created', t.created_ms ? [clock(t.created_ms), ' ', h('span', { class: 'muted' }, '(', ago(t.created_ms), ')')] : '-'],
        ['Started', t.started_ms ? clock(t.started_ms) : '-'],
        ['Finished', t.finished_ms ? clock(t.finished_ms) : '-'],
        ['Run time', t.started_ms ? span((t.finished_ms || Date.now()) - t.started_ms) : '-'],
    ];
    if (t.cancel_requested && t.state === 'ONGOING') items.push(['Cancel', 'requested: waiting for the handler to stop']);
    return h('dl', { class: 'facts' }, items.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function block(title, body, cls = '') {
    return h('section', { class: `block ${cls}` }, h('h2', {}, title), body);
}

export function mount(el, id, ctx) {
    id = id.toLowerCase();
    const head = h('div', { class: 'titlebar' });
    const actions = h('div', { class: 'actions' });
    const confirmBox = h('div');
    const message = h('p', { class: 'message-line' });
    const progress = bar(null, true);
    const ptext = h('span', { class: 'ptext' });
    const factsBox = h('div');
    const outcome = h('div');
    const subsBox = h('div');
    const argsBox = h('div');
    const log = h('ol', { class: 'log', 'data-testid': 'events' });
    const logs = taskLogs(id);
    el.append(head, confirmBox,
        h('div', { class: 'progressline' }, progress, ptext), message,
        h('div', { class: 'columns' },
            h('div', {}, factsBox, outcome, argsBox),
            h('div', {}, subsBox, logs.el, block('Events while this page was open', log))));

    let task = null;
    let running = new Set(); // indices of subtasks running now (from the last update)
    let stream = null;

    const note = (name, d) => {
        const what = name.replace(/^bgtask_/, '');
        const extra = d.total_progress > 0 ? ` ${num(d.current_progress)}/${num(d.total_progress)}` : '';
        log.prepend(h('li', { class: what },
            h('time', {}, clock(d.ts_ms || Date.now()).slice(11)), ' ',
            h('span', { class: 'ev' }, what), extra, d.message ? ` ${d.message}` : ''));
        while (log.children.length > 200) log.lastChild.remove();
    };

    function drawActions() {
        fill(actions);
        if (!task) return;
        if (task.state === 'ONGOING' && !task.cancel_requested)
            actions.append(h('button', { class: 'danger', type: 'button', 'data-action': 'cancel', onclick: askCancel }, 'Cancel'));
        if (task.kind === 'parallel' && task.state !== 'ONGOING' && task.subtasks > 0 &&
            task.sub_success < task.subtasks)
            actions.append(h('button', { type: 'button', 'data-action': 'retry', onclick: askRetry }, 'Retry failed subtasks'));
        if (task.kind !== 'parallel' && (task.state === 'FAILURE' || task.state === 'CANCELLED'))
            actions.append(h('button', { type: 'button', class: 'primary', 'data-action': 'retry', onclick: askRetry }, 'Retry'));
        if (task.state !== 'ONGOING')
            actions.append(h('button', { type: 'button', class: 'ghost', 'data-action': 'delete', onclick: askDelete }, 'Delete record'));
    }

    function draw(t) {
        task = t;
        const partial = t.state === 'SUCCESS' && t.sub_failure > 0;
        fill(head, h('h1', {}, 'Task'), h('code', { class: 'id', 'data-testid': 'task-id' }, t.id),
            h('span', { 'data-testid': 'task-state' }, badge(t.state, partial)), actions);
        drawActions();
        const total = t.progress_total;
        setBar(progress, t.state === 'SUCCESS' && !(total > 0) ? 1 : fraction(t.progress_current, total));
        progress.classList.toggle('done', t.state !== 'ONGOING');
        progress.dataset.state = t.state;
        ptext.textContent = progressText(t.progress_current, total);
        message.textContent = t.message || '';
        fill(factsBox, block('Record', facts(t)));
        const parts = [];
        if (t.error) parts.push(block('Error', h('pre', { class: 'failure' }, t.error), 'error'));
        if (t.result !== null && t.result !== undefined) parts.push(block('Result', h('pre', {}, pretty(t.result))));
        fill(outcome, parts);
        fill(argsBox, block('Arguments', h('pre', {}, pretty(t.args ?? {}))));
    }

    async function load() {
        try {
            draw(await api(`/v1/tasks/${id}`));
            ctx.fault('');
        } catch (e) {
            if (e.status === 404) {
                fill(el, h('h1', {}, 'Task'), notice('failure',
                    `No task ${id}: it never existed, or its record expired (tasks.retention).`));
                stop();
                return;
            }
            throw e;
        }
    }

    async function loadSubtasks() {
        if (!task || task.kind !== 'parallel') return;
        const s = await api(`/v1/tasks/${id}/subtasks?limit=${SUB_LIMIT}`);
        const counts = { ...s.counts, RUNNING: 0 };
        for (const x of s.subtasks) if (x.state === 'PENDING' && running.has(x.index)) counts.RUNNING++;
        counts.PENDING = (counts.PENDING || 0) - counts.RUNNING;
        const detail = h('div', { class: 'subdetail' });
        const cells = s.subtasks.map((x) => {
            const st = x.state === 'PENDING' && running.has(x.index) ? 'RUNNING' : x.state;
            return h('button', { type: 'button', class: `cell ${st.toLowerCase()}`, 'data-index': x.index, 'data-state': st,
                title: `#${x.index} ${st}, attempt ${x.attempt}${x.message ? `: ${x.message}` : ''}`,
                onclick: () => fill(detail, h('h3', {}, `Subtask ${x.index}: ${st}, attempt ${x.attempt}`),
                    x.message ? h('p', {}, x.message) : null,
                    h('pre', {}, `args: ${pretty(x.args)}${x.result !== null ? `\nresult: ${pretty(x.result)}` : ''}`)) });
        });
        const bad = s.subtasks.filter((x) => x.state === 'FAILURE' || x.state === 'CANCELLED');
        fill(subsBox, block(`Subtasks (${num(s.total)})`, [
            h('div', { class: 'legend' }, SUB_STATES.map((k) =>
                h('span', { class: `chip ${k.toLowerCase()}`, 'data-count': k }, `${k.toLowerCase()} ${num(counts[k] || 0)}`))),
            h('div', { class: 'cells', 'data-testid': 'subtasks' }, cells),
            s.total > s.subtasks.length ? h('p', { class: 'hint' }, `The first ${num(s.subtasks.length)} of ${num(s.total)} are drawn.`) : null,
            detail,
            bad.length ? h('table', { class: 'grid compact' },
                h('thead', {}, h('tr', {}, ['#', 'State', 'Attempt', 'Message'].map((x) => h('th', {}, x)))),
                h('tbody', {}, bad.map((x) => h('tr', { 'data-sub': x.index },
                    h('td', { class: 'num' }, x.index), h('td', {}, badge(x.state)), h('td', { class: 'num' }, x.attempt),
                    h('td', { class: 'message' }, x.message || ''))))) : null,
        ]));
    }

    const records = poll(5000, load, (e) => ctx.fault(`Cannot read task ${id}: ${e.message}`));
    const subs = poll(3000, loadSubtasks, (e) => ctx.fault(`Cannot read the subtasks: ${e.message}`));

    const onEvent = (name, d) => {
        note(name, d);
        if (name === 'bgtask_updated' && task) {
            if (d.subtasks && Array.isArray(d.subtasks.running)) running = new Set(d.subtasks.running.map((r) => r.index));
            task = { ...task, state: 'ONGOING', progress_current: d.current_progress, progress_total: d.total_progress,
                message: d.message, attempt: d.attempt, finished_ms: 0 };
            setBar(progress, fraction(d.current_progress, d.total_progress));
            progress.classList.remove('done');
            ptext.textContent = progressText(d.current_progress, d.total_progress);
            message.textContent = d.message || '';
        }
        if (isTerminalEvent(name)) running = new Set();
        records.kick(isTerminalEvent(name) ? 0 : 1000);
        subs.kick(isTerminalEvent(name) ? 0 : 1000);
    };
    const watch = () => {
        stream?.stop();
        stream = follow(`/events/background-task?taskId=${id}`, { onEvent, onState: ctx.live.set });
    };
    watch();

    function confirm(text, label, cls, run) {
        fill(confirmBox, h('div', { class: 'confirm', role: 'alertdialog', 'data-testid': 'confirm' },
            h('span', {}, text),
            h('button', { type: 'button', class: cls, 'data-action': 'confirm', onclick: async (ev) => {
                ev.target.disabled = true;
                try {
                    const msg = await run();
                    fill(confirmBox, msg ? notice('info', msg) : null);
                } catch (e) {
                    fill(confirmBox, notice('failure', e.message));
                }
                records.kick(0);
                subs.kick(0);
            } }, label),
            h('button', { type: 'button', class: 'ghost', onclick: () => fill(confirmBox) }, 'Back')));
    }

    function askCancel() {
        confirm('Cancel this task? A running handler is asked to stop; one that has not started never will.',
            'Cancel task', 'danger', async () => {
                const r = await api(`/v1/tasks/${id}`, { method: 'DELETE' });
                return { cancelled: 'Cancelled.', cancel_requested: 'Cancel requested: the handler has been asked to stop.',
                    already_finished: `It had already ended: ${r.state}.` }[r.outcome] || r.outcome;
            });
    }

    function askRetry() {
        if (task.kind !== 'parallel') {
            confirm(`Run this ${task.state === 'FAILURE' ? 'failed' : 'cancelled'} task again, as a new attempt? ` +
                'Its error and result are cleared; it gets its attempts afresh.', 'Retry', 'primary', async () => {
                await api(`/v1/tasks/${id}/retry`, { method: 'POST' });
                watch(); // the old streams ended with the task
                logs.restart();
                return 'Queued again as a new attempt.';
            });
            return;
        }
        const n = task.subtasks - task.sub_success;
        confirm(`Run the failed and cancelled subtasks (up to ${num(n)}) again, as attempt ${task.attempt + 1}? The others keep their outcome.`,
            'Retry', 'primary', async () => {
                const r = await api(`/v1/tasks/${id}/retry`, { method: 'POST' });
                watch(); // the old streams ended with the task
                logs.restart();
                return `Retrying ${num(r.retrying)} subtask${r.retrying === 1 ? '' : 's'}.`;
            });
    }

    function askDelete() {
        confirm('Delete the record of this task, with its subtasks and log lines? Its events and the history counts stay.',
            'Delete record', 'danger', async () => {
                const r = await api('/v1/tasks/purge', { method: 'POST', body: { ids: [id] } });
                if (!r.deleted) throw new Error(`The record was not deleted: ${JSON.stringify(r.skipped ?? r)}`);
                stop();
                fill(el, h('h1', {}, 'Task'), h('p', { class: 'banner info', 'data-testid': 'deleted' },
                    `The record of task ${id} is deleted. `, h('a', { href: '#/tasks' }, 'Back to the tasks')));
                return null;
            });
    }

    function stop() {
        records.stop();
        subs.stop();
        stream?.stop();
        logs.stop();
    }
    return stop;
}
