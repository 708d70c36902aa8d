/*
 * store_lua_read.h - the read-only scripts of the Redis protocol (see
 * store_lua.h for the rest, and the README's "Redis protocol" section).
 * They change nothing ("no-writes"), so Redis runs them under memory
 * pressure too. Included by store.c only.
 */
#ifndef BGT_STORE_LUA_READ_H
#define BGT_STORE_LUA_READ_H

static const char LUA_HISTORY[] =
    "#!lua flags=no-writes\n"
    /* KEYS[1] = "{P:s}"; ARGV[1] = P, [2] = s, [3] = the first minute (ms / 60000), [4] = the
     * minute after the last, [5] = minutes per bucket, [6] = a handler, '' = all. Sums the
     * counts of tasks ended per minute ({P:s}:hist:<minute>, field "<handler>|<outcome>")
     * into buckets. Returns {field, bucket (0-based), count, ...}, buckets with counts only.
     * Reads only. */
    "local B = KEYS[1]\n"
    "local from, to, step, only = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]\n"
    "local OUTCOMES = {'success', 'partial_success', 'failure', 'cancelled'}\n"
    "local want = {}\n"
    "for k, o in ipairs(OUTCOMES) do want[k] = only .. '|' .. o end\n"
    "local sums, order = {}, {}\n"
    "local function add(f, b, v)\n"
    "  local n = tonumber(v)\n"
    "  if not n then return end\n"
    "  local key = f .. ' ' .. b\n"
    "  if not sums[key] then order[#order + 1] = {f, b, key} end\n"
    "  sums[key] = (sums[key] or 0) + n\n"
    "end\n"
    "for m = from, to - 1 do\n"
    "  local k = B .. ':hist:' .. m\n"
    "  local b = math.floor((m - from) / step)\n"
    "  if only ~= '' then\n"
    "    local r = redis.pcall('HMGET', k, unpack(want))\n"
    "    if not r.err then\n"
    "      for j = 1, #want do\n"
    "        if r[j] then add(want[j], b, r[j]) end\n"
    "      end\n"
    "    end\n"
    "  else\n"
    "    local r = redis.pcall('HGETALL', k)\n"
    "    if not r.err then\n"
    "      for j = 1, #r, 2 do add(r[j], b, r[j + 1]) end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local out = {}\n"
    "for _, e in ipairs(order) do\n"
    "  out[#out + 1] = e[1]\n"
    "  out[#out + 1] = e[2]\n"
    "  out[#out + 1] = sums[e[3]]\n"
    "end\n"
    "return out\n"
    ;

static const char LUA_LIST[] =
    "#!lua flags=no-writes\n"
    /* KEYS[1] = "{P:s}"; ARGV[1] = P, [2] = s, [3] = a handler ('' = every one of the
     * shard's), [4] = want, [5] = since ms, [6] = until ms (exclusive), [7] = the cursor's
     * key ('' = none) and [8] its id: only tasks whose (key, id) is below it, [9] = 'f'
     * finished tasks, 'o' unfinished ones, 'a' both, [10] = the outcomes wanted ('' any,
     * else "a,b"), [11] = entries a done list may scan past want. A task's key is its
     * finished ms (f) once finished, else its created ms (c). Returns {bound, then id, key
     * per candidate}: per done list, its newest candidates (at least want of them, and the
     * whole run of its last key), found by a binary search on f (the lists are in the
     * order tasks ended); bound -1 when every list was read down to since, else the
     * highest key from which on every list was read whole. Unfinished: the newest want of
     * the queues and held hashes together (and the rest of the last one's key). Reads
     * only. */
    "local B = KEYS[1]\n"
    "local only, want = ARGV[3], tonumber(ARGV[4])\n"
    "local since, untl = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local ck, cid = tonumber(ARGV[7]), ARGV[8]\n"
    "local which, budget = ARGV[9], tonumber(ARGV[11])\n"
    "local okout\n"
    "if ARGV[10] ~= '' then\n"
    "  okout = {}\n"
    "  for o in string.gmatch(ARGV[10], '[^,]+') do okout[o] = true end\n"
    "end\n"
    "local function fits(k, id)\n"
    "  if k < since or k >= untl then return false end\n"
    "  return not ck or k < ck or (k == ck and id < cid)\n"
    "end\n"
    "local hs = {only}\n"
    "if only == '' then\n"
    "  hs = redis.pcall('SMEMBERS', B .. ':handlers')\n"
    "  if hs.err then hs = {} end\n"
    "end\n"
    "local out = {-1}\n"
    "local bound = -1\n"
    "local function bare(x)\n"
    "  if string.byte(x, -1) == 42 then return string.sub(x, 1, -2) end\n"
    "  return x\n"
    "end\n"
    "local function rec(id, ...)\n"
    "  local r = redis.pcall('HMGET', B .. ':t:' .. id, ...)\n"
    "  if r.err then return {} end\n"
    "  return r\n"
    "end\n"
    "if which ~= 'o' then\n"
    "  local top = untl - 1\n"
    "  if ck and ck < top then top = ck end\n"
    "  for _, h in ipairs(hs) do\n"
    "    local dk = B .. ':done:' .. h\n"
    "    local len = redis.pcall('LLEN', dk)\n"
    "    if type(len) == 'number' and len > 0 then\n"
    /* the first position whose task ended after top */
    "      local lo, hi = 0, len\n"
    "      while lo < hi do\n"
    "        local mid = math.floor((lo + hi) / 2)\n"
    "        local f = tonumber(rec(bare(redis.call('LINDEX', dk, mid)), 'f')[1]) or -1\n"
    "        if f > top then hi = mid else lo = mid + 1 end\n"
    "      end\n"
    "      local p, got, seen, runf, stop = lo - 1, 0, 0, nil, -1\n"
    "      while p >= 0 and stop < 0 do\n"
    "        local chunk = redis.call('LRANGE', dk, math.max(0, p - 99), p)\n"
    "        for j = #chunk, 1, -1 do\n"
    "          local id = bare(chunk[j])\n"
    "          local r = rec(id, 'f', 'o')\n"
    "          local f = tonumber(r[1]) or -1\n"
    "          if runf and f ~= runf and (got >= want or seen >= want + budget) then\n"
    "            stop = runf\n"
    "            break\n"
    "          end\n"
    "          if f < since then p = -1; break end\n"
    "          runf, seen = f, seen + 1\n"
    "          if fits(f, id) and (not okout or okout[r[2]]) then\n"
    "            out[#out + 1] = id\n"
    "            out[#out + 1] = f\n"
    "            got = got + 1\n"
    "          end\n"
    "        end\n"
    "        p = p - 100\n"
    "      end\n"
    "      if stop > bound then bound = stop end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if which ~= 'f' then\n"
    "  local ids = {}\n"
    "  for _, h in ipairs(hs) do\n"
    "    local q = redis.pcall('ZRANGE', B .. ':q:' .. h, 0, -1)\n"
    "    if not q.err then for _, id in ipairs(q) do ids[#ids + 1] = id end end\n"
    "  end\n"
    "  local hosts = redis.pcall('ZRANGE', B .. ':hosts', 0, -1)\n"
    "  if hosts.err then hosts = {} end\n"
    "  for _, host in ipairs(hosts) do\n"
    "    local k = redis.pcall('HKEYS', B .. ':held:' .. host)\n"
    "    if not k.err then for _, id in ipairs(k) do ids[#ids + 1] = id end end\n"
    "  end\n"
    "  local c = {}\n"
    "  for _, id in ipairs(ids) do\n"
    "    local r = rec(id, 'c', 'h', 'o')\n"
    "    local k = tonumber(r[1])\n"
    "    if k and not r[3] and (only == '' or r[2] == only) and fits(k, id) then\n"
    "      c[#c + 1] = {k, id}\n"
    "    end\n"
    "  end\n"
    "  table.sort(c, function(a, b) return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2]) end)\n"
    /* the newest want, and the rest of the last one's key; the bound when more are left */
    "  local j = 1\n"
    "  while j <= #c and (j <= want or c[j][1] == c[j - 1][1]) do\n"
    "    out[#out + 1] = c[j][2]\n"
    "    out[#out + 1] = c[j][1]\n"
    "    j = j + 1\n"
    "  end\n"
    "  if j <= #c and c[j - 1][1] > bound then bound = c[j - 1][1] end\n"
    "end\n"
    "out[1] = bound\n"
    "return out\n"
    ;

#endif
