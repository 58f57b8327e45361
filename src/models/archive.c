/*
 * archive.c -- a model file's zip archive checked against its own CRC-32s before libtorch reads
 * it (model.h, stsl__model_verify_archive).
 *
 * libtorch does not check the CRC-32s its writer stores (its miniz is built without the reader's
 * checks): a model file with a damaged weight loaded silently and computed garbage, and one with a
 * damaged code record sent TorchScript's parser through memory it had not initialised (valgrind,
 * tests/scores/test_hostile_models.c: 33 of 48 files with 16 flipped bytes loaded).  Here every
 * record of a file that has a zip end record is read once -- the stored ones (weights) as they
 * are, the deflated ones (PyTorch's code records) inflated -- and its CRC-32 compared with the
 * central directory's; a damaged one fails the load with the record's name.  A file without an end
 * record, or whose directory cannot be read, is left to libtorch, whose messages for what is not
 * an archive at all say more.  The zip64 fields PyTorch's writer uses are read; records of other
 * methods and records whose stored CRC is 0 (written without one) are not checked.  Cost: one
 * read of the file and zlib's CRC-32, about 4 GB/s on the development machine (0.25 s per GB on
 * top of libtorch's own read, from the page cache it then reads from).
 */
#include "models/model.h"

#include "core/internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <zlib.h>

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint64_t le64(const unsigned char *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* ---- the archive ---- */

enum {
    EOCD_SIG = 0x06054b50, EOCD_LEN = 22, Z64_LOCATOR_SIG = 0x07064b50, Z64_LOCATOR_LEN = 20,
    Z64_EOCD_SIG = 0x06064b50, Z64_EOCD_LEN = 56, CDH_SIG = 0x02014b50, CDH_LEN = 46,
    LFH_SIG = 0x04034b50, LFH_LEN = 30
};
enum { CHUNK = 1 << 20 };   /* bytes read (and inflated) at a time */
#define MAX_DIRECTORY ((uint64_t)256 << 20)   /* a directory larger than this is not a model's */

static int read_at(FILE *f, uint64_t off, void *buf, size_t n)
{
    return fseeko(f, (off_t)off, SEEK_SET) == 0 && fread(buf, 1, n, f) == n;
}

/* The end record in the file's last `span` bytes (tail) and, where its fields overflow, the zip64
 * end record it points to: the directory's offset, length and entry count. */
static int scan_end_record(FILE *f, uint64_t size, uint64_t span, const unsigned char *tail,
                           uint64_t *dir_off, uint64_t *dir_len, uint64_t *entries)
{
    long at = -1;
    for (long i = (long)span - EOCD_LEN; i >= 0; i--)
        if (le32(tail + i) == EOCD_SIG) {
            at = i;
            break;
        }
    if (at < 0) return 0;
    const unsigned char *e = tail + at;
    *entries = le16(e + 10);
    *dir_len = le32(e + 12);
    *dir_off = le32(e + 16);
    if (*entries == 0xffff || *dir_len == 0xffffffffu || *dir_off == 0xffffffffu) {
        const uint64_t eocd_pos = size - span + (uint64_t)at;
        unsigned char loc[Z64_LOCATOR_LEN], z[Z64_EOCD_LEN];
        if (eocd_pos < Z64_LOCATOR_LEN || !read_at(f, eocd_pos - Z64_LOCATOR_LEN, loc, sizeof loc) ||
            le32(loc) != Z64_LOCATOR_SIG)
            return 0;
        const uint64_t z_off = le64(loc + 8);
        if (size < Z64_EOCD_LEN || z_off > size - Z64_EOCD_LEN || !read_at(f, z_off, z, sizeof z) || le32(z) != Z64_EOCD_SIG)
            return 0;
        *entries = le64(z + 32);
        *dir_len = le64(z + 40);
        *dir_off = le64(z + 48);
    }
    return *dir_len <= MAX_DIRECTORY && *dir_off <= size && *dir_len <= size - *dir_off;
}

/* Where the central directory is, from the end record (and its zip64 twin); 0 when there is no
 * end record or it does not describe a directory inside the file. */
static int find_directory(FILE *f, uint64_t size, uint64_t *dir_off, uint64_t *dir_len, uint64_t *entries)
{
    enum { TAIL = EOCD_LEN + 65535 };   /* the end record and the longest comment */
    const uint64_t span = size < TAIL ? size : TAIL;
    unsigned char *tail = span >= EOCD_LEN ? malloc((size_t)span) : NULL;   /* not the caller's stack */
    if (!tail || !read_at(f, size - span, tail, (size_t)span)) {
        free(tail);
        return 0;
    }
    const int found = scan_end_record(f, size, span, tail, dir_off, dir_len, entries);
    free(tail);
    return found;
}

/* The zip64 extra field (id 1) of a directory entry: the 64-bit values of the fields whose 32-bit
 * slots hold 0xffffffff, in the order uncompressed size, compressed size, header offset. */
static int read_zip64_extra(const unsigned char *x, size_t len, uint64_t *usize, uint64_t *csize,
                            uint64_t *off)
{
    for (size_t i = 0; i + 4 <= len;) {
        const uint16_t id = le16(x + i), n = le16(x + i + 2);
        if (i + 4 + n > len) return 0;
        if (id == 1) {
            const unsigned char *v = x + i + 4;
            size_t k = 0;
            uint64_t *slot[3] = {usize, csize, off};
            for (int s = 0; s < 3; s++)
                if (*slot[s] == 0xffffffffu) {
                    if (k + 8 > n) return 0;
                    *slot[s] = le64(v + k);
                    k += 8;
                }
            return 1;
        }
        i += 4 + (size_t)n;
    }
    return 0;
}

/* Inflate a deflated record of csize bytes at f's position into CRC-32 *crc (buf: 2 CHUNK bytes);
 * 1 when it inflates to exactly usize bytes, 0 when it is damaged, -1 out of memory. */
static int inflate_crc(FILE *f, uint64_t csize, uint64_t usize, unsigned char *buf, uint32_t *crc)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return -1;   /* raw deflate, as zip stores it */
    unsigned char *in = buf, *out = buf + CHUNK;
    uint64_t left = csize, produced = 0;
    uint32_t c = 0;
    int ret = Z_OK;
    while (ret != Z_STREAM_END) {
        if (z.avail_in == 0) {
            if (left == 0) break;   /* the data ended before the stream did */
            const size_t n = left < CHUNK ? (size_t)left : CHUNK;
            if (fread(in, 1, n, f) != n) break;
            z.next_in = in;
            z.avail_in = (uInt)n;
            left -= n;
        }
        z.next_out = out;
        z.avail_out = CHUNK;
        ret = inflate(&z, Z_NO_FLUSH);
        if (ret != Z_OK && ret != Z_STREAM_END) break;
        const size_t got = CHUNK - z.avail_out;
        produced += got;
        if (produced > usize) break;
        c = (uint32_t)crc32(c, out, (uInt)got);   /* got <= CHUNK */
    }
    inflateEnd(&z);
    *crc = c;
    return ret == Z_STREAM_END && produced == usize;
}

stsl_status stsl__model_verify_archive(stsl_context *ctx, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return STSL_OK;   /* stsl__model_check_readable reports it */
    stsl_status st = STSL_OK;
    unsigned char *dir = NULL, *buf = NULL;
    uint64_t size = 0, dir_off = 0, dir_len = 0, entries = 0;
    if (fseeko(f, 0, SEEK_END) != 0 || ftello(f) < 0) goto done;
    size = (uint64_t)ftello(f);
    if (!find_directory(f, size, &dir_off, &dir_len, &entries)) goto done;   /* libtorch's to judge */
    dir = malloc(dir_len ? (size_t)dir_len : 1);
    buf = malloc(2 * CHUNK);
    if (!dir || !buf) {
        st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "'%s': out of memory checking the archive", path);
        goto done;
    }
    if (!read_at(f, dir_off, dir, (size_t)dir_len)) goto done;
    size_t at = 0;
    for (uint64_t e = 0; e < entries; e++) {
        if (at + CDH_LEN > dir_len || le32(dir + at) != CDH_SIG) goto done;   /* unreadable: libtorch's */
        const unsigned char *h = dir + at;
        const uint16_t method = le16(h + 10), name_len = le16(h + 28), extra_len = le16(h + 30),
                       comment_len = le16(h + 32);
        const uint32_t crc = le32(h + 16);
        uint64_t csize = le32(h + 20), usize = le32(h + 24), off = le32(h + 42);
        if (at + CDH_LEN + name_len + extra_len + comment_len > dir_len) goto done;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(name_len < 255 ? name_len : 255), (const char *)h + CDH_LEN);
        if ((csize == 0xffffffffu || usize == 0xffffffffu || off == 0xffffffffu) &&
            !read_zip64_extra(h + CDH_LEN + name_len, extra_len, &usize, &csize, &off))
            goto done;
        at += CDH_LEN + (size_t)name_len + extra_len + comment_len;

        /* the record's local header and data must lie in the file, before the directory */
        unsigned char lh[LFH_LEN];
        if (off > dir_off || dir_off - off < LFH_LEN || !read_at(f, off, lh, sizeof lh) ||
            le32(lh) != LFH_SIG) {
            st = stsl__ctx_fail(ctx, STSL_ERR_FORMAT,
                                "'%s' is damaged: record '%s' has no header where the archive's "
                                "directory puts it (download or export the file again)", path, name);
            goto done;
        }
        const uint64_t data = off + LFH_LEN + le16(lh + 26) + le16(lh + 28);
        if (data > dir_off || csize > dir_off - data) {
            st = stsl__ctx_fail(ctx, STSL_ERR_FORMAT,
                                "'%s' is damaged: record '%s' runs past the archive's data "
                                "(download or export the file again)", path, name);
            goto done;
        }
        if ((method != 0 && method != 8) || crc == 0) continue;   /* other methods; no CRC written */
        if (fseeko(f, (off_t)data, SEEK_SET) != 0) goto done;
        uint32_t c = 0;
        int ok = 1;
        if (method == 0)
            for (uint64_t left = csize; left > 0;) {
                const size_t n = left < CHUNK ? (size_t)left : CHUNK;
                if (fread(buf, 1, n, f) != n) goto done;
                c = (uint32_t)crc32(c, buf, (uInt)n);
                left -= n;
            }
        else
            ok = inflate_crc(f, csize, usize, buf, &c);   /* the code records are deflated */
        if (ok < 0) {
            st = stsl__ctx_fail(ctx, STSL_ERR_NOMEM, "'%s': out of memory checking the archive", path);
            goto done;
        }
        if (!ok || c != crc) {
            st = stsl__ctx_fail(ctx, STSL_ERR_FORMAT,
                                "'%s' is damaged: record '%s' fails its CRC-32 check (stored "
                                "%08x, read %08x%s; download or export the file again)",
                                path, name, (unsigned)crc, (unsigned)c,
                                ok ? "" : ", or does not inflate to its size");
            goto done;
        }
    }
done:
    free(dir);
    free(buf);
    fclose(f);
    return st;
}
