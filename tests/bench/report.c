/* report.c - bench-report: the benchmark's table and ratios from the load
 * generators' JSON lines, and the same as one JSON document for comparison between commits */
#include <getopt.h>
#include <jansson.h>
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

static const json_t *s_find(const json_t *results, const char *scenario)
{
    size_t i;
    const json_t *r;
    json_array_foreach(results, i, r)
    {
        const char *name = json_string_value(json_object_get(r, "scenario"));
        if (name != NULL && strcmp(name, scenario) == 0 && json_object_get(r, "error") == NULL) {
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

/* What the log alone allows: every record writes a shared and an acknowledged
 * row per recipient, so no broker can accept more records per second than binary
 * COPY can write those rows into the same PostgreSQL. */
static void s_ceiling(json_t *ratios, const json_t *results)
{
    const json_t *a = s_find(results, "accord");
    const json_t *c = s_find(results, "copy");
    double recipients = a != NULL ? s_num(a, "recipients") : -1;
    double rows_per_s = c != NULL ? s_num(c, "pg_rows_per_s") : -1;
    if (recipients <= 0 || rows_per_s <= 0) {
        return;
    }
    double ceiling = rows_per_s / (2 * recipients);
    double accepted = s_num(a, "accepted_per_s");
    (void)printf("\nthe log's ceiling: %.0f log rows/s by binary COPY / %.0f rows per record "
                 "= %.0f records/s;\n  accord reaches %.2f of it (%.0f records/s)\n",
                 rows_per_s, 2 * recipients, ceiling, accepted / ceiling, accepted);
    json_object_set_new(ratios, "log ceiling (records/s)", json_real(ceiling));
    json_object_set_new(ratios, "accord / log ceiling", json_real(accepted / ceiling));
}

/* The first scenario whose name starts with prefix, e.g. "accord @". */
static const json_t *s_find_prefix(const json_t *results, const char *prefix)
{
    size_t i;
    const json_t *r;
    json_array_foreach(results, i, r)
    {
        const char *name = json_string_value(json_object_get(r, "scenario"));
        if (name != NULL && strncmp(name, prefix, strlen(prefix)) == 0 &&
            json_object_get(r, "error") == NULL) {
            return r;
        }
    }
    return NULL;
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
    (void)printf("  %-44s p50 %7.3f  p99 %7.3f\n", "accord", s_ms(a, "result_ms", "p50"),
                 s_ms(a, "result_ms", "p99"));
    json_object_set_new(ratios, "commit floor p50 ms", json_real(s_ms(c, "result_ms", "p50")));
    json_object_set_new(ratios, "commit floor p99 ms", json_real(s_ms(c, "result_ms", "p99")));
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
    return results;
}

static void s_table(const json_t *results)
{
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
        s_row(r);
    }
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        { "results", required_argument, NULL, 'r' },
        { "json", required_argument, NULL, 'j' },
        { "commit", required_argument, NULL, 'c' },
        { NULL, 0, NULL, 0 },
    };
    const char *results_path = NULL;
    const char *json_path = NULL;
    const char *commit = "unknown";
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
        default:
            (void)fprintf(stderr,
                          "usage: bench-report --results FILE [--json OUT] [--commit ID]\n");
            return 2;
        }
    }
    if (results_path == NULL) {
        (void)fprintf(stderr, "usage: bench-report --results FILE [--json OUT] [--commit ID]\n");
        return 2;
    }
    json_t *results = s_read_results(results_path);
    if (results == NULL) {
        return 1;
    }
    s_table(results);
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
        s_ratio(ratios, results, "copy (PG rows/s)", "copy", "pg_rows_per_s", "pg_rows_per_s");
        s_ceiling(ratios, results);
        s_floor(ratios, results);
    }
    int rc = 0;
    if (json_path != NULL) {
        char when[32];
        time_t now = time(NULL);
        struct tm tm;
        (void)strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
        json_t *doc = json_pack("{s:s, s:s, s:I, s:O, s:O}", "commit", commit, "at", when, "cpus",
                                (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "results", results,
                                "ratios", ratios);
        if (json_dump_file(doc, json_path, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) != 0) {
            (void)fprintf(stderr, "bench-report: could not write \"%s\"\n", json_path);
            rc = 1;
        } else {
            (void)printf("\nJSON written to %s\n", json_path);
        }
        json_decref(doc);
    }
    json_decref(ratios);
    json_decref(results);
    return rc;
}
