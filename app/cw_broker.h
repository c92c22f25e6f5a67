/*
 * cw_broker.h — `churnwatch broker`: the embedded development broker.
 *
 * librdkafka ships a mock Kafka cluster that speaks the real wire protocol
 * on a loopback listener; real clients (our consumer, kcat, any librdkafka
 * or Java client) produce to it and consume from it. This subcommand wraps
 * it as a process: it creates the topics it is asked for, prints the
 * bootstrap address as the first and only line of standard output, and runs
 * until SIGTERM or SIGINT. It exists for development, demos and tests; it
 * keeps everything in memory (about 5 MB per partition, oldest data
 * dropped first) and is not a production broker.
 */
#ifndef CW_BROKER_H
#define CW_BROKER_H

/**
 * @brief Entry point of `churnwatch broker`.
 * @param argc,argv arguments, argv[0] = "broker"; see `broker --help`.
 * @returns the process exit code: 0 after a clean shutdown on SIGTERM/SIGINT
 * (or --help), 2 on a usage error, 1 when the cluster cannot be started.
 */
int cw_broker_main(int argc, char **argv);

#endif
