/* test_seen.c - the subscriber's memory of share ids already handed over */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "seen.h"

static void s_id(uint8_t id[ACC_LOGROW_SHARE_BYTES], uint32_t n)
{
    /* distinct and spread like the random ids the broker makes */
    memset(id, 0, ACC_LOGROW_SHARE_BYTES);
    uint64_t x = (uint64_t)n * UINT64_C(0x9E3779B97F4A7C15) ^ 0x5bd1e995u;
    memcpy(id, &x, sizeof(x));
    memcpy(id + 8, &n, sizeof(n));
}

static char *s_temp_path(void)
{
    char *dir = strdup("/tmp/accord-seen.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char *path = acc_xasprintf("%s/seen", dir);
    free(dir);
    return path;
}

/* The file, and the directory s_temp_path made for it. */
static void s_remove(char *path)
{
    unlink(path);
    char *slash = strrchr(path, '/');
    cr_assert_not_null(slash);
    *slash = '\0';
    cr_assert_eq(rmdir(path), 0, "%s left behind", path);
    free(path);
}

Test(seen, remembers_across_a_restart_and_ignores_a_torn_last_line)
{
    char *path = s_temp_path();
    seen_t *s = NULL;
    acc_err_t err;
    cr_assert_eq(seen_open(&s, path, 5000, &err), ACC_OK, "%s", err.msg);
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    for (uint32_t i = 0; i < 1000; i++) {
        s_id(id, i);
        cr_assert_eq(seen_add(s, id, NULL, &err), ACC_OK, "%s", err.msg);
    }
    seen_destroy(&s);
    FILE *f = fopen(path, "a");
    fputs("3f0c2a", f); /* a crash in the middle of a write */
    fclose(f);
    cr_assert_eq(seen_open(&s, path, 5000, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(seen_count(s), 1000);
    for (uint32_t i = 0; i < 1000; i++) {
        s_id(id, i);
        cr_assert(seen_has(s, id), "id %u forgotten", i);
    }
    s_id(id, 1000);
    cr_assert_not(seen_has(s, id));
    seen_destroy(&s);
    s_remove(path);
}

Test(seen, keeps_the_newest_ids_when_full)
{
    seen_t *s = NULL;
    acc_err_t err;
    cr_assert_eq(seen_open(&s, NULL, SEEN_KEEP, &err), ACC_OK); /* memory only: fast */
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    uint32_t total = SEEN_KEEP + SEEN_KEEP / 2;
    for (uint32_t i = 0; i < total; i++) {
        s_id(id, i);
        cr_assert_eq(seen_add(s, id, NULL, &err), ACC_OK);
    }
    cr_assert_eq(seen_count(s), SEEN_KEEP);
    for (uint32_t i = 0; i < total; i++) {
        s_id(id, i);
        /* every lookup still terminates and answers right after many deletions */
        cr_assert_eq(seen_has(s, id), i >= total - SEEN_KEEP, "id %u", i);
    }
    seen_destroy(&s);
}

static long s_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    long n = 0;
    for (int c = fgetc(f); c != EOF; c = fgetc(f)) {
        n += c == '\n';
    }
    fclose(f);
    return n;
}

Test(seen, the_journal_is_compacted_to_the_newest_ids)
{
    char *path = s_temp_path();
    seen_t *s = NULL;
    acc_err_t err;
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    for (uint32_t i = 0; i < 250; i++) {
        s_id(id, i);
        cr_assert_eq(seen_add(s, id, NULL, &err), ACC_OK, "%s", err.msg);
    }
    /* compacted to 100 at the 200th id, then 50 more appended */
    cr_assert_eq(s_lines(path), 150);
    seen_destroy(&s);
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(seen_count(s), 100);
    for (uint32_t i = 0; i < 250; i++) {
        s_id(id, i);
        cr_assert_eq(seen_has(s, id), i >= 150, "id %u", i);
    }
    seen_destroy(&s);
    s_remove(path);
}

Test(seen, an_unwritable_journal_is_an_error_naming_the_file)
{
    seen_t *s = NULL;
    acc_err_t err;
    cr_assert_neq(seen_open(&s, "/nonexistent-dir/seen", 10, &err), ACC_OK);
    cr_assert(strstr(err.msg, "/nonexistent-dir/seen") != NULL, "%s", err.msg);
    cr_assert_null(s);
}

Test(seen, an_id_added_after_a_torn_last_line_survives_the_next_restart)
{
    char *path = s_temp_path();
    seen_t *s = NULL;
    acc_err_t err;
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    s_id(id, 1);
    cr_assert_eq(seen_add(s, id, NULL, &err), ACC_OK, "%s", err.msg);
    seen_destroy(&s);
    FILE *f = fopen(path, "a");
    fputs("3f0c2a", f); /* a crash in the middle of a write */
    fclose(f);
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    s_id(id, 2);
    cr_assert_eq(seen_add(s, id, NULL, &err), ACC_OK, "%s", err.msg);
    seen_destroy(&s);
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    cr_assert(seen_has(s, id), "the id appended after the torn line was lost");
    seen_destroy(&s);
    s_remove(path);
}

Test(seen, a_hand_over_begun_and_not_done_is_remembered_across_a_restart)
{
    char *path = s_temp_path();
    seen_t *s = NULL;
    acc_err_t err;
    uint8_t a[ACC_LOGROW_SHARE_BYTES];
    uint8_t b[ACC_LOGROW_SHARE_BYTES];
    s_id(a, 1);
    s_id(b, 2);
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(seen_start(s, a, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(seen_start(s, b, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(seen_add(s, b, NULL, &err), ACC_OK, "%s", err.msg);
    cr_assert(seen_is_started(s, a));
    cr_assert_not(seen_is_started(s, b), "done is no longer only begun");
    seen_destroy(&s); /* as if the agent were killed while handing a over */
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    cr_assert(seen_is_started(s, a));
    cr_assert_not(seen_has(s, a));
    cr_assert(seen_has(s, b));
    cr_assert_not(seen_is_started(s, b));
    seen_destroy(&s);
    s_remove(path);
}

Test(seen, a_record_handed_over_is_recognised_under_another_share_id_after_a_restart)
{
    char *path = s_temp_path();
    seen_t *s = NULL;
    acc_err_t err;
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    uint8_t rec[SEEN_RECORD_BYTES];
    uint8_t other[SEEN_RECORD_BYTES];
    seen_record_hash(rec, "rft-health-visiting", "hv-1");
    seen_record_hash(other, "rft-health-visitin", "ghv-1"); /* the same bytes run together */
    cr_assert_neq(memcmp(rec, other, sizeof(rec)), 0);
    seen_record_hash(other, "rmbc-early-help", "hv-1"); /* same id, another publisher */
    cr_assert_neq(memcmp(rec, other, sizeof(rec)), 0);
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    s_id(id, 7);
    cr_assert_eq(seen_add(s, id, rec, &err), ACC_OK, "%s", err.msg);
    seen_destroy(&s);
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    cr_assert(seen_has_record(s, rec));
    cr_assert_not(seen_has_record(s, other));
    seen_destroy(&s);
    s_remove(path);
}

Test(seen, compaction_keeps_records_and_unfinished_hand_overs_and_survives_a_reopen)
{
    char *path = s_temp_path();
    seen_t *s = NULL;
    acc_err_t err;
    uint8_t id[ACC_LOGROW_SHARE_BYTES];
    uint8_t rec[SEEN_RECORD_BYTES];
    uint8_t pending[ACC_LOGROW_SHARE_BYTES];
    s_id(pending, 99999);
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(seen_start(s, pending, &err), ACC_OK, "%s", err.msg);
    for (uint32_t i = 0; i < 250; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "hv-%u", i);
        seen_record_hash(rec, "rft-health-visiting", rid);
        s_id(id, i);
        cr_assert_eq(seen_start(s, id, &err), ACC_OK, "%s", err.msg);
        cr_assert_eq(seen_add(s, id, rec, &err), ACC_OK, "%s", err.msg);
    }
    seen_destroy(&s);
    char *tmp = acc_xasprintf("%s.tmp", path);
    cr_assert_neq(access(tmp, F_OK), 0, "the compaction's temporary file is gone");
    free(tmp);
    cr_assert_lt(s_lines(path), 2 * 100, "compacted");
    cr_assert_eq(seen_open(&s, path, 100, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(seen_count(s), 100);
    cr_assert(seen_is_started(s, pending), "an unfinished hand-over outlives compaction");
    for (uint32_t i = 0; i < 250; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "hv-%u", i);
        seen_record_hash(rec, "rft-health-visiting", rid);
        s_id(id, i);
        cr_assert_eq(seen_has(s, id), i >= 150, "id %u", i);
        cr_assert_eq(seen_has_record(s, rec), i >= 150, "record %u", i);
        cr_assert_not(seen_is_started(s, id), "id %u", i);
    }
    seen_destroy(&s);
    s_remove(path);
}
