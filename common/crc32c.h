// common/crc32c.h: CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), the checksum of
// iSCSI, ext4 and btrfs; here it guards every checkpoint header and blob. Table-driven, slicing by 8
// (eight 256-entry tables, 8 KiB): about 8 bytes per few cycles, so checksumming a checkpoint costs
// a fraction of writing it. Known answer: crc32c("123456789", 9) = 0xE3069283.
#ifndef COMMON_CRC32C_H
#define COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// CRC-32C of n bytes. To checksum data in pieces, pass the previous result as crc (start with 0):
// crc32c_update(crc32c_update(0, a, na), b, nb) == crc32c of a followed by b.
uint32_t crc32c_update(uint32_t crc, const void* data, size_t n);
static inline uint32_t crc32c(const void* data, size_t n) { return crc32c_update(0, data, n); }

#ifdef __cplusplus
}
#endif

#endif
