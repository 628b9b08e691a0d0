/* bench.h - the load generator's core: publisher and subscriber threads, a window
 * of records in flight, latency histograms and the measurement window, shared by
 * every transport (accord, the bare relay, RabbitMQ, Mosquitto) */
#ifndef ACCORD_BENCH_H
#define ACCORD_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_HEADER_BYTES 16 /* token and send time, at the front of a peer's payload */

/* What one run of the load generator does, from argv. */
typedef struct {
    const char *scenario; /* name in the report, e.g. "accord" */
    int publishers;       /* publisher connections */
    int subscribers;      /* subscriber connections */
    int recipients;       /* recipients per record */
    size_t size;          /* bytes of one encoded record */
    int window;           /* records in flight per publisher */
    double duration_s;    /* measured seconds */
    double warmup_s;      /* seconds before measuring */
    double rate;          /* records/s offered over all publishers, 0 = as fast as possible */
    long long records;    /* stop after this many answers instead of after duration_s; 0 = off */
    int server_pid;       /* the broker's process, for CPU and RSS; 0 = none */
    const char *db;       /* libpq conninfo for accord_log rows; NULL = none */
    const char *endpoint; /* transport-specific address */
    const char *config;   /* transport-specific: accord agent.yaml directory, relay key */
} bench_opts_t;

typedef struct bench_pub_t bench_pub_t;
typedef struct bench_sub_t bench_sub_t;

/* One transport: how a publisher and a subscriber connection are made and driven.
 * Every function returns 0 on success, -1 with a message on stderr otherwise. */
typedef struct {
    const char *name;
    /* Process-wide setup (queues, payload template) before any connection; may be NULL. */
    int (*setup)(const bench_opts_t *opts);
    int (*pub_open)(void **conn, const bench_opts_t *opts, int index);
    /* Sends one record; token comes back through bench_pub_result. */
    int (*pub_send)(void *conn, uint64_t token, int64_t sent_ns);
    /* Waits up to timeout_ms for results and reports each with bench_pub_result. */
    int (*pub_poll)(void *conn, bench_pub_t *pub, int timeout_ms);
    void (*pub_close)(void **conn);
    /* NULL for a transport without subscribers (run with --subscribers 0). */
    int (*sub_open)(void **conn, const bench_opts_t *opts, int index);
    /* Waits up to timeout_ms for deliveries, acknowledges each and reports it with
     * bench_sub_delivery. */
    int (*sub_poll)(void *conn, bench_sub_t *sub, int timeout_ms);
    void (*sub_close)(void **conn);
} bench_transport_t;

/* The answer to the record sent with token: accepted (ok) or refused. */
void bench_pub_result(bench_pub_t *pub, uint64_t token, bool ok);
/* One delivery acknowledged; sent_ns is the publisher's send time. */
void bench_sub_delivery(bench_sub_t *sub, int64_t sent_ns);

/* CLOCK_MONOTONIC in nanoseconds: one clock for every process on this machine. */
int64_t bench_now_ns(void);

/* A payload of opts->size bytes for the peers: token and sent_ns in the first
 * BENCH_HEADER_BYTES, filler after. buf holds at least opts->size bytes. */
void bench_payload_fill(uint8_t *buf, size_t size, uint64_t token, int64_t sent_ns);
/* Reads the send time back out of such a payload; 0 if it is too short. */
int64_t bench_payload_sent_ns(const uint8_t *buf, size_t len);
/* The token of such a payload; 0 if it is too short. */
uint64_t bench_payload_token(const uint8_t *buf, size_t len);

/* Parses argv into opts (printing usage on error) and runs the load against
 * transport, printing one JSON object on stdout. Returns the exit status. */
int bench_main(int argc, char **argv, const bench_transport_t *transport);

#endif
