/* it_revoked.c - an agency removed from the agreement: its agents stop with exit
 * 77 and say why, instead of retrying forever; a broker that is merely down is
 * still waited for */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define EH          "rmbc-early-help" /* the last agency of the world: the one revoked */
#define EXIT_NOPERM 77
#define WAIT_MS     30000

static th_world_t *world;
static char spool[64];

static void setup(void)
{
    const char *agencies[] = { "rft-health-visiting", "rmbc-childrens-centres", EH, NULL };
    world = th_world_new(agencies);
    th_world_agreement(world, TH_RULES_HV_TO_PARTNERS);
    th_broker_start(world);
    snprintf(world->listen, sizeof(world->listen), "%s", world->endpoint); /* same after restart */
    snprintf(spool, sizeof(spool), "/tmp/accord-it-revoked.XXXXXX");
    cr_assert_not_null(mkdtemp(spool));
}

static void teardown(void)
{
    th_world_destroy(&world);
    char *cmd = acc_xasprintf("rm -rf -- '%s'", spool); /* our own mkdtemp directory */
    cr_assert_eq(system(cmd), 0);
    free(cmd);
}

TestSuite(revoked, .init = setup, .fini = teardown, .timeout = 180);

/* The agreement without rmbc-early-help, in force. */
static void s_revoke_early_help(void)
{
    world->agency_count = 2;
    th_world_agreement(world, th_rules_hv_to_cc);
    kill(world->broker->pid, SIGHUP);
    cr_assert(th_broker_logged(world, "reloaded \"test-agreement\"", WAIT_MS));
}

static void s_assert_stops_revoked(th_proc_t **agent, const char *agency, const char *command)
{
    cr_assert_eq(th_proc_wait(agent, WAIT_MS), EXIT_NOPERM);
    char *log_path = acc_xasprintf("%s/%s.%s.log", world->dir, agency, command);
    char *log = th_slurp(log_path);
    char *named = acc_xasprintf("agency \"%s\" is not permitted", agency);
    cr_assert(strstr(log, named) != NULL, "%s", log);
    cr_assert(strstr(log, "stopping (exit 77)") != NULL, "%s", log);
    free(named);
    free(log);
    free(log_path);
}

Test(revoked, a_subscriber_whose_agency_is_revoked_stops_with_exit_77)
{
    const char *extra[] = { "--spool", spool, NULL };
    th_proc_t *agent = th_agent_start_argv(world, "subscribe", EH, extra);
    cr_assert(th_agent_wait_connected(world, EH, "subscribe"));
    s_revoke_early_help();
    s_assert_stops_revoked(&agent, EH, "subscribe");
}

Test(revoked, a_spool_publisher_whose_agency_is_revoked_stops_with_exit_77)
{
    const char *extra[] = { "--spool", spool, NULL };
    th_proc_t *agent = th_agent_start_argv(world, "publish", EH, extra);
    cr_assert(th_agent_wait_connected(world, EH, "publish"));
    s_revoke_early_help();
    s_assert_stops_revoked(&agent, EH, "publish");
}

Test(revoked, an_agent_whose_key_is_in_no_agreement_stops_with_exit_77_at_startup)
{
    th_agent_config(world, "stranger", NULL);
    const char *extra[] = { "--spool", spool, NULL };
    th_proc_t *agent = th_agent_start_argv(world, "subscribe", "stranger", extra);
    s_assert_stops_revoked(&agent, "stranger", "subscribe");
    char *log_path = acc_xasprintf("%s/stranger.subscribe.log", world->dir);
    char *log = th_slurp(log_path);
    cr_assert(strstr(log, "the broker refused its key in 3 handshake(s) in a row") != NULL, "%s",
              log);
    free(log);
    free(log_path);
}

Test(revoked, a_broker_that_is_down_is_waited_for_not_a_reason_to_stop)
{
    const char *extra[] = { "--spool", spool, NULL };
    th_proc_t *agent = th_agent_start_argv(world, "subscribe", EH, extra);
    cr_assert(th_agent_wait_connected(world, EH, "subscribe"));
    th_broker_stop(world);
    th_sleep_ms(8000); /* the outage: longer than a heartbeat and the silence it allows */
    int status = 0;
    cr_assert_eq(waitpid(agent->pid, &status, WNOHANG), 0, "the agent stopped during an outage");
    th_broker_start(world);
    char *json = th_health_visit_json("hv-after-outage", th_nhs(1));
    cr_assert_eq(th_publish_code(world, "rft-health-visiting", json, ""),
                 ACCORD__V1__ERROR_CODE__OK);
    free(json);
    cr_assert_eq(th_pg_wait_acked_count(world, "to_agency = '" EH "'", 1, WAIT_MS), 1,
                 "the agent carried on after the outage");
    cr_assert_eq(th_proc_stop(&agent, SIGTERM, 10000), 0);
}
