/* bench.c - the load generator's core: threads, windows, histograms, the report */
#include "bench.h"

#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HIST_SUB_BITS    6 /* 64 sub-buckets per power of two: under 1.6 % error */
#define HIST_SUB_COUNT   (1u << HIST_SUB_BITS)
#define HIST_BUCKETS     ((64u - HIST_SUB_BITS + 1u) << HIST_SUB_BITS)
#define POLL_IDLE_MS     100
#define DRAIN_MAX_NS     (5 * 1000000000LL) /* results still owed after the window */
#define SETTLE_NS        (300 * 1000000LL)  /* deliveries stopped arriving for this long */
#define RATE_MAX_LAG_NS  1000000000LL       /* fixed rate: never burst to catch up more */
#define WATCHDOG_SLACK_S 120                /* beyond warm-up and window, before giving up */
#define NS_PER_S         1e9
#define PHASE_RUN        0
#define PHASE_DRAIN      1 /* publishers send nothing new and wait for their results */
#define PHASE_EXIT       2

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max_ns;
} hist_t;

typedef struct {
    const bench_opts_t *opts;
    const bench_transport_t *transport;
    _Atomic int phase;
    _Atomic int64_t window_start_ns; /* latency is sampled for records sent in the window */
    _Atomic int64_t window_end_ns;
} run_t;

struct bench_pub_t {
    run_t *run;
    int index;
    void *conn;
    int64_t *sent_ns; /* by token & mask; the slot's token in tokens */
    uint64_t *tokens; /* 0 = free */
    uint64_t mask;
    int in_flight;
    uint64_t next_token;
    _Atomic uint64_t accepted;
    _Atomic uint64_t refused;
    hist_t hist;
    int rc;
    pthread_t thread;
};

struct bench_sub_t {
    run_t *run;
    int index;
    void *conn;
    _Atomic uint64_t deliveries;
    hist_t hist;
    int rc;
    pthread_t thread;
};

/* ---- time and histograms ---- */

int64_t bench_now_ns(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void s_sleep_ns(int64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000LL),
                           .tv_nsec = (long)(ns % 1000000000LL) };
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static size_t s_hist_index(uint64_t v)
{
    if (v < HIST_SUB_COUNT) {
        return (size_t)v;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    return ((size_t)(shift + 1) << HIST_SUB_BITS) + (size_t)((v >> shift) & (HIST_SUB_COUNT - 1));
}

/* The middle of bucket i. */
static uint64_t s_hist_value(size_t i)
{
    if (i < HIST_SUB_COUNT) {
        return i;
    }
    unsigned shift = (unsigned)(i >> HIST_SUB_BITS) - 1u;
    uint64_t low = (uint64_t)(HIST_SUB_COUNT + (i & (HIST_SUB_COUNT - 1))) << shift;
    return low + ((1ULL << shift) >> 1);
}

static void s_hist_add(hist_t *h, int64_t ns)
{
    uint64_t v = ns > 0 ? (uint64_t)ns : 0;
    h->counts[s_hist_index(v)]++;
    h->total++;
    if (v > h->max_ns) {
        h->max_ns = v;
    }
}

static void s_hist_merge(hist_t *into, const hist_t *from)
{
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        into->counts[i] += from->counts[i];
    }
    into->total += from->total;
    if (from->max_ns > into->max_ns) {
        into->max_ns = from->max_ns;
    }
}

static double s_hist_quantile_ms(const hist_t *h, double q)
{
    uint64_t rank = (uint64_t)(q * (double)h->total);
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen > rank) {
            uint64_t v = s_hist_value(i);
            return (double)(v < h->max_ns ? v : h->max_ns) / 1e6;
        }
    }
    return (double)h->max_ns / 1e6;
}

static bool s_in_window(const run_t *run, int64_t sent_ns)
{
    int64_t start = atomic_load(&run->window_start_ns);
    int64_t end = atomic_load(&run->window_end_ns);
    return start != 0 && sent_ns >= start && (end == 0 || sent_ns < end);
}

/* ---- payloads for the peers ---- */

void bench_payload_fill(uint8_t *buf, size_t size, uint64_t token, int64_t sent_ns)
{
    memset(buf, 'x', size);
    if (size >= BENCH_HEADER_BYTES) {
        memcpy(buf, &token, sizeof(token));
        memcpy(buf + sizeof(token), &sent_ns, sizeof(sent_ns));
    }
}

int64_t bench_payload_sent_ns(const uint8_t *buf, size_t len)
{
    int64_t sent_ns = 0;
    if (len >= BENCH_HEADER_BYTES) {
        memcpy(&sent_ns, buf + sizeof(uint64_t), sizeof(sent_ns));
    }
    return sent_ns;
}

uint64_t bench_payload_token(const uint8_t *buf, size_t len)
{
    uint64_t token = 0;
    if (len >= BENCH_HEADER_BYTES) {
        memcpy(&token, buf, sizeof(token));
    }
    return token;
}

/* ---- publishers ---- */

void bench_pub_result(bench_pub_t *pub, uint64_t token, bool ok)
{
    uint64_t slot = token & pub->mask;
    if (pub->tokens[slot] != token) {
        return; /* a second answer to the same record: counted once */
    }
    int64_t sent_ns = pub->sent_ns[slot];
    pub->tokens[slot] = 0;
    pub->in_flight--;
    atomic_fetch_add(ok ? &pub->accepted : &pub->refused, 1);
    if (ok && s_in_window(pub->run, sent_ns)) {
        s_hist_add(&pub->hist, bench_now_ns() - sent_ns);
    }
}

/* With --records, publisher index sends its share of them. */
static long long s_quota(const bench_opts_t *o, int index)
{
    long long share = o->records / o->publishers;
    return share + (index < o->records % o->publishers ? 1 : 0);
}

/* Sends while the window has room and, at a fixed rate, while a send is due. */
static int s_pub_fill(bench_pub_t *pub, int64_t *next_send_ns, int64_t interval_ns)
{
    const bench_opts_t *o = pub->run->opts;
    for (;;) {
        int64_t now = bench_now_ns();
        if (pub->in_flight >= o->window || (interval_ns > 0 && *next_send_ns > now) ||
            (o->records > 0 && pub->next_token > (uint64_t)s_quota(o, pub->index))) {
            return 0;
        }
        uint64_t slot = pub->next_token & pub->mask;
        if (pub->tokens[slot] != 0) {
            return 0; /* an old record still unanswered holds this slot */
        }
        pub->tokens[slot] = pub->next_token;
        pub->sent_ns[slot] = now;
        pub->in_flight++;
        if (pub->run->transport->pub_send(pub->conn, pub->next_token, now) != 0) {
            return -1;
        }
        pub->next_token++;
        if (interval_ns > 0) {
            *next_send_ns += interval_ns;
            if (*next_send_ns < now - RATE_MAX_LAG_NS) {
                *next_send_ns = now;
            }
        }
    }
}

static int s_pub_timeout_ms(const bench_pub_t *pub, int64_t next_send_ns, int64_t interval_ns)
{
    if (interval_ns == 0 || pub->in_flight >= pub->run->opts->window) {
        return POLL_IDLE_MS;
    }
    int64_t left = next_send_ns - bench_now_ns();
    return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

static void *s_pub_thread(void *arg)
{
    bench_pub_t *pub = arg;
    const run_t *run = pub->run;
    int64_t interval_ns = 0;
    if (run->opts->rate > 0) {
        interval_ns = (int64_t)(NS_PER_S * run->opts->publishers / run->opts->rate);
    }
    int64_t next_send_ns = bench_now_ns() + interval_ns * pub->index / run->opts->publishers;
    while (pub->rc == 0 && atomic_load(&pub->run->phase) == PHASE_RUN) {
        pub->rc = s_pub_fill(pub, &next_send_ns, interval_ns);
        if (pub->rc == 0) {
            int timeout_ms = s_pub_timeout_ms(pub, next_send_ns, interval_ns);
            pub->rc = run->transport->pub_poll(pub->conn, pub, timeout_ms);
        }
    }
    int64_t deadline = bench_now_ns() + DRAIN_MAX_NS;
    while (pub->rc == 0 && pub->in_flight > 0 && bench_now_ns() < deadline &&
           atomic_load(&pub->run->phase) != PHASE_EXIT) {
        pub->rc = run->transport->pub_poll(pub->conn, pub, POLL_IDLE_MS);
    }
    return NULL;
}

/* ---- subscribers ---- */

void bench_sub_delivery(bench_sub_t *sub, int64_t sent_ns)
{
    atomic_fetch_add(&sub->deliveries, 1);
    if (s_in_window(sub->run, sent_ns)) {
        s_hist_add(&sub->hist, bench_now_ns() - sent_ns);
    }
}

static void *s_sub_thread(void *arg)
{
    bench_sub_t *sub = arg;
    while (sub->rc == 0 && atomic_load(&sub->run->phase) != PHASE_EXIT) {
        sub->rc = sub->run->transport->sub_poll(sub->conn, sub, POLL_IDLE_MS);
    }
    return NULL;
}

/* ---- the server's costs ---- */

typedef struct {
    int64_t at_ns;
    uint64_t accepted;
    uint64_t refused;
    uint64_t deliveries;
    double cpu_s;        /* server utime + stime; -1 unknown */
    long long rows;      /* accord_log max(seq); -1 unknown */
    double wal_bytes;    /* cluster-wide pg_stat_wal.wal_bytes; -1 unknown */
    double wal_fpi;      /* full-page images written to WAL; -1 unknown */
    double host_busy_s;  /* every CPU of the machine: user, system, interrupts; -1 unknown */
    double host_steal_s; /* taken by the hypervisor for other guests */
    double host_all_s;   /* every state, idle included */
} snapshot_t;

static double s_proc_cpu_s(int pid)
{
    if (pid <= 0) {
        return -1;
    }
    char path[64];
    (void)snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    char line[1024];
    char *ok = fgets(line, sizeof(line), f);
    (void)fclose(f);
    char *after_comm = ok != NULL ? strrchr(line, ')') : NULL;
    unsigned long utime = 0;
    unsigned long stime = 0;
    /* fields 3..13 are skipped; 14 and 15 are utime and stime in clock ticks */
    if (after_comm == NULL ||
        sscanf(after_comm + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
               &stime) != 2) {
        return -1;
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* The whole machine's CPU time from /proc/stat: what every process of a scenario
 * (server, PostgreSQL, load generator) costs together, and what the hypervisor
 * took, which explains a noisy run. */
static void s_host_cpu(snapshot_t *s)
{
    s->host_busy_s = s->host_steal_s = s->host_all_s = -1;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL) {
        return;
    }
    unsigned long long v[8] = { 0 };
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    (void)fclose(f);
    if (n != 8) {
        return;
    }
    double tick = (double)sysconf(_SC_CLK_TCK);
    /* user nice system idle iowait irq softirq steal */
    s->host_busy_s = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / tick;
    s->host_steal_s = (double)v[7] / tick;
    s->host_all_s = (double)(v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]) / tick;
}

static double s_proc_peak_rss_mib(int pid)
{
    if (pid <= 0) {
        return -1;
    }
    char path[64];
    (void)snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) {
            break;
        }
    }
    (void)fclose(f);
    return kib < 0 ? -1 : (double)kib / 1024.0;
}

static long long s_log_rows(PGconn *db)
{
    if (db == NULL) {
        return -1;
    }
    PGresult *res = PQexec(db, "SELECT coalesce(max(seq), 0) FROM accord_log");
    long long rows = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        rows = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    } else {
        (void)fprintf(stderr, "bench: could not count log rows: %s", PQerrorMessage(db));
    }
    PQclear(res);
    return rows;
}

/* What PostgreSQL wrote to its WAL: the bytes every commit must flush, and how many
 * of them were full-page images (an index page's first change after a checkpoint). */
static void s_wal(PGconn *db, double *bytes, double *fpi)
{
    *bytes = -1;
    *fpi = -1;
    if (db == NULL) {
        return;
    }
    PGresult *res = PQexec(db, "SELECT wal_bytes, wal_fpi FROM pg_stat_wal");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        *bytes = strtod(PQgetvalue(res, 0, 0), NULL);
        *fpi = strtod(PQgetvalue(res, 0, 1), NULL);
    } else {
        (void)fprintf(stderr, "bench: could not read pg_stat_wal: %s", PQerrorMessage(db));
    }
    PQclear(res);
}

/* Row operations in every table of this database (inserts, updates, deletes), as
 * pg_stat_user_tables counts them: the log, accord_cursor, accord_epoch_broker,
 * accord_epoch and any other. A busy backend publishes its counts at most once a
 * second and an idle one only after up to ten, so a count read while the load
 * runs lags by an unknown part of a second's work. The load generator reads it
 * before the first record (row_ops_before) and reports every record accepted
 * (accepted_total); the run script reads it again once the server and these
 * connections have exited (a backend publishes all it has when it exits) and
 * bench-report divides: exact over the whole run, warm-up and drain included. */
static double s_row_ops(PGconn *db)
{
    if (db == NULL) {
        return -1;
    }
    PGresult *res = PQexec(db, "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                               "FROM pg_stat_user_tables");
    double ops = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        ops = strtod(PQgetvalue(res, 0, 0), NULL);
    } else {
        (void)fprintf(stderr, "bench: could not read pg_stat_user_tables: %s", PQerrorMessage(db));
    }
    PQclear(res);
    return ops;
}

typedef struct {
    run_t run;
    bench_pub_t *pubs;
    bench_sub_t *subs;
    PGconn *db;
} world_t;

static snapshot_t s_snapshot(const world_t *w)
{
    snapshot_t s = { .at_ns = bench_now_ns() };
    for (int i = 0; i < w->run.opts->publishers; i++) {
        s.accepted += atomic_load(&w->pubs[i].accepted);
        s.refused += atomic_load(&w->pubs[i].refused);
    }
    for (int i = 0; i < w->run.opts->subscribers; i++) {
        s.deliveries += atomic_load(&w->subs[i].deliveries);
    }
    s.cpu_s = s_proc_cpu_s(w->run.opts->server_pid);
    s.rows = s_log_rows(w->db);
    s_wal(w->db, &s.wal_bytes, &s.wal_fpi);
    s_host_cpu(&s);
    return s;
}

/* ---- the report ---- */

static json_t *s_number_or_null(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

static json_t *s_hist_json(const hist_t *h)
{
    if (h->total == 0) {
        return json_null();
    }
    return json_pack("{s:f, s:f, s:f, s:f, s:I}", "p50", s_hist_quantile_ms(h, 0.50), "p90",
                     s_hist_quantile_ms(h, 0.90), "p99", s_hist_quantile_ms(h, 0.99), "max",
                     (double)h->max_ns / 1e6, "samples", (json_int_t)h->total);
}

/* Row operations before any record, and the records accepted since. */
typedef struct {
    double before;
    uint64_t accepted;
} row_ops_t;

static void s_report(const world_t *w, const snapshot_t *a, const snapshot_t *b,
                     const row_ops_t *ops)
{
    const bench_opts_t *o = w->run.opts;
    hist_t *result = calloc(1, sizeof(*result));
    hist_t *delivery = calloc(1, sizeof(*delivery));
    if (result == NULL || delivery == NULL) {
        abort();
    }
    for (int i = 0; i < o->publishers; i++) {
        s_hist_merge(result, &w->pubs[i].hist);
    }
    for (int i = 0; i < o->subscribers; i++) {
        s_hist_merge(delivery, &w->subs[i].hist);
    }
    double secs = (double)(b->at_ns - a->at_ns) / NS_PER_S;
    double accepted = (double)(b->accepted - a->accepted);
    double deliveries = (double)(b->deliveries - a->deliveries);
    double cpu_us = a->cpu_s >= 0 && b->cpu_s >= 0 && accepted > 0
                        ? (b->cpu_s - a->cpu_s) * 1e6 / accepted
                        : -1;
    double rows = a->rows >= 0 && b->rows >= 0 ? (double)(b->rows - a->rows) / secs : -1;
    bool wal_known = a->wal_bytes >= 0 && b->wal_bytes >= 0 && accepted > 0;
    double wal_kib = wal_known ? (b->wal_bytes - a->wal_bytes) / 1024.0 / accepted : -1;
    double wal_fpi = wal_known ? (b->wal_fpi - a->wal_fpi) / accepted : -1;
    bool host_known = a->host_all_s >= 0 && b->host_all_s > a->host_all_s && accepted > 0;
    double host_us = host_known ? (b->host_busy_s - a->host_busy_s) * 1e6 / accepted : -1;
    double steal =
        host_known ? 100.0 * (b->host_steal_s - a->host_steal_s) / (b->host_all_s - a->host_all_s)
                   : -1;
    double busy = host_known
                      ? 100.0 * (b->host_busy_s - a->host_busy_s) / (b->host_all_s - a->host_all_s)
                      : -1;
    json_t *obj = json_pack(
        "{s:s, s:s, s:i, s:i, s:i, s:I, s:i, s:f, s:f, s:f, s:f, s:I, s:f, s:f, s:o, s:o, s:o, "
        "s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:o, s:o}",
        "scenario", o->scenario, "transport", w->run.transport->name, "publishers", o->publishers,
        "subscribers", o->subscribers, "recipients", o->recipients, "size", (json_int_t)o->size,
        "window", o->window, "rate_offered", o->rate, "seconds", secs, "accepted_per_s",
        accepted / secs, "refused_per_s", (double)(b->refused - a->refused) / secs, "refused",
        (json_int_t)(b->refused - a->refused), "deliveries_per_s", deliveries / secs,
        "delivered_per_s", o->subscribers > 0 ? deliveries / secs / o->subscribers : 0.0,
        "result_ms", s_hist_json(result), "delivery_ms", s_hist_json(delivery), "cpu_us_per_record",
        s_number_or_null(cpu_us), "peak_rss_mib",
        s_number_or_null(s_proc_peak_rss_mib(o->server_pid)), "pg_rows_per_s",
        s_number_or_null(rows), "wal_kib_per_record", s_number_or_null(wal_kib),
        "wal_fpi_per_record", s_number_or_null(wal_fpi), "row_ops_before",
        s_number_or_null(ops->before), "accepted_total", (json_int_t)ops->accepted,
        "host_cpu_us_per_record", s_number_or_null(host_us), "host_busy_pct",
        s_number_or_null(busy), "host_steal_pct", s_number_or_null(steal));
    char *text = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(6));
    (void)printf("%s\n", text);
    free(text);
    json_decref(obj);
    free(result);
    free(delivery);
}

/* ---- argv ---- */

static void s_usage(FILE *out, const char *prog)
{
    (void)fprintf(
        out,
        "usage: %s [--scenario NAME] [--publishers N] [--subscribers M] [--recipients R]\n"
        "          [--size BYTES] [--window W] [--duration S] [--warmup S] [--rate R]\n"
        "          [--records N] [--pid SERVER_PID] [--db CONNINFO] --endpoint ADDR\n"
        "          [--config PATH]\n"
        "Drives the load and prints one JSON object. Exit: 0 done, 1 failed, 2 usage.\n",
        prog);
}

static int s_parse(bench_opts_t *o, int argc, char **argv)
{
    static const struct option longs[] = {
        { "scenario", required_argument, NULL, 'n' },
        { "publishers", required_argument, NULL, 'p' },
        { "subscribers", required_argument, NULL, 's' },
        { "recipients", required_argument, NULL, 'r' },
        { "size", required_argument, NULL, 'z' },
        { "window", required_argument, NULL, 'w' },
        { "duration", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'u' },
        { "rate", required_argument, NULL, 'R' },
        { "pid", required_argument, NULL, 'P' },
        { "db", required_argument, NULL, 'D' },
        { "endpoint", required_argument, NULL, 'e' },
        { "config", required_argument, NULL, 'c' },
        { "records", required_argument, NULL, 'N' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    *o = (bench_opts_t){ .scenario = "load",
                         .publishers = 1,
                         .subscribers = 2,
                         .recipients = 2,
                         .size = 500,
                         .window = 100,
                         .duration_s = 10,
                         .warmup_s = 2 };
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'n':
            o->scenario = optarg;
            break;
        case 'p':
            o->publishers = atoi(optarg);
            break;
        case 's':
            o->subscribers = atoi(optarg);
            break;
        case 'r':
            o->recipients = atoi(optarg);
            break;
        case 'z':
            o->size = (size_t)strtoul(optarg, NULL, 10);
            break;
        case 'w':
            o->window = atoi(optarg);
            break;
        case 'd':
            o->duration_s = atof(optarg);
            break;
        case 'u':
            o->warmup_s = atof(optarg);
            break;
        case 'R':
            o->rate = atof(optarg);
            break;
        case 'P':
            o->server_pid = atoi(optarg);
            break;
        case 'D':
            o->db = optarg;
            break;
        case 'e':
            o->endpoint = optarg;
            break;
        case 'c':
            o->config = optarg;
            break;
        case 'N':
            o->records = atoll(optarg);
            break;
        case 'h':
            s_usage(stdout, argv[0]);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind != argc || o->endpoint == NULL || o->publishers < 0 || o->subscribers < 0 ||
        o->recipients < 1 || o->window < 1 || o->duration_s <= 0 || o->warmup_s < 0 ||
        o->size < BENCH_HEADER_BYTES || o->rate < 0) {
        return -1;
    }
    return 0;
}

/* ---- the run ---- */

static uint64_t s_pow2_at_least(uint64_t n)
{
    uint64_t p = 1;
    while (p < n) {
        p <<= 1;
    }
    return p;
}

static int s_open_all(world_t *w)
{
    const bench_opts_t *o = w->run.opts;
    const bench_transport_t *t = w->run.transport;
    if (o->subscribers > 0 && t->sub_open == NULL) {
        (void)fprintf(stderr, "bench: %s has no subscribers: use --subscribers 0\n", t->name);
        return -1;
    }
    for (int i = 0; i < o->subscribers; i++) {
        bench_sub_t *sub = &w->subs[i];
        *sub = (bench_sub_t){ .run = &w->run, .index = i };
        if (t->sub_open(&sub->conn, o, i) != 0) {
            return -1;
        }
    }
    for (int i = 0; i < o->publishers; i++) {
        bench_pub_t *pub = &w->pubs[i];
        /* four times the window: a slow answer does not stall the window at once */
        uint64_t slots = s_pow2_at_least((uint64_t)o->window * 4);
        *pub = (bench_pub_t){ .run = &w->run, .index = i, .mask = slots - 1, .next_token = 1 };
        pub->sent_ns = calloc(slots, sizeof(*pub->sent_ns));
        pub->tokens = calloc(slots, sizeof(*pub->tokens));
        if (pub->sent_ns == NULL || pub->tokens == NULL) {
            abort();
        }
        if (t->pub_open(&pub->conn, o, i) != 0) {
            return -1;
        }
    }
    return 0;
}

static void s_close_all(world_t *w)
{
    const bench_opts_t *o = w->run.opts;
    for (int i = 0; i < o->publishers; i++) {
        if (w->pubs[i].conn != NULL) {
            w->run.transport->pub_close(&w->pubs[i].conn);
        }
        free(w->pubs[i].sent_ns);
        free(w->pubs[i].tokens);
    }
    for (int i = 0; i < o->subscribers; i++) {
        if (w->subs[i].conn != NULL) {
            w->run.transport->sub_close(&w->subs[i].conn);
        }
    }
}

/* After the publishers stop, deliveries of the last records still arrive. */
static void s_settle_deliveries(const world_t *w)
{
    int64_t deadline = bench_now_ns() + DRAIN_MAX_NS;
    uint64_t last = s_snapshot(w).deliveries;
    int64_t last_change = bench_now_ns();
    while (bench_now_ns() < deadline && bench_now_ns() - last_change < SETTLE_NS) {
        s_sleep_ns(SETTLE_NS / 6);
        uint64_t now_count = 0;
        for (int i = 0; i < w->run.opts->subscribers; i++) {
            now_count += atomic_load(&w->subs[i].deliveries);
        }
        if (now_count != last) {
            last = now_count;
            last_change = bench_now_ns();
        }
    }
}

/* --records: until every record has its answer. */
static void s_wait_answers(const world_t *w)
{
    for (;;) {
        uint64_t answered = 0;
        bool running = false;
        for (int i = 0; i < w->run.opts->publishers; i++) {
            answered += atomic_load(&w->pubs[i].accepted) + atomic_load(&w->pubs[i].refused);
            running |= w->pubs[i].rc == 0;
        }
        if (answered >= (uint64_t)w->run.opts->records || !running) {
            return;
        }
        s_sleep_ns(SETTLE_NS / 6);
    }
}

static int s_measure(world_t *w)
{
    const bench_opts_t *o = w->run.opts;
    row_ops_t ops = { .before = s_row_ops(w->db) };
    for (int i = 0; i < o->subscribers; i++) {
        (void)pthread_create(&w->subs[i].thread, NULL, s_sub_thread, &w->subs[i]);
    }
    for (int i = 0; i < o->publishers; i++) {
        (void)pthread_create(&w->pubs[i].thread, NULL, s_pub_thread, &w->pubs[i]);
    }
    s_sleep_ns((int64_t)(o->warmup_s * NS_PER_S));
    snapshot_t a = s_snapshot(w);
    atomic_store(&w->run.window_start_ns, a.at_ns);
    if (o->records > 0) {
        s_wait_answers(w);
    } else {
        s_sleep_ns((int64_t)(o->duration_s * NS_PER_S));
    }
    snapshot_t b = s_snapshot(w);
    atomic_store(&w->run.window_end_ns, b.at_ns);
    atomic_store(&w->run.phase, PHASE_DRAIN);
    int rc = 0;
    for (int i = 0; i < o->publishers; i++) {
        (void)pthread_join(w->pubs[i].thread, NULL);
        rc |= w->pubs[i].rc;
    }
    s_settle_deliveries(w);
    atomic_store(&w->run.phase, PHASE_EXIT);
    for (int i = 0; i < o->subscribers; i++) {
        (void)pthread_join(w->subs[i].thread, NULL);
        rc |= w->subs[i].rc;
    }
    ops.accepted = s_snapshot(w).accepted;
    s_report(w, &a, &b, &ops);
    return rc;
}

static void s_on_watchdog(int sig)
{
    (void)sig;
    static const char msg[] = "bench: the scenario did not finish in time; a peer stopped "
                              "answering\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(1);
}

int bench_main(int argc, char **argv, const bench_transport_t *transport)
{
    bench_opts_t opts;
    if (s_parse(&opts, argc, argv) != 0) {
        s_usage(stderr, argv[0]);
        return 2;
    }
    if (transport->setup != NULL && transport->setup(&opts) != 0) {
        return 1;
    }
    world_t w = { .run = { .opts = &opts, .transport = transport } };
    w.pubs = calloc((size_t)opts.publishers + 1, sizeof(*w.pubs));
    w.subs = calloc((size_t)opts.subscribers + 1, sizeof(*w.subs));
    if (w.pubs == NULL || w.subs == NULL) {
        abort();
    }
    if (opts.db != NULL) {
        w.db = PQconnectdb(opts.db);
        if (PQstatus(w.db) != CONNECTION_OK) {
            (void)fprintf(stderr, "bench: could not connect to the database: %s",
                          PQerrorMessage(w.db));
            PQfinish(w.db);
            w.db = NULL;
        }
    }
    if (opts.records == 0) {
        /* A transport that stops answering must fail this scenario, not hang the run:
         * connecting, the warm-up, the window and both drains take far less. */
        (void)signal(SIGALRM, s_on_watchdog);
        (void)alarm((unsigned)(opts.warmup_s + opts.duration_s) + WATCHDOG_SLACK_S);
    }
    int rc = s_open_all(&w) == 0 ? s_measure(&w) : -1;
    (void)alarm(0);
    s_close_all(&w);
    PQfinish(w.db);
    free(w.pubs);
    free(w.subs);
    return rc == 0 ? 0 : 1;
}
