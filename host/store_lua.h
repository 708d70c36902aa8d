/*
 * store_lua.h - the Lua scripts of Redis protocol version 2 (the README's
 * "Redis protocol" section is the authority on keys, record fields and the
 * packed events). Included by store.c only.
 *
 * Protocol changelog (STORE_PROTOCOL_VERSION in store.h). A change to the
 * key layout, a record field's meaning or an event's shape bumps the version;
 * hosts and the CLI refuse data of another version.
 *   1  first release: P:task:<id>, P:q:<handler>, one stream P:events, a
 *      channel per task. Its data is refused, not migrated (P:events or
 *      P:hosts present, {P}:meta absent).
 *   2  S shards with hash tags {P:s} (every script call touches one hash slot,
 *      named by KEYS[1]); records written once with short field names and
 *      defaults implied by absence; the host's lease (its entry per shard)
 *      instead of a lease per task, fencing by the lease token in the host's
 *      held hash; the events of one call as one stream entry and one message;
 *      retention by count and age through per-handler done lists, no TTLs.
 *      {P}:meta holds the version and S.
 *      Later, without a new version (readers of the rest are unaffected): the history,
 *      {P:s}:hist:<minute> (hash "<handler>|<outcome>" -> tasks ended in that minute,
 *      expiring history.window after it), written by the calls that end tasks; the
 *      log of a task, {P:s}:log:<id> (list), beside its record (fields lq, ld, lb).
 *      Added within version 2 (readers of the earlier layout are not misled,
 *      but a host built before them ignores them): the record fields b (the
 *      attempts used before an operator's retry, not counted against x) and rt
 *      (operator retries), {P}:paused and the channel P:ctl (paused handlers);
 *      the scripts of store_lua_ops.h.
 *
 * Every script but host starts with the prelude: KEYS[1] = "{P:s}", ARGV[1] =
 * P, ARGV[2] = s. All read Redis' clock once (TIME) and use it for every
 * score, so hosts with skewed clocks agree on when a lease ends. They start
 * with "#!lua": Redis then refuses a call as a whole when it is out of memory,
 * instead of stopping it after some of its writes. No script decodes or
 * encodes JSON: args, results and event payloads are the host's text.
 */
#ifndef BGT_STORE_LUA_H
#define BGT_STORE_LUA_H

#define LUA_PRELUDE                                                                                \
    "#!lua\n"                                                                                      \
    /* KEYS[1] = B, the shard's hash tag "{P:s}", which every key of the call starts with;         \
     * ARGV[1] = P, ARGV[2] = s. */                                                                \
    "local B = KEYS[1]\n"                                                                          \
    "local P, S = ARGV[1], ARGV[2]\n"                                                              \
    "local T = redis.call('TIME')\n"                                                               \
    "local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)\n"                      \
    /* NOW as text, made once: a number given to redis.call is formatted at every call. */         \
    "local NOWS = tostring(NOW)\n"                                                                 \
    /* Keys found holding a value of another type (written by hand): each is said in Redis'        \
     * log, treated as absent (deleted) and named in the reply, so the host logs it too. */        \
    "local WARN = {}\n"                                                                            \
    "local function wrongtype(key)\n"                                                              \
    "  redis.log(redis.LOG_WARNING, 'bgtask: ' .. key ..\n"                                        \
    "    ' holds a value of the wrong type: treated as absent and removed')\n"                     \
    "  redis.call('DEL', key)\n"                                                                   \
    "  WARN[#WARN + 1] = key\n"                                                                    \
    "end\n"                                                                                        \
    /* redis.call for a command on one key that treats a wrong-typed key as absent. */             \
    "local function call(cmd, key, ...)\n"                                                         \
    "  local r = redis.pcall(cmd, key, ...)\n"                                                     \
    "  if type(r) == 'table' and r.err then\n"                                                     \
    "    if string.find(r.err, 'WRONGTYPE', 1, true) then wrongtype(key) end\n"                    \
    "    return redis.call(cmd, key, ...)\n"                                                       \
    "  end\n"                                                                                      \
    "  return r\n"                                                                                 \
    "end\n"                                                                                        \
    /* cmd key list[1..n], at most 1000 list items per call (unpack is bounded by Lua's            \
     * stack). */                                                                                  \
    "local function batched(cmd, key, list)\n"                                                     \
    "  for j = 1, #list, 1000 do\n"                                                                \
    "    call(cmd, key, unpack(list, j, math.min(j + 999, #list)))\n"                              \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    /* The events of this call: field/value pairs of one stream entry (see the README: a           \
     * field 'h' names the handler of the events after it, a task id field is one event). */       \
    "local EV = {}\n"                                                                              \
    "local function emit(id, value)\n"                                                             \
    "  EV[#EV + 1] = id\n"                                                                         \
    "  EV[#EV + 1] = value\n"                                                                      \
    "end\n"                                                                                        \
    /* One XADD and one PUBLISH for every event of the call. The stream keeps about cap            \
     * events: cap / (events in this entry) entries. */                                            \
    "local function flush_events(cap)\n"                                                           \
    "  local n = #EV\n"                                                                            \
    "  if n == 0 then return end\n"                                                                \
    "  local keep = math.max(1, math.floor(cap * 2 / n))\n"                                        \
    "  local sid = call('XADD', B .. ':ev', 'MAXLEN', '~', keep, '*', unpack(EV))\n"               \
    "  redis.call('PUBLISH', P .. ':ev:' .. S, sid .. '\\n' .. table.concat(EV, '\\n'))\n"         \
    "  EV = {}\n"                                                                                  \
    "end\n"                                                                                        \
    "local function wake(h) redis.call('PUBLISH', P .. ':wake:' .. h, S) end\n"                    \
    /* Tasks of h were queued again (a retry, a release, a lost attempt): h is listed again,       \
     * for a heartbeat may have forgotten it while they ran (its queue and done list were          \
     * empty then), and woken. */                                                                  \
    "local function requeued(h)\n"                                                                 \
    "  call('SADD', B .. ':handlers', h)\n"                                                        \
    "  wake(h)\n"                                                                                  \
    "end\n"                                                                                        \
    /* s as a JSON string (messages the scripts write themselves; cjson is not used). */           \
    "local function jstr(s)\n"                                                                     \
    "  return '\"' .. string.gsub(s, '[%c\"\\\\]', function(c)\n"                                  \
    "    if c == '\"' then return '\\\\\"' elseif c == '\\\\' then return '\\\\\\\\'\n"            \
    "    elseif c == '\\n' then return '\\\\n' elseif c == '\\t' then return '\\\\t' end\n"        \
    "    return string.format('\\\\u%04x', string.byte(c))\n"                                      \
    "  end) .. '\"'\n"                                                                             \
    "end\n"                                                                                        \
    /* A count read from a record: a whole number 0..max, else nil (corrupted). tonumber()         \
     * alone lets nan, -5 or 1.5 through. */                                                       \
    "local function count(v, max)\n"                                                               \
    "  local n = tonumber(v)\n"                                                                    \
    "  if n and n >= 0 and n <= (max or 2147483647) and n == math.floor(n) then\n"                 \
    "    return n\n"                                                                               \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    /* The attempt of a lease token "<attempt> <started_ms>" (nil: none yet, 0). */                \
    "local function attempt_of(tok)\n"                                                             \
    "  if not tok then return 0 end\n"                                                             \
    "  return count(string.match(tok, '^(%d+) '))\n"                                               \
    "end\n"                                                                                        \
    "local STATE = {success = 'SUCCESS', partial_success = 'SUCCESS', failure = 'FAILURE',\n"      \
    "  cancelled = 'CANCELLED'}\n"                                                                 \
    "local CODE = {success = 'd', partial_success = 'p', failure = 'f', cancelled = 'c'}\n"        \
    /* Finished tasks of this call per handler, for its done list (a parallel task's id ends       \
     * in '*': its subtasks go with it). */                                                        \
    "local DONE = {}\n"                                                                            \
    /* Tasks ended in this call per "<handler>|<outcome>", for the history. */                     \
    "local HIST = {}\n"                                                                            \
    "local function hist(h, o)\n"                                                                  \
    "  local f = h .. '|' .. o\n"                                                                  \
    "  HIST[f] = (HIST[f] or 0) + 1\n"                                                             \
    "end\n"                                                                                        \
    /* One HINCRBY per handler and outcome into this minute's counts {P:s}:hist:<minute>,          \
     * which expire win ms after the minute (win 0: no history). A field new this minute           \
     * sets the expiry (the same absolute time every time). */                                     \
    "local function flush_hist(win)\n"                                                             \
    "  if win and win > 0 then\n"                                                                  \
    "    local m = math.floor(NOW / 60000)\n"                                                      \
    "    local k = B .. ':hist:' .. m\n"                                                           \
    "    for f, n in pairs(HIST) do\n"                                                             \
    "      if call('HINCRBY', k, f, n) == n then\n"                                                \
    "        redis.call('PEXPIREAT', k, (m + 1) * 60000 + win)\n"                                  \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  HIST = {}\n"                                                                                \
    "end\n"                                                                                        \
    /* End a task from a script (no host decided it): record, event, done list. */                 \
    "local function finish_here(id, key, h, tok, o, msg, parallel)\n"                              \
    "  local f = {'o', o, 'f', NOWS, o == 'failure' and 'e' or 'm', msg}\n"                        \
    "  if tok then f[7] = 'n'; f[8] = tok end\n"                                                   \
    "  redis.call('HSET', key, unpack(f))\n"                                                       \
    "  emit('h', h)\n"                                                                             \
    "  emit(id, CODE[o] .. attempt_of(tok) .. ' \"message\":' .. jstr(msg))\n"                     \
    "  hist(h, o)\n"                                                                               \
    "  local d = DONE[h] or {}\n"                                                                  \
    "  DONE[h] = d\n"                                                                              \
    "  d[#d + 1] = parallel and id .. '*' or id\n"                                                 \
    "end\n"                                                                                        \
    /* Append DONE to the done lists; past rmax ids per list (0: no limit), remove the             \
     * oldest records and subtasks. */                                                             \
    "local function push_done(rmax)\n"                                                             \
    "  for h, list in pairs(DONE) do\n"                                                            \
    "    if #list > 0 then\n"                                                                      \
    "      local dk = B .. ':done:' .. h\n"                                                        \
    "      local len = call('RPUSH', dk, unpack(list))\n"                                          \
    /* A new list: its handler may have been forgotten while these tasks ran. */                   \
    "      if len == #list then call('SADD', B .. ':handlers', h) end\n"                           \
    "      if rmax > 0 and len > rmax then\n"                                                      \
    "        local keys = {}\n"                                                                    \
    "        for _, x in ipairs(redis.call('LPOP', dk, len - rmax)) do\n"                          \
    "          if string.byte(x, -1) == 42 then\n"                                                 \
    "            x = string.sub(x, 1, -2)\n"                                                       \
    "            keys[#keys + 1] = B .. ':sub:' .. x\n"                                            \
    "          end\n"                                                                              \
    "          keys[#keys + 1] = B .. ':t:' .. x\n"                                                \
    "          keys[#keys + 1] = B .. ':log:' .. x\n"                                              \
    "        end\n"                                                                                \
    "        for y = 1, #keys, 1000 do\n"                                                          \
    "          redis.call('DEL', unpack(keys, y, math.min(y + 999, #keys)))\n"                     \
    "        end\n"                                                                                \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  DONE = {}\n"                                                                                \
    "end\n"                                                                                        \
    /* Remove up to max of handler h's finished tasks that ended more than keep_ms ago. */         \
    "local function trim_time(h, keep_ms, max)\n"                                                  \
    "  local dk = B .. ':done:' .. h\n"                                                            \
    "  for _ = 1, max do\n"                                                                        \
    "    local x = redis.pcall('LINDEX', dk, 0)\n"                                                 \
    "    if type(x) ~= 'string' then return end\n"                                                 \
    "    local par = string.byte(x, -1) == 42\n"                                                   \
    "    if par then x = string.sub(x, 1, -2) end\n"                                               \
    "    local f = tonumber(redis.pcall('HGET', B .. ':t:' .. x, 'f'))\n"                          \
    "    if f and f > NOW - keep_ms then return end\n"                                             \
    "    redis.call('LPOP', dk)\n"                                                                 \
    "    redis.call('DEL', B .. ':t:' .. x, B .. ':log:' .. x)\n"                                  \
    "    if par then redis.call('DEL', B .. ':sub:' .. x) end\n"                                   \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    /* Hosts whose entry in this shard ran out (other than self): each attempt they held is        \
     * written into its record (n = its token, l = the host) and queued again, due now. */         \
    "local function bury(self)\n"                                                                  \
    "  for _, d in ipairs(call('ZRANGEBYSCORE', B .. ':hosts', '-inf', NOW)) do\n"                 \
    "    if d ~= self then\n"                                                                      \
    "      local hk = B .. ':held:' .. d\n"                                                        \
    "      local list = redis.pcall('HGETALL', hk)\n"                                              \
    "      if list.err then wrongtype(hk); list = {} end\n"                                        \
    "      local woken = {}\n"                                                                     \
    "      for j = 1, #list, 2 do\n"                                                               \
    "        local id = list[j]\n"                                                                 \
    "        local key = B .. ':t:' .. id\n"                                                       \
    "        local r = redis.pcall('HMGET', key, 'h', 'o')\n"                                      \
    "        if not r.err and r[1] and not r[2] then\n"                                            \
    "          local tok = string.match(list[j + 1], '^%d+ %d+') or '0 0'\n"                       \
    "          redis.call('HSET', key, 'n', tok, 'l', d)\n"                                        \
    "          call('ZADD', B .. ':q:' .. r[1], NOW, id)\n"                                        \
    "          woken[r[1]] = true\n"                                                               \
    "        end\n"                                                                                \
    "      end\n"                                                                                  \
    "      redis.call('DEL', hk)\n"                                                                \
    "      redis.call('ZREM', B .. ':hosts', d)\n"                                                 \
    "      for h in pairs(woken) do requeued(h) end\n"                                             \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"

static const char LUA_SUBMIT[] = LUA_PRELUDE
    /* ARGV[3] = the number of handler groups; per group: handler, count, then per task:
     * id, args ('' = {}), opts. opts '' = an id the store made up (it cannot exist), due
     * now, nothing else to store; else "<check> <delay_ms> <nf>" (check 1: refuse an id
     * that exists), followed by nf field/value pairs of the record. Returns {warnings,
     * then per task 1 (created) or 0 (the id exists: nothing changed)}. */
    "local out = {''}\n"
    "local i = 4\n"
    "for g = 1, tonumber(ARGV[3]) do\n"
    "  local h, cnt = ARGV[i], tonumber(ARGV[i + 1])\n"
    "  i = i + 2\n"
    "  local q = {}\n"
    "  local started = {'h', h}\n"
    "  for k = 1, cnt do\n"
    "    local id, args, opts = ARGV[i], ARGV[i + 1], ARGV[i + 2]\n"
    "    i = i + 3\n"
    "    local key = B .. ':t:' .. id\n"
    "    local score = NOWS\n"
    "    if opts == '' then\n"
    "      if args == '' then\n"
    "        redis.call('HSET', key, 'h', h, 'c', NOWS)\n"
    "      else\n"
    "        redis.call('HSET', key, 'h', h, 'c', NOWS, 'a', args)\n"
    "      end\n"
    "    else\n"
    "      local check, delay, nf = string.match(opts, '^(%d) (%d+) (%d+)$')\n"
    "      nf = tonumber(nf)\n"
    "      if check == '1' and redis.call('EXISTS', key) == 1 then\n"
    "        score = nil\n"
    "      else\n"
    "        local f = {'h', h, 'c', NOWS}\n"
    "        if args ~= '' then f[5] = 'a'; f[6] = args end\n"
    "        for j = i, i + 2 * nf - 1 do f[#f + 1] = ARGV[j] end\n"
    "        redis.call('HSET', key, unpack(f))\n"
    "        if delay ~= '0' then score = tostring(NOW + tonumber(delay)) end\n"
    "      end\n"
    "      i = i + 2 * nf\n"
    "    end\n"
    "    if score then\n"
    "      q[#q + 1] = score\n"
    "      q[#q + 1] = id\n"
    "      started[#started + 1] = id\n"
    "      started[#started + 1] = 's0'\n"
    "      out[#out + 1] = 1\n"
    "    else\n"
    "      out[#out + 1] = 0\n"
    "    end\n"
    "  end\n"
    "  if #q > 0 then\n"
    "    batched('ZADD', B .. ':q:' .. h, q)\n"
    "    call('SADD', B .. ':handlers', h)\n"
    "    wake(h)\n"
    /* "Task started" is not stored: live subscribers get it here, late readers from the
     * record. The message starts with the time, not a stream id. */
    "    redis.call('PUBLISH', P .. ':ev:' .. S, NOWS .. '\\n' .. table.concat(started, '\\n'))\n"
    "  end\n"
    "end\n"
    "out[1] = table.concat(WARN, ' ')\n"
    "return out\n"
    ;

static const char LUA_CLAIM[] = LUA_PRELUDE
    /* ARGV[3] = host, [4] = its entry's ttl (ms: the entry is made if missing, never
     * extended here), [5] = most tasks to claim, [6] = max_subtasks, [7] = events cap, [8]
     * = nh, then per handler: name, its max_attempts, not_retriable (1|0), then the history
     * window (ms, 0: none). Returns {now,
     * ms until the next of these queues' tasks is due or another host's entry runs out
     * (-1: none, 0: maybe more due now), warnings, then per handler that got tasks:
     * handler, count, and per task: id, lease token, args, the record's other fields the
     * host needs ("r=1 x=5 pc=2 pt=10 ns=4 pl=2 of=fail_fast", only those set)}. */
    "local host, ttl, want = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local maxsub = tonumber(ARGV[6])\n"
    "local out = {NOW, -1, ''}\n"
    "local held = {}\n"
    "local TOK1 = '1 ' .. NOWS\n"
    "call('ZADD', B .. ':hosts', 'NX', NOW + ttl, host)\n"
    "bury(host)\n"
    "local hs = {}\n"
    "local i = 9\n"
    "for k = 1, tonumber(ARGV[8]) do\n"
    "  hs[k] = {ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2] == '1'}\n"
    "  i = i + 3\n"
    "end\n"
    "local hwin = tonumber(ARGV[i])\n"
    "for _, hd in ipairs(hs) do\n"
    "  local h = hd[1]\n"
    "  local q = B .. ':q:' .. h\n"
    "  while want > 0 do\n"
    "    local ids = call('ZRANGEBYSCORE', q, '-inf', NOW, 'LIMIT', 0, want)\n"
    "    if #ids == 0 then break end\n"
    "    local at = #out + 2\n"
    "    out[at - 1] = h\n"
    "    out[at] = 0\n"
    "    local got = 0\n"
    "    for _, id in ipairs(ids) do\n"
    "      local key = B .. ':t:' .. id\n"
    "      local r = redis.pcall('HGETALL', key)\n"
    "      if r.err then wrongtype(key); r = {} end\n"
    "      local a, more\n"
    "      for j = 1, #r, 2 do\n"
    "        local f = r[j]\n"
    "        if f == 'a' then a = r[j + 1]\n"
    "        elseif f ~= 'c' then\n"
    "          more = more or {}\n"
    "          more[f] = r[j + 1]\n"
    "        end\n"
    "      end\n"
    /* the handler field is no news: a record without it is corrupted */
    "      if more and more.h then\n"
    "        more.h = nil\n"
    "        if next(more) == nil then more = nil end\n"
    "      elseif #r > 0 then\n"
    "        more = more or {}\n"
    "        more.bad = 'its handler (field h) is missing'\n"
    "      end\n"
    "      if #r == 0 or (more and more.o) then\n"
    /* no record (or not a hash), or one that has ended: nothing to run */
    "      elseif not more then\n"
    /* a task that never ran: its first attempt */
    "        out[#out + 1] = id\n"
    "        out[#out + 1] = TOK1\n"
    "        out[#out + 1] = a or '{}'\n"
    "        out[#out + 1] = ''\n"
    "        held[#held + 1] = id\n"
    "        held[#held + 1] = TOK1\n"
    "        got = got + 1\n"
    "      else\n"
    "        local n, lost, ns, pl = more.n, more.l, more.ns, more.pl\n"
    "        local attempt, released = attempt_of(n), count(more.r or '0')\n"
    /* b: the attempts used before an operator's last retry; the cap counts from there. */
    "        local base = count(more.b or '0')\n"
    "        local maxa = count(more.x or '0', 1000)\n"
    "        if maxa == 0 then maxa = hd[2] end\n"
    "        local bad = more.bad\n"
    "        if bad then\n"
    "        elseif not attempt then bad = 'its attempt (field n) is not a whole number'\n"
    "        elseif not released then bad = 'its released count (field r) is not a whole number'\n"
    "        elseif not base then bad = 'its retry base (field b) is not a whole number'\n"
    "        elseif not maxa then bad = 'its max_attempts (field x) is not a whole "
    "number 0..1000'\n"
    "        elseif ns and not count(ns, maxsub) then\n"
    "          bad = 'its subtasks count (field ns) is not a whole number 0..' .. maxsub\n"
    "        elseif pl and not count(pl, 1024) then\n"
    "          bad = 'its parallelism (field pl) is not a whole number 0..1024'\n"
    "        end\n"
    "        local par = ns ~= nil\n"
    "        if bad then\n"
    "          finish_here(id, key, h, attempt and n or nil, 'failure',\n"
    "            'corrupted task record: ' .. bad, par)\n"
    "        elseif more.k == '1' then\n"
    "          finish_here(id, key, h, n, 'cancelled', 'Cancelled', par)\n"
    "        elseif lost and hd[3] then\n"
    "          finish_here(id, key, h, n, 'failure', 'attempt ' .. attempt ..\n"
    "            ' was lost with its host ' .. lost .. ' and the handler is not retriable', par)\n"
    "        elseif attempt - released - base >= maxa then\n"
    "          local why = 'gave up after ' .. (attempt - base) .. ' attempts'\n"
    "          if lost then\n"
    "            why = why .. ': the previous attempts were lost with their host (last: ' ..\n"
    "              lost .. ')'\n"
    "          end\n"
    "          finish_here(id, key, h, n, 'failure', why, par)\n"
    "        else\n"
    "          local tok = (attempt + 1) .. ' ' .. NOWS\n"
    "          local extra = {}\n"
    /* The host counts attempts against the cap as attempt - r: the retry base is in r. */
    "          if released + base > 0 then extra[1] = 'r=' .. (released + base) end\n"
    "          for _, f in ipairs({'x', 'pc', 'pt', 'ns', 'pl', 'of'}) do\n"
    "            if more[f] then extra[#extra + 1] = f .. '=' .. more[f] end\n"
    "          end\n"
    "          out[#out + 1] = id\n"
    "          out[#out + 1] = tok\n"
    "          out[#out + 1] = a or '{}'\n"
    "          out[#out + 1] = table.concat(extra, ' ')\n"
    "          held[#held + 1] = id\n"
    "          held[#held + 1] = tok\n"
    "          got = got + 1\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if got > 0 then out[at] = got else out[at] = nil; out[at - 1] = nil end\n"
    "    want = want - got\n"
    "    call('ZREM', q, unpack(ids))\n"
    "  end\n"
    "end\n"
    "if #held > 0 then batched('HSET', B .. ':held:' .. host, held) end\n"
    "if want > 0 then\n"
    /* Nothing more due: when the next task falls due, or another host's entry runs out (to
     * bury it on time). */
    "  local due = -1\n"
    "  for _, hd in ipairs(hs) do\n"
    "    local first = call('ZRANGE', B .. ':q:' .. hd[1], 0, 0, 'WITHSCORES')\n"
    "    if #first > 0 then\n"
    "      local d = math.max(tonumber(first[2]) - NOW, 0)\n"
    "      if due < 0 or d < due then due = d end\n"
    "    end\n"
    "  end\n"
    "  local hf = call('ZRANGE', B .. ':hosts', 0, 1, 'WITHSCORES')\n"
    "  for j = 1, #hf, 2 do\n"
    "    if hf[j] ~= host then\n"
    "      local d = math.max(tonumber(hf[j + 1]) - NOW, 0)\n"
    "      if due < 0 or d < due then due = d end\n"
    "      break\n"
    "    end\n"
    "  end\n"
    "  out[2] = due\n"
    "else\n"
    /* A full batch may have left due work behind: other hosts may take it. */
    "  out[2] = 0\n"
    "  for _, hd in ipairs(hs) do wake(hd[1]) end\n"
    "end\n"
    "flush_events(tonumber(ARGV[7]))\n"
    "push_done(0)\n"
    "flush_hist(hwin)\n"
    "out[3] = table.concat(WARN, ' ')\n"
    "return out\n"
    ;

static const char LUA_HEARTBEAT[] = LUA_PRELUDE
    /* ARGV[3] = host, [4] = its entry's ttl ms, [5] = ms finished tasks are kept (0: no
     * limit), [6] = n, then per attempt the host holds in this shard: id, lease token.
     * Renews the host's entry, buries the hosts whose entry ran out, queues again what is
     * held in the host's name but not listed, removes finished tasks past their time (of
     * up to 32 handlers per call, drawn at random). Returns {warnings, then per attempt 0
     * (held), 1 (lost), 2 (held, and a cancel was requested)}. */
    "local host, ttl, keep, n = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "call('ZADD', B .. ':hosts', NOW + ttl, host)\n"
    "bury(host)\n"
    "local out = {''}\n"
    "if n > 0 then\n"
    "  local ids = {}\n"
    "  for k = 1, n do ids[k] = ARGV[5 + 2 * k] end\n"
    "  local hkey = B .. ':held:' .. host\n"
    "  local v = redis.pcall('HMGET', hkey, unpack(ids))\n"
    "  if v.err then\n"
    /* The host's own held hash was overwritten: its attempts are lost, and are queued
     * again as if the host had died. */
    "    wrongtype(hkey)\n"
    "    v = {}\n"
    "    for k = 1, n do\n"
    "      local key = B .. ':t:' .. ids[k]\n"
    "      local r = redis.pcall('HMGET', key, 'h', 'o')\n"
    "      if not r.err and r[1] and not r[2] then\n"
    "        redis.call('HSET', key, 'n', ARGV[6 + 2 * k], 'l', host)\n"
    "        call('ZADD', B .. ':q:' .. r[1], NOW, ids[k])\n"
    "        requeued(r[1])\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  local gone = {}\n"
    "  for k = 1, n do\n"
    "    local tok = ARGV[6 + 2 * k]\n"
    "    if v[k] == tok then out[k + 1] = 0\n"
    "    elseif v[k] and v[k] == tok .. ' c' then out[k + 1] = 2\n"
    "    else out[k + 1] = 1 end\n"
    /* A record deleted or overwritten by hand while its attempt runs: the attempt is lost. */
    "    if out[k + 1] ~= 1 and redis.pcall('TYPE', B .. ':t:' .. ids[k])['ok'] ~= 'hash' then\n"
    "      out[k + 1] = 1\n"
    "      gone[#gone + 1] = ids[k]\n"
    "    end\n"
    "  end\n"
    "  if #gone > 0 then redis.call('HDEL', hkey, unpack(gone)) end\n"
    "end\n"
    /* Attempts held in the host's name that it did not list: it no longer has them (its
     * end write was lost in a failover, before a replica had it). Those claimed more than
     * one entry ttl ago are queued again, as a burial would; younger ones may be claims
     * whose reply the host has not taken yet. */
    "local listed = 0\n"
    "for k = 1, n do\n"
    "  if out[k + 1] ~= 1 then listed = listed + 1 end\n"
    "end\n"
    "local hkey = B .. ':held:' .. host\n"
    "local hl = redis.pcall('HLEN', hkey)\n"
    "if type(hl) == 'number' and hl > listed then\n"
    "  local mine = {}\n"
    "  for k = 1, n do mine[ARGV[5 + 2 * k]] = true end\n"
    "  local all = redis.call('HGETALL', hkey)\n"
    "  local drop, woken = {}, {}\n"
    "  for j = 1, #all, 2 do\n"
    "    local id, tok = all[j], string.match(all[j + 1], '^%d+ %d+')\n"
    "    local at = tok and tonumber(string.match(tok, ' (%d+)$'))\n"
    "    if not mine[id] and (not at or at < NOW - ttl) then\n"
    "      drop[#drop + 1] = id\n"
    "      local key = B .. ':t:' .. id\n"
    "      local r = redis.pcall('HMGET', key, 'h', 'o')\n"
    "      if not r.err and r[1] and not r[2] then\n"
    "        redis.call('HSET', key, 'n', tok or '0 0', 'l', host)\n"
    "        call('ZADD', B .. ':q:' .. r[1], NOW, id)\n"
    "        woken[r[1]] = true\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if #drop > 0 then batched('HDEL', hkey, drop) end\n"
    "  for h in pairs(woken) do requeued(h) end\n"
    "end\n"
    /* Some of the shard's handlers (any number of names may have been submitted to): their
     * finished tasks past the retention time go, and a name with nothing left is
     * forgotten. */
    "local hs = redis.pcall('SRANDMEMBER', B .. ':handlers', 32)\n"
    "if hs.err then wrongtype(B .. ':handlers'); hs = {} end\n"
    "for _, h in ipairs(hs) do\n"
    "  if keep > 0 then trim_time(h, keep, 1000) end\n"
    "  if redis.pcall('LLEN', B .. ':done:' .. h) == 0 and\n"
    "      redis.pcall('ZCARD', B .. ':q:' .. h) == 0 then\n"
    "    redis.call('SREM', B .. ':handlers', h)\n"
    "  end\n"
    "end\n"
    "out[1] = table.concat(WARN, ' ')\n"
    "return out\n";

static const char LUA_APPLY[] = LUA_PRELUDE
    /* A host's writes for the attempts it holds in this shard, in order. ARGV[3] = host,
     * [4] = most finished tasks kept per handler in this shard (0: no limit), [5] = ms
     * they are kept (0: no limit), [6] = events cap, [7] = the number of handler groups,
     * [8] = the history window (ms, 0: none), [9], [10] = the log lines and bytes kept per
     * task;
     * per group: handler, count, then per write: op, id, lease token, event ('' = none: a
     * code, the attempt and the payload's members, see the README), then by op:   d 
     * success, no result, the default message: nothing   E  an end: outcome, result ('' =
     * none), message ('' = the outcome's default),      parallel (1|0)   P  progress:
     * current, total, message   R  run again later: delay ms, message   L  released at
     * shutdown: message   T  a subtask's outcome: index, state (SUCCESS, FAILURE,
     * CANCELLED, RETRY), its runs,      message, result ('' = none); counted once however
     * often it is written   X  given up by the host (its lease ran out by its own clock):
     * claimable again now,      the attempt counted as lost with the host, as a burial
     * does A write applies only if the host's held hash has its id with exactly that
     * token. Returns {warnings, then per write 1 (applied), 0 (fenced out: nothing
     * changed) or 3 (not held, but the attempt ended by this host's own end write, sent
     * before and not confirmed by the replicas: nothing changed)}. */
    "local host, rmax = ARGV[3], tonumber(ARGV[4])\n"
    "local keep, evcap = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local NARG = {d = 0, E = 4, P = 3, R = 2, L = 1, T = 5, X = 0}\n"
    /* the arguments of the write at ARGV[i] (G: as many lines as it says) */
    "local function span(i)\n"
    "  if ARGV[i] == 'G' then return 6 + tonumber(ARGV[i + 4]) end\n"
    "  return 4 + NARG[ARGV[i]]\n"
    "end\n"
    "local lmax, bmax = tonumber(ARGV[9]), tonumber(ARGV[10])\n"
    "local hkey = B .. ':held:' .. host\n"
    "local ids = {}\n"
    "local i = 11\n"
    "for g = 1, tonumber(ARGV[7]) do\n"
    "  local cnt = tonumber(ARGV[i + 1])\n"
    "  i = i + 2\n"
    "  for k = 1, cnt do\n"
    "    ids[#ids + 1] = ARGV[i + 1]\n"
    "    i = i + span(i)\n"
    "  end\n"
    "end\n"
    "local held = redis.pcall('HMGET', hkey, unpack(ids))\n"
    "if held.err then wrongtype(hkey); held = {} end\n"
    "local out = {''}\n"
    "local ended = {}\n"
    /* Records known to exist in this call. */
    "local LIVE = {}\n"
    "local function live(key)\n"
    "  if LIVE[key] == nil then LIVE[key] = redis.call('EXISTS', key) == 1 end\n"
    "  return LIVE[key]\n"
    "end\n"
    "local woken = {}\n"
    "local x = 0\n"
    "i = 11\n"
    "for g = 1, tonumber(ARGV[7]) do\n"
    "  local h, cnt = ARGV[i], tonumber(ARGV[i + 1])\n"
    "  i = i + 2\n"
    "  local opened = false\n"
    "  local dl = DONE[h] or {}\n"
    "  DONE[h] = dl\n"
    "  for k = 1, cnt do\n"
    "    x = x + 1\n"
    "    local op, id, tok, ev = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]\n"
    "    local v = held[x]\n"
    /* the token, or the token with a cancel request appended */
    "    local ok = v == tok or (v and v == tok .. ' c')\n"
    "    local key = B .. ':t:' .. id\n"
    /* The first write to the record goes through pcall: a record overwritten by hand (not
     * a hash) refuses the write, like a lost lease, and stops nothing else. Writes that
     * leave the task running refuse a record deleted by hand too (they would make a new
     * one); an end written before the next heartbeat notices the deletion does make a
     * record of its fields alone. */
    "    if ok and op ~= 'd' and op ~= 'E' and not live(key) then ok = false end\n"
    "    local again = false\n"
    "    if not ok then\n"
    /* Sent before, unconfirmed? The record's n is this token once the attempt ended, by
     * its own end or by a burial (which also sets l to the host and leaves o unset). */
    "      local r = redis.pcall('HMGET', key, 'n', 'o', 'l')\n"
    "      if not r.err and r[1] == tok then\n"
    "        local o, buried = r[2], not r[2] and r[3] == host\n"
    "        if op == 'd' then again = o == 'success'\n"
    "        elseif op == 'E' then again = o == ARGV[i + 4]\n"
    "        elseif op == 'R' or op == 'L' then again = not o and not buried\n"
    "        elseif op == 'X' then again = true\n"
    "        else again = not buried end\n"
    "      end\n"
    "    elseif op == 'd' then\n"
    "      ok = type(redis.pcall('HSET', key, 'o', 'success', 'n', tok, 'f', NOWS)) == 'number'\n"
    "      if ok then\n"
    "        ended[#ended + 1] = id\n"
    "        dl[#dl + 1] = id\n"
    "        hist(h, 'success')\n"
    "      end\n"
    "    elseif op == 'E' then\n"
    "      local o, res, msg = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]\n"
    "      local f = {'o', o, 'n', tok, 'f', NOWS}\n"
    "      if res ~= '' then f[#f + 1] = 'y'; f[#f + 1] = res end\n"
    "      if msg ~= '' then\n"
    "        f[#f + 1] = o == 'failure' and 'e' or 'm'\n"
    "        f[#f + 1] = msg\n"
    "      end\n"
    "      ok = type(redis.pcall('HSET', key, unpack(f))) == 'number'\n"
    "      if ok then\n"
    "        ended[#ended + 1] = id\n"
    "        dl[#dl + 1] = ARGV[i + 7] == '1' and id .. '*' or id\n"
    "        hist(h, o)\n"
    "      end\n"
    "    elseif op == 'P' then\n"
    "      ok = type(redis.pcall('HSET', key, 'pc', ARGV[i + 4], 'pt', ARGV[i + 5],\n"
    "        'pm', ARGV[i + 6], 'pu', NOWS)) == 'number'\n"
    "    elseif op == 'G' then\n"
    /* Log lines: numbered on from the record's lq (past those the host dropped), kept in
     * {P:s}:log:<id> up to lmax lines and bmax bytes (the oldest go first, counted in ld
     * with those the host dropped); lb is the bytes kept. Each is "<seq> <attempt> <host>
     * <ts_ms> <level> <subtask|-> <text>". */
    "      local n, gone = tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])\n"
    "      local r = redis.pcall('HMGET', key, 'lq', 'lb', 'ld')\n"
    "      ok = not r.err\n"
    "      if ok then\n"
    "        local last, kept = (count(r[1] or '0') or 0) + gone, count(r[2] or '0') or 0\n"
    "        local dropped = (count(r[3] or '0') or 0) + gone\n"
    "        local lk = B .. ':log:' .. id\n"
    "        local pre = ' ' .. (attempt_of(tok) or 0) .. ' ' .. host .. ' '\n"
    "        local lines = {}\n"
    "        for j = 1, n do\n"
    "          lines[j] = (last + j) .. pre .. ARGV[i + 5 + j]\n"
    "          kept = kept + #lines[j]\n"
    "        end\n"
    "        local len = 0\n"
    "        for j = 1, n, 1000 do\n"
    "          len = call('RPUSH', lk, unpack(lines, j, math.min(j + 999, n)))\n"
    "        end\n"
    "        if len > lmax then\n"
    "          for _, old in ipairs(redis.call('LPOP', lk, len - lmax)) do kept = kept - #old end\n"
    "          dropped = dropped + len - lmax\n"
    "          len = lmax\n"
    "        end\n"
    "        while kept > bmax and len > 0 do\n"
    "          local old = redis.call('LPOP', lk)\n"
    "          if not old then break end\n"
    "          kept, len, dropped = kept - #old, len - 1, dropped + 1\n"
    "        end\n"
    "        if len == 0 and n > 0 then kept = 0 end\n"
    "        redis.call('HSET', key, 'lq', last + n, 'lb', kept, 'ld', dropped)\n"
    "      end\n"
    "    elseif op == 'R' or op == 'L' then\n"
    "      local msg = op == 'R' and ARGV[i + 5] or ARGV[i + 4]\n"
    /* The message shows while it waits (pm, like a progress message): an end without a
     * message of its own then shows the default, not this one. */
    "      ok = type(redis.pcall('HSET', key, 'n', tok, 'pm', msg)) == 'number'\n"
    "      if ok then\n"
    "        redis.call('HDEL', key, 'l')\n"
    "        if op == 'L' then redis.call('HINCRBY', key, 'r', 1) end\n"
    "        call('ZADD', B .. ':q:' .. h, op == 'R' and NOW + tonumber(ARGV[i + 4]) or NOWS, id)\n"
    "        ended[#ended + 1] = id\n"
    "        woken[h] = true\n"
    "      end\n"
    "    elseif op == 'X' then\n"
    /* Given up by its host: for this attempt, what the burial of a dead host does. */
    "      redis.call('HSET', key, 'n', tok, 'l', host)\n"
    "      call('ZADD', B .. ':q:' .. h, NOWS, id)\n"
    "      ended[#ended + 1] = id\n"
    "      woken[h] = true\n"
    "    elseif op == 'T' then\n"
    "      local sk, idx, sst = B .. ':sub:' .. id, ARGV[i + 4], ARGV[i + 5]\n"
    "      local msg, res = ARGV[i + 7], ARGV[i + 8]\n"
    "      if sst == 'RETRY' then\n"
    "        call('HSET', sk, idx .. ':n', ARGV[i + 6], idx .. ':m', msg)\n"
    "      else\n"
    "        local old = redis.pcall('HGET', sk, idx .. ':s')\n"
    "        if old ~= 'SUCCESS' and old ~= 'FAILURE' then\n"
    "          local f = {idx .. ':s', sst, idx .. ':n', ARGV[i + 6]}\n"
    "          if msg ~= '' then f[#f + 1] = idx .. ':m'; f[#f + 1] = msg end\n"
    "          if res ~= '' then f[#f + 1] = idx .. ':y'; f[#f + 1] = res end\n"
    "          call('HSET', sk, unpack(f))\n"
    "          local c = sst == 'SUCCESS' and 'ss' or sst == 'FAILURE' and 'sf'\n"
    "          if c then ok = type(redis.pcall('HINCRBY', key, c, 1)) == 'number' end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if ok then\n"
    "      out[x + 1] = 1\n"
    "      if ev ~= '' then\n"
    "        if not opened then emit('h', h); opened = true end\n"
    "        emit(id, ev)\n"
    "      end\n"
    "    else\n"
    "      out[x + 1] = again and 3 or 0\n"
    "    end\n"
    "    i = i + span(i)\n"
    "  end\n"
    "  if keep > 0 and #dl > 0 then trim_time(h, keep, 100) end\n"
    "end\n"
    "if #ended > 0 then batched('HDEL', hkey, ended) end\n"
    "push_done(rmax)\n"
    "flush_hist(tonumber(ARGV[8]))\n"
    "flush_events(evcap)\n"
    "for h in pairs(woken) do requeued(h) end\n"
    "out[1] = table.concat(WARN, ' ')\n"
    "return out\n";

static const char LUA_SPLIT[] = LUA_PRELUDE
    /* ARGV[3] = host, [4] = id, [5] = lease token, then one subtask's args per argument.
     * Persists a parallel task's split once (fenced), so recovery never splits again.
     * Returns 1, or 0 when fenced out. */
    "local host, id, tok = ARGV[3], ARGV[4], ARGV[5]\n"
    "local v = redis.pcall('HGET', B .. ':held:' .. host, id)\n"
    "if v ~= tok and v ~= tok .. ' c' then return 0 end\n"
    "local sk = B .. ':sub:' .. id\n"
    "redis.call('DEL', sk)\n"
    "local s = {}\n"
    "for j = 6, #ARGV do\n"
    "  s[#s + 1] = (j - 6) .. ':a'\n"
    "  s[#s + 1] = ARGV[j]\n"
    "end\n"
    "batched('HSET', sk, s)\n"
    "redis.call('HSET', B .. ':t:' .. id, 'ns', #ARGV - 5)\n"
    "return 1\n"
    ;

static const char LUA_CANCEL[] = LUA_PRELUDE
    /* ARGV[3] = id, [4] = most finished tasks kept per handler in this shard, [5] = events
     * cap, [6] = the history window (ms, 0: none). Returns {-1} unknown, {0} cancelled now
     * (it was waiting), {1, host} the host running it was asked to stop it, {2, state} it
     * had ended already. */
    "local id, rmax, evcap = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local key = B .. ':t:' .. id\n"
    "local r = redis.pcall('HMGET', key, 'h', 'o', 'n', 'ns')\n"
    "if r.err or not r[1] then return {-1} end\n"
    "if r[2] then return {2, STATE[r[2]] or r[2]} end\n"
    "local h = r[1]\n"
    "local q = B .. ':q:' .. h\n"
    "if not call('ZSCORE', q, id) then\n"
    "  for _, host in ipairs(call('ZRANGE', B .. ':hosts', 0, -1)) do\n"
    "    local hk = B .. ':held:' .. host\n"
    "    local v = redis.pcall('HGET', hk, id)\n"
    "    if type(v) == 'string' then\n"
    "      if not string.find(v, ' c$') then redis.call('HSET', hk, id, v .. ' c') end\n"
    "      redis.call('HSET', key, 'k', '1')\n"
    "      redis.call('PUBLISH', P .. ':ctl:' .. host, 'cancel ' .. id)\n"
    "      return {1, host}\n"
    "    end\n"
    "  end\n"
    "end\n"
    /* Waiting in its queue (or, after a hand edit, neither queued nor held): it ends now. */
    "call('ZREM', q, id)\n"
    "finish_here(id, key, h, r[3] or nil, 'cancelled', 'Cancelled before it ran', r[4] ~= false)\n"
    "push_done(rmax)\n"
    "flush_hist(tonumber(ARGV[6]))\n"
    "flush_events(evcap)\n"
    "return {0}\n"
    ;

static const char LUA_LEAVE[] = LUA_PRELUDE
    /* ARGV[3] = host. A host's graceful exit from this shard: its entry goes unless it
     * still holds attempts (then they are buried when the entry runs out). Returns the
     * attempts held. */
    "local host = ARGV[3]\n"
    "local hk = B .. ':held:' .. host\n"
    "local n = redis.pcall('HLEN', hk)\n"
    "if type(n) ~= 'number' then wrongtype(hk); n = 0 end\n"
    "if n == 0 then redis.call('ZREM', B .. ':hosts', host) end\n"
    "return n\n"
    ;

static const char LUA_HOST[] = 
    "#!lua\n"
    /* KEYS[1] = "{P}"; ARGV[1] = host, [2] = its entry's ttl ms, then field/value pairs of
     * its description. Hosts for display (bgtaskctl hosts, /v1/hosts): renews this host's
     * entry and removes the entries that ran out. Returns {Redis' time (ms), then the
     * handlers an operator paused ({P}:paused)}. */
    "local G = KEYS[1]\n"
    "local T = redis.call('TIME')\n"
    "local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)\n"
    "local host, ttl = ARGV[1], tonumber(ARGV[2])\n"
    "local hosts = G .. ':hosts'\n"
    "if redis.call('TYPE', hosts)['ok'] ~= 'zset' then redis.call('DEL', hosts) end\n"
    "for _, d in ipairs(redis.call('ZRANGEBYSCORE', hosts, '-inf', NOW)) do\n"
    "  if d ~= host then\n"
    "    redis.call('ZREM', hosts, d)\n"
    "    redis.call('DEL', G .. ':host:' .. d)\n"
    "  end\n"
    "end\n"
    "redis.call('ZADD', hosts, NOW + ttl, host)\n"
    "local hk = G .. ':host:' .. host\n"
    "redis.call('DEL', hk)\n"
    "redis.call('HSET', hk, 'updated_ms', NOW, unpack(ARGV, 3))\n"
    "redis.call('PEXPIRE', hk, ttl * 2)\n"
    "local paused = redis.pcall('HKEYS', G .. ':paused')\n"
    "if paused.err then paused = {} end\n"
    "table.insert(paused, 1, NOW)\n"
    "return paused\n"
    ;

#endif
