/* pbwipe.c - a protobuf-c allocator that wipes every block before freeing it */
#include "accord/pbwipe.h"

#include <malloc.h>
#include <sodium.h>
#include <stdlib.h>

#include "accord/rc.h"

/* The size comes from malloc itself rather than a header of our own, so a block
 * freed by code that passes NULL (the default allocator) is still a valid free. */
void acc_pb_wipe(void *block)
{
    if (block != NULL) {
        sodium_memzero(block, malloc_usable_size(block));
    }
}

void acc_pb_free_wiped(void *block)
{
    acc_pb_wipe(block);
    free(block);
}

static void *s_alloc(void *allocator_data, size_t size)
{
    (void)allocator_data;
    return acc_xmalloc(size == 0 ? 1 : size);
}

static void s_free(void *allocator_data, void *block)
{
    (void)allocator_data;
    acc_pb_free_wiped(block);
}

ProtobufCAllocator *acc_pb_wiping_allocator(void)
{
    /* protobuf-c takes a non-const pointer but never writes through it */
    static const ProtobufCAllocator wiping = { .alloc = s_alloc, .free = s_free };
    union {
        /* cppcheck-suppress unusedStructMember ; written by the initialiser below */
        const ProtobufCAllocator *c;
        ProtobufCAllocator *m;
    } u = { .c = &wiping };
    return u.m;
}
