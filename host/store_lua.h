/*
 * store_lua.h - the Lua scripts of Redis protocol version 1. Included by
 * store.c only. Every script starts with the common prelude; ARGV[1..3] are
 * always prefix, events maxlen and retention seconds.
 *
 * Protocol changelog (STORE_PROTOCOL_VERSION in store.h). A change to the
 * key layout, a record field's meaning or an event's shape bumps the version;
 * hosts and the CLI refuse data marked with another one (P:protocol).
 *   1  first release. P:protocol (string "1") is set by the first submission
 *      into an empty prefix.
 *
 * Keys (P = prefix): P:task:<id> hash, P:sub:<id> hash, P:q:<handler> zset
 * (score = ms from which the task may be claimed), P:wake:<handler> list,
 * P:events stream, P:ev:<id> channel, P:ctl:<host> channel, P:hosts zset,
 * P:host:<id> hash, P:held:<host> hash (the attempts a host holds: id ->
 * "handler attempt", set by claim, removed by the write that ends the attempt
 * or by the heartbeat that finds it lost), P:done zset, P:protocol string.
 *
 * Scripts use Redis' clock (TIME) for every score so hosts with skewed clocks
 * agree on when a lease ends.
 *
 * Task records are read with redis.pcall('HMGET', ...): a P:task:<id> key that
 * is not a hash (overwritten by hand) reads as no record, instead of failing
 * the whole script, which would stall every task that a claim, heartbeat or
 * write serves along with it.
 *
 * The event names the scripts emit (bgtask_updated, and the plain endings in
 * EVNAME) are events.c's; tests/unit/test_events.c checks that the two agree.
 * The payloads of host writes come built from the host (events.c); payload()
 * builds the few the scripts make themselves in the same shape.
 */
#ifndef BGT_STORE_LUA_H
#define BGT_STORE_LUA_H

/* STORE_PROTOCOL_VERSION comes from store.h, which its includers include first. */

/* A number macro as a string literal, to splice into a script. */
#define LUA_STR_(x) #x
#define LUA_STR(x) LUA_STR_(x)

/* Shared helpers. emit() appends to the stream and publishes on the task's
 * channel; terminate() is the one way a task reaches a terminal state. */
#define LUA_PRELUDE                                                                          \
    "local P = ARGV[1]\n"                                                                    \
    "local MAXLEN = ARGV[2]\n"                                                               \
    "local RETENTION = tonumber(ARGV[3])\n"                                                  \
    "local T = redis.call('TIME')\n"                                                         \
    "local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)\n"                \
    /* NOW as a string, made once: a number passed to redis.call is formatted with     \
     * printf("%.17g") at every call. */                                                \
    "local NOWS = tostring(NOW)\n"                                                            \
    "local function emit(id, name, data)\n"                                                  \
    "  local sid = redis.call('XADD', P .. ':events', 'MAXLEN', '~', MAXLEN, '*',\n"         \
    "    'event', name, 'task_id', id, 'data', data)\n"                                      \
    "  redis.call('PUBLISH', P .. ':ev:' .. id,\n"                                           \
    "    '{\"event\":\"' .. name .. '\",\"id\":\"' .. sid .. '\",\"data\":' .. data .. '}')\n" \
    "end\n"                                                                                  \
    "local function payload(id, h, attempt, msg, extra)\n"                                   \
    "  return '{\"task_id\":\"' .. id .. '\",\"handler\":' .. cjson.encode(h) ..\n"          \
    "    ',\"attempt\":' .. attempt .. ',\"ts_ms\":' .. NOWS .. ',\"message\":' ..\n"         \
    "    cjson.encode(msg) .. (extra or '') .. '}'\n"                                        \
    "end\n"                                                                                  \
    "local EVNAME = {SUCCESS = 'bgtask_done', FAILURE = 'bgtask_failed',\n"                  \
    "  CANCELLED = 'bgtask_cancelled'}\n"                                                    \
    /* cmd key list[1..n], in calls of at most 1000 (unpack() is bounded by Lua's stack). */  \
    "local function batched(cmd, key, list)\n"                                             \
    "  for j = 1, #list, 1000 do\n"                                                        \
    "    redis.call(cmd, key, unpack(list, j, math.min(j + 999, #list)))\n"                \
    "  end\n"                                                                              \
    "end\n"                                                                                \
    "local function wake(h)\n"                                                               \
    "  local w = P .. ':wake:' .. h\n"                                                       \
    "  redis.call('LPUSH', w, 1)\n"                                                          \
    "  redis.call('LTRIM', w, 0, 63)\n"                                                      \
    "end\n"                                                                                  \
    /* Hosts whose entry expired: the attempts each last held (P:held:<host>)   \
     * become claimable now instead of when each lease runs out. */             \
    "local function bury(self)\n"                                                           \
    "  local dead = redis.call('ZRANGEBYSCORE', P .. ':hosts', '-inf', NOW)\n"              \
    "  for _, d in ipairs(dead) do\n"                                                       \
    "    if d ~= self then\n"                                                               \
    "      local list = redis.call('HGETALL', P .. ':held:' .. d)\n"                        \
    "      for j = 1, #list, 2 do\n"                                                         \
    "        local id = list[j]\n"                                                            \
    "        local h, a = string.match(list[j + 1], '(%S+) (%S+)')\n"                        \
    "        local r = redis.pcall('HMGET', P .. ':task:' .. id, 'state', 'owner', 'attempt')\n" \
    "        if r[1] == 'ONGOING' and r[2] == d and r[3] == a then\n"                       \
    "          redis.call('ZADD', P .. ':q:' .. h, 'XX', NOW, id)\n"                        \
    "          wake(h)\n"                                                                   \
    "        end\n"                                                                         \
    "      end\n"                                                                           \
    "      redis.call('DEL', P .. ':host:' .. d, P .. ':held:' .. d)\n"                     \
    "      redis.call('ZREM', P .. ':hosts', d)\n"                                          \
    "    end\n"                                                                             \
    "  end\n"                                                                               \
    "end\n"                                                                                 \
    "local function terminate(id, h, attempt, state, msg, result, evname, data, keep, single)\n"           \
    "  local key = P .. ':task:' .. id\n"                                                    \
    /* One HSET for every field the end changes: each call is also one AOF entry. */      \
    "  local f = {'state', state, 'message', msg, 'finished_ms', NOWS, 'updated_ms', NOWS,\n" \
    "    'cancel_requested', '0'}\n"                                                        \
    "  if state == 'FAILURE' then f[#f + 1] = 'error'; f[#f + 1] = msg end\n"               \
    "  if result then f[#f + 1] = 'result'; f[#f + 1] = result end\n"                       \
    "  redis.call('HSET', key, unpack(f))\n"                                                \
    "  redis.call('ZREM', P .. ':q:' .. h, id)\n"                                            \
    "  redis.call('ZADD', P .. ':done', NOWS, id)\n"                                          \
    "  keep = keep or RETENTION\n"                                                           \
    "  if keep > 0 then\n"                                                                   \
    "    local ms = tostring(math.floor(keep * 1000))\n"                                     \
    "    redis.call('PEXPIRE', key, ms)\n"                                                   \
    "    if not single then redis.call('PEXPIRE', P .. ':sub:' .. id, ms) end\n"               \
    "  end\n"                                                                                \
    "  emit(id, evname or EVNAME[state], data or payload(id, h, attempt, msg))\n"            \
    "end\n"

/*
 * submit: ARGV[4] = n, then 9 per task: id, handler, args, max_attempts,
 * delay_ms, subtasks (JSON array text or ""), parallelism (0 = the
 * handler's), on_failure ("" = the handler's, "continue", "fail_fast"), fresh
 * ("1": the store made the id up, so it cannot exist and is not looked up).
 * Returns per task 1 (created) or 0 (id exists: nothing changed).
 */
static const char LUA_SUBMIT[] = LUA_PRELUDE
    "local out = {}\n"
    "local created = false\n"
    "local woken = {}\n"
    "local i = 5\n"
    "for k = 1, tonumber(ARGV[4]) do\n"
    "  local id, h, args = ARGV[i], ARGV[i + 1], ARGV[i + 2]\n"
    "  local maxa, delay, subs = ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 5]\n"
    "  local par, onf, fresh = ARGV[i + 6], ARGV[i + 7], ARGV[i + 8] == '1'\n"
    "  i = i + 9\n"
    "  local key = P .. ':task:' .. id\n"
    "  if not fresh and redis.call('EXISTS', key) == 1 then\n"
    "    out[k] = 0\n"
    "  else\n"
    "    local kind, nsub = 'single', '0'\n"
    "    if subs ~= '' then\n"
    "      local list = cjson.decode(subs)\n"
    "      kind, nsub = 'parallel', tostring(#list)\n"
    "      local sk = P .. ':sub:' .. id\n"
    "      for j = 1, #list do\n"
    "        redis.call('HSET', sk, (j - 1) .. ':args', cjson.encode(list[j]),\n"
    "          (j - 1) .. ':state', 'PENDING')\n"
    "      end\n"
    "    end\n"
    "    redis.call('HSET', key, 'id', id, 'handler', h, 'kind', kind, 'state', 'ONGOING',\n"
    "      'args', args, 'attempt', '0', 'released', '0', 'max_attempts', maxa, 'owner', '',\n"
    "      'created_ms', NOWS, 'started_ms', '0', 'updated_ms', NOWS, 'finished_ms', '0',\n"
    "      'progress_current', '0', 'progress_total', '0', 'message', 'Task started',\n"
    "      'result', '', 'error', '', 'cancel_requested', '0', 'subtasks', nsub,\n"
    "      'sub_success', '0', 'sub_failure', '0', 'parallelism', par, 'on_failure', onf)\n"
    "    redis.call('ZADD', P .. ':q:' .. h, delay == 0 and NOWS or tostring(NOW + delay), id)\n"
    "    if not woken[h] then wake(h); woken[h] = true end\n"
    "    emit(id, 'bgtask_updated', payload(id, h, 0, 'Task started',\n"
    "      ',\"current_progress\":0,\"total_progress\":0'))\n"
    "    out[k] = 1\n"
    "    created = true\n"
    "  end\n"
    "end\n"
    /* Mark the data with its protocol version (a no-op, not replicated, once it is). */
    "if created then redis.call('SET', P .. ':protocol', '" LUA_STR(STORE_PROTOCOL_VERSION) "', 'NX') end\n"
    "return out\n";

/*
 * claim: ARGV[4] = host, [5] = lease_ms, [6] = max, [7] = nh, then 4 per
 * handler: name, max_attempts, not_retriable (0|1), kind. Returns
 * {now, next_due_delay_ms (-1 none), then 13 per claimed task: id, handler,
 * attempt, released, max_attempts, args, progress_current, progress_total,
 * created_ms, corrupt ("" or why), subtasks, parallelism, on_failure}.
 */
static const char LUA_CLAIM[] = LUA_PRELUDE
    "local host, lease, want = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local LEASE_UNTIL = tostring(NOW + lease)\n"
    "local out = {NOW, -1}\n"
    "local hs, held = {}, {}\n"
    /* A counter of the record: a whole number 0..2^31, else nil (corrupted). tonumber()
     * alone lets nan, -5 or 1.5 through: claimed forever with a token that never fences. */
    "local function count(v)\n"
    "  local n = tonumber(v)\n"
    "  if n and n >= 0 and n < 2147483648 and n == math.floor(n) then return n end\n"
    "end\n"
    "bury(host)\n"
    "local i = 8\n"
    "for k = 1, tonumber(ARGV[7]) do\n"
    "  hs[k] = {ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2] == '1', ARGV[i + 3]}\n"
    "  i = i + 4\n"
    "end\n"
    "for _, hd in ipairs(hs) do\n"
    "  local h = hd[1]\n"
    "  local q = P .. ':q:' .. h\n"
    "  while want > 0 do\n"
    "    local ids = redis.call('ZRANGEBYSCORE', q, '-inf', NOW, 'LIMIT', 0, want)\n"
    "    if #ids == 0 then break end\n"
    "    for _, id in ipairs(ids) do\n"
    "      local key = P .. ':task:' .. id\n"
    "      local r = redis.pcall('HMGET', key, 'state', 'attempt', 'released', 'max_attempts',\n"
    "        'owner', 'cancel_requested', 'args', 'progress_current', 'progress_total',\n"
    "        'created_ms', 'subtasks', 'parallelism', 'on_failure', 'kind')\n"
    "      if not r[1] or r[1] ~= 'ONGOING' then\n"
    "        redis.call('ZREM', q, id)\n"
    "      else\n"
    "        local attempt, released = count(r[2]), count(r[3])\n"
    "        local maxa = count(r[4])\n"
    "        local owner = r[5] or ''\n"
    "        if not attempt or not released or not maxa or not r[7] then\n"
    "          attempt = count(r[2]) or 0\n"
    "          redis.call('HSET', key, 'attempt', attempt)\n"
    "          terminate(id, h, attempt, 'FAILURE', 'corrupted task record: attempt, '\n"
    "            .. 'released, max_attempts or args is missing or not a whole number')\n"
    "        else\n"
    "          if maxa <= 0 then maxa = hd[2] end\n"
    "          if r[6] == '1' then\n"
    "            terminate(id, h, attempt, 'CANCELLED', 'Cancelled')\n"
    "          elseif owner ~= '' and hd[3] then\n"
    "            terminate(id, h, attempt, 'FAILURE', 'attempt ' .. attempt ..\n"
    "              ' was lost with its host ' .. owner .. ' and the handler is not retriable')\n"
    "          elseif attempt - released >= maxa then\n"
    "            local why = 'gave up after ' .. attempt .. ' attempts'\n"
    "            if owner ~= '' then\n"
    "              why = why .. ': the previous attempts were lost with their host (last: '\n"
    "                .. owner .. ')'\n"
    "            end\n"
    "            terminate(id, h, attempt, 'FAILURE', why)\n"
    "          else\n"
    "            attempt = attempt + 1\n"
    "            if r[4] == tostring(maxa) and r[14] == hd[4] then\n"
    "              redis.call('HSET', key, 'attempt', tostring(attempt), 'owner', host,\n"
    "                'started_ms', NOWS, 'updated_ms', NOWS)\n"
    "            else\n"
    "              redis.call('HSET', key, 'attempt', tostring(attempt), 'owner', host,\n"
    "                'started_ms', NOWS, 'updated_ms', NOWS, 'max_attempts', tostring(maxa),\n"
    "                'kind', hd[4])\n"
    "            end\n"
    "            redis.call('ZADD', q, LEASE_UNTIL, id)\n"
    "            local n = #out\n"
    "            out[n + 1] = id\n"
    "            out[n + 2] = h\n"
    "            out[n + 3] = attempt\n"
    "            out[n + 4] = released\n"
    "            out[n + 5] = maxa\n"
    "            out[n + 6] = r[7]\n"
    "            out[n + 7] = r[8] or '0'\n"
    "            out[n + 8] = r[9] or '0'\n"
    "            out[n + 9] = r[10] or '0'\n"
    "            out[n + 10] = ''\n"
    "            out[n + 11] = r[11] or '0'\n"
    "            out[n + 12] = r[12] or '0'\n"
    "            out[n + 13] = r[13] or ''\n"
    "            held[#held + 1] = id\n"
    "            held[#held + 1] = h .. ' ' .. attempt\n"
    "            want = want - 1\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local due = -1\n"
    "for _, hd in ipairs(hs) do\n"
    "  local first = redis.call('ZRANGE', P .. ':q:' .. hd[1], 0, 0, 'WITHSCORES')\n"
    "  if #first > 0 then\n"
    "    local d = tonumber(first[2]) - NOW\n"
    "    if d < 0 then d = 0 end\n"
    "    if due < 0 or d < due then due = d end\n"
    "  end\n"
    "end\n"
    /* Wake up when a host's entry runs out too, to bury it on time. */
    "local hfirst = redis.call('ZRANGE', P .. ':hosts', 0, 1, 'WITHSCORES')\n"
    "for j = 1, #hfirst, 2 do\n"
    "  if hfirst[j] ~= host then\n"
    "    local d = math.max(tonumber(hfirst[j + 1]) - NOW, 0)\n"
    "    if due < 0 or d < due then due = d end\n"
    "    break\n"
    "  end\n"
    "end\n"
    "if #held > 0 then\n"
    "  batched('HSET', P .. ':held:' .. host, held)\n"
    "end\n"
    "out[2] = due\n"
    /* A full batch may have left due work behind: wake another host for it. */
    "if want == 0 and due == 0 then\n"
    "  for _, hd in ipairs(hs) do wake(hd[1]) end\n"
    "end\n"
    "return out\n";

/*
 * heartbeat: ARGV[4] = host, [5] = lease_ms, [6] = host ttl ms, [7..14] =
 * machine, pid, version, handlers, workers, running, started_ms, breakers,
 * [15] = n, then 3 per attempt: id, handler, attempt. Returns per attempt 0 (renewed),
 * 1 (lost), 2 (renewed, cancel requested).
 *
 * It also buries hosts whose entry expired (see bury), drops the lost attempts
 * from the host's P:held:<host> and keeps that key alive.
 */
static const char LUA_HEARTBEAT[] = LUA_PRELUDE
    "local host, lease, ttl = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "bury(host)\n"
    "redis.call('ZADD', P .. ':hosts', NOW + ttl, host)\n"
    "local out, lost = {}, {}\n"
    "local i = 16\n"
    "for k = 1, tonumber(ARGV[15]) do\n"
    "  local id, h, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 2]\n"
    "  i = i + 3\n"
    "  local key = P .. ':task:' .. id\n"
    "  local r = redis.pcall('HMGET', key, 'state', 'owner', 'attempt', 'cancel_requested')\n"
    "  if r[1] == 'ONGOING' and r[2] == host and r[3] == attempt then\n"
    "    redis.call('ZADD', P .. ':q:' .. h, 'XX', NOW + lease, id)\n"
    "    if r[4] == '1' then out[k] = 2 else out[k] = 0 end\n"
    "  else\n"
    "    out[k] = 1\n"
    "    lost[#lost + 1] = id\n"
    "  end\n"
    "end\n"
    "local hkey = P .. ':held:' .. host\n"
    "if #lost > 0 then batched('HDEL', hkey, lost) end\n"
    "local hk = P .. ':host:' .. host\n"
    "redis.call('HSET', hk, 'id', host, 'machine', ARGV[7], 'pid', ARGV[8], 'version', ARGV[9],\n"
    "  'handlers', ARGV[10], 'workers', ARGV[11], 'running', ARGV[12], 'started_ms', ARGV[13],\n"
    "  'breakers', ARGV[14], 'updated_ms', NOW)\n"
    "redis.call('PEXPIRE', hk, math.max(ttl * 2, lease * 2))\n"
    "redis.call('PEXPIRE', hkey, math.max(ttl * 2, lease * 2))\n"
    "return out\n";

/*
 * apply: ARGV[4] = host, [5] = n, then 15 per write: op, id, handler,
 * attempt, has_progress, current, total, progress_message, progress_event,
 * message, result, event_name, event_payload, backoff_ms, retention_s (-1 for
 * the store's), subtask index, subtask state, subtask attempt. op: 0 progress,
 * 1 success, 2 failure, 3 cancelled, 4 retry, 5 release, 6 subtask (its state
 * SUCCESS, FAILURE or CANCELLED is counted once however often it is reported;
 * RETRY records the attempt and message only). Returns per write 0 (fenced
 * out: nothing changed), 1 (applied), 2 (retry gave up: FAILURE), 3 (this
 * very change was applied before: nothing changed). A write is sent again
 * when its first sending got no answer, or when the replicas it had to wait
 * for did not confirm it (redis.min_replicas_ack); 3 tells the host it went
 * through the first time, instead of a fencing refusal that it is not.
 */
static const char LUA_APPLY[] = LUA_PRELUDE
    "local host = ARGV[4]\n"
    "local STATE = {[1] = 'SUCCESS', [2] = 'FAILURE', [3] = 'CANCELLED'}\n"
    /* The end of this attempt (op) is already in the record r, as this host wrote it. */
    "local function already(op, r, attempt)\n"
    "  if r[3] ~= attempt then return false end\n"
    "  if STATE[op] then return r[1] == STATE[op] and r[2] == host end\n"
    "  if op == 4 or op == 5 then\n"
    "    return (r[1] == 'ONGOING' and r[2] == '') or (op == 4 and r[1] == 'FAILURE' and\n"
    "      r[2] == host)\n"
    "  end\n"
    "  return false\n"
    "end\n"
    "local out = {}\n"
    "local i = 6\n"
    "local finished = false\n"
    "local ended = {}\n"
    "for k = 1, tonumber(ARGV[5]) do\n"
    "  local op, id, h, attempt = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]\n"
    "  if op ~= 0 and op ~= 6 then ended[#ended + 1] = id end\n"
    "  local key = P .. ':task:' .. id\n"
    "  local r = redis.pcall('HMGET', key, 'state', 'owner', 'attempt', 'released',\n"
    "    'max_attempts', 'kind')\n"
    "  if r[1] ~= 'ONGOING' or r[2] ~= host or r[3] ~= attempt then\n"
    "    if already(op, r, attempt) then out[k] = 3 else out[k] = 0 end\n"
    "  else\n"
    "    out[k] = 1\n"
    "    if ARGV[i + 4] == '1' then\n"
    "      redis.call('HSET', key, 'progress_current', ARGV[i + 5], 'progress_total',\n"
    "        ARGV[i + 6], 'message', ARGV[i + 7], 'updated_ms', NOW)\n"
    "      emit(id, 'bgtask_updated', ARGV[i + 8])\n"
    "    end\n"
    "    local msg, res, evn, evp = ARGV[i + 9], ARGV[i + 10], ARGV[i + 11], ARGV[i + 12]\n"
    "    if STATE[op] then\n"
    "      if res == '' then res = nil end\n"
    "      local keep = tonumber(ARGV[i + 14])\n"
    "      if keep < 0 then keep = nil end\n"
    "      terminate(id, h, attempt, STATE[op], msg, res, evn, evp, keep, r[6] == 'single')\n"
    "      finished = true\n"
    "    elseif op == 4 then\n"
    "      local used = tonumber(attempt) - (tonumber(r[4]) or 0)\n"
    "      local maxa = tonumber(r[5]) or 1\n"
    "      if used >= maxa then\n"
    "        terminate(id, h, attempt, 'FAILURE', 'gave up after ' .. used .. ' attempts: '\n"
    "          .. msg)\n"
    "        finished = true\n"
    "        out[k] = 2\n"
    "      else\n"
    "        redis.call('HSET', key, 'owner', '', 'error', msg, 'updated_ms', NOW)\n"
    "        redis.call('ZADD', P .. ':q:' .. h, NOW + tonumber(ARGV[i + 13]), id)\n"
    "        emit(id, evn, evp)\n"
    "        wake(h)\n"
    "      end\n"
    "    elseif op == 5 then\n"
    "      redis.call('HSET', key, 'owner', '', 'updated_ms', NOW, 'message', msg)\n"
    "      redis.call('HINCRBY', key, 'released', 1)\n"
    "      redis.call('ZADD', P .. ':q:' .. h, NOW, id)\n"
    "      emit(id, evn, evp)\n"
    "      wake(h)\n"
    "    elseif op == 6 then\n"
    "      local sk, idx = P .. ':sub:' .. id, ARGV[i + 15]\n"
    "      local sst, satt = ARGV[i + 16], ARGV[i + 17]\n"
    "      local old = redis.call('HGET', sk, idx .. ':state')\n"
    "      if sst == 'RETRY' then\n"
    "        redis.call('HSET', sk, idx .. ':attempt', satt, idx .. ':message', msg)\n"
    "      elseif old ~= 'SUCCESS' and old ~= 'FAILURE' then\n"
    "        redis.call('HSET', sk, idx .. ':state', sst, idx .. ':attempt', satt,\n"
    "          idx .. ':message', msg)\n"
    "        if res ~= '' then redis.call('HSET', sk, idx .. ':result', res) end\n"
    "        if sst == 'SUCCESS' then redis.call('HINCRBY', key, 'sub_success', 1)\n"
    "        elseif sst == 'FAILURE' then redis.call('HINCRBY', key, 'sub_failure', 1) end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  i = i + 18\n"
    "end\n"
    "if #ended > 0 then batched('HDEL', P .. ':held:' .. host, ended) end\n"
    "if finished and RETENTION > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', P .. ':done', '-inf', NOW - RETENTION * 1000)\n"
    "end\n"
    "return out\n";

/*
 * split: ARGV[4] = host, [5] = id, [6] = attempt, then one subtask's args
 * (JSON text) per argument. Fenced: persists the subtasks of a parallel task
 * once, so recovery never splits again. Returns 1, or 0 when fenced out.
 */
static const char LUA_SPLIT[] = LUA_PRELUDE
    "local host, id, attempt = ARGV[4], ARGV[5], ARGV[6]\n"
    "local key = P .. ':task:' .. id\n"
    "local r = redis.pcall('HMGET', key, 'state', 'owner', 'attempt')\n"
    "if r[1] ~= 'ONGOING' or r[2] ~= host or r[3] ~= attempt then return 0 end\n"
    "local sk = P .. ':sub:' .. id\n"
    "redis.call('DEL', sk)\n"
    "for j = 7, #ARGV do\n"
    "  redis.call('HSET', sk, (j - 7) .. ':args', ARGV[j], (j - 7) .. ':state', 'PENDING')\n"
    "end\n"
    "redis.call('HSET', key, 'subtasks', #ARGV - 6, 'kind', 'parallel', 'updated_ms', NOW)\n"
    "return 1\n";

/*
 * retry: ARGV[4] = id. Re-runs the failed and cancelled subtasks of a
 * finished parallel task as a new attempt of the same task. Returns {n}
 * (subtasks reset), {-1} unknown, {-2} not parallel, {-3} still ONGOING,
 * {-4} nothing to retry.
 */
static const char LUA_RETRY[] = LUA_PRELUDE
    "local id = ARGV[4]\n"
    "local key = P .. ':task:' .. id\n"
    "local r = redis.pcall('HMGET', key, 'state', 'kind', 'handler', 'subtasks', 'attempt',\n"
    "  'released', 'max_attempts')\n"
    "if not r[1] then return {-1} end\n"
    "if r[2] ~= 'parallel' then return {-2} end\n"
    "if r[1] == 'ONGOING' then return {-3} end\n"
    "local sk = P .. ':sub:' .. id\n"
    "local reset = 0\n"
    "for j = 0, (tonumber(r[4]) or 0) - 1 do\n"
    "  local st = redis.call('HGET', sk, j .. ':state')\n"
    "  if st == 'FAILURE' or st == 'CANCELLED' then\n"
    "    redis.call('HSET', sk, j .. ':state', 'PENDING')\n"
    "    reset = reset + 1\n"
    "  end\n"
    "end\n"
    "if reset == 0 then return {-4} end\n"
    "local msg = 'Retrying ' .. reset .. ' failed subtask(s)'\n"
    "redis.call('HSET', key, 'state', 'ONGOING', 'owner', '', 'finished_ms', 0, 'error', '',\n"
    "  'message', msg, 'sub_failure', 0, 'cancel_requested', 0, 'updated_ms', NOW,\n"
    "  'result', '')\n"
    "local used = (tonumber(r[5]) or 0) - (tonumber(r[6]) or 0)\n"
    "if used >= (tonumber(r[7]) or 1) then redis.call('HSET', key, 'max_attempts', used + 1) end\n"
    "redis.call('PERSIST', key)\n"
    "redis.call('PERSIST', sk)\n"
    "redis.call('ZREM', P .. ':done', id)\n"
    "redis.call('ZADD', P .. ':q:' .. r[3], NOW, id)\n"
    "wake(r[3])\n"
    "emit(id, 'bgtask_updated', payload(id, r[3], tonumber(r[5]) or 0, msg))\n"
    "return {reset}\n";

/*
 * cancel: ARGV[4] = id. Returns {-1} unknown, {0} cancelled now,
 * {1, owner} requested from the owner, {2, state} already terminal.
 */
static const char LUA_CANCEL[] = LUA_PRELUDE
    "local id = ARGV[4]\n"
    "local key = P .. ':task:' .. id\n"
    "local r = redis.pcall('HMGET', key, 'state', 'owner', 'handler', 'attempt')\n"
    "if not r[1] then return {-1} end\n"
    "if r[1] ~= 'ONGOING' then return {2, r[1]} end\n"
    "if (r[2] or '') == '' then\n"
    "  terminate(id, r[3], tonumber(r[4]) or 0, 'CANCELLED', 'Cancelled before it ran')\n"
    "  return {0}\n"
    "end\n"
    "redis.call('HSET', key, 'cancel_requested', 1, 'updated_ms', NOW)\n"
    "redis.call('PUBLISH', P .. ':ctl:' .. r[2], 'cancel ' .. id)\n"
    "return {1, r[2]}\n";

#endif
