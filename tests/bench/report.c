/* report.c - bench-report: the benchmark's table and ratios from the load
 * generators' JSON lines, and the same as one JSON document for comparison between commits */
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 65536

static double s_num(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : -1;
}

static double s_ms(const json_t *obj, const char *hist, const char *key)
{
    return s_num(json_object_get(obj, hist), key);
}

static void s_cell(double v, int decimals, int width)
{
    if (v < 0) {
        (void)printf(" %*s", width, "-");
    } else {
        (void)printf(" %*.*f", width, decimals, v);
    }
}

static void s_row(const json_t *r)
{
    const char *name = json_string_value(json_object_get(r, "scenario"));
    (void)printf("%-26s", name != NULL ? name : "?");
    const char *error = json_string_value(json_object_get(r, "error"));
    if (error != NULL) {
        (void)printf(" %s\n", error);
        return;
    }
    s_cell(s_num(r, "accepted_per_s"), 0, 10);
    s_cell(s_num(r, "delivered_per_s"), 0, 10);
    s_cell(s_ms(r, "result_ms", "p50"), 3, 7);
    s_cell(s_ms(r, "result_ms", "p90"), 3, 7);
    s_cell(s_ms(r, "result_ms", "p99"), 3, 7);
    s_cell(s_ms(r, "result_ms", "max"), 1, 7);
    s_cell(s_ms(r, "delivery_ms", "p50"), 3, 7);
    s_cell(s_ms(r, "delivery_ms", "p99"), 3, 7);
    s_cell(s_num(r, "cpu_us_per_record"), 1, 7);
    s_cell(s_num(r, "peak_rss_mib"), 1, 7);
    s_cell(s_num(r, "pg_rows_per_s"), 0, 9);
    s_cell(s_num(r, "wal_kib_per_record"), 2, 7);
    s_cell(s_num(r, "wal_fpi_per_record"), 2, 7);
    s_cell(s_num(r, "row_ops_per_record"), 2, 7);
    if (s_num(r, "restart_ms") >= 0) {
        (void)printf("  restart to ready %.0f ms, RSS %.1f MiB", s_num(r, "restart_ms"),
                     s_num(r, "rss_mib"));
    }
    double refused = s_num(r, "refused");
    if (refused > 0) {
        (void)printf("  (%.0f refused)", refused);
    }
    (void)printf("\n");
}

/* The run a result line belongs to (1 when it says none). */
static int s_run_of(const json_t *r)
{
    const json_t *v = json_object_get(r, "run");
    return json_is_integer(v) ? (int)json_integer_value(v) : 1;
}

static const char *s_name(const json_t *r)
{
    const char *name = json_string_value(json_object_get(r, "scenario"));
    return name != NULL ? name : "?";
}

/* The results of one run. */
static json_t *s_of_run(const json_t *results, int run)
{
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(results, i, r)
    {
        if (s_run_of(r) == run && strcmp(s_name(r), "prefill") != 0) {
            json_array_append(out, r);
        }
    }
    return out;
}

static const json_t *s_find(const json_t *results, const char *scenario)
{
    size_t i;
    const json_t *r;
    json_array_foreach(results, i, r)
    {
        if (strcmp(s_name(r), scenario) == 0 && json_object_get(r, "error") == NULL) {
            return r;
        }
    }
    return NULL;
}

/* The first scenario whose name starts with prefix, e.g. "accord @", and is not
 * one run on the prefilled log. */
static const json_t *s_find_prefix(const json_t *results, const char *prefix)
{
    size_t i;
    const json_t *r;
    json_array_foreach(results, i, r)
    {
        const char *name = s_name(r);
        if (strncmp(name, prefix, strlen(prefix)) == 0 && strstr(name, "prefill=") == NULL &&
            json_object_get(r, "error") == NULL) {
            return r;
        }
    }
    return NULL;
}

/* The prefilled log's throughput scenario: "accord prefill=N". */
static const json_t *s_find_prefill(const json_t *results)
{
    size_t i;
    const json_t *r;
    json_array_foreach(results, i, r)
    {
        if (strncmp(s_name(r), "accord prefill=", 15) == 0 && json_object_get(r, "error") == NULL) {
            return r;
        }
    }
    return NULL;
}

/* accord's figure over a reference's, printed and kept in ratios. */
static void s_ratio(json_t *ratios, const json_t *results, const char *label, const char *ref,
                    const char *accord_key, const char *ref_key)
{
    const json_t *a = s_find(results, "accord");
    const json_t *b = s_find(results, ref);
    if (a == NULL) {
        return;
    }
    double top = s_num(a, accord_key);
    double bottom = b != NULL ? s_num(b, ref_key) : -1;
    if (top < 0 || bottom <= 0) {
        (void)printf("  accord / %-34s n/a (%s did not run)\n", label, ref);
        json_object_set_new(ratios, label, json_null());
        return;
    }
    (void)printf("  accord / %-34s %.2f  (%.0f / %.0f)\n", label, top / bottom, top, bottom);
    json_object_set_new(ratios, label, json_real(top / bottom));
}

/* The log written in bulk: binary COPY's rows/s, about 1000 rows a transaction
 * from one connection, over copy's rows_per_record (a shared row per recipient
 * and a share of a batch's acknowledgement rows). A yardstick, not a bound: the
 * commit reference, which overlaps building its rows with the server's work, has
 * written faster (33,642 rows/s against copy's 26,326 in one run). */
static void s_bulk(json_t *ratios, const json_t *results)
{
    const json_t *a = s_find(results, "accord");
    const json_t *c = s_find(results, "copy");
    double per_record = c != NULL ? s_num(c, "rows_per_record") : -1;
    double rows_per_s = c != NULL ? s_num(c, "pg_rows_per_s") : -1;
    if (a == NULL || per_record <= 0 || rows_per_s <= 0) {
        return;
    }
    double bulk = rows_per_s / per_record;
    double accepted = s_num(a, "accepted_per_s");
    (void)printf("\nthe log in bulk: %.0f log rows/s by binary COPY / %.2f rows per record "
                 "= %.0f records/s;\n  accord reaches %.2f of it (%.0f records/s)\n",
                 rows_per_s, per_record, bulk, accepted / bulk, accepted);
    json_object_set_new(ratios, "log in bulk (records/s)", json_real(bulk));
    json_object_set_new(ratios, "accord / log in bulk", json_real(accepted / bulk));
}

/* At the fixed offered rate, what the two things every record needs cost on their
 * own: a hop through a bare relay, and a durable commit of its log rows. */
static void s_floor(json_t *ratios, const json_t *results)
{
    const json_t *a = s_find_prefix(results, "accord @");
    const json_t *c = s_find_prefix(results, "commit @");
    if (a == NULL || c == NULL) {
        return;
    }
    const json_t *r = s_find_prefix(results, "relay @");
    (void)printf("\nthe latency floor at the fixed rate (publish to result, ms):\n");
    (void)printf("  %-44s p50 %7.3f  p99 %7.3f\n", "commit of a record's log rows alone",
                 s_ms(c, "result_ms", "p50"), s_ms(c, "result_ms", "p99"));
    if (r != NULL) {
        (void)printf("  %-44s p50 %7.3f  p99 %7.3f\n", "a hop through the bare relay alone",
                     s_ms(r, "result_ms", "p50"), s_ms(r, "result_ms", "p99"));
    }
    const json_t *rc = s_find_prefix(results, "relay+commit @");
    if (rc != NULL) {
        (void)printf("  %-44s p50 %7.3f  p99 %7.3f\n", "the hop and the commit, nothing else",
                     s_ms(rc, "result_ms", "p50"), s_ms(rc, "result_ms", "p99"));
    }
    (void)printf("  %-44s p50 %7.3f  p99 %7.3f\n", "accord", s_ms(a, "result_ms", "p50"),
                 s_ms(a, "result_ms", "p99"));
    json_object_set_new(ratios, "commit floor p50 ms", json_real(s_ms(c, "result_ms", "p50")));
    json_object_set_new(ratios, "commit floor p99 ms", json_real(s_ms(c, "result_ms", "p99")));
}

/* One pass of bench-audit's questions, a line each. */
static void s_audit_pass(json_t *audit)
{
    const char *question;
    json_t *q;
    json_object_foreach(audit, question, q)
    {
        if (s_num(q, "pages") <= 0) {
            (void)printf("  %-8s no page answered (%.0f refused or failed)\n", question,
                         s_num(q, "errors"));
            continue;
        }
        (void)printf("  %-8s p50 %7.3f  p90 %7.3f  max %7.3f ms  %3.0f pages, %5.1f rows/page%s",
                     question, s_num(q, "p50"), s_num(q, "p90"), s_num(q, "max"), s_num(q, "pages"),
                     s_num(q, "rows_per_page"),
                     json_is_true(json_object_get(q, "payloads")) ? ", with payloads" : "");
        if (s_num(q, "errors") > 0) {
            (void)printf(", %.0f refused or failed", s_num(q, "errors"));
        }
        (void)printf("\n");
    }
}

/* --prefill: how the log was filled, and what an auditor's page took on it. */
static void s_prefill(const json_t *all, const json_t *results)
{
    const json_t *p = s_find(all, "prefill");
    if (p != NULL) {
        (void)printf("\nprefill: %.0f log rows (%.0f records) in %.1f s (COPY %.1f s, indexes "
                     "%.1f s, vacuum %.1f s)\n",
                     s_num(p, "rows"), s_num(p, "records"), s_num(p, "seconds"), s_num(p, "copy_s"),
                     s_num(p, "index_s"), s_num(p, "vacuum_s"));
    }
    size_t i;
    const json_t *r;
    json_array_foreach(results, i, r)
    {
        json_t *audit = json_object_get(r, "audit");
        if (audit == NULL) {
            continue;
        }
        (void)printf("\nan auditor's page (%.0f rows at most) through the broker, %s, on a log "
                     "of %.0f rows:\n",
                     s_num(r, "page_rows"), s_name(r), s_num(r, "log_rows"));
        json_t *first = json_object_get(r, "audit_first");
        if (first != NULL) {
            (void)printf(" first pass, the broker just started (its reading session touches "
                         "PostgreSQL's buffers for the first time):\n");
            s_audit_pass(first);
            (void)printf(" measured pass, the broker in service, half a step along:\n");
        }
        s_audit_pass(audit);
    }
}

/* ---- several runs ---- */

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* min, median, max of the n values >= 0 in v (sorted in place); false if none. */
static bool s_spread(double *v, int n, double out[3])
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (v[i] >= 0) {
            v[k++] = v[i];
        }
    }
    if (k == 0) {
        return false;
    }
    qsort(v, (size_t)k, sizeof(double), s_cmp_double);
    out[0] = v[0];
    out[1] = k % 2 == 1 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
    out[2] = v[k - 1];
    return true;
}

static void s_spread_cell(double *v, int n, int decimals, json_t *into, const char *key)
{
    double m[3];
    if (!s_spread(v, n, m)) {
        (void)printf("  %26s", "-");
        return;
    }
    (void)printf("  %8.*f %8.*f %8.*f", decimals, m[0], decimals, m[1], decimals, m[2]);
    json_object_set_new(into, key,
                        json_pack("{s:f, s:f, s:f}", "min", m[0], "median", m[1], "max", m[2]));
}

/* Every scenario's accepted rec/s and result p50/p99 over the runs. */
static json_t *s_spread_table(const json_t *all, int runs)
{
    json_t *spread = json_object();
    (void)printf("\nspread over %d runs (min / median / max):\n%-26s  %26s  %26s  %26s\n", runs,
                 "scenario", "accepted rec/s", "result p50 ms", "result p99 ms");
    size_t i;
    const json_t *r;
    double *rate = calloc((size_t)runs + 1, sizeof(double));
    double *p50 = calloc((size_t)runs + 1, sizeof(double));
    double *p99 = calloc((size_t)runs + 1, sizeof(double));
    if (rate == NULL || p50 == NULL || p99 == NULL) {
        abort();
    }
    json_array_foreach(all, i, r)
    {
        const char *name = s_name(r);
        if (json_object_get(spread, name) != NULL || json_object_get(r, "error") != NULL ||
            s_num(r, "accepted_per_s") < 0) {
            continue; /* each name once; lines without records/s have no spread */
        }
        int n = 0;
        size_t j;
        const json_t *o;
        json_array_foreach(all, j, o)
        {
            if (strcmp(s_name(o), name) == 0 && json_object_get(o, "error") == NULL && n < runs) {
                rate[n] = s_num(o, "accepted_per_s");
                p50[n] = s_ms(o, "result_ms", "p50");
                p99[n] = s_ms(o, "result_ms", "p99");
                n++;
            }
        }
        json_t *entry = json_object();
        (void)printf("%-26s", name);
        s_spread_cell(rate, n, 0, entry, "accepted_per_s");
        s_spread_cell(p50, n, 3, entry, "result_p50_ms");
        s_spread_cell(p99, n, 3, entry, "result_p99_ms");
        (void)printf("\n");
        json_object_set_new(spread, name, entry);
    }
    free(rate);
    free(p50);
    free(p99);
    return spread;
}

/* ---- the issue's targets ---- */

typedef double target_fn(const json_t *run, const char *arg);

static double s_over(double top, double bottom)
{
    return top >= 0 && bottom > 0 ? top / bottom : -1;
}

static double s_t_records(const json_t *run, const char *ref)
{
    const json_t *a = s_find(run, "accord");
    const json_t *b = s_find(run, ref);
    return a != NULL && b != NULL ? s_over(s_num(a, "accepted_per_s"), s_num(b, "accepted_per_s"))
                                  : -1;
}

/* The pipeline alone (relay+commit) over ref: what any broker that hops and
 * commits reaches on this machine before it does any work of its own. Below a
 * target's limit, that target is out of reach here for accord too (over commit,
 * the ceiling; over rabbitmq, the broker it is compared with). */
static double s_t_pipeline(const json_t *run, const char *ref)
{
    const json_t *p = s_find(run, "relay+commit");
    const json_t *c = s_find(run, ref);
    return p != NULL && c != NULL ? s_over(s_num(p, "accepted_per_s"), s_num(c, "accepted_per_s"))
                                  : -1;
}

static double s_t_p50(const json_t *run, const char *unused)
{
    (void)unused;
    const json_t *a = s_find_prefix(run, "accord @");
    const json_t *c = s_find_prefix(run, "commit @");
    const json_t *r = s_find_prefix(run, "relay @");
    if (a == NULL || c == NULL || r == NULL) {
        return -1;
    }
    return s_over(s_ms(a, "result_ms", "p50"),
                  s_ms(c, "result_ms", "p50") + s_ms(r, "result_ms", "p50"));
}

/* who: the fixed-rate scenario's name up to its '@' ("accord @", "relay+commit @"). */
static double s_t_p99(const json_t *run, const char *who)
{
    const json_t *a = s_find_prefix(run, who);
    const json_t *c = s_find_prefix(run, "commit @");
    return a != NULL && c != NULL ? s_over(s_ms(a, "result_ms", "p99"), s_ms(c, "result_ms", "p99"))
                                  : -1;
}

static double s_t_rows(const json_t *run, const char *unused)
{
    (void)unused;
    const json_t *a = s_find(run, "accord");
    return a != NULL ? s_num(a, "row_ops_per_record") : -1;
}

static double s_t_prefill(const json_t *run, const char *unused)
{
    (void)unused;
    const json_t *a = s_find(run, "accord");
    const json_t *p = s_find_prefill(run);
    return a != NULL && p != NULL ? s_over(s_num(p, "accepted_per_s"), s_num(a, "accepted_per_s"))
                                  : -1;
}

/* A figure for a target whose scenario ran and failed to give one. */
#define FAILED 1e12

static double s_t_audit(const json_t *run, const char *question)
{
    size_t i;
    const json_t *r;
    json_array_foreach(run, i, r)
    {
        const json_t *q = json_object_get(json_object_get(r, "audit"), question);
        if (q != NULL) {
            return s_num(q, "p50") >= 0 ? s_num(q, "p50") : FAILED;
        }
        if (strncmp(s_name(r), "audit ", 6) == 0 && json_object_get(r, "error") != NULL) {
            return FAILED;
        }
    }
    return -1;
}

static void s_figure(double v)
{
    if (v >= FAILED) {
        (void)printf(" failed");
    } else if (v >= 0) {
        (void)printf(" %.2f", v);
    } else {
        (void)printf(" -");
    }
}

/* The scenarios a target's figure comes from, by name or name prefix ('@' ends a
 * prefix: "accord @" is the fixed-rate one); NULL ends the list. */
typedef struct {
    const char *label;
    target_fn *fn;
    const char *arg;
    double limit;
    bool at_least; /* met when the figure is >= limit; otherwise <= */
    const char *scenarios[4];
} target_t;

static const target_t s_targets[] = {
    { "accord / rabbitmq records/s", s_t_records, "rabbitmq", 2.0, true, { "accord", "rabbitmq" } },
    { "reference: relay+commit / rabbitmq records/s",
      s_t_pipeline,
      "rabbitmq",
      2.0,
      true,
      { "relay+commit", "rabbitmq" } },
    { "accord / commit records/s", s_t_records, "commit", 0.8, true, { "accord", "commit" } },
    { "reference: relay+commit / commit records/s",
      s_t_pipeline,
      "commit",
      0.8,
      true,
      { "relay+commit", "commit" } },
    { "accord p50 @rate / (commit p50 + relay p50)",
      s_t_p50,
      NULL,
      1.5,
      false,
      { "accord @", "commit @", "relay @" } },
    { "accord p99 @rate / commit p99 @rate",
      s_t_p99,
      "accord @",
      2.0,
      false,
      { "accord @", "commit @" } },
    { "reference: relay+commit / commit p99 @rate",
      s_t_p99,
      "relay+commit @",
      2.0,
      false,
      { "relay+commit @", "commit @" } },
    { "row ops per record (accord)", s_t_rows, NULL, 2.2, false, { NULL } },
    { "accord prefill / empty log records/s", s_t_prefill, NULL, 0.8, true, { "accord" } },
    { "auditor's page p50 ms: agency", s_t_audit, "agency", 10.0, false, { NULL } },
    { "auditor's page p50 ms: subject", s_t_audit, "subject", 10.0, false, { NULL } },
    { "auditor's page p50 ms: rule", s_t_audit, "rule", 10.0, false, { NULL } },
};

/* A figure is marked when the hypervisor took more than this share of the CPUs
 * during one of its scenarios: a ratio of two scenarios is then a measure of the
 * steal as much as of either (one run here had accord at 1.2% stolen and its
 * commit reference at 19%, and the ratio went from 0.55 to 0.96). */
#define STOLEN_MARK_PCT 5.0

static double s_target_stolen(const json_t *run, const target_t *target)
{
    double most = 0;
    for (size_t i = 0; i < 4 && target->scenarios[i] != NULL; i++) {
        const char *name = target->scenarios[i];
        const json_t *r =
            name[strlen(name) - 1] == '@' ? s_find_prefix(run, name) : s_find(run, name);
        double stolen = r != NULL ? s_num(r, "host_steal_pct") : -1;
        most = stolen > most ? stolen : most;
    }
    return most;
}

/* Each target's figure in every run (each from that run's own scenarios), and
 * whether the median over the runs meets it. A target no run has a figure for
 * (a scenario not run, or one that could not start) says n/a when accord ran and
 * is left out otherwise (--only commit has no targets). */
static json_t *s_target_lines(const json_t *all, int runs)
{
    json_t *out = json_object();
    bool header = false;
    double *v = calloc((size_t)runs + 1, sizeof(double));
    double *shown = calloc((size_t)runs + 1, sizeof(double));
    double *clean = calloc((size_t)runs + 1, sizeof(double));
    bool *marked = calloc((size_t)runs + 1, sizeof(bool));
    bool any_marked = false;
    if (v == NULL || shown == NULL || clean == NULL || marked == NULL) {
        abort();
    }
    for (size_t t = 0; t < sizeof(s_targets) / sizeof(s_targets[0]); t++) {
        const target_t *target = &s_targets[t];
        json_t *per_run = json_array();
        for (int k = 1; k <= runs; k++) {
            json_t *run = s_of_run(all, k);
            v[k - 1] = target->fn(run, target->arg);
            shown[k - 1] = v[k - 1];
            marked[k - 1] = v[k - 1] >= 0 && s_target_stolen(run, target) > STOLEN_MARK_PCT;
            clean[k - 1] = marked[k - 1] ? -1 : v[k - 1];
            json_array_append_new(per_run, v[k - 1] >= 0 ? json_real(v[k - 1]) : json_null());
            json_decref(run);
        }
        double m[3];
        bool known = s_spread(v, runs, m);
        if (!known && s_find(all, "accord") == NULL) {
            json_decref(per_run);
            continue;
        }
        if (!header) {
            (void)printf("\nthe issue's targets (the median over %d run%s; each run's figure "
                         "from its own scenarios):\n",
                         runs, runs == 1 ? "" : "s");
            header = true;
        }
        /* the pipeline's line is a reference under the target above, not one */
        bool reference = strncmp(target->label, "reference:", 10) == 0;
        (void)printf("  %s%-*s %s %4.1f:", reference ? "  " : "", reference ? 44 : 46,
                     target->label, target->at_least ? ">=" : "<=", target->limit);
        if (!known) {
            (void)printf("      n/a  (its scenarios did not run)\n");
            json_object_set_new(out, target->label, json_null());
            json_decref(per_run);
            continue;
        }
        bool met = target->at_least ? m[1] >= target->limit : m[1] <= target->limit;
        if (m[1] >= FAILED) {
            (void)printf("   failed  %-7s", "not met");
        } else {
            (void)printf(" %8.2f  %-7s", m[1], met ? "met" : "not met");
        }
        json_t *stolen = json_array();
        bool some_marked = false;
        (void)printf(" (run%s:", runs > 1 ? "s" : "");
        for (int k = 0; k < runs; k++) {
            s_figure(shown[k]);
            if (marked[k]) {
                (void)printf("*");
                some_marked = true;
            }
            json_array_append_new(stolen, json_boolean(marked[k]));
        }
        (void)printf(")");
        double c[3];
        json_t *clean_median = json_null();
        if (some_marked && s_spread(clean, runs, c)) {
            bool clean_met = target->at_least ? c[1] >= target->limit : c[1] <= target->limit;
            (void)printf("; without *: %.2f %s", c[1], clean_met ? "met" : "not met");
            clean_median = json_real(c[1]);
        } else if (some_marked) {
            (void)printf("; every run *");
        }
        any_marked = any_marked || some_marked;
        (void)printf("\n");
        json_object_set_new(out, target->label,
                            json_pack("{s:f, s:f, s:b, s:b, s:o, s:o, s:o}", "median", m[1],
                                      "limit", target->limit, "at_least", target->at_least, "met",
                                      met, "runs", per_run, "stolen_over_5pct", stolen,
                                      "median_without_stolen", clean_median));
    }
    if (any_marked) {
        (void)printf("  * in this run a scenario behind the figure lost more than %.0f%% of the "
                     "CPUs to the\n    hypervisor (stolen, above): it measures the steal as much "
                     "as the software\n",
                     STOLEN_MARK_PCT);
    }
    free(v);
    free(shown);
    free(clean);
    free(marked);
    return out;
}

/* The run script's own lines go into their scenario's line: "row_ops_after"
 * (read once the scenario's server had exited) gives row operations per record
 * over the whole run, every record accepted in it counted; "broker_commits" is
 * the broker's /metrics count of its commits, their seconds and rows. */
static void s_merge_into(json_t *o, const json_t *r)
{
    json_t *after = json_object_get(r, "row_ops_after");
    double before = s_num(o, "row_ops_before");
    double accepted = s_num(o, "accepted_total");
    if (after != NULL && before >= 0 && accepted > 0) {
        json_object_set(o, "row_ops_after", after);
        json_object_set_new(o, "row_ops_per_record",
                            json_real((json_number_value(after) - before) / accepted));
    }
    const char *keys[] = { "broker_commits", "broker_commit_s", "broker_batch_rows" };
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        json_t *v = json_object_get(r, keys[k]);
        if (v != NULL) {
            json_object_set(o, keys[k], v);
        }
    }
}

static json_t *s_merge_script_lines(json_t *lines)
{
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(lines, i, r)
    {
        bool ours = json_object_get(r, "row_ops_after") != NULL ||
                    json_object_get(r, "broker_commits") != NULL;
        if (!ours || json_object_get(r, "transport") != NULL) {
            json_array_append(out, r);
            continue;
        }
        for (size_t k = json_array_size(out); k-- > 0;) {
            json_t *o = json_array_get(out, k);
            if (s_run_of(o) == s_run_of(r) && strcmp(s_name(o), s_name(r)) == 0) {
                s_merge_into(o, r);
                break;
            }
        }
    }
    json_decref(lines);
    return out;
}

typedef void line_fn(const json_t *r);

/* Prints header, then a line for each scenario that has key (a positive number). */
static void s_section(const json_t *results, const char *key, const char *header, line_fn *line)
{
    bool any = false;
    size_t i;
    const json_t *r;
    json_array_foreach(results, i, r)
    {
        if (s_num(r, key) <= 0) {
            continue;
        }
        if (!any) {
            (void)printf("\n%s\n", header);
            any = true;
        }
        line(r);
    }
}

/* What a scenario cost the whole machine (its window only): every process's CPU
 * per record, how busy the CPUs were, and what the hypervisor took. */
static void s_host_line(const json_t *r)
{
    (void)printf("  %-26s %8.1f CPU us/rec, CPUs %5.1f %% busy, %5.1f %% stolen\n", s_name(r),
                 s_num(r, "host_cpu_us_per_record"), s_num(r, "host_busy_pct"),
                 s_num(r, "host_steal_pct"));
}

/* Why accord's figures are what they are: its commits, from its own metrics
 * (the whole scenario, warm-up and drain included). */
static void s_batch_line(const json_t *r)
{
    double commits = s_num(r, "broker_commits");
    double secs = s_num(r, "broker_commit_s");
    double rows = s_num(r, "broker_batch_rows");
    (void)printf("  %-26s %8.0f commits, %6.1f rows and %6.3f ms each, %6.1f s committing\n",
                 s_name(r), commits, rows / commits, 1000.0 * secs / commits, secs);
}

static json_t *s_read_results(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        return NULL;
    }
    json_t *results = json_array();
    char *line = malloc(LINE_MAX_BYTES);
    while (line != NULL && fgets(line, LINE_MAX_BYTES, f) != NULL) {
        json_error_t jerr;
        json_t *r = json_loads(line, 0, &jerr);
        if (r != NULL) {
            json_array_append_new(results, r);
        } else if (strspn(line, " \n") != strlen(line)) {
            (void)fprintf(stderr, "bench-report: %s: %s\n", path, jerr.text);
        }
    }
    free(line);
    (void)fclose(f);
    return s_merge_script_lines(results);
}

static void s_table(const json_t *results, int run, int runs)
{
    if (runs > 1) {
        (void)printf("\nrun %d of %d:", run, runs);
    }
    (void)printf("\n%-26s %10s %10s %7s %7s %7s %7s %7s %7s %7s %7s %9s %7s %7s %7s\n", "",
                 "accepted", "delivered", "result", "", "", "", "deliver", "", "CPU", "peak", "PG",
                 "WAL", "WAL", "row ops");
    (void)printf("%-26s %10s %10s %7s %7s %7s %7s %7s %7s %7s %7s %9s %7s %7s %7s\n", "scenario",
                 "rec/s", "rec/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50 ms", "p99 ms",
                 "us/rec", "RSS MiB", "rows/s", "KiB/rec", "FPI/rec", "/rec");
    size_t i;
    const json_t *r;
    json_array_foreach(results, i, r)
    {
        if (json_object_get(r, "audit") == NULL) {
            s_row(r);
        }
    }
}

#define USAGE "usage: bench-report --results FILE [--runs K] [--json OUT] [--commit ID]\n"

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        { "results", required_argument, NULL, 'r' },
        { "json", required_argument, NULL, 'j' },
        { "commit", required_argument, NULL, 'c' },
        { "runs", required_argument, NULL, 'k' },
        { NULL, 0, NULL, 0 },
    };
    const char *results_path = NULL;
    const char *json_path = NULL;
    const char *commit = "unknown";
    int runs = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'r':
            results_path = optarg;
            break;
        case 'j':
            json_path = optarg;
            break;
        case 'c':
            commit = optarg;
            break;
        case 'k':
            runs = atoi(optarg);
            break;
        default:
            (void)fprintf(stderr, USAGE);
            return 2;
        }
    }
    if (results_path == NULL || runs < 1) {
        (void)fprintf(stderr, USAGE);
        return 2;
    }
    json_t *all = s_read_results(results_path);
    if (all == NULL) {
        return 1;
    }
    /* the table, ratios and floors are the last run's: each from one run */
    json_t *results = s_of_run(all, runs);
    s_table(results, runs, runs);
    json_t *ratios = json_object();
    if (s_find(results, "accord") != NULL) {
        (void)printf("\nratios (accord throughput scenario over the reference's):\n");
        s_ratio(ratios, results, "relay (records/s)", "relay", "accepted_per_s", "accepted_per_s");
        s_ratio(ratios, results, "rabbitmq (records/s)", "rabbitmq", "accepted_per_s",
                "accepted_per_s");
        s_ratio(ratios, results, "mosquitto (records/s)", "mosquitto", "accepted_per_s",
                "accepted_per_s");
        s_ratio(ratios, results, "commit (records/s)", "commit", "accepted_per_s",
                "accepted_per_s");
        s_ratio(ratios, results, "commit x4 connections (records/s)", "commit x4 connections",
                "accepted_per_s", "accepted_per_s");
        s_ratio(ratios, results, "relay+commit (records/s)", "relay+commit", "accepted_per_s",
                "accepted_per_s");
        s_ratio(ratios, results, "copy (PG rows/s)", "copy", "pg_rows_per_s", "pg_rows_per_s");
        s_bulk(ratios, results);
        s_floor(ratios, results);
    }
    s_section(results, "host_cpu_us_per_record",
              "the whole machine during each window (every process: server, PostgreSQL, load "
              "generator):",
              s_host_line);
    s_section(results, "broker_commits",
              "the broker's commits (its /metrics, whole scenario):", s_batch_line);
    s_prefill(all, results);
    json_t *spread = runs > 1 ? s_spread_table(all, runs) : json_object();
    json_t *targets = s_target_lines(all, runs);
    int rc = 0;
    if (json_path != NULL) {
        char when[32];
        time_t now = time(NULL);
        struct tm tm;
        (void)strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
        json_t *doc =
            json_pack("{s:s, s:s, s:I, s:i, s:O, s:O, s:O, s:O}", "commit", commit, "at", when,
                      "cpus", (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "runs", runs, "results",
                      all, "ratios", ratios, "spread", spread, "targets", targets);
        if (json_dump_file(doc, json_path, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) != 0) {
            (void)fprintf(stderr, "bench-report: could not write \"%s\"\n", json_path);
            rc = 1;
        } else {
            (void)printf("\nJSON written to %s\n", json_path);
        }
        json_decref(doc);
    }
    json_decref(targets);
    json_decref(spread);
    json_decref(ratios);
    json_decref(results);
    json_decref(all);
    return rc;
}
