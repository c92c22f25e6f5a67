/*
 * cw_gen.h — `churnwatch gen`: a deterministic generator of realistic B2B
 * SaaS product-usage traffic (SPEC §2 events) with known ground truth.
 *
 * Accounts follow one of five behaviour profiles over a window of D days
 * ending at --end: steady, decline (activity drops to 20-30% at a change
 * day), silent (all activity stops at a change day), stalled (never adopts
 * the key features "reports" and "integrations") and cancel (steady plus a
 * cancellation notice). A share of malformed lines of every kind the
 * pipeline must dead-letter is mixed in. The per-account truth (profile,
 * change time) and a summary of what was written go to --truth, so tests
 * and benchmarks can check what churnwatch concluded against what was
 * meant. Same seed and arguments give byte-identical output.
 */
#ifndef CW_GEN_H
#define CW_GEN_H

/**
 * @brief Entry point of `churnwatch gen`.
 * @param argc,argv arguments, argv[0] = "gen"; see `gen --help`.
 * @returns the process exit code: 0 on success, 2 on a usage error, 1 when
 * output could not be written or Kafka delivery failed.
 */
int cw_gen_main(int argc, char **argv);

#endif
