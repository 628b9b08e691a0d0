/* it_copybuf.c - the broker's binary COPY encoder against a real PostgreSQL: every
 * kind of value the log holds goes in through COPY ... (FORMAT binary) and reads
 * back as the same value, including the ones text COPY had to escape. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "copybuf.h"
#include "harness.h"

static th_world_t *world;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", NULL };
    world = th_world_new(agencies);
    PGresult *res = PQexec(world->db, "CREATE TABLE copybuf_check (n int, i bigint, u uuid, "
                                      "at timestamptz, t text, b bytea, a text[], s bigint[])");
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(world->db));
    PQclear(res);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(copybuf, .init = setup, .fini = teardown, .timeout = 60);

#define COLUMNS 8

static void s_int4(copybuf_t *b, int v)
{
    const uint8_t be[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    copybuf_bytea(b, be, sizeof(be)); /* an int's binary form: its four bytes */
}

/* Sends the rows as one COPY and returns PostgreSQL's verdict (NULL: accepted). */
static char *s_copy(copybuf_t *b)
{
    static char error[512];
    PGresult *res = PQexec(
        world->db, "COPY copybuf_check (n, i, u, at, t, b, a, s) FROM STDIN (FORMAT binary)");
    cr_assert_eq(PQresultStatus(res), PGRES_COPY_IN, "%s", PQerrorMessage(world->db));
    PQclear(res);
    cr_assert_eq(PQputCopyData(world->db, b->data, (int)b->len), 1);
    cr_assert_eq(PQputCopyEnd(world->db, NULL), 1);
    res = PQgetResult(world->db);
    char *verdict = NULL;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        (void)snprintf(error, sizeof(error), "%s", PQresultErrorMessage(res));
        verdict = error;
    }
    PQclear(res);
    while ((res = PQgetResult(world->db)) != NULL) {
        PQclear(res);
    }
    return verdict;
}

/* Row n's columns as PostgreSQL's text, joined by '|' ("NULL" for NULL). */
static void s_read_row(int n, char *out, size_t size)
{
    char sql[256];
    (void)snprintf(sql, sizeof(sql),
                   "SELECT i::text, u::text, to_char(at AT TIME ZONE 'UTC', "
                   "'YYYY-MM-DD HH24:MI:SS.US'), t, encode(b, 'hex'), a::text, s::text, "
                   "cardinality(a)::text FROM copybuf_check WHERE n = %d",
                   n);
    PGresult *res = PQexec(world->db, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(world->db));
    cr_assert_eq(PQntuples(res), 1, "row %d: %d rows", n, PQntuples(res));
    out[0] = '\0';
    for (int c = 0; c < PQnfields(res); c++) {
        (void)strncat(out, c > 0 ? "|" : "", size - strlen(out) - 1);
        (void)strncat(out, PQgetisnull(res, 0, c) ? "NULL" : PQgetvalue(res, 0, c),
                      size - strlen(out) - 1);
    }
    PQclear(res);
}

Test(copybuf, every_kind_of_value_reads_back_as_written)
{
    static const uint8_t uuid[16] = { 0x01, 0x8f, 0x3a, 0x5c, 0x7d, 0x10, 0x70, 0x00,
                                      0x80, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0xff };
    static const uint8_t bytes[] = { 0x00, 0x5c, 0x78, 0xff, 0x09, 0x0a };
    /* what text COPY escaped, and array quoting: tab, newline, backslash, quote,
     * comma, braces; and a name in Welsh */
    const char *rules[] = { "hv-to-cc",
                            "a,b",
                            "q\"uote",
                            "{brace}",
                            "back\\slash",
                            "tab\there",
                            "Ysgol Gymraeg Llanfair\xe2\x80\x99s" };
    const int64_t seqs[] = { 1, -2, INT64_MAX };
    copybuf_t b = { 0 };

    copybuf_row(&b, COLUMNS);
    s_int4(&b, 1);
    copybuf_int8(&b, INT64_MIN);
    copybuf_uuid(&b, uuid);
    copybuf_timestamp(&b, 1796300000123456LL); /* 2026-12-03 12:13:20.123456 UTC */
    copybuf_text(&b, "line one\nline\ttwo \\N and \\\\ a quote's end");
    copybuf_bytea(&b, bytes, sizeof(bytes));
    copybuf_text_array(&b, rules, sizeof(rules) / sizeof(rules[0]));
    copybuf_int8_array(&b, seqs, sizeof(seqs) / sizeof(seqs[0]));

    copybuf_row(&b, COLUMNS); /* the empty and absent values */
    s_int4(&b, 2);
    copybuf_int8(&b, 0);
    copybuf_null(&b);
    copybuf_timestamp(&b, 1); /* a microsecond after 1970 began, before PostgreSQL's 2000 */
    copybuf_text(&b, "");
    copybuf_bytea(&b, bytes, 0);
    copybuf_text_array(&b, NULL, 0);
    copybuf_int8_array(&b, seqs, 0);

    copybuf_row(&b, COLUMNS);
    s_int4(&b, 3);
    copybuf_null(&b);
    copybuf_null(&b);
    copybuf_timestamp(&b, 0);
    copybuf_text(&b, NULL);
    copybuf_bytea(&b, NULL, 0);
    copybuf_text_array(&b, rules, 1);
    copybuf_int8_array(&b, NULL, 0);
    copybuf_end(&b);

    char *verdict = s_copy(&b);
    cr_assert_null(verdict, "PostgreSQL refused the rows: %s", verdict);
    copybuf_free(&b);

    char row[1024];
    s_read_row(1, row, sizeof(row));
    const char *want1 =
        "-9223372036854775808|018f3a5c-7d10-7000-8011-2233445566ff|2026-12-03 12:13:20.123456|"
        "line one\nline\ttwo \\N and \\\\ a quote's end|005c78ff090a|"
        "{hv-to-cc,\"a,b\",\"q\\\"uote\",\"{brace}\",\"back\\\\slash\",\"tab\there\","
        "\"Ysgol Gymraeg Llanfair\xe2\x80\x99s\"}|{1,-2,9223372036854775807}|7";
    cr_assert_str_eq(row, want1);
    s_read_row(2, row, sizeof(row));
    cr_assert_str_eq(row, "0|NULL|1970-01-01 00:00:00.000001|||{}|{}|0");
    s_read_row(3, row, sizeof(row));
    cr_assert_str_eq(row, "NULL|NULL|1970-01-01 00:00:00.000000|NULL|NULL|{hv-to-cc}|NULL|1");
}

Test(copybuf, a_row_with_a_column_missing_is_refused_whole)
{
    copybuf_t b = { 0 };
    copybuf_row(&b, COLUMNS);
    s_int4(&b, 4);
    copybuf_int8(&b, 7);
    copybuf_end(&b);
    char *verdict = s_copy(&b);
    cr_assert_not_null(verdict, "a short row was accepted");
    copybuf_free(&b);
    PGresult *res = PQexec(world->db, "SELECT count(*) FROM copybuf_check");
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0", "the refused COPY left rows behind");
    PQclear(res);
}
