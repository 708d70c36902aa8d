// ui-test.mjs - the dashboard in a real browser (Debian's chromium, driven by
// playwright-core) against a real bgtaskd and Redis that the caller started
// (tests/integration/test_ui.c):
//
//   node tests/ui/ui-test.mjs --url http://127.0.0.1:P --token T \
//       --open-url http://127.0.0.1:Q --shots DIR
//
// --url serves with token T, and runs demo and partest tasks; --open-url has
// no token. Each scenario prints one line of JSON, {"scenario", "ok", "ms"}
// (with "error" when it failed); the caller turns them into test results.
// Every wait is for a condition in the page, with a deadline: no fixed sleeps.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
    options: {
        url: { type: 'string' },
        token: { type: 'string' },
        'open-url': { type: 'string' },
        shots: { type: 'string', default: 'build/ui-shots' },
        chromium: { type: 'string', default: '/usr/bin/chromium' },
    },
});
if (!opt.url || !opt.token || !opt['open-url']) {
    console.error('usage: ui-test.mjs --url URL --token T --open-url URL [--shots DIR]');
    process.exit(2);
}
const WAIT = 20000; // the deadline of any one condition
const started = Date.now(); // before any task of this run
mkdirSync(opt.shots, { recursive: true });

// Call the API as any client would: the answer's status and parsed body.
async function call(method, path, body) {
    const headers = { Authorization: `Bearer ${opt.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(`${opt.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.status, body: await res.json() };
}

// Submit a task (more: other fields of the submission, such as max_attempts).
async function submit(handler, args, more = {}) {
    const { status, body } = await call('POST', '/v1/tasks', { handler, args, ...more });
    if (status !== 202) throw new Error(`submit ${handler}: ${status} ${JSON.stringify(body)}`);
    return body.task_id;
}

function check(cond, what) {
    if (!cond) throw new Error(what);
}

// Read task id through the API until pred(record) holds, WAIT ms at most;
// resolves with that record. Every 50 ms: a poll with a deadline.
async function until(id, pred, what) {
    const end = Date.now() + WAIT;
    for (;;) {
        const { status, body } = await call('GET', `/v1/tasks/${id}`);
        if (status === 200 && pred(body)) return body;
        if (Date.now() > end) throw new Error(`task ${id}: ${what} not seen in ${WAIT} ms (last: ${status} ${JSON.stringify(body).slice(0, 300)})`);
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
}

const browser = await chromium.launch({
    executablePath: opt.chromium,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
context.setDefaultTimeout(WAIT);
const page = await context.newPage();
const problems = []; // script errors and failed loads of the dashboard's own files
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(`console: ${m.text()}`);
});
const urls = [];
page.on('request', (r) => urls.push(r.url()));

const shot = (name) => page.screenshot({ path: `${opt.shots}/${name}.png`, fullPage: true });
const state = (sel) => page.locator(sel).getAttribute('data-state');
let failed = 0;

async function scenario(name, fn) {
    const t0 = Date.now();
    try {
        problems.length = 0;
        await fn();
        if (problems.length) throw new Error(problems.join('; '));
        console.log(JSON.stringify({ scenario: name, ok: true, ms: Date.now() - t0 }));
    } catch (e) {
        failed++;
        console.log(JSON.stringify({ scenario: name, ok: false, ms: Date.now() - t0, error: String(e.message || e).replace(/\u001b\[[0-9;]*m/g, '').split('\n').slice(0, 6).join(' | ') }));
        await shot(`failed-${name}`).catch(() => {});
    }
}

// Without a token on loopback, the dashboard just works: no token screen.
await scenario('no_token', async () => {
    await page.goto(`${opt['open-url']}/ui/`);
    await page.locator('tr[data-host="open"]').waitFor();
    check(await page.locator('#login').isHidden(), 'the token screen is up on a server without a token');
});

// With a token: the screen asks for it; a wrong one is refused (401) and the
// screen says so; the right one opens the dashboard. It never goes into a URL.
await scenario('token', async () => {
    await page.goto(`${opt.url}/ui/`);
    await page.locator('#login').waitFor();
    await page.fill('#token', 'wrong-token');
    await page.click('#login button[type=submit]');
    await page.locator('#login-error', { hasText: '401' }).waitFor();
    check(await page.locator('#login').isVisible(), 'the token screen went away after a wrong token');
    await shot('token');
    await page.fill('#token', opt.token);
    await page.click('#login button[type=submit]');
    await page.locator('tr[data-host="ui"]').waitFor();
    check(await page.locator('#login').isHidden(), 'the token screen stayed up after the right token');
    const kept = await page.evaluate(() => sessionStorage.getItem('bgtask.token'));
    check(kept === opt.token, 'the token is not kept in sessionStorage');
    check(!urls.some((u) => u.includes(opt.token) || u.includes('wrong-token')), 'a token went into a URL');
    // A reload keeps it for the tab.
    await page.reload();
    await page.locator('tr[data-host="ui"]').waitFor();
    check(await page.locator('#login').isHidden(), 'the token was asked again after a reload');
});

// The overview: live hosts, queues, and a handler nobody serves.
await scenario('overview', async () => {
    await submit('nobody.home', {});
    await page.goto(`${opt.url}/ui/#/`);
    await page.locator('[data-testid=unserved]', { hasText: 'nobody.home' }).waitFor();
    await page.locator('tr[data-queue="nobody.home"]').waitFor();
    await page.locator('tr[data-host="ui"] td', { hasText: 'demo.sleep' }).first().waitFor();
    await shot('overview');
});

// A task submitted elsewhere appears in the list without a reload, and its progress moves.
let sleeper = null;
await scenario('live_task', async () => {
    await page.goto(`${opt.url}/ui/#/tasks`);
    await page.locator('table.tasks tbody tr').first().waitFor();
    await page.waitForFunction(() => document.getElementById('live').dataset.state === 'live');
    await page.evaluate(() => { window.__sameDocument = true; });
    sleeper = await submit('demo.sleep', { seconds: 30, steps: 60 });
    const row = `tr[data-task="${sleeper}"]`;
    // Sooner than the list's own 15 s refresh: it came with the events.
    await page.locator(row).waitFor({ timeout: 5000 });
    const bar = `${row} .progress`;
    await page.waitForFunction((sel) => Number(document.querySelector(sel)?.dataset.value) > 0, bar);
    const first = Number(await page.locator(bar).getAttribute('data-value'));
    await page.waitForFunction(([sel, v]) => Number(document.querySelector(sel)?.dataset.value) > v, [bar, first]);
    check(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
    check((await state(row)) === 'ONGOING', 'the task is not ONGOING');
    await shot('tasks');
});

// Cancel from the task's page: confirm, then see CANCELLED.
await scenario('cancel', async () => {
    check(sleeper, 'no task from live_task');
    await page.click(`tr[data-task="${sleeper}"] a.id`);
    await page.locator('[data-testid=task-id]', { hasText: sleeper }).waitFor();
    await page.waitForFunction(() => Number(document.querySelector('.progress.big')?.dataset.value) > 0);
    await page.evaluate(() => { window.__sameDocument = true; });
    await page.click('button[data-action=cancel]');
    await page.click('[data-testid=confirm] button[data-action=confirm]');
    await page.locator('[data-testid=task-state] [data-state=CANCELLED]').waitFor();
    await page.locator('[data-testid=events] li.cancelled').first().waitFor();
    check((await page.locator('button[data-action=cancel]').count()) === 0, 'the cancel button stayed');
    await shot('task');
});

// The cancelled task's log line ("cancelled during step i/N", written by
// demo.sleep as it stops) reaches the page that was open while it ran, and
// is there again, once, when the page is loaded afresh.
await scenario('logs', async () => {
    check(sleeper, 'no task from live_task');
    const line = page.locator('[data-testid=logs] li', { hasText: /cancelled during step \d+\/60/ });
    await line.waitFor();
    await page.locator('[data-testid=logs-state][data-state=ended]').waitFor();
    check(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
    await shot('task');
    await page.reload();
    await line.waitFor();
    await page.locator('[data-testid=logs-state][data-state=ended]').waitFor();
    check((await line.count()) === 1, 'the log line is drawn more than once');
});

// A single task that fails (demo.flaky asks for another attempt, and it may
// have only one) is retried from its page: it runs again and succeeds.
let flaky = null;
await scenario('retry_task', async () => {
    flaky = await submit('demo.flaky', { n: 2 }, { max_attempts: 1 });
    await page.goto(`${opt.url}/ui/#/task/${flaky}`);
    await page.locator('[data-testid=task-state] [data-state=FAILURE]').waitFor();
    await page.click('button[data-action=retry]');
    await page.click('[data-testid=confirm] button[data-action=confirm]');
    await page.locator('[data-testid=task-state] [data-state=SUCCESS]').waitFor();
    check(/Attempt\s+2\b/.test(await page.locator('.facts').innerText()), 'the record does not show attempt 2');
    check((await page.locator('button[data-action=retry]').count()) === 0, 'the retry button stayed');
    const t = await until(flaky, (x) => x.state === 'SUCCESS', 'SUCCESS');
    check(t.result && t.result.attempt === 2, `the result is not attempt 2's: ${JSON.stringify(t.result)}`);
});

// A parallel task whose subtasks 1 and 4 fail their first run ends PARTIAL;
// retrying its failed subtasks from the page runs those two again, and it
// ends SUCCESS with every subtask done.
await scenario('retry_subtasks', async () => {
    const id = await submit('partest.run', { n: 6, ms: 20, fail_once: [1, 4] });
    await page.goto(`${opt.url}/ui/#/task/${id}`);
    await page.locator('[data-testid=task-state] [data-state=SUCCESS]', { hasText: 'PARTIAL' }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=subtasks] .cell[data-state=FAILURE]').length === 2);
    await shot('task-parallel');
    // A terminal event of the first run may be in the page's list already.
    const before = await page.locator('[data-testid=events] li.done, [data-testid=events] li.partial_success').count();
    await page.click('button[data-action=retry]');
    await page.click('[data-testid=confirm] button[data-action=confirm]');
    await page.locator('.banner.info', { hasText: 'Retrying 2 subtasks' }).waitFor();
    await page.locator('[data-testid=task-state] [data-state=SUCCESS]', { hasText: /^SUCCESS$/ }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=subtasks] .cell[data-state=SUCCESS]').length === 6);
    await page.waitForFunction((n) => document.querySelectorAll(
        '[data-testid=events] li.done, [data-testid=events] li.partial_success').length > n, before);
    check((await page.locator('button[data-action=retry]').count()) === 0, 'the retry button stayed');
    check(/Attempt\s+2\b/.test(await page.locator('.facts').innerText()), 'the record does not show attempt 2');
});

// The handlers: who serves what, and what nobody serves.
await scenario('handlers', async () => {
    await page.goto(`${opt.url}/ui/#/handlers`);
    await page.locator('tr[data-handler="demo.sleep"][data-served=yes]').waitFor();
    await page.locator('tr[data-handler="nobody.home"][data-served=no]').waitFor();
    await page.locator('[data-testid=unserved]', { hasText: 'nobody.home' }).waitFor();
    await shot('handlers');
});

// Pause demo.echo from the handlers view, then see a demo.echo task wait
// while a demo.sleep task submitted after it runs and ends (the host is
// claiming, but not demo.echo's tasks); resume, and it runs. The pause
// reaches the hosts on the control channel: a task submitted before the
// host had it may still run, so a pair whose echo ran is tried again (within
// the deadline) until one echo waits.
await scenario('pause', async () => {
    await page.goto(`${opt.url}/ui/#/handlers`);
    const echo = 'tr[data-handler="demo.echo"]';
    await page.click(`${echo}[data-paused=no] button[data-action=pause]`);
    await page.fill('[data-testid=op][data-op=pause] input[name=reason]', 'browser test');
    await page.click('[data-testid=op][data-op=pause] button[data-action=confirm]');
    await page.locator(`${echo}[data-paused=yes]`).waitFor();
    await shot('handlers-paused');
    await page.goto(`${opt.url}/ui/#/`);
    await page.locator('tr[data-host="ui"] td.paused', { hasText: 'demo.echo' }).waitFor();
    const end = Date.now() + WAIT;
    let waiting = null;
    while (!waiting) {
        check(Date.now() < end, `every demo.echo task ran while demo.echo was paused (for ${WAIT} ms)`);
        const id = await submit('demo.echo', { hello: 'paused' });
        const runner = await submit('demo.sleep', { seconds: 0.05, steps: 1 });
        await until(runner, (x) => x.state === 'SUCCESS', 'SUCCESS');
        const t = (await call('GET', `/v1/tasks/${id}`)).body;
        if (t.state === 'ONGOING' && t.attempt === 0 && !t.started_ms) waiting = id;
    }
    await page.goto(`${opt.url}/ui/#/task/${waiting}`);
    await page.locator('[data-testid=task-state] [data-state=ONGOING]').waitFor();
    await page.goto(`${opt.url}/ui/#/handlers`);
    await page.click(`${echo}[data-paused=yes] button[data-action=resume]`);
    await page.locator(`${echo}[data-paused=no]`).waitFor();
    await page.goto(`${opt.url}/ui/#/task/${waiting}`);
    await page.locator('[data-testid=task-state] [data-state=SUCCESS]').waitFor();
});

// Three demo.fail tasks fail; "Retry…" on demo.fail shows the dry run's
// count, 3, and retrying runs each again (attempt 2, failing again).
const failing = [];
await scenario('bulk_retry', async () => {
    for (let i = 0; i < 3; i++) failing.push(await submit('demo.fail', { message: `failure ${i}` }));
    for (const id of failing) await until(id, (x) => x.state === 'FAILURE', 'FAILURE');
    await page.goto(`${opt.url}/ui/#/handlers`);
    await page.click('tr[data-handler="demo.fail"] button[data-action=retry]');
    const op = '[data-testid=op][data-op=retry]';
    await page.locator(`${op} [data-testid=count][data-count="3"]`).waitFor();
    await shot('handlers-retry');
    await page.click(`${op} button[data-action=confirm]`);
    await page.locator(`${op} [data-testid=op-done]`, { hasText: 'Retried 3 of 3' }).waitFor();
    for (const id of failing) await until(id, (x) => x.state === 'FAILURE' && x.attempt === 2, 'FAILURE at attempt 2');
});

// "Purge…" on demo.fail, finished more than 0 s ago: the dry run counts the
// three, the real run deletes their records. Then "Delete record" on the
// retried demo.flaky task's page.
await scenario('purge', async () => {
    check(failing.length === 3 && flaky, 'no tasks from bulk_retry and retry_task');
    await page.goto(`${opt.url}/ui/#/handlers`);
    await page.click('tr[data-handler="demo.fail"] button[data-action=purge]');
    const op = '[data-testid=op][data-op=purge]';
    await page.selectOption(`${op} select[name=older_than]`, '0s');
    await page.locator(`${op} [data-testid=count][data-count="3"]`).waitFor();
    await shot('handlers-purge');
    await page.click(`${op} button[data-action=confirm]`);
    await page.locator(`${op} [data-testid=op-done]`, { hasText: 'Deleted 3 records of 3' }).waitFor();
    for (const id of failing) check((await call('GET', `/v1/tasks/${id}`)).status === 404, `task ${id} is still there`);
    await page.goto(`${opt.url}/ui/#/task/${flaky}`);
    await page.click('button[data-action=delete]');
    await page.click('[data-testid=confirm] button[data-action=confirm]');
    await page.locator('[data-testid=deleted]').waitFor();
    check((await call('GET', `/v1/tasks/${flaky}`)).status === 404, 'the deleted record is still there');
});

// "Cancel all…" on demo.sleep: two running sleepers are counted, then cancelled.
await scenario('cancel_all', async () => {
    const ids = [await submit('demo.sleep', { seconds: 60, steps: 600 }), await submit('demo.sleep', { seconds: 60, steps: 600 })];
    for (const id of ids) await until(id, (x) => x.started_ms > 0, 'running');
    await page.goto(`${opt.url}/ui/#/handlers`);
    await page.click('tr[data-handler="demo.sleep"] button[data-action=cancel]');
    const op = '[data-testid=op][data-op=cancel]';
    await page.locator(`${op} [data-testid=count][data-count="2"]`).waitFor();
    await page.click(`${op} button[data-action=confirm]`);
    await page.locator(`${op} [data-testid=op-done]`).waitFor();
    for (const id of ids) await until(id, (x) => x.state === 'CANCELLED', 'CANCELLED');
});

// The overview's charts, once tasks have ended: bars of the last hour, the
// cancelled sleeper among them, a bar per handler, and the
// handlers view's count of the last hour.
await scenario('history', async () => {
    await page.goto(`${opt.url}/ui/#/`);
    await page.locator('[data-testid=throughput] rect.seg.cancelled').first().waitFor();
    await page.locator('[data-testid=outcomes] g[data-handler="demo.sleep"] rect.seg.cancelled').waitFor();
    await page.locator('[data-testid=outcomes] g[data-handler="partest.run"] rect.seg').first().waitFor();
    const total = await page.locator('[data-testid=throughput] rect.seg')
        .evaluateAll((els) => els.reduce((n, el) => n + Number(el.dataset.count), 0));
    check(total >= 2, `the chart counts ${total} tasks ended, fewer than this run ended`);
    await shot('overview');
    // The handlers view has them too: demo.sleep's last hour holds the cancelled one.
    await page.goto(`${opt.url}/ui/#/handlers`);
    await page.locator('tr[data-handler="demo.sleep"] .lh-cancelled', { hasText: /^[1-9]\d* cancelled$/ }).waitFor();
});

// The task list in pages of 3 with "Load more", and its time filters.
await scenario('tasks_pages', async () => {
    const seen = () => page.locator('table.tasks tbody tr[data-task]').evaluateAll((els) => els.map((el) => el.dataset.task));
    const echoes = [];
    for (let i = 0; i < 7; i++) echoes.push(await submit('demo.echo', { page: i }));
    // Pages of a list that does not change meanwhile: each task once.
    for (const id of echoes) await until(id, (x) => x.state === 'SUCCESS', 'SUCCESS');
    await page.goto(`${opt.url}/ui/#/tasks?limit=3`);
    await page.waitForFunction(() => document.querySelectorAll('table.tasks tbody tr[data-task]').length === 3);
    await page.click('button[data-action=more]');
    await page.waitForFunction(() => document.querySelectorAll('table.tasks tbody tr[data-task]').length === 6);
    const ids = await seen();
    check(new Set(ids).size === 6, `a task is listed twice: ${ids}`);
    await shot('tasks-more');
    // Nothing was created before the test started (a time in ms); everything since.
    await page.goto(`${opt.url}/ui/#/tasks?until=${started}`);
    await page.locator('table.tasks tbody tr.empty').waitFor();
    const all = (await call('GET', '/v1/tasks?limit=1000')).body.count;
    await page.goto(`${opt.url}/ui/#/tasks?since=${started}&limit=500`);
    await page.waitForFunction((n) => document.querySelectorAll('table.tasks tbody tr[data-task]').length === n, all);
    check(await page.locator('button[data-action=more]').isHidden(), '"Load more" shows at the end of the list');
});

// The token is withdrawn while the page is open (another tab, a rotation):
// the next call's 401 brings the token screen back, saying why.
await scenario('token_refused_later', async () => {
    await page.goto(`${opt.url}/ui/#/`);
    await page.locator('tr[data-host="ui"]').waitFor();
    await page.evaluate(() => sessionStorage.setItem('bgtask.token', 'rotated-away'));
    await page.locator('#login-error', { hasText: 'refused' }).waitFor();
    check(await page.locator('#view').evaluate((el) => el.children.length === 0), 'the view stayed behind the token screen');
});

await browser.close();
process.exit(failed ? 1 : 0);
