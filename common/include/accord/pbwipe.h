/* pbwipe.h - a protobuf-c allocator that wipes every block before freeing it */
#ifndef ACCORD_PBWIPE_H
#define ACCORD_PBWIPE_H

#include <protobuf-c/protobuf-c.h>

/* The allocator to pass to every unpack and free_unpacked of an Envelope or a
 * ChildRecord: its blocks are plain malloc blocks (allocation failure is
 * fail-stop, like acc_xmalloc), and its free zeroes every usable byte of a block
 * before free(). Blocks from the default allocator may be freed through it and
 * its blocks through the default one (then unwiped). Never NULL; protobuf-c does
 * not write through it. */
ProtobufCAllocator *acc_pb_wiping_allocator(void);

/* Zeroes every usable byte of block, a malloc'd block (NULL is ignored). */
void acc_pb_wipe(void *block);

/* acc_pb_wipe, then free: for packed frames that held a record. */
void acc_pb_free_wiped(void *block);

#endif
