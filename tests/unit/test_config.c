/* test_config.c - broker and agent configuration files */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accord/config.h"
#include "accord/yaml.h"

static char s_dir[64];

static const char *s_write(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", s_dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f != NULL);
    fputs(text, f);
    fclose(f);
    return path;
}

static void setup(void)
{
    snprintf(s_dir, sizeof(s_dir), "/tmp/accord-config.XXXXXX");
    cr_assert(mkdtemp(s_dir) != NULL);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(config, .init = setup, .fini = teardown);

Test(config, loads_broker_settings_with_defaults_and_relative_paths)
{
    const char *path = s_write("broker.yaml", "database: \"dbname=accord\"\n"
                                              "agreement: agreement.yaml\n"
                                              "curve_secret_key: keys/broker.curve.secret\n"
                                              "signing_key: /etc/accord/broker.sign.secret\n"
                                              "subject_key: keys/broker.subject.secret\n");
    acc_broker_config_t cfg;
    acc_err_t err;
    cr_assert_eq(acc_broker_config_load(&cfg, path, NULL, &err), ACC_OK, "%s", err.msg);
    cr_assert_str_eq(cfg.listen, "tcp://127.0.0.1:7400");
    cr_assert_eq(cfg.max_message_bytes, 1048576);
    cr_assert_eq(cfg.batch_max_rows, 1000);
    char expected[128];
    snprintf(expected, sizeof(expected), "%s/agreement.yaml", s_dir);
    cr_assert_str_eq(cfg.agreement, expected);
    cr_assert_str_eq(cfg.signing_key, "/etc/accord/broker.sign.secret");
    acc_broker_config_clear(&cfg);
}

Test(config, reports_every_problem_with_line_and_column)
{
    const char *path = s_write("broker.yaml", "database: x\n"
                                              "agrement: a.yaml\n"
                                              "max_message_bytes: 12\n"
                                              "database: y\n");
    acc_broker_config_t cfg;
    acc_err_t err;
    acc_diag_t diag;
    acc_diag_init(&diag);
    cr_assert_eq(acc_broker_config_load(&cfg, path, &diag, &err), ACC_ERR_INVALID);
    char want[160];
    snprintf(want, sizeof(want), "%s:2:1: unknown key \"agrement\"", path);
    cr_assert_str_eq(diag.lines[0], want);
    cr_assert(strstr(diag.lines[1], ":3:20: \"max_message_bytes\" must be between") != NULL, "%s",
              diag.lines[1]);
    cr_assert(strstr(diag.lines[2], ":4:1: duplicate key \"database\"") != NULL, "%s",
              diag.lines[2]);
    cr_assert(strstr(diag.lines[3], "missing required key \"agreement\"") != NULL, "%s",
              diag.lines[3]);
    cr_assert_str_eq(err.msg, want);
    acc_diag_clear(&diag);
}

Test(config, refuses_yaml_aliases)
{
    const char *path = s_write("agent.yaml", "broker: &b tcp://x:1\nbroker_key: *b\n");
    acc_agent_config_t cfg;
    acc_err_t err;
    cr_assert_eq(acc_agent_config_load(&cfg, path, NULL, &err), ACC_ERR_INVALID);
    cr_assert(strstr(err.msg, ":1:9: anchors and aliases") != NULL, "%s", err.msg);
}

Test(config, reads_agent_subscriptions_as_a_list)
{
    const char *path = s_write("agent.yaml", "broker: tcp://127.0.0.1:7400\n"
                                             "broker_key: \"k\"\nagency: a\n"
                                             "curve_secret_key: a.curve.secret\n"
                                             "subscriptions: [health-visit, ed-attendance]\n");
    acc_agent_config_t cfg;
    acc_err_t err;
    cr_assert_eq(acc_agent_config_load(&cfg, path, NULL, &err), ACC_OK, "%s", err.msg);
    cr_assert_eq(cfg.subscriptions.count, 2);
    cr_assert_str_eq(cfg.subscriptions.items[1], "ed-attendance");
    cr_assert_eq(cfg.window, 100);
    acc_agent_config_clear(&cfg);
}

/* A comment line of n bytes pads a file to any size without changing its meaning. */
static char *s_padded(size_t total)
{
    static const char body[] = "broker: tcp://127.0.0.1:7700\n";
    char *text = malloc(total + 1);
    cr_assert_not_null(text);
    memset(text, ' ', total);
    text[0] = '#';
    text[total - sizeof(body)] = '\n';
    memcpy(text + total - (sizeof(body) - 1), body, sizeof(body));
    return text;
}

Test(config, reads_files_of_any_size_up_to_the_limit_and_refuses_larger)
{
    /* around the reader's first buffer and at the limit itself */
    const size_t sizes[] = { 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, ACC_YAML_MAX_BYTES };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *text = s_padded(sizes[i]);
        const char *path = s_write("big.yaml", text);
        free(text);
        acc_yaml_doc_t *doc = NULL;
        acc_err_t err;
        cr_assert_eq(acc_yaml_load(&doc, path, &err), ACC_OK, "%zu bytes: %s", sizes[i], err.msg);
        acc_yaml_destroy(&doc);
    }
    char *text = s_padded(ACC_YAML_MAX_BYTES + 1);
    const char *path = s_write("big.yaml", text);
    free(text);
    acc_yaml_doc_t *doc = NULL;
    acc_err_t err;
    cr_assert_eq(acc_yaml_load(&doc, path, &err), ACC_ERR_LIMIT);
    cr_assert(strstr(err.msg, "larger than") != NULL, "%s", err.msg);
    cr_assert_null(doc);
}

/* ---- branch subexec ---- */

Test(config, agent_key_on_stdin_is_not_a_path_and_exec_timeout_is_bounded)
{
    const char *path = s_write("agent.yaml", "broker: tcp://127.0.0.1:7400\n"
                                             "broker_key: \"k\"\nagency: a\n"
                                             "curve_secret_key: stdin\n");
    acc_agent_config_t cfg;
    acc_err_t err;
    cr_assert_eq(acc_agent_config_load(&cfg, path, NULL, &err), ACC_OK, "%s", err.msg);
    cr_assert_str_eq(cfg.curve_secret_key, "stdin", "not resolved against the file's directory");
    cr_assert(acc_agent_config_key_on_stdin(&cfg));
    cr_assert_eq(cfg.exec_timeout_s, 60);
    cr_assert_null(cfg.curve_secret);
    acc_agent_config_clear(&cfg);

    path = s_write("agent.yaml", "broker: tcp://127.0.0.1:7400\n"
                                 "broker_key: \"k\"\nagency: a\n"
                                 "curve_secret_key: a.curve.secret\nexec_timeout_s: 0\n");
    cr_assert_neq(acc_agent_config_load(&cfg, path, NULL, &err), ACC_OK);
    cr_assert(strstr(err.msg, "agent.yaml:5:") != NULL, "%s", err.msg);
    cr_assert(strstr(err.msg, "exec_timeout_s") != NULL, "%s", err.msg);
}
