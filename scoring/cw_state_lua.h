/*
 * cw_state_lua.h — the one Lua script left in cw_state (private to the
 * state module, cw_state_apply.c): WMAX, a watermark maximum sent with EVAL inside the apply's
 * transaction, and the documentation of the stored formats. Events are
 * applied, decisions committed and accounts read with plain commands,
 * computed in C (cw_state_*.c, cw_view.c): as Lua scripts they cost Redis
 * several times the CPU, and Redis CPU is the throughput bottleneck
 * (bench/README.md).
 *
 * Day masks (written by the apply in C, read by cw_view): a set member's
 * value is "<lastday>,<mask>", bit i of mask set when the member was active
 * on day lastday - i (i < 52).
 *
 * Account hash fields (short names keep small hashes listpack-encoded):
 *   "<day>:<counter>" per-day counter    "o:<p>" last offset applied from p
 *   "m:<counter>" oldest day that may still hold a field of the counter
 *   "n:<set>" no member of the set has a last day below this (members are
 *   listed and pruned only when it falls out of the set's retention; "m:<set>",
 *   the day of the last prune, is what older versions wrote: replaced by
 *   n:<set> at the next prune)    "p" partition of the account
 *   fm/lm first/last event ms   fl/ll first/last login ms   kc cancel ms
 *   lt the last login at or before the account's pending day-end decision,
 *   written when a newer login is applied before that decision
 *   k<i> first use of key feature i    arr/sea/pln/ren "<attr ts>,<value>"
 *   sc/bd/ti/ph/am score, band, tier, phase, active mask   a<r> last alert
 *   ms of reason r   lid last alert id   x wall-clock day the account's
 *   key TTLs were last refreshed (once a day, not on every apply)
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

#endif
