/* it_startup.c - accordd refuses to start on unsafe keys or an invalid agreement,
 * and says exactly why */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"

static th_world_t *world;

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, th_rules_hv_to_cc);
}

static void teardown(void)
{
    th_world_destroy(&world);
}

TestSuite(startup, .init = setup, .fini = teardown, .timeout = 60);

/* accordd --check, stderr appended to DIR/accordd.log; its exit status. */
static int s_check(void)
{
    return th_broker_run_once(world, "--check");
}

static bool s_logged(const char *needle)
{
    return th_broker_logged(world, needle, 1000);
}

Test(startup, starts_with_safe_keys_and_a_valid_agreement)
{
    cr_assert_eq(s_check(), 0);
    cr_assert(s_logged("configuration, keys, database and agreement are in order"));
}

Test(startup, refuses_a_secret_key_that_others_can_read)
{
    char key[512];
    snprintf(key, sizeof(key), "%s/broker.curve.secret", world->dir);
    cr_assert_eq(chmod(key, 0644), 0);
    cr_assert_eq(s_check(), 4);
    cr_assert(s_logged("readable or writable by group or others (mode 0644); run chmod 600"));
}

Test(startup, refuses_an_invalid_agreement_naming_file_line_and_column)
{
    th_world_agreement(world, "record_types: []\nrules:\n  - id: r\n    from: nobody\n");
    cr_assert_eq(s_check(), 4);
    cr_assert(s_logged("agreement.yaml:21:11: rule \"r\" is from unknown agency \"nobody\""));
}

Test(startup, refuses_a_database_it_cannot_reach)
{
    snprintf(world->conninfo, sizeof(world->conninfo), "host=/nonexistent dbname=accord");
    cr_assert_eq(s_check(), 4);
    cr_assert(s_logged("could not connect to PostgreSQL"));
}
