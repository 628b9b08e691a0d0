/* explain.h - `accord agreement explain`: who would receive what, and why */
#ifndef ACCORD_AGENTS_EXPLAIN_H
#define ACCORD_AGENTS_EXPLAIN_H

#include <stdio.h>

#include "accord/policy.h"

/* Prints to out which recipients would receive records of type from agency from,
 * with which fields and subject identifiers, under which rules, purposes, lawful
 * bases and consent conditions, and for a rule that takes outcomes its statuses,
 * outcome fields and whether outcomes go back to from; then the lookups from may
 * make (who may ask, purposes, window, notify). Returns 0, or 1 when nothing
 * would be shared. */
int explain_type(FILE *out, const acc_policy_t *policy, size_t from, const char *type);

/* Prints what would happen to the NDJSON record in the file at path, published by
 * from today: refused and why, or each recipient shared or withheld and why, with
 * exactly the fields it would receive and the outcomes it may report. Returns 0 shared, 1 refused
 * or all withheld, 3 when the file cannot be read. */
int explain_record(FILE *out, const acc_policy_t *policy, size_t from, const char *path);

#endif
