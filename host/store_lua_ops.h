/*
 * store_lua_ops.h - the Lua scripts of the operator's operations (Redis
 * protocol 2, the README's "Redis protocol" section): retry, the selection
 * and purge of finished tasks, and pause/resume. Included by store.c only,
 * after store_lua.h, whose prelude the shard scripts start with (KEYS[1] =
 * "{P:s}", ARGV[1] = P, ARGV[2] = s).
 *
 * They add no write to the paths every task takes: bulk operations find
 * finished tasks through the per-handler done lists that retention keeps
 * anyway, and unfinished ones through the queues and the hosts' held hashes.
 */
#ifndef BGT_STORE_LUA_OPS_H
#define BGT_STORE_LUA_OPS_H

/* The outcomes named in a space-separated list, as a set W (empty list: ANY is true). */
#define LUA_WANT(arg)                                                                             \
    "local ANY, W = " arg " == '', {}\n"                                                          \
    "for o in string.gmatch(" arg ", '%S+') do W[o] = true end\n"                                 \
    /* A time limit, exclusive: '' none, '-N' after N ms before Redis' now (so that '-0'       \
     * takes what ended in this very ms too), else ms. */                                         \
    "local function limit_ms(v)\n"                                                                \
    "  if v == '' then return nil end\n"                                                          \
    "  if string.sub(v, 1, 1) == '-' then return NOW - tonumber(string.sub(v, 2)) + 1 end\n"     \
    "  return tonumber(v)\n"                                                                      \
    "end\n"

/* Entries to take out of the done lists: GONE[h][entry] = true, NGONE[h] their count. One
 * LREM each (from the tail: what is retried ended lately, most often) for a few; else the
 * list once, filtered: a bulk operation costs one pass over the list, not one per task. */
#define LUA_DROP_DONE                                                                             \
    "local GONE, NGONE = {}, {}\n"                                                                \
    "local function gone(h, entry)\n"                                                             \
    "  GONE[h] = GONE[h] or {}\n"                                                                 \
    "  GONE[h][entry] = true\n"                                                                   \
    "  NGONE[h] = (NGONE[h] or 0) + 1\n"                                                          \
    "end\n"                                                                                       \
    "local function drop_done()\n"                                                                \
    "  for h, g in pairs(GONE) do\n"                                                              \
    "    local dk = B .. ':done:' .. h\n"                                                         \
    "    if NGONE[h] <= 8 then\n"                                                                 \
    "      for x in pairs(g) do call('LREM', dk, -1, x) end\n"                                    \
    "    else\n"                                                                                  \
    "      local all = redis.pcall('LRANGE', dk, 0, -1)\n"                                        \
    "      if not all.err then\n"                                                                 \
    "        local keep = {}\n"                                                                   \
    "        for _, x in ipairs(all) do\n"                                                        \
    "          if not g[x] then keep[#keep + 1] = x end\n"                                        \
    "        end\n"                                                                               \
    "        redis.call('DEL', dk)\n"                                                             \
    "        batched('RPUSH', dk, keep)\n"                                                        \
    "      end\n"                                                                                 \
    "    end\n"                                                                                   \
    "  end\n"                                                                                     \
    "end\n"

static const char LUA_RETRY[] = LUA_PRELUDE
    /* ARGV[3] = events cap, [4] = the outcomes a task may have to be retried (space-separated,
     * '' = any), then task ids. Each finished task runs again as a new attempt: a single one
     * in FAILURE or CANCELLED as a whole (error, result and end cleared; the cap counts the
     * attempts from here: b = the attempts used so far), a parallel one its failed and
     * cancelled subtasks (with at least one attempt left). rt counts these retries. Returns
     * per id two numbers: what happened (1: a single task runs again; n > 0: n subtasks of a
     * parallel one do; -1 unknown, -2 its subtasks count (ns) is corrupted, -3 still running,
     * -4 nothing to retry, -5 its outcome is not one of those wanted) and 1 for a parallel
     * task, else 0. */
    "local evcap = tonumber(ARGV[3])\n"
    LUA_WANT("ARGV[4]")
    LUA_DROP_DONE
    "local out, woken = {}, {}\n"
    "for j = 5, #ARGV do\n"
    "  local id = ARGV[j]\n"
    "  local key = B .. ':t:' .. id\n"
    "  local r = redis.pcall('HMGET', key, 'h', 'o', 'ns', 'n', 'r', 'x', 'ss', 'b', 'pc', 'pt')\n"
    "  local res, par, entry, msg, cur, total = 0, r[3] and 1 or 0\n"
    "  local h, o = r[1], r[2]\n"
    "  local attempt = attempt_of(r[4]) or 0\n"
    "  if r.err or not h then res, par = -1, 0\n"
    "  elseif not o then res = -3\n"
    "  elseif not ANY and not W[o] then res = -5\n"
    "  elseif r[3] then\n"
    "    local ns = count(r[3])\n"
    "    local reset, sk = {}, B .. ':sub:' .. id\n"
    "    for k = 0, (ns or 0) - 1, 1000 do\n"
    "      local f = {}\n"
    "      for y = k, math.min(k + 999, ns - 1) do f[#f + 1] = y .. ':s' end\n"
    "      local st = redis.pcall('HMGET', sk, unpack(f))\n"
    "      if st.err then ns = nil; break end\n"
    "      for y = 1, #f do\n"
    "        if st[y] == 'FAILURE' or st[y] == 'CANCELLED' then reset[#reset + 1] = f[y] end\n"
    "      end\n"
    "    end\n"
    "    if not ns then res = -2\n"
    "    elseif #reset == 0 then res = -4\n"
    "    else\n"
    "      batched('HDEL', sk, reset)\n"
    "      msg = 'Retrying ' .. #reset .. ' failed subtask(s)'\n"
    "      local used = attempt - (count(r[5] or '0') or 0) - (count(r[8] or '0') or 0)\n"
    "      local x = count(r[6] or '0', 1000) or 0\n"
    "      redis.call('HDEL', key, 'o', 'f', 'e', 'y', 'k', 'l', 'm')\n"
    "      redis.call('HSET', key, 'pm', msg, 'sf', '0')\n"
    "      if x == 0 or used >= x then redis.call('HSET', key, 'x', used + 1) end\n"
    "      entry, cur, total, res = id .. '*', count(r[7] or '0') or 0, ns, #reset\n"
    "    end\n"
    "  elseif o ~= 'failure' and o ~= 'cancelled' then res = -4\n"
    "  else\n"
    "    msg = 'Retried by an operator (was ' .. STATE[o] .. ')'\n"
    "    local used = attempt - (count(r[5] or '0') or 0)\n"
    "    redis.call('HDEL', key, 'o', 'f', 'e', 'y', 'k', 'l', 'm')\n"
    "    redis.call('HSET', key, 'pm', msg, 'pu', NOWS, 'b', math.max(used, 0))\n"
    "    entry, cur, total, res = id, tonumber(r[9]) or 0, tonumber(r[10]) or 0, 1\n"
    "  end\n"
    "  if entry then\n"
    "    redis.call('HINCRBY', key, 'rt', 1)\n"
    "    gone(h, entry)\n"
    "    call('ZADD', B .. ':q:' .. h, NOWS, id)\n"
    "    woken[h] = true\n"
    "    emit('h', h)\n"
    "    emit(id, 'u' .. attempt .. ' \"message\":' .. jstr(msg) .. ',\"current_progress\":' ..\n"
    "      tostring(cur) .. ',\"total_progress\":' .. tostring(total))\n"
    "  end\n"
    "  out[#out + 1] = res\n"
    "  out[#out + 1] = par\n"
    "end\n"
    "drop_done()\n"
    "flush_events(evcap)\n"
    "for h in pairs(woken) do requeued(h) end\n"
    "return out\n"
    ;

static const char LUA_SELECT[] = LUA_PRELUDE
    /* Reads only. ARGV[3] = mode, then by mode:
     *   done  finished tasks: [4] = handler ('' = every handler of the shard, by name), [5] =
     *         outcomes (space-separated, '' = any), [6] = finished at or after (ms, '' = any),
     *         [7] = finished before ('' = any; '-N': N ms or more before now), [8] = where to go on
     *         ("<handler> <index>", '' = from the start), [9] = most records to read. The done
     *         lists are in the order tasks ended: a list is left at its first task that ended
     *         too late.
     *   open  unfinished tasks of handler [4]: waiting ones from its queue (at most [5]) and
     *         running ones from the held hashes; the count is of all there are.
     *   ids   the tasks named from [4] on: per id its outcome ('' unfinished, '-' unknown).
     * Returns {where to go on ('' = all seen), the count of matches, then per task: id, and
     * (done) its finished ms, (open) '', (ids) its outcome}. */
    "local mode = ARGV[3]\n"
    "local out = {'', 0}\n"
    "local function add(id, v) out[#out + 1] = id; out[#out + 1] = v end\n"
    "if mode == 'ids' then\n"
    "  for j = 4, #ARGV do\n"
    "    local r = redis.pcall('HMGET', B .. ':t:' .. ARGV[j], 'h', 'o')\n"
    "    if r.err or not r[1] then add(ARGV[j], '-') else add(ARGV[j], r[2] or '') end\n"
    "  end\n"
    "  out[2] = #ARGV - 3\n"
    "  return out\n"
    "end\n"
    "if mode == 'open' then\n"
    "  local h, most = ARGV[4], tonumber(ARGV[5])\n"
    "  local q = B .. ':q:' .. h\n"
    "  local n = call('ZCARD', q)\n"
    "  for _, id in ipairs(call('ZRANGE', q, 0, most - 1)) do add(id, '') end\n"
    "  for _, host in ipairs(call('ZRANGE', B .. ':hosts', 0, -1)) do\n"
    "    local held = redis.pcall('HKEYS', B .. ':held:' .. host)\n"
    "    for _, id in ipairs(held.err and {} or held) do\n"
    "      local r = redis.pcall('HMGET', B .. ':t:' .. id, 'h', 'o')\n"
    "      if not r.err and r[1] == h and not r[2] then\n"
    "        n = n + 1\n"
    "        if #out < 2 + 2 * most then add(id, '') end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  out[2] = n\n"
    "  return out\n"
    "end\n"
    LUA_WANT("ARGV[5]")
    "local since, upto = limit_ms(ARGV[6]), limit_ms(ARGV[7])\n"
    "local left, n = tonumber(ARGV[9]), 0\n"
    "local hs = {ARGV[4]}\n"
    "if ARGV[4] == '' then\n"
    "  hs = redis.pcall('SMEMBERS', B .. ':handlers')\n"
    "  if hs.err then hs = {} end\n"
    "  table.sort(hs)\n"
    "end\n"
    "local ch, ci = string.match(ARGV[8], '^(%S+) (%d+)$')\n"
    "for _, h in ipairs(hs) do\n"
    "  if not ch or h >= ch then\n"
    "    local at = ch == h and tonumber(ci) or 0\n"
    "    ch = nil\n"
    "    local dk, stop = B .. ':done:' .. h, false\n"
    "    while not stop do\n"
    "      if left <= 0 then\n"
    "        out[1], out[2] = h .. ' ' .. at, n\n"
    "        return out\n"
    "      end\n"
    "      local ids = redis.pcall('LRANGE', dk, at, at + math.min(left, 1000) - 1)\n"
    "      if ids.err or #ids == 0 then break end\n"
    "      for _, x in ipairs(ids) do\n"
    "        local id = string.byte(x, -1) == 42 and string.sub(x, 1, -2) or x\n"
    "        local r = redis.pcall('HMGET', B .. ':t:' .. id, 'o', 'f')\n"
    "        local f = not r.err and r[1] and tonumber(r[2])\n"
    "        if f and upto and f >= upto then stop = true; break end\n"
    "        if f and (ANY or W[r[1]]) and (not since or f >= since) then\n"
    "          n = n + 1\n"
    "          add(id, r[2])\n"
    "        end\n"
    "      end\n"
    "      at, left = at + #ids, left - #ids\n"
    "    end\n"
    "  end\n"
    "end\n"
    "out[2] = n\n"
    "return out\n"
    ;

static const char LUA_PURGE[] = LUA_PRELUDE
    /* ARGV[3] = outcomes to delete (space-separated, '' = any), [4] = only those finished
     * before ('' = any; '-N': N ms or more before now), then task ids. Deletes each finished task
     * that still matches: its record, its subtasks, its log and its entry in its handler's done list
     * (the events stay: the stream is capped on its own). Returns per id 1 (deleted), 0 (it
     * no longer matches: left alone), -1 (unknown), -2 (unfinished: left alone). */
    LUA_WANT("ARGV[3]")
    LUA_DROP_DONE
    "local upto = limit_ms(ARGV[4])\n"
    "local out = {}\n"
    "for j = 5, #ARGV do\n"
    "  local id = ARGV[j]\n"
    "  local key = B .. ':t:' .. id\n"
    "  local r = redis.pcall('HMGET', key, 'h', 'o', 'f')\n"
    "  local f = not r.err and tonumber(r[3])\n"
    "  if r.err or not r[1] then out[#out + 1] = -1\n"
    "  elseif not r[2] then out[#out + 1] = -2\n"
    "  elseif (not ANY and not W[r[2]]) or (upto and not (f and f < upto)) then\n"
    "    out[#out + 1] = 0\n"
    "  else\n"
    "    redis.call('DEL', key, B .. ':sub:' .. id, B .. ':log:' .. id)\n"
    /* a parallel task's entry ends in '*' */
    "    gone(r[1], id)\n"
    "    gone(r[1], id .. '*')\n"
    "    out[#out + 1] = 1\n"
    "  end\n"
    "end\n"
    "drop_done()\n"
    "return out\n"
    ;

static const char LUA_PAUSE[] =
    "#!lua\n"
    /* KEYS[1] = "{P}"; ARGV[1] = P, [2] = 'pause' or 'resume', [3] = handler, [4] = reason.
     * {P}:paused holds handler -> "<paused_ms> <reason>". A change is told to every host on
     * P:ctl ("pause <h>", "resume <h>"); hosts also read the hash at each heartbeat. Returns
     * {1 changed | 0 not, the entry now ('' = not paused)}. */
    "local T = redis.call('TIME')\n"
    "local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)\n"
    "local P, op, h = ARGV[1], ARGV[2], ARGV[3]\n"
    "local key = KEYS[1] .. ':paused'\n"
    "local v = redis.pcall('HGET', key, h)\n"
    "if type(v) == 'table' and v.err then\n"
    "  redis.log(redis.LOG_WARNING, 'bgtask: ' .. key ..\n"
    "    ' holds a value of the wrong type: treated as absent and removed')\n"
    "  redis.call('DEL', key)\n"
    "  v = false\n"
    "end\n"
    "if op == 'pause' then\n"
    "  if v then return {0, v} end\n"
    "  v = NOW .. ' ' .. ARGV[4]\n"
    "  redis.call('HSET', key, h, v)\n"
    "elseif not v then\n"
    "  return {0, ''}\n"
    "else\n"
    "  v = ''\n"
    "  redis.call('HDEL', key, h)\n"
    "end\n"
    "redis.call('PUBLISH', P .. ':ctl', op .. ' ' .. h)\n"
    "return {1, v}\n"
    ;

#endif
