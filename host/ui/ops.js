// ops.js - a confirmation for an operation on many tasks (retry, purge,
// cancel of a handler's tasks): it asks bgtaskd for a dry run first, shows
// how many tasks match, and acts only when the operator confirms that count.
// The choices (state, since, older than) run the dry run again when changed.
import { api } from './api.js';
import { h, fill, num, notice } from './dom.js';

// spec: {
//   name: 'retry',                        data-op of the panel
//   title: 'Retry the failed tasks of H',
//   path: '/v1/tasks/retry',              POSTed with body(values) + dry_run
//   fields: [{ name, label, options: [[value, text], ...], value }],
//   body(values) -> the request (without dry_run),
//   verb: 'Retry', danger: bool,          the confirm button says "Retry 12 tasks"
//   noun: 'task' (default) or 'record',   ... or "Delete 12 records"
//   done(answer) -> the text shown after the real run,
// }
// onClose() when the operator goes back; onDone(answer) after the real run.
export function bulkPanel(spec, { onClose, onDone } = {}) {
    const selects = spec.fields.map((f) => h('select', { name: f.name, 'data-field': f.name, 'aria-label': f.label },
        f.options.map(([v, text]) => h('option', { value: v, selected: v === f.value }, text))));
    const count = h('span', { class: 'count', 'data-testid': 'count' }, 'counting…');
    const go = h('button', { type: 'button', class: spec.danger ? 'danger' : 'primary', 'data-action': 'confirm', disabled: true },
        spec.verb);
    const result = h('div', { class: 'result' });
    const values = () => Object.fromEntries(selects.map((s) => [s.name, s.value]));
    let asked = 0; // the dry run whose answer counts: the latest

    async function dryRun() {
        const mine = ++asked;
        go.disabled = true;
        count.classList.remove('failure');
        delete count.dataset.count;
        count.textContent = 'counting…';
        try {
            const r = await api(spec.path, { method: 'POST', body: { ...spec.body(values()), dry_run: true } });
            if (mine !== asked) return;
            count.dataset.count = r.matched;
            count.textContent = `${num(r.matched)} task${r.matched === 1 ? '' : 's'} match` +
                (r.truncated ? ' (at least: one run acts on that many; run it again for the rest)' : '');
            const noun = spec.noun || 'task';
            go.textContent = `${spec.verb} ${num(r.matched)} ${noun}${r.matched === 1 ? '' : 's'}`;
            go.disabled = r.matched === 0;
        } catch (e) {
            if (mine !== asked) return;
            count.classList.add('failure');
            count.textContent = e.message;
        }
    }

    go.addEventListener('click', async () => {
        go.disabled = true;
        for (const s of selects) s.disabled = true;
        try {
            const r = await api(spec.path, { method: 'POST', body: { ...spec.body(values()), dry_run: false } });
            fill(result, h('p', { class: 'banner info', 'data-testid': 'op-done' }, spec.done(r)));
            onDone?.(r);
        } catch (e) {
            fill(result, notice('failure', e.message));
            for (const s of selects) s.disabled = false;
            dryRun();
        }
    });
    for (const s of selects) s.addEventListener('change', dryRun);

    const el = h('div', { class: 'oppanel', role: 'dialog', 'data-testid': 'op', 'data-op': spec.name },
        h('div', { class: 'ophead' }, h('strong', {}, spec.title),
            h('button', { type: 'button', class: 'ghost', 'data-action': 'close', onclick: () => onClose?.() }, 'Close')),
        h('div', { class: 'oprow' },
            spec.fields.map((f, i) => h('label', {}, `${f.label} `, selects[i])),
            count, go),
        result);
    dryRun();
    return el;
}
