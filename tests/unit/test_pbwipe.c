/* test_pbwipe.c - the wiping protobuf-c allocator */
#include <criterion/criterion.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "accord/pb.h"
#include "accord/pbwipe.h"

static bool s_all_zero(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

Test(pbwipe, wipes_every_usable_byte_of_a_block_it_allocated)
{
    ProtobufCAllocator *a = acc_pb_wiping_allocator();
    unsigned char *block = a->alloc(a->allocator_data, 100);
    cr_assert_not_null(block);
    size_t usable = malloc_usable_size(block);
    cr_assert_geq(usable, 100);
    memset(block, 0xA5, usable);
    acc_pb_wipe(block);
    cr_assert(s_all_zero(block, usable));
    a->free(a->allocator_data, block); /* the same wipe, then free: ASan checks the free */
}

Test(pbwipe, ignores_null_and_zero_sized_blocks)
{
    ProtobufCAllocator *a = acc_pb_wiping_allocator();
    acc_pb_wipe(NULL);
    acc_pb_free_wiped(NULL);
    void *empty = a->alloc(a->allocator_data, 0);
    cr_assert_not_null(empty);
    a->free(a->allocator_data, empty);
}

static uint8_t *s_packed_record(size_t *len)
{
    Accord__V1__ChildRecord rec = ACCORD__V1__CHILD_RECORD__INIT;
    rec.record_id = acc_pb_str("hv-1");
    rec.record_type = acc_pb_str("health-visit");
    *len = accord__v1__child_record__get_packed_size(&rec);
    uint8_t *buf = malloc(*len);
    (void)accord__v1__child_record__pack(&rec, buf);
    return buf;
}

Test(pbwipe, unpacks_and_frees_a_record_either_way)
{
    size_t len = 0;
    uint8_t *buf = s_packed_record(&len);
    ProtobufCAllocator *a = acc_pb_wiping_allocator();
    /* its blocks through it (wiped), and through the default allocator */
    Accord__V1__ChildRecord *rec = accord__v1__child_record__unpack(a, len, buf);
    cr_assert_not_null(rec);
    cr_assert_str_eq(rec->record_id, "hv-1");
    accord__v1__child_record__free_unpacked(rec, a);
    rec = accord__v1__child_record__unpack(a, len, buf);
    accord__v1__child_record__free_unpacked(rec, NULL);
    /* the default allocator's blocks through it */
    rec = accord__v1__child_record__unpack(NULL, len, buf);
    accord__v1__child_record__free_unpacked(rec, a);
    acc_pb_free_wiped(buf);
}
