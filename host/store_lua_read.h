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

#endif
