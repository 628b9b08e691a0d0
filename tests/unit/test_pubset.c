/* test_pubset.c - the batch's set of earlier publishes, used for idempotency */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "pubset.h"

static void s_setup(void)
{
    cr_assert_geq(sodium_init(), 0);
}

Test(pubset, finds_what_was_put_and_nothing_else, .init = s_setup)
{
    pubset_t set;
    pubset_init(&set);
    cr_assert_null(pubset_find(&set, "rft-maternity", "mat-1"));
    pubset_entry_t *e = pubset_put(&set, "rft-maternity", "mat-1");
    cr_assert_not(e->found);
    cr_assert_not(e->staged);
    e->found = true;
    memset(e->hash, 0xab, sizeof(e->hash));
    const pubset_entry_t *again = pubset_find(&set, "rft-maternity", "mat-1");
    cr_assert_not_null(again);
    cr_assert(again->found);
    cr_assert_eq(again->hash[31], 0xab);
    cr_assert_eq(pubset_put(&set, "rft-maternity", "mat-1"), again,
                 "a second put is the same entry");
    cr_assert_eq(set.count, 1);
    /* the same record id from another agency is another record */
    cr_assert_null(pubset_find(&set, "rft-health-visiting", "mat-1"));
    cr_assert_null(pubset_find(&set, "rft-maternity", "mat-10"));
    pubset_free(&set);
}

Test(pubset, keeps_every_entry_as_it_grows_and_forgets_all_when_cleared, .init = s_setup)
{
    pubset_t set;
    pubset_init(&set);
    char id[32];
    for (int i = 0; i < 5000; i++) {
        (void)snprintf(id, sizeof(id), "hv-2026-%06d", i);
        pubset_entry_t *e = pubset_put(&set, i % 2 ? "rft-health-visiting" : "rft-ed", id);
        e->staged = i % 3 == 0;
        e->hash[0] = (uint8_t)i;
    }
    cr_assert_eq(set.count, 5000);
    cr_assert_geq(set.cap, 10000, "at most half full");
    for (int i = 0; i < 5000; i++) {
        (void)snprintf(id, sizeof(id), "hv-2026-%06d", i);
        const pubset_entry_t *e = pubset_find(&set, i % 2 ? "rft-health-visiting" : "rft-ed", id);
        cr_assert_not_null(e, "entry %d lost", i);
        cr_assert_eq(e->staged, i % 3 == 0);
        cr_assert_eq(e->hash[0], (uint8_t)i);
        cr_assert_null(pubset_find(&set, i % 2 ? "rft-ed" : "rft-health-visiting", id));
    }
    pubset_clear(&set);
    cr_assert_eq(set.count, 0);
    cr_assert_null(pubset_find(&set, "rft-ed", "hv-2026-000000"));
    cr_assert_not(pubset_put(&set, "rft-ed", "hv-2026-000000")->found, "a fresh entry after clear");
    pubset_free(&set);
}
