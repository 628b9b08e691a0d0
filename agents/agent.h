/* agent.h - what accord-agent's publish and subscribe halves share */
#ifndef ACCORD_AGENTS_AGENT_H
#define ACCORD_AGENTS_AGENT_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "accord/config.h"
#include "client.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE   2
#define EXIT_CONFIG  3
#define EXIT_CONNECT 4
#define EXIT_OUTPUT  5

#define AGENT_RETRY_MIN_MS 200
#define AGENT_RETRY_MAX_MS 10000

typedef struct {
    const char *input; /* publish: a file instead of stdin */
    const char *spool; /* publish or subscribe: the spool directory */
    const char *exec;  /* subscribe: run per delivered file */
    const char *seen;  /* subscribe: the dedupe journal */
    bool once;         /* publish --spool: stop when incoming/ is empty */
    long count;        /* subscribe: stop after this many deliveries */
} agent_args_t;

/* Set by SIGTERM and SIGINT. */
extern volatile sig_atomic_t agent_stop;

int64_t agent_now_ms(void);
void agent_sleep_ms(int64_t ms);

/* Writes obj as one line on stdout and flushes it; takes the reference. */
int agent_print_json(json_t *obj);

/* Connects and says Hello, waiting as long as it takes for a broker that is down;
 * a refused key is final (EXIT_CONNECT). */
int agent_connect(client_t **out, const acc_agent_config_t *config, bool subscribe);

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

#endif
