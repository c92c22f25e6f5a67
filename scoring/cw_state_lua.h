/*
 * cw_state_lua.h — the Lua sources of the three Redis scripts cw_state
 * loads on connect (private to cw_state.c; kept apart so the C reads as C
 * and the Lua as Lua).
 *
 * Each script is assembled by cw_state.c as
 *     <layout prelude> .. CW_LUA_COMMON .. <body>
 * where the prelude, generated from the cw_layout_t, declares the tables
 * the Lua code reads:
 *     CN[c] counter names          CR[c] days a counter keeps (retention)
 *     CQ[c] days its queries read  SN[s] set names     SR[s] days a set keeps
 *     SQ[s] query indices on set s Q[j] = {is_set, index (1-based), offset, len}
 *     TTL   key time-to-live, seconds          HL  score-history length
 * so the same text always yields the same SHA for the same layout, and a
 * config change simply loads a different script. CW_LUA_COMMON holds the
 * read code shared by APPLY and READ (one copy of the window arithmetic).
 *
 * Numbers: Redis's Lua is 5.1 with double numbers; every integer we keep
 * (epoch ms, offsets, 52-bit day masks) is < 2^53 and so exact, and every
 * number sent back to Redis is formatted with F() ("%.0f") because Lua's
 * default "%.14g" would round 16-digit masks.
 *
 * Day masks: a set member's value is "<lastday>,<mask>", bit i of mask set
 * when the member was active on day lastday - i (i < 52). Bits are read and
 * written with exact power-of-two arithmetic (floor division, fmod 2^52),
 * no bit library needed.
 *
 * Account hash fields (short names keep small hashes listpack-encoded):
 *   "<day>:<counter>" per-day counter    "o:<p>" last offset applied from p
 *   "m:<counter>" oldest day that may still hold a field of the counter
 *   "m:<set>" day the set was last pruned    "p" partition of the account
 *   fm/lm first/last event ms   fl/ll first/last login ms   kc cancel ms
 *   k<i> first use of key feature i    arr/sea/pln/ren "<attr ts>,<value>"
 *   sc/bd/ti/ph/am score, band, tier, phase, active mask   a<r> last alert
 *   ms of reason r   lid last alert id
 * The score snapshot JSON (several hundred bytes) lives in its own string
 * key P:snap:{id}: a hash value over hash-max-listpack-value (64) would
 * turn the whole account hash into a hashtable, about 3x the memory.
 */
#ifndef CW_STATE_LUA_H
#define CW_STATE_LUA_H

/* Fields returned by the read, in this order (cw_state.c mirrors it in
 * enum cw_rf). */
#define CW_LUA_COMMON                                                                              \
    "local DAY = 86400000\n"                                                                       \
    "local P52 = 4503599627370496\n"                                                               \
    "local function F(x) return string.format('%.0f', x) end\n"                                    \
    "-- day strings are formatted once per call (number formatting is the\n"                       \
    "-- costliest thing these scripts do)\n"                                                       \
    "local DSC = {}\n"                                                                             \
    "local function DS(d)\n"                                                                       \
    "  local x = DSC[d]\n"                                                                         \
    "  if x == nil then x = F(d) DSC[d] = x end\n"                                                 \
    "  return x\n"                                                                                 \
    "end\n"                                                                                        \
    "-- HMGET of a long field list, in chunks (Lua's unpack limit)\n"                              \
    "local function mget(key, a)\n"                                                                \
    "  local r = {}\n"                                                                             \
    "  local i = 1\n"                                                                              \
    "  while i <= #a do\n"                                                                         \
    "    local j = i + 999\n"                                                                      \
    "    if j > #a then j = #a end\n"                                                              \
    "    local v = redis.call('HMGET', key, unpack(a, i, j))\n"                                    \
    "    for k = 1, #v do r[i + k - 1] = v[k] end\n"                                               \
    "    i = j + 1\n"                                                                              \
    "  end\n"                                                                                      \
    "  return r\n"                                                                                 \
    "end\n"                                                                                        \
    "local function hasbit(x, b) return math.floor(x / b) % 2 == 1 end\n"                          \
    "local RF = {'p','arr','sea','ren','pln','fm','fl','ll','lm','kc','sc','bd','am','lid',\n"     \
    "  'a0','a1','a2','a3','a4','a5','k0','k1','k2','k3','k4','k5','k6','k7'}\n"                   \
    "local function lastday(v)\n"                                                                  \
    "  local L, M = string.match(v, '^(%-?%d+),(%d+)$')\n"                                         \
    "  if L == nil then return nil, nil end\n"                                                     \
    "  return tonumber(L), tonumber(M)\n"                                                          \
    "end\n"                                                                                        \
    "local function bulk(cmd, key, a)\n"                                                           \
    "  local n = #a\n"                                                                             \
    "  local i = 1\n"                                                                              \
    "  while i <= n do\n"                                                                          \
    "    local j = i + 999\n"                                                                      \
    "    if j > n then j = n end\n"                                                                \
    "    redis.call(cmd, key, unpack(a, i, j))\n"                                                  \
    "    i = j + 1\n"                                                                              \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "-- Read an account as of asof: {asof, {query results}, {RF values}, score_7d}\n"              \
    "local function rd(acct, hist, skeys, asof)\n"                                                 \
    "  local day = math.floor(asof / DAY)\n"                                                       \
    "  -- per counter, prefix sums over the days asof_day - k (k = 0..CQ-1);\n"                    \
    "  -- m:<counter> is the oldest day that can hold a field, so only days\n"                     \
    "  -- from there are fetched and a counter without data costs nothing\n"                       \
    "  local mk = {}\n"                                                                            \
    "  for c = 1, #CN do mk[c] = 'm:' .. CN[c] end\n"                                              \
    "  local mv = {}\n"                                                                            \
    "  if #CN > 0 then mv = redis.call('HMGET', acct, unpack(mk)) end\n"                           \
    "  local pre = {}\n"                                                                           \
    "  for c = 1, #CN do\n"                                                                        \
    "    local need = CQ[c]\n"                                                                     \
    "    local s = {[0] = 0}\n"                                                                    \
    "    local m = tonumber(mv[c])\n"                                                              \
    "    local kn = 0\n"                                                                           \
    "    if need > 0 and m ~= nil and m <= day then\n"                                             \
    "      kn = day - m + 1\n"                                                                     \
    "      if kn > need then kn = need end\n"                                                      \
    "      local f = {}\n"                                                                         \
    "      for k = 0, kn - 1 do f[k + 1] = DS(day - k) .. ':' .. CN[c] end\n"                      \
    "      local v = redis.call('HMGET', acct, unpack(f))\n"                                       \
    "      for k = 1, kn do s[k] = s[k - 1] + (tonumber(v[k]) or 0) end\n"                         \
    "    end\n"                                                                                    \
    "    for k = kn + 1, need do s[k] = s[k - 1] end\n"                                            \
    "    pre[c] = s\n"                                                                             \
    "  end\n"                                                                                      \
    "  local q = {}\n"                                                                             \
    "  for j = 1, #Q do\n"                                                                         \
    "    local d = Q[j]\n"                                                                         \
    "    if d[1] == 0 then q[j] = pre[d[2]][d[3] + d[4]] - pre[d[2]][d[3]] else q[j] = 0 end\n"    \
    "  end\n"                                                                                      \
    "  for s = 1, #SN do\n"                                                                        \
    "    local qs = SQ[s]\n"                                                                       \
    "    if #qs > 0 then\n"                                                                        \
    "      local vals = redis.call('HVALS', skeys[s])\n"                                           \
    "      for m = 1, #vals do\n"                                                                  \
    "        local L, M = lastday(vals[m])\n"                                                      \
    "        if L and M then\n"                                                                    \
    "          for t = 1, #qs do\n"                                                                \
    "            local j = qs[t]\n"                                                                \
    "            local d = Q[j]\n"                                                                 \
    "            local lo = L - (day - d[3])\n"                                                    \
    "            local hi = lo + d[4] - 1\n"                                                       \
    "            if lo < 0 then lo = 0 end\n"                                                      \
    "            if hi > 51 then hi = 51 end\n"                                                    \
    "            if lo <= hi and math.floor(M / 2 ^ lo) % 2 ^ (hi - lo + 1) > 0 then\n"            \
    "              q[j] = q[j] + 1\n"                                                              \
    "            end\n"                                                                            \
    "          end\n"                                                                              \
    "        end\n"                                                                                \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  local hm = redis.call('HMGET', acct, unpack(RF))\n"                                         \
    "  -- the last login as of asof: a later login (applied before this\n"                         \
    "  -- read of an earlier time) is replaced by the last day <= asof with\n"                     \
    "  -- logins (its end, or asof itself), exact for day-end decisions\n"                         \
    "  local ll = tonumber(hm[8])\n"                                                               \
    "  if LC > 0 and ll and ll > asof then\n"                                                      \
    "    local n = CR[LC]\n"                                                                       \
    "    local f = {}\n"                                                                           \
    "    for k = 0, n - 1 do f[k + 1] = DS(day - k) .. ':' .. CN[LC] end\n"                        \
    "    local v = redis.call('HMGET', acct, unpack(f))\n"                                         \
    "    local found = day - n\n"                                                                  \
    "    for k = 1, n do\n"                                                                        \
    "      if (tonumber(v[k]) or 0) > 0 then found = day - (k - 1) break end\n"                    \
    "    end\n"                                                                                    \
    "    local fl = tonumber(hm[7])\n"                                                             \
    "    if found == day then hm[8] = F(asof)\n"                                                   \
    "    elseif found > day - n then hm[8] = F((found + 1) * DAY - 1)\n"                           \
    "    elseif fl == nil or fl > asof then hm[8] = false\n"                                       \
    "    else hm[8] = F((found + 1) * DAY - 1) end\n"                                              \
    "  end\n"                                                                                      \
    "  local fl = tonumber(hm[7])\n"                                                               \
    "  if fl and fl > asof then hm[7] = false end -- no login yet as of asof\n"                    \
    "  local s7 = false\n"                                                                         \
    "  local h = redis.call('LRANGE', hist, 0, -1)\n"                                              \
    "  local lim = asof - 7 * DAY\n"                                                               \
    "  for k = 1, #h do\n"                                                                         \
    "    local a, sc = string.match(h[k], '^(%-?%d+),(.+)$')\n"                                    \
    "    if a and tonumber(a) <= lim then s7 = sc break end\n"                                     \
    "  end\n"                                                                                      \
    "  return {asof, q, hm, s7}\n"                                                                 \
    "end\n"

/*
 * APPLY. KEYS: account hash, history, due:<p>, wm, accounts, snapshot,
 * then one key per layout set. ARGV: now_ms, mode (0 event, 1 wall), partition,
 * account id, number of events, then per event:
 *   offset, ts, flags (1 activity, 2 login, 4 account, 8 cancellation),
 *   key feature (0-based, -1 none), nc, nc x (counter index 0-based,
 *   amount), ns, ns x (set index 0-based, member), and for account events
 *   arr, seats, plan, renewal_ms ("" when absent).
 * The dirty mark is ZADD LT: it never postpones an earlier timer. In event
 * mode it is the earliest applied event time (the first day that changed).
 * Returns {duplicates, read, the account's due score after the apply (-1 none)}.
 */
#define CW_LUA_APPLY                                                                               \
    "local acct, hist, due, wmk, accts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"            \
    "local snapk = KEYS[6]\n"                                                                      \
    "local skeys = {}\n"                                                                           \
    "for s = 1, #SN do skeys[s] = KEYS[6 + s] end\n"                                               \
    "local now = tonumber(ARGV[1])\n"                                                              \
    "local wall = ARGV[2] == '1'\n"                                                                \
    "local part = ARGV[3]\n"                                                                       \
    "local id = ARGV[4]\n"                                                                         \
    "local nev = tonumber(ARGV[5])\n"                                                              \
    "local ofield = 'o:' .. part\n"                                                                \
    "local last = tonumber(redis.call('HGET', acct, ofield)) or -1\n"                              \
    "local evs = {}\n"                                                                             \
    "local dups = 0\n"                                                                             \
    "local i = 6\n"                                                                                \
    "for e = 1, nev do\n"                                                                          \
    "  local ev = {off = tonumber(ARGV[i]), ts = tonumber(ARGV[i + 1]),\n"                         \
    "              fl = tonumber(ARGV[i + 2]), kf = tonumber(ARGV[i + 3])}\n"                      \
    "  ev.nc = tonumber(ARGV[i + 4])\n"                                                            \
    "  ev.c = i + 5\n"                                                                             \
    "  i = ev.c + 2 * ev.nc\n"                                                                     \
    "  ev.ns = tonumber(ARGV[i])\n"                                                                \
    "  ev.s = i + 1\n"                                                                             \
    "  i = ev.s + 2 * ev.ns\n"                                                                     \
    "  if hasbit(ev.fl, 4) then ev.a = i i = i + 4 end\n"                                          \
    "  ev.day = math.floor(ev.ts / DAY)\n"                                                         \
    "  if ev.off <= last then dups = dups + 1 else last = ev.off evs[#evs + 1] = ev end\n"         \
    "end\n"                                                                                        \
    "local asof\n"                                                                                 \
    "if #evs > 0 then\n"                                                                           \
    "  local MF = {'fm','lm','fl','ll','kc','k0','k1','k2','k3','k4','k5','k6','k7'}\n"            \
    "  local AF = {'arr','sea','pln','ren'}\n"                                                     \
    "  local ask = {}\n"                                                                           \
    "  for k = 1, #MF do ask[#ask + 1] = MF[k] end\n"                                              \
    "  for k = 1, 4 do ask[#ask + 1] = AF[k] end\n"                                                \
    "  for c = 1, #CN do ask[#ask + 1] = 'm:' .. CN[c] end\n"                                      \
    "  for s = 1, #SN do ask[#ask + 1] = 'm:' .. SN[s] end\n"                                      \
    "  local got = redis.call('HMGET', acct, unpack(ask))\n"                                       \
    "  local M = {}\n"                                                                             \
    "  for k = 1, #MF do M[MF[k]] = tonumber(got[k]) end\n"                                        \
    "  local upd = {'p', part, ofield, F(last)}\n"                                                 \
    "  local ch = {}\n"                                                                            \
    "  local function lo(f, v) if M[f] == nil or v < M[f] then M[f] = v ch[f] = true end end\n"    \
    "  local function hi(f, v) if M[f] == nil or v > M[f] then M[f] = v ch[f] = true end end\n"    \
    "  local at, av, ach = {}, {}, {}\n"                                                           \
    "  for k = 1, 4 do\n"                                                                          \
    "    local v = got[#MF + k]\n"                                                                 \
    "    if v then\n"                                                                              \
    "      local t, x = string.match(v, '^(%-?%d+),(.*)$')\n"                                      \
    "      at[k] = tonumber(t) av[k] = x\n"                                                        \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  local wmax, wmin\n"                                                                         \
    "  for _, ev in ipairs(evs) do\n"                                                              \
    "    if wmax == nil or ev.ts > wmax then wmax = ev.ts end\n"                                   \
    "    if wmin == nil or ev.ts < wmin then wmin = ev.ts end\n"                                   \
    "    if hasbit(ev.fl, 1) then lo('fm', ev.ts) hi('lm', ev.ts) end\n"                           \
    "    if hasbit(ev.fl, 2) then lo('fl', ev.ts) hi('ll', ev.ts) end\n"                           \
    "    if hasbit(ev.fl, 8) then hi('kc', ev.ts) end\n"                                           \
    "    if ev.kf >= 0 then lo('k' .. F(ev.kf), ev.ts) end\n"                                      \
    "    if ev.a then\n"                                                                           \
    "      for k = 1, 4 do\n"                                                                      \
    "        local v = ARGV[ev.a + k - 1]\n"                                                       \
    "        if v ~= '' and (at[k] == nil or ev.ts >= at[k]) then\n"                               \
    "          at[k] = ev.ts av[k] = v ach[k] = true\n"                                            \
    "        end\n"                                                                                \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  for f, _ in pairs(ch) do upd[#upd + 1] = f upd[#upd + 1] = F(M[f]) end\n"                   \
    "  for k = 1, 4 do\n"                                                                          \
    "    if ach[k] then upd[#upd + 1] = AF[k] upd[#upd + 1] = F(at[k]) .. ',' .. av[k] end\n"      \
    "  end\n"                                                                                      \
    "  local cur\n"                                                                                \
    "  if wall then cur = math.floor(now / DAY) else cur = math.floor((M.lm or wmax) / DAY) end\n" \
    "  -- counters: coalesce per field, skip days already out of retention\n"                      \
    "  local inc, mind = {}, {}\n"                                                                 \
    "  for _, ev in ipairs(evs) do\n"                                                              \
    "    for k = 0, ev.nc - 1 do\n"                                                                \
    "      local c = tonumber(ARGV[ev.c + 2 * k]) + 1\n"                                           \
    "      if ev.day >= cur - CR[c] then\n"                                                        \
    "        local f = DS(ev.day) .. ':' .. CN[c]\n"                                               \
    "        inc[f] = (inc[f] or 0) + tonumber(ARGV[ev.c + 2 * k + 1])\n"                          \
    "        if mind[c] == nil or ev.day < mind[c] then mind[c] = ev.day end\n"                    \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  for f, a in pairs(inc) do redis.call('HINCRBY', acct, f, F(a)) end\n"                       \
    "  -- prune counter days below the retention: O(days removed) via m:<counter>\n"               \
    "  local base = #MF + 4\n"                                                                     \
    "  for c = 1, #CN do\n"                                                                        \
    "    local cut = cur - CR[c]\n"                                                                \
    "    local m = tonumber(got[base + c])\n"                                                      \
    "    local nm = m\n"                                                                           \
    "    if m ~= nil and m < cut then\n"                                                           \
    "      local del = {}\n"                                                                       \
    "      if cut - m > 400 then\n"                                                                \
    "        for _, f in ipairs(redis.call('HKEYS', acct)) do\n"                                   \
    "          local d, name = string.match(f, '^(%-?%d+):(.+)$')\n"                               \
    "          if d and name == CN[c] and tonumber(d) < cut then del[#del + 1] = f end\n"          \
    "        end\n"                                                                                \
    "      else\n"                                                                                 \
    "        for d = m, cut - 1 do del[#del + 1] = DS(d) .. ':' .. CN[c] end\n"                    \
    "      end\n"                                                                                  \
    "      bulk('HDEL', acct, del)\n"                                                              \
    "      nm = cut\n"                                                                             \
    "    end\n"                                                                                    \
    "    if mind[c] ~= nil and (nm == nil or mind[c] < nm) then nm = mind[c] end\n"                \
    "    if nm ~= nil and nm ~= m then upd[#upd + 1] = 'm:' .. CN[c] upd[#upd + 1] = F(nm) end\n"  \
    "  end\n"                                                                                      \
    "  -- sets: mark each member's day in its 52-day mask\n"                                       \
    "  local sv, want = {}, {}\n"                                                                  \
    "  for _, ev in ipairs(evs) do\n"                                                              \
    "    for k = 0, ev.ns - 1 do\n"                                                                \
    "      local s = tonumber(ARGV[ev.s + 2 * k]) + 1\n"                                           \
    "      local mem = ARGV[ev.s + 2 * k + 1]\n"                                                   \
    "      if ev.day >= cur - SR[s] then\n"                                                        \
    "        local t = sv[s]\n"                                                                    \
    "        if t == nil then t = {} sv[s] = t want[s] = {} end\n"                                 \
    "        if t[mem] == nil then t[mem] = {} want[s][#want[s] + 1] = mem end\n"                  \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  for s, list in pairs(want) do\n"                                                            \
    "    local v = mget(skeys[s], list)\n"                                                         \
    "    for k = 1, #list do\n"                                                                    \
    "      if v[k] then\n"                                                                         \
    "        local e = sv[s][list[k]]\n"                                                           \
    "        e.L, e.M = lastday(v[k])\n"                                                           \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  for _, ev in ipairs(evs) do\n"                                                              \
    "    for k = 0, ev.ns - 1 do\n"                                                                \
    "      local s = tonumber(ARGV[ev.s + 2 * k]) + 1\n"                                           \
    "      local d = ev.day\n"                                                                     \
    "      local e = nil\n"                                                                        \
    "      if d >= cur - SR[s] then e = sv[s][ARGV[ev.s + 2 * k + 1]] end\n"                       \
    "      if e == nil then\n"                                                                     \
    "        -- out of the set's retention: nothing to mark\n"                                     \
    "      elseif e.L == nil or e.M == nil then\n"                                                 \
    "        e.L = d e.M = 1\n"                                                                    \
    "      elseif d > e.L then\n"                                                                  \
    "        if d - e.L >= 52 then e.M = 1 else e.M = math.fmod(e.M * 2 ^ (d - e.L), P52) + 1 "    \
    "end\n"                                                                                        \
    "        e.L = d\n"                                                                            \
    "      elseif e.L - d < 52 then\n"                                                             \
    "        local b = 2 ^ (e.L - d)\n"                                                            \
    "        if math.floor(e.M / b) % 2 == 0 then e.M = e.M + b end\n"                             \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  for s, t in pairs(sv) do\n"                                                                 \
    "    local a = {}\n"                                                                           \
    "    for mem, e in pairs(t) do a[#a + 1] = mem a[#a + 1] = F(e.L) .. ',' .. F(e.M) end\n"      \
    "    bulk('HSET', skeys[s], a)\n"                                                              \
    "  end\n"                                                                                      \
    "  -- prune set members out of the retention, once per day per set\n"                          \
    "  for s = 1, #SN do\n"                                                                        \
    "    local ps = tonumber(got[base + #CN + s])\n"                                               \
    "    if ps == nil or ps < cur then\n"                                                          \
    "      if ps ~= nil or sv[s] ~= nil then\n"                                                    \
    "        local cut = cur - SR[s]\n"                                                            \
    "        local all = redis.call('HGETALL', skeys[s])\n"                                        \
    "        local del = {}\n"                                                                     \
    "        for k = 1, #all, 2 do\n"                                                              \
    "          local L = lastday(all[k + 1])\n"                                                    \
    "          if L == nil or L < cut then del[#del + 1] = all[k] end\n"                           \
    "        end\n"                                                                                \
    "        bulk('HDEL', skeys[s], del)\n"                                                        \
    "        upd[#upd + 1] = 'm:' .. SN[s] upd[#upd + 1] = F(cur)\n"                               \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  bulk('HSET', acct, upd)\n"                                                                  \
    "  redis.call('EXPIRE', acct, TTL)\n"                                                          \
    "  redis.call('EXPIRE', hist, TTL)\n"                                                          \
    "  redis.call('EXPIRE', snapk, TTL)\n"                                                         \
    "  for s = 1, #SN do redis.call('EXPIRE', skeys[s], TTL) end\n"                                \
    "  redis.call('SADD', accts, id)\n"                                                            \
    "  local w = tonumber(redis.call('HGET', wmk, part))\n"                                        \
    "  if w == nil or wmax > w then redis.call('HSET', wmk, part, F(wmax)) end\n"                  \
    "  if wall then asof = now else asof = M.lm or wmax end\n"                                     \
    "  -- the dirty mark: the earliest applied event time (event mode), so\n"                      \
    "  -- the day-end timers start at the first day this apply changed\n"                          \
    "  if wall then redis.call('ZADD', due, 'LT', F(asof), id)\n"                                  \
    "  else redis.call('ZADD', due, 'LT', F(wmin), id) end\n"                                      \
    "else\n"                                                                                       \
    "  if wall then\n"                                                                             \
    "    asof = now\n"                                                                             \
    "  else\n"                                                                                     \
    "    asof = tonumber(redis.call('HGET', acct, 'lm')) or tonumber(redis.call('HGET', wmk, "     \
    "part)) or now\n"                                                                              \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local dm = tonumber(redis.call('ZSCORE', due, id)) or -1\n"                                   \
    "return {dups, rd(acct, hist, skeys, asof), F(dm)}\n"

/*
 * READ. KEYS: account hash, history, wm, then one key per layout set.
 * ARGV: asof_ms (< 0: the account's current time), mode, now_ms.
 * Returns nil for an unknown account, else the read.
 */
#define CW_LUA_READ                                                                                \
    "local acct, hist, wmk = KEYS[1], KEYS[2], KEYS[3]\n"                                          \
    "local skeys = {}\n"                                                                           \
    "for s = 1, #SN do skeys[s] = KEYS[3 + s] end\n"                                               \
    "if redis.call('EXISTS', acct) == 0 then return false end\n"                                   \
    "local asof = tonumber(ARGV[1])\n"                                                             \
    "if asof < 0 then\n"                                                                           \
    "  if ARGV[2] == '1' then\n"                                                                   \
    "    asof = tonumber(ARGV[3])\n"                                                               \
    "  else\n"                                                                                     \
    "    local lm = tonumber(redis.call('HGET', acct, 'lm'))\n"                                    \
    "    local p = redis.call('HGET', acct, 'p')\n"                                                \
    "    local w = nil\n"                                                                          \
    "    if p then w = tonumber(redis.call('HGET', wmk, p)) end\n"                                 \
    "    asof = w or lm or tonumber(ARGV[3])\n"                                                    \
    "    if lm and asof < lm then asof = lm end\n"                                                 \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "return rd(acct, hist, skeys, asof)\n"

/*
 * COMMIT. KEYS: account hash, history, due:<p>, atrisk, outbox:<p>, snapshot,
 * bands (hash band -> number of accounts in it, moved on a band change).
 * ARGV: 1 account id, 2 due_ms read (-1 none), 3 next_due (-1 remove),
 * 4 score, 5 band, 6 tier, 7 phase, 8 active_mask, 9..14 last_alert_ms per
 * reason, 15 last_alert_id ("" keep), 16 asof_ms, 17 has snapshot (0/1, or
 * T: reschedule only — nothing but the timer changes, see cw_commit_t),
 * 18 snapshot json, 19 number of alerts, then (alert id, json) pairs.
 * The next timer replaces the due score only when that is still the one the
 * read saw (or there is none); otherwise it is added with ZADD LT, so a
 * newer, earlier dirty mark is kept.
 * Idempotent: a re-run replaces the newest history entry of the same asof.
 */
#define CW_LUA_COMMIT                                                                              \
    "local acct, hist, due, atrisk, ob = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"            \
    "local snapk = KEYS[6]\n"                                                                      \
    "local id = ARGV[1]\n"                                                                         \
    "local function resched()\n"                                                                   \
    "  local cur = redis.call('ZSCORE', due, id)\n"                                                \
    "  local dm = tonumber(ARGV[2])\n"                                                             \
    "  if (not cur) or (dm >= 0 and tonumber(cur) == dm) then\n"                                   \
    "    if tonumber(ARGV[3]) >= 0 then redis.call('ZADD', due, ARGV[3], id)\n"                    \
    "    else redis.call('ZREM', due, id) end\n"                                                   \
    "  elseif tonumber(ARGV[3]) >= 0 then\n"                                                       \
    "    redis.call('ZADD', due, 'LT', ARGV[3], id)\n"                                             \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "if ARGV[17] == 'T' then resched() return 0 end\n"                                             \
    "local h = {'sc', ARGV[4], 'bd', ARGV[5], 'ti', ARGV[6], 'ph', ARGV[7], 'am', ARGV[8]}\n"      \
    "local del = {}\n"                                                                             \
    "for r = 0, 5 do\n"                                                                            \
    "  local v = ARGV[9 + r]\n"                                                                    \
    "  if tonumber(v) >= 0 then h[#h + 1] = 'a' .. r h[#h + 1] = v else del[#del + 1] = 'a' .. r " \
    "end\n"                                                                                        \
    "end\n"                                                                                        \
    "if ARGV[15] ~= '' then h[#h + 1] = 'lid' h[#h + 1] = ARGV[15] end\n"                          \
    "if ARGV[17] == '1' then\n"                                                                    \
    "  redis.call('SET', snapk, ARGV[18], 'EX', TTL)\n"                                            \
    "  local e = ARGV[16] .. ',' .. ARGV[4]\n"                                                     \
    "  local top = redis.call('LINDEX', hist, 0)\n"                                                \
    "  if top and string.match(top, '^(%-?%d+),') == ARGV[16] then\n"                              \
    "    redis.call('LSET', hist, 0, e)\n"                                                         \
    "  else\n"                                                                                     \
    "    redis.call('LPUSH', hist, e)\n"                                                           \
    "    redis.call('LTRIM', hist, 0, HL - 1)\n"                                                   \
    "  end\n"                                                                                      \
    "  redis.call('EXPIRE', hist, TTL)\n"                                                          \
    "end\n"                                                                                        \
    "local pb = redis.call('HGET', acct, 'bd')\n"                                                  \
    "if pb ~= ARGV[5] then\n"                                                                      \
    "  if pb then redis.call('HINCRBY', KEYS[7], pb, -1) end\n"                                    \
    "  redis.call('HINCRBY', KEYS[7], ARGV[5], 1)\n"                                               \
    "end\n"                                                                                        \
    "redis.call('HSET', acct, unpack(h))\n"                                                        \
    "if #del > 0 then redis.call('HDEL', acct, unpack(del)) end\n"                                 \
    "redis.call('EXPIRE', acct, TTL)\n"                                                            \
    "redis.call('EXPIRE', snapk, TTL)\n"                                                           \
    "redis.call('ZADD', atrisk, ARGV[4], id)\n"                                                    \
    "resched()\n"                                                                                  \
    "local n = tonumber(ARGV[19])\n"                                                               \
    "for k = 0, n - 1 do redis.call('HSET', ob, ARGV[20 + 2 * k], ARGV[21 + 2 * k]) end\n"         \
    "return n\n"

#endif
