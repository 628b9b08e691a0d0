/* fuzz_record.c - libFuzzer target: NDJSON records, their checks and their JSON form */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "accord/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Accord__V1__ChildRecord *rec = NULL;
    acc_err_t err;
    if (acc_record_from_json(&rec, (const char *)data, size, &err) != ACC_OK) {
        return 0;
    }
    acc_err_t reason;
    (void)acc_record_check(rec, &reason);
    json_t *obj = acc_record_to_json(rec);
    char *text = json_dumps(obj, JSON_COMPACT);
    free(text);
    json_decref(obj);
    acc_record_free(&rec);
    return 0;
}
