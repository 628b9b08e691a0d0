/* main.c - accordd: argv, config, signals, exit code */
#include <getopt.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accord/config.h"
#include "accord/harden.h"
#include "accord/log.h"
#include "broker.h"

#define EXIT_USAGE  2
#define EXIT_CONFIG 3
#define EXIT_START  4
#define EXIT_RUN    5
#define EXIT_BEHIND 6

static volatile sig_atomic_t s_stop;
static volatile sig_atomic_t s_reload;

static void s_on_signal(int sig)
{
    if (sig == SIGHUP) {
        s_reload = 1;
    } else {
        s_stop = 1;
    }
}

static void s_usage(FILE *out)
{
    (void)fprintf(out,
                  "usage: accordd --config FILE [--check | --accept-restore]\n"
                  "\n"
                  "The accord broker: admits agencies named in the data-sharing agreement,\n"
                  "checks every record against it, logs every decision to PostgreSQL and\n"
                  "delivers each recipient only the fields it may see.\n"
                  "\n"
                  "  -c, --config FILE  broker configuration (YAML); see README.md\n"
                  "      --check        check the configuration, keys, agreement, the database\n"
                  "                     (reachable, schema current, not behind the high-water\n"
                  "                     mark) and exit, writing nothing and binding no socket\n"
                  "      --accept-restore\n"
                  "                     the database went back in time (restored from a backup,\n"
                  "                     or lost data): record the lost rows in a signed\n"
                  "                     `restored` log row so that the broker continues\n"
                  "                     after the highest seq ever used, then exit 0 without\n"
                  "                     serving (start it normally next); without a loss it\n"
                  "                     writes nothing but a key epoch and exits 0\n"
                  "  -h, --help         show this help\n"
                  "  -V, --version      show the version\n"
                  "\n"
                  "Prints \"ready endpoint=...\" on stdout when it accepts connections.\n"
                  "Signals: SIGHUP reloads the agreement; SIGTERM or SIGINT drains and stops.\n"
                  "\n"
                  "The high-water mark (the last row committed) is kept in state_directory\n"
                  "(default /var/lib/accord), outside the database, to notice a restore.\n"
                  "\n"
                  "Exit status: 0 stopped cleanly, 2 usage, 3 configuration invalid,\n"
                  "4 could not start (keys, database, socket), 5 failed while running,\n"
                  "6 the database is behind the high-water mark (a restore, lost data), at\n"
                  "start or found on reconnecting: it will not run until the operator\n"
                  "chooses (see --accept-restore).\n");
}

static void s_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = s_on_signal;
    (void)sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGHUP, &sa, NULL);
    (void)sigaction(SIGTERM, &sa, NULL);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)signal(SIGPIPE, SIG_IGN);
}

static int s_parse_args(int argc, char **argv, const char **config, broker_start_t *start)
{
    static const struct option options[] = {
        { "config", required_argument, NULL, 'c' },   { "check", no_argument, NULL, 'k' },
        { "accept-restore", no_argument, NULL, 'R' }, { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },        { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:hV", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            *config = optarg;
            break;
        case 'k':
            start->check_only = true;
            break;
        case 'R':
            start->accept_restore = true;
            break;
        case 'h':
            s_usage(stdout);
            return EXIT_SUCCESS;
        case 'V':
            (void)printf("accordd %s\n", ACCORD_VERSION);
            return EXIT_SUCCESS;
        default:
            s_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (*config == NULL || optind != argc || (start->check_only && start->accept_restore)) {
        s_usage(stderr);
        return EXIT_USAGE;
    }
    return -1;
}

static int s_serve(const acc_broker_config_t *config, broker_start_t *start)
{
    acc_err_t err;
    broker_t *broker = NULL;
    if (broker_open(&broker, config, start, &s_stop, &s_reload, &err) != ACC_OK) {
        acc_log_error("broker", "%s", err.msg);
        return start->behind ? EXIT_BEHIND : EXIT_START;
    }
    int status = EXIT_SUCCESS;
    if (start->check_only) {
        acc_log_notice("broker", "configuration, keys, database and agreement are in order; "
                                 "nothing was written");
    } else if (start->accept_restore) {
        acc_log_notice("broker", "--accept-restore: the log is in order for this broker to run "
                                 "(any loss is recorded in a signed restored row); start it "
                                 "normally now");
    } else if (broker_run(broker, &err) != ACC_OK) {
        acc_log_error("broker", "%s", err.msg);
        status = broker_is_behind(broker) ? EXIT_BEHIND : EXIT_RUN;
    }
    broker_destroy(&broker);
    return status;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    broker_start_t start = { 0 };
    int status = s_parse_args(argc, argv, &config_path, &start);
    if (status >= 0) {
        return status;
    }
    acc_err_t err;
    if (acc_process_harden(&err) != ACC_OK) { /* before any key is read */
        (void)fprintf(stderr, "accordd: %s\n", err.msg);
        return EXIT_START;
    }
    if (sodium_init() < 0) {
        (void)fprintf(stderr, "accordd: libsodium could not initialise\n");
        return EXIT_START;
    }
    acc_broker_config_t config;
    if (acc_broker_config_load(&config, config_path, NULL, &err) != ACC_OK) {
        (void)fprintf(stderr, "accordd: %s\n", err.msg);
        return EXIT_CONFIG;
    }
    acc_log_level_t level = ACC_LOG_INFO;
    if (acc_log_level_parse(&level, config.log_level) != ACC_OK) {
        (void)fprintf(stderr, "accordd: %s: log_level must be error, warn, notice, info or debug\n",
                      config_path);
        acc_broker_config_clear(&config);
        return EXIT_CONFIG;
    }
    acc_log_setup(level);
    s_install_signals();
    status = s_serve(&config, &start);
    acc_broker_config_clear(&config);
    return status;
}
