/*
 * cw_state_lua.h — the Lua that is left in cw_state (private to
 * cw_state.c): COMMIT, loaded on connect with a generated prelude, and WMAX,
 * a two-line watermark maximum sent with EVAL. Events are applied and
 * accounts are read with plain commands, computed in C (cw_state.c "apply",
 * cw_view.c): in Lua they cost Redis several times the CPU, and Redis CPU is
 * the throughput bottleneck (bench/README.md).
 *
 * COMMIT is assembled by cw_state.c as <layout prelude> .. <body>, where
 * the prelude, generated from the cw_layout_t, declares
 *     CN[c] counter names          CR[c] days a counter keeps (retention)
 *     SN[s] set names              SR[s] days a set keeps
 *     TTL   key time-to-live, seconds          HL  score-history length
 * so the same text always yields the same SHA for the same layout, and a
 * config change simply loads a different script.
 *
 * Day masks (written by the apply in C, read by cw_view): a set member's
 * value is "<lastday>,<mask>", bit i of mask set when the member was active
 * on day lastday - i (i < 52).
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

/*
 * WMAX. KEYS: wm. ARGV: partition, event time. Raises the partition's
 * watermark to the time if it is higher (sent with EVAL inside the apply's
 * MULTI: one per partition and batch).
 */
#define CW_LUA_WMAX                                                                                \
    "local w = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))\n"                                   \
    "if w == nil or tonumber(ARGV[2]) > w then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "     \
    "end\n"                                                                                        \
    "return 0\n"

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
