/*
 * batch.h -- stsl-restore's batch engine: restore a list of inputs into one output directory,
 * from any number of processes at once (sharded or not), each with workers, such that processes
 * killed at any point and run again end with each output written once and one "ok" row per
 * output in OUTPUT/results.csv (tests/tools/kill_batch.sh).
 *
 *  - items: a directory's images or a manifest's lines, sorted; item i is written to OUTPUT/NAME,
 *    NAME its base name with ".png" (two inputs with one NAME are an error).
 *  - shards: a process takes the items whose index % shard_n == shard_i.
 *  - claims: an item is restored under an exclusive flock on OUTPUT/.NAME.claim, which the kernel
 *    drops when its process dies; only a claim's holder writes the item's output, its row and its
 *    temporaries, or removes the temporaries a killed run left.
 *  - resume: an item whose output exists is skipped; an item with an "ok" row (a run killed
 *    between its row and its rename) gets its output but not a second row.
 *  - results.csv: each row appended in one write under an exclusive lock, after cutting any torn
 *    row a killed writer left; a header first.
 *  - workers: `jobs` threads, each taking up to `batch` claimed items at a time and restoring them
 *    in one call; a call that fails is retried item by item.
 *
 * What an item is and how it is restored is the caller's (batch_ops).  Messages go to stderr
 * through cli_failure (cli.h); functions return CLI_EXIT_* statuses unless said otherwise.
 */
#ifndef STSL_BATCH_H
#define STSL_BATCH_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/restore_util.h"
#include "stsl.h"

#define BATCH_NAME_LEN (NAME_MAX + 8)
/* The size of the err buffers the engine gives its callbacks. */
#define BATCH_ERR_LEN (RU_ERR_LEN + PATH_MAX)

typedef struct batch_items {
    char **path;                     /* the inputs, sorted (strcmp) */
    char (*name)[BATCH_NAME_LEN];    /* the output file name of each */
    int n, cap;
} batch_items;

/* The inputs of `input`: a directory's regular .png/.jpg/.jpeg files (dot files left out) or a
 * manifest's lines (one path each, '#' comments, relative paths from the current directory or
 * else the manifest's), sorted and named.  An empty list is an error. */
int batch_items_load(const char *input, int is_dir, batch_items *items);
void batch_items_free(batch_items *items);

/* ---- results.csv ---------------------------------------------------------------------------- */

/* The header row of results.csv (with its newline). */
#define BATCH_CSV_HEADER \
    "file,status,unet_forward,unet_vjp,decoder_forward,decoder_vjp,seconds,batch,seed\n"

/* Append the row of `file` ("ok" or "failed"; counts from r's ledger, seconds and batch) to
 * `csv`, under its lock, in one write.  Returns 0, or the errno of the failure (said on stderr
 * unless the disk is full, batch_disk_full: the caller stops then). */
int batch_csv_append(const char *csv, const char *file, const char *status, const ru_result *r,
                     uint64_t seed);
/* Parse a row's file (unquoted) and status: 0, or -1 when `line` is not a row (a torn one). */
int batch_csv_parse_row(const char *line, char *file, size_t fn, char *status, size_t sn);
/* Set done[i] for each item with an "ok" row among the complete lines from *offset on, and move
 * *offset past them (a torn last line is left for its writer's successor to cut). */
int batch_csv_read_done(const char *csv, const batch_items *items, char *done, off_t *offset);
/* 1 when errno `e` or the library's message `msg` (may be NULL) says the disk is full. */
int batch_disk_full(int e, const char *msg);

/* ---- claims --------------------------------------------------------------------------------- */

/* Claim DIR/NAME: the claim's descriptor, -1 when another holder has it (another process, or
 * another descriptor of this one), -2 on an error (errno). */
int batch_claim_take(const char *dir, const char *name);
/* Release a claim (fd < 0: nothing); its file is removed while still locked. */
void batch_claim_release(const char *dir, const char *name, int fd);
/* 1 when directory entry `entry` is a temporary of output NAME: ours (".NAME.PID.tmp") or the
 * library's for it ("..NAME.PID.tmp.XXXXXXXX.tmp"). */
int batch_is_temp_of(const char *entry, const char *name);
/* Remove DIR's temporaries of NAME (call with NAME's claim held). */
void batch_remove_temps_of(const char *dir, const char *name);
/* Single mode's save: `img` to `path` through DIR/.NAME.PID.tmp, renamed into place, under NAME's
 * claim (first removing a killed run's temporaries); when another process holds the claim,
 * nothing is removed and the last rename wins.  0, or CLI_EXIT_FAIL with the message said. */
int batch_save_claimed(stsl_context *ctx, const stsl_image *img, const char *path);

/* ---- the engine ----------------------------------------------------------------------------- */

typedef struct batch_ops {
    void *user;
    /* Set up worker w (0 .. jobs-1): *ctx, the context its outputs are saved with, and *state,
     * given to load and restore.  CLI_EXIT_OK, or a status (its message said). */
    int (*open_worker)(void *user, int w, stsl_context **ctx, void **state);
    /* Undo open_worker; called for every worker opened, and for one whose open failed. */
    void (*close_worker)(void *user, int w, stsl_context *ctx, void *state);
    /* Load the input at `path`: 0, or non-zero with err set (BATCH_ERR_LEN; the item fails). */
    int (*load)(void *state, const char *path, stsl_image **input, char *err);
    /* Restore n inputs in one call, input j from seeds[j], into res[0 .. n-1]; *running holds the
     * solver while it runs (batch_interrupt cancels it).  0; CLI_EXIT_USAGE: an option refused
     * (the batch stops, err said); anything else: the call failed and no res[j] holds an image
     * (each input is then retried alone). */
    int (*restore)(void *state, const stsl_image *const *inputs, const uint64_t *seeds, int n,
                   stsl_solver **running, ru_result *res, char *err);
    /* Optional: more files of a restored item (a montage), written after its output's temporary
     * and before its row: 0, or non-zero with the message said (the item fails). */
    int (*extra)(void *user, stsl_context *ctx, const char *name, const stsl_image *input,
                 const ru_result *r);
    /* Optional: a restored item's line on stdout, after "[K/N] " (never called with quiet). */
    void (*report)(void *user, const char *path, const char *out, const ru_result *r);
} batch_ops;

typedef struct batch_config {
    const char *output;        /* the output directory: exists, writable */
    int shard_i, shard_n;      /* 0 <= shard_i < shard_n */
    int batch;                 /* inputs per restore call, >= 1 */
    int jobs;                  /* workers, >= 1 */
    uint64_t seed;             /* item seeds: ru_image_seed(seed, NAME) */
    int quiet, verbose;        /* quiet: no lines on stdout; verbose: skipped items, retries */
} batch_config;

typedef struct batch_counts {
    int mine;                  /* items of this shard */
    int done, skipped, elsewhere, failed;   /* restored, output existed, claimed by another */
} batch_counts;

/* Restore this shard's items.  CLI_EXIT_OK when each was restored or skipped, CLI_EXIT_FAIL when
 * one failed (its "failed" row written), the process was interrupted or the disk is full (run
 * again to resume), CLI_EXIT_USAGE when restore refused an option.  counts may be NULL. */
int batch_run(const batch_config *cfg, const batch_ops *ops, const batch_items *items,
              batch_counts *counts);

/* Stop every batch_run of this process: no new item is started, running solvers are cancelled.
 * Async-signal-safe (for a SIGINT/SIGTERM handler). */
void batch_interrupt(void);

/* Test hook (tests/tools/kill_batch.sh): the environment variable `var` set to csv:K or image:K
 * makes this process's K-th row append or image save stop half-way with SIGKILL, as a crash
 * there would. */
void batch_kill_hook_init(const char *var);

#endif
