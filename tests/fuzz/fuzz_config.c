/* fuzz_config.c - libFuzzer target: broker.yaml and agent.yaml, through the same
 * loaders the programs use (they read a path, so each input is written to one
 * private file first) */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "accord/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char s_path[] = "/tmp/accord-fuzz-config.XXXXXX";
static int s_fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (s_fd < 0) {
        s_fd = mkstemp(s_path);
        if (s_fd < 0) {
            abort();
        }
        (void)unlink(s_path); /* kept open: gone when the fuzzer exits */
        char proc[64];
        (void)snprintf(proc, sizeof(proc), "/proc/self/fd/%d", s_fd);
        (void)snprintf(s_path, sizeof(s_path), "%.30s", proc);
    }
    if (ftruncate(s_fd, 0) != 0 || pwrite(s_fd, data, size, 0) != (ssize_t)size) {
        abort();
    }
    acc_diag_t diag;
    acc_diag_init(&diag);
    acc_err_t err;
    acc_broker_config_t broker;
    if (acc_broker_config_load(&broker, s_path, &diag, &err) == ACC_OK) {
        acc_broker_config_clear(&broker);
    }
    acc_diag_clear(&diag);
    acc_diag_init(&diag);
    acc_agent_config_t agent;
    if (acc_agent_config_load(&agent, s_path, &diag, &err) == ACC_OK) {
        acc_agent_config_clear(&agent);
    }
    acc_diag_clear(&diag);
    return 0;
}
