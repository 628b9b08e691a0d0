/* agent.h - what accord-agent's publish and subscribe halves share */
#ifndef ACCORD_AGENTS_AGENT_H
#define ACCORD_AGENTS_AGENT_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "accord/clock.h"
#include "accord/config.h"
#include "client.h"

/* sysexits(3) codes, so a unit can say RestartPreventExitStatus=64 77 78. */
#define EXIT_REFUSED 1  /* publish from a stream, outcome, lookup: something was refused */
#define EXIT_USAGE   64 /* EX_USAGE: bad arguments */
#define EXIT_CONNECT 69 /* EX_UNAVAILABLE: stopped before the broker answered everything */
#define EXIT_OUTPUT  74 /* EX_IOERR: results or deliveries could not be written */
#define EXIT_NOPERM  77 /* EX_NOPERM: the broker definitely refuses this agency (revoked) */
#define EXIT_CONFIG  78 /* EX_CONFIG: the configuration or the key is unusable */

#define EXEC_TIMEOUT_MAX_S 86400 /* as exec_timeout_s in agent.yaml */

#define AGENT_REFUSALS_FINAL 3 /* refused handshakes in a row that stop the agent (77) */

#define AGENT_RETRY_MIN_MS 200
#define AGENT_RETRY_MAX_MS 10000

#define AGENT_TIMEOUT_DEFAULT_S 30 /* outcome, lookup: --timeout */
#define AGENT_TIMEOUT_MAX_S     3600

typedef struct {
    const char *input;    /* publish: a file instead of stdin */
    const char *spool;    /* publish, subscribe or outcome: the spool directory */
    const char *exec;     /* subscribe: run per delivered file */
    const char *seen;     /* subscribe: the dedupe journal */
    bool once;            /* publish or outcome --spool: stop when incoming/ is empty */
    long count;           /* subscribe: stop after this many deliveries */
    long exec_timeout_s;  /* subscribe: --exec-timeout, 0 = the config's exec_timeout_s */
    long timeout_s;       /* outcome, lookup: how long the broker has to answer */
    const char *share;    /* outcome: --share, NULL to read NDJSON from stdin */
    const char *status;   /* outcome: --status */
    json_t *fields;       /* outcome: the --field arguments, NULL when none */
    const char *nhs;      /* lookup: the child's NHS number (the argument) */
    const char *local_id; /* lookup: --local-id */
    const char *dob;      /* lookup: --dob, with --local-id */
    const char *purpose;  /* lookup: --purpose */
    bool json;            /* lookup: --json */
} agent_args_t;

/* Set by SIGTERM and SIGINT. */
extern volatile sig_atomic_t agent_stop;

/* Writes obj as one line on stdout and flushes it; takes the reference. */
int agent_print_json(json_t *obj);

/* Connects and says Hello, waiting as long as it takes for a broker that is down.
 * Final: a key the broker definitely refuses (EXIT_NOPERM), a configuration it
 * cannot use or the broker calls wrong (EXIT_CONFIG). */
int agent_connect(client_t **out, const acc_agent_config_t *config, bool subscribe);

/* As agent_connect, giving up at deadline_ms (acc_now_ms's clock): EXIT_CONNECT. */
int agent_connect_until(client_t **out, const acc_agent_config_t *config, bool subscribe,
                        int64_t deadline_ms);

/* Sends the request env (its correlation id set, not 0) and waits until
 * deadline_ms for the Envelope answering it, whose body is want or an Error:
 * EXIT_SUCCESS with *answer, the caller's to free (wiping allocator). An answer
 * saying UNAVAILABLE, an Error HELLO_REQUIRED, a new connection and a failed
 * send get the request sent again after a growing pause; with idempotent also
 * silence for a while (the broker answers a repeat with its first answer).
 * EXIT_CONNECT at the deadline or a stop, EXIT_NOPERM or EXIT_CONFIG when the
 * broker refuses this agency (logged). */
int agent_ask(client_t *client, const Accord__V1__Envelope *env,
              Accord__V1__Envelope__BodyCase want, bool idempotent, int64_t deadline_ms,
              Accord__V1__Envelope **answer);

/* Logs why the broker will not have this agent (rc from client_recv or
 * client_hello: ACC_ERR_PERMISSION or ACC_ERR_INVALID) and returns the exit
 * status for it: EXIT_NOPERM or EXIT_CONFIG. */
int agent_stop_refused(acc_rc_t rc, const acc_err_t *err);

/* Writes len bytes to path through a new temporary file in the same directory
 * (an unpredictable dot name, created O_EXCL|O_NOFOLLOW), fsync'd and renamed into
 * place, then fsyncs the directory. Whatever was at path, a link included, is
 * replaced, never written through. On failure path is untouched. */
ACC_NODISCARD acc_rc_t agent_write_durably(const char *path, const char *bytes, size_t len,
                                           acc_err_t *err);

/* fsyncs a directory (not through a link), so a rename into it survives a power cut. */
ACC_NODISCARD acc_rc_t agent_sync_dir(const char *dir, acc_err_t *err);

/* Creates dir (0750) if it does not exist; a symbolic link or anything else that
 * is not a directory at dir is an error. */
ACC_NODISCARD acc_rc_t agent_make_dir(const char *dir, acc_err_t *err);

int publish_run(const acc_agent_config_t *config, const agent_args_t *args);
int subscribe_run(const acc_agent_config_t *config, const agent_args_t *args);
int outcome_run(const acc_agent_config_t *config, const agent_args_t *args);
int lookup_run(const acc_agent_config_t *config, const agent_args_t *args);

/* Each command's section of --help. */
void outcome_usage(FILE *out);
void lookup_usage(FILE *out);

#endif
