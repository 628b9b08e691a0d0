/* config.c - broker.yaml and agent.yaml, read through tables of typed entries */
#include "accord/config.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accord/keys.h"

#define KIB INT64_C(1024)
#define MIB (KIB * KIB)
#define GIB (KIB * MIB)

static const acc_yaml_entry_t s_broker_entries[] = {
    { "listen", ACC_YT_STRING, false, offsetof(acc_broker_config_t, listen), "tcp://127.0.0.1:7400",
      0, 0 },
    { "database", ACC_YT_STRING, true, offsetof(acc_broker_config_t, database), NULL, 0, 0 },
    { "agreement", ACC_YT_STRING, true, offsetof(acc_broker_config_t, agreement), NULL, 0, 0 },
    { "curve_secret_key", ACC_YT_STRING, true, offsetof(acc_broker_config_t, curve_secret_key),
      NULL, 0, 0 },
    { "signing_key", ACC_YT_STRING, true, offsetof(acc_broker_config_t, signing_key), NULL, 0, 0 },
    { "subject_key", ACC_YT_STRING, true, offsetof(acc_broker_config_t, subject_key), NULL, 0, 0 },
    { "metrics", ACC_YT_STRING, false, offsetof(acc_broker_config_t, metrics), "", 0, 0 },
    { "log_level", ACC_YT_STRING, false, offsetof(acc_broker_config_t, log_level), "info", 0, 0 },
    { "max_message_bytes", ACC_YT_INT, false, offsetof(acc_broker_config_t, max_message_bytes),
      "1048576", 4 * KIB, 64 * MIB },
    { "batch_max_rows", ACC_YT_INT, false, offsetof(acc_broker_config_t, batch_max_rows), "1000", 1,
      100000 },
    { "checkpoint_rows", ACC_YT_INT, false, offsetof(acc_broker_config_t, checkpoint_rows), "1000",
      1, 10000000 },
    { "epoch_max_rows", ACC_YT_INT, false, offsetof(acc_broker_config_t, epoch_max_rows), "1000000",
      1, INT64_C(1000000000000) },
    { "epoch_max_seconds", ACC_YT_INT, false, offsetof(acc_broker_config_t, epoch_max_seconds),
      "86400", 1, INT64_C(31536000) },
    { "redeliver_after_ms", ACC_YT_INT, false, offsetof(acc_broker_config_t, redeliver_after_ms),
      "30000", 100, INT64_C(86400000) },
    { "peer_queue_max", ACC_YT_INT, false, offsetof(acc_broker_config_t, peer_queue_max), "1000", 1,
      1000000 },
    { "peer_timeout_ms", ACC_YT_INT, false, offsetof(acc_broker_config_t, peer_timeout_ms), "15000",
      300, 3600000 },
    { "database_connect_timeout_s", ACC_YT_INT, false,
      offsetof(acc_broker_config_t, database_connect_timeout_s), "5", 2, 300 },
    { "database_statement_timeout_ms", ACC_YT_INT, false,
      offsetof(acc_broker_config_t, database_statement_timeout_ms), "10000", 100, 3600000 },
    { "database_query_timeout_ms", ACC_YT_INT, false,
      offsetof(acc_broker_config_t, database_query_timeout_ms), "2000", 100, 3600000 },
    { "state_directory", ACC_YT_STRING, false, offsetof(acc_broker_config_t, state_directory),
      "/var/lib/accord", 0, 0 },
    { "lookups_per_second", ACC_YT_INT, false, offsetof(acc_broker_config_t, lookups_per_second),
      "10", 1, 10000 },
    { "log_reads_per_second", ACC_YT_INT, false,
      offsetof(acc_broker_config_t, log_reads_per_second), "200", 1, 100000 },
};

static const acc_yaml_entry_t s_agent_entries[] = {
    { "broker", ACC_YT_STRING, true, offsetof(acc_agent_config_t, broker), NULL, 0, 0 },
    { "broker_key", ACC_YT_STRING, true, offsetof(acc_agent_config_t, broker_key), NULL, 0, 0 },
    { "agency", ACC_YT_STRING, true, offsetof(acc_agent_config_t, agency), NULL, 0, 0 },
    { "curve_secret_key", ACC_YT_STRING, true, offsetof(acc_agent_config_t, curve_secret_key), NULL,
      0, 0 },
    { "subscriptions", ACC_YT_STRLIST, false, offsetof(acc_agent_config_t, subscriptions), NULL, 0,
      0 },
    { "log_level", ACC_YT_STRING, false, offsetof(acc_agent_config_t, log_level), "info", 0, 0 },
    { "window", ACC_YT_INT, false, offsetof(acc_agent_config_t, window), "100", 1, 10000 },
    { "max_message_bytes", ACC_YT_INT, false, offsetof(acc_agent_config_t, max_message_bytes),
      "1048576", 4 * KIB, 64 * MIB },
    { "heartbeat_ms", ACC_YT_INT, false, offsetof(acc_agent_config_t, heartbeat_ms), "5000", 100,
      600000 },
    { "publish_spool", ACC_YT_STRING, false, offsetof(acc_agent_config_t, publish_spool), "", 0,
      0 },
    { "subscribe_spool", ACC_YT_STRING, false, offsetof(acc_agent_config_t, subscribe_spool), "", 0,
      0 },
    { "max_spool_file_bytes", ACC_YT_INT, false, offsetof(acc_agent_config_t, max_spool_file_bytes),
      "268435456", 1, 64 * GIB },
    { "exec", ACC_YT_STRING, false, offsetof(acc_agent_config_t, exec), "", 0, 0 },
    { "seen_file", ACC_YT_STRING, false, offsetof(acc_agent_config_t, seen_file), "", 0, 0 },
    { "exec_timeout_s", ACC_YT_INT, false, offsetof(acc_agent_config_t, exec_timeout_s), "60", 1,
      86400 },
};

#define N_ENTRIES(t) (sizeof(t) / sizeof((t)[0]))

/* Paths in a config are relative to the config file, not to the working directory,
 * so a service and an operator's shell see the same files. */
static void s_resolve(char **path_p, const char *config_path)
{
    char *path = *path_p;
    if (path == NULL || path[0] == '/' || path[0] == '\0') {
        return;
    }
    const char *slash = strrchr(config_path, '/');
    if (slash == NULL) {
        return;
    }
    int dir_len = (int)(slash - config_path);
    *path_p = acc_xasprintf("%.*s/%s", dir_len, config_path, path);
    free(path);
}

static acc_rc_t s_load(void *out, const acc_yaml_entry_t *table, size_t n, const char *path,
                       acc_diag_t *diag, acc_err_t *err)
{
    acc_yaml_doc_t *doc = NULL;
    acc_rc_t rc = acc_yaml_load(&doc, path, err);
    if (rc != ACC_OK) {
        return rc;
    }
    acc_diag_t local;
    acc_diag_init(&local);
    acc_diag_t *d = diag != NULL ? diag : &local;
    size_t before = d->count;
    const yaml_node_t *root = acc_yaml_root(doc);
    if (root == NULL || root->type != YAML_MAPPING_NODE) {
        rc = acc_err_set(err, ACC_ERR_INVALID, "%s:1:1: expected a mapping of settings", path);
        acc_diag_addf(d, path, 1, 1, "expected a mapping of settings");
    } else {
        rc = acc_yaml_read_map(doc, root, table, n, out, d);
        if (rc != ACC_OK && d->count > before) {
            rc = acc_err_set(err, ACC_ERR_INVALID, "%s", d->lines[before]);
        }
    }
    if (rc != ACC_OK) {
        acc_yaml_free_map(table, n, out);
    }
    acc_diag_clear(&local);
    acc_yaml_destroy(&doc);
    return rc;
}

acc_rc_t acc_broker_config_load(acc_broker_config_t *out, const char *path, acc_diag_t *diag,
                                acc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    acc_rc_t rc = s_load(out, s_broker_entries, N_ENTRIES(s_broker_entries), path, diag, err);
    if (rc != ACC_OK) {
        return rc;
    }
    s_resolve(&out->agreement, path);
    s_resolve(&out->curve_secret_key, path);
    s_resolve(&out->signing_key, path);
    s_resolve(&out->subject_key, path);
    s_resolve(&out->state_directory, path);
    return ACC_OK;
}

void acc_broker_config_clear(acc_broker_config_t *cfg)
{
    acc_yaml_free_map(s_broker_entries, N_ENTRIES(s_broker_entries), cfg);
    memset(cfg, 0, sizeof(*cfg));
}

acc_rc_t acc_agent_config_load(acc_agent_config_t *out, const char *path, acc_diag_t *diag,
                               acc_err_t *err)
{
    memset(out, 0, sizeof(*out));
    acc_rc_t rc = s_load(out, s_agent_entries, N_ENTRIES(s_agent_entries), path, diag, err);
    if (rc != ACC_OK) {
        return rc;
    }
    if (!acc_agent_config_key_on_stdin(out)) {
        s_resolve(&out->curve_secret_key, path);
    }
    s_resolve(&out->publish_spool, path);
    s_resolve(&out->subscribe_spool, path);
    s_resolve(&out->seen_file, path);
    return ACC_OK;
}

void acc_agent_config_clear(acc_agent_config_t *cfg)
{
    sodium_free(cfg->curve_secret);
    acc_yaml_free_map(s_agent_entries, N_ENTRIES(s_agent_entries), cfg);
    memset(cfg, 0, sizeof(*cfg));
}

bool acc_agent_config_key_on_stdin(const acc_agent_config_t *cfg)
{
    return cfg->curve_secret_key != NULL && strcmp(cfg->curve_secret_key, ACC_KEY_STDIN) == 0;
}

/* Nothing the agent starts later (an exec hook) may inherit the key's file. */
static acc_rc_t s_close_stdin(acc_err_t *err)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || dup2(fd, STDIN_FILENO) < 0) {
        int saved = errno;
        if (fd >= 0) {
            (void)close(fd);
        }
        return acc_err_set(err, ACC_ERR_IO, "could not replace standard input by /dev/null: %s",
                           strerror(saved));
    }
    (void)close(fd);
    return ACC_OK;
}

acc_rc_t acc_agent_config_read_key(acc_agent_config_t *cfg, acc_err_t *err)
{
    uint8_t *key = sodium_malloc(ACC_CURVE_KEY_BYTES);
    acc_assert(key != NULL);
    bool on_stdin = acc_agent_config_key_on_stdin(cfg);
    acc_rc_t rc = on_stdin ? acc_keys_read_curve_secret_fd(key, STDIN_FILENO, err)
                           : acc_keys_read_curve_secret(key, cfg->curve_secret_key, err);
    if (on_stdin) {
        acc_rc_t closed = s_close_stdin(rc == ACC_OK ? err : NULL);
        rc = rc == ACC_OK ? closed : rc;
    }
    if (rc != ACC_OK || !on_stdin) {
        sodium_free(key);
        return rc;
    }
    sodium_free(cfg->curve_secret);
    cfg->curve_secret = key;
    return ACC_OK;
}
