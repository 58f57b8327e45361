/*
 * test_batch.c -- stsl-restore's batch engine (examples/common/batch.h) through its interface,
 * without a model: items from a directory and a manifest, results.csv (rows, the header, a torn
 * row left by a killed writer), claims (within a process and across a process that dies), and
 * batch_run with a stand-in restoration (shards, resume, claims held elsewhere, a killed run's
 * temporaries, one failing item in a batch).  tests/tools/test_restore_cli.c and kill_batch.sh
 * test the same engine through the tool.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/batch.h"
#include "common/testutil.h"

/* A fresh directory under the suite's temporary one. */
static const char *fresh_dir(const char *tag)
{
    static char buf[8][512];
    static int k;
    char *d = buf[k++ % 8];
    snprintf(d, sizeof buf[0], "%s/%s", tu_tmpdir(), tag);
    mkdir(d, 0777);
    return d;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

/* The whole of a small file (static buffer). */
static const char *read_file(const char *path)
{
    static char buf[65536];
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return buf;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_of(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

static int exists(const char *dir, const char *name)
{
    char p[1024];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

/* n 8x8 grey PNGs in `dir`, img00.png .. (pixel value i/n). */
static void make_images(const char *dir, int n)
{
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    for (int i = 0; i < n; i++) {
        stsl_image *img = NULL;
        TU_ASSERT_OK(stsl_image_create(1, 8, 8, &img));
        for (int k = 0; k < 64; k++) img->data[k] = (float)i / (float)n;
        char p[1024];
        snprintf(p, sizeof p, "%s/img%02d.png", dir, i);
        TU_ASSERT_OK(stsl_image_save(ctx, img, p, STSL_FORMAT_PNG, 8, 0));
        stsl_image_destroy(img);
    }
    stsl_context_destroy(ctx);
}

/* ---- items ---------------------------------------------------------------------------------- */

static void test_items_directory(void)
{
    const char *d = fresh_dir("items");
    make_images(d, 3);
    char p[1024];
    snprintf(p, sizeof p, "%s/notes.txt", d);
    write_file(p, "not an image\n");
    snprintf(p, sizeof p, "%s/.hidden.png", d);
    write_file(p, "dot file\n");
    snprintf(p, sizeof p, "%s/sub.png", d);
    mkdir(p, 0777);   /* a directory named like an image is not an item */
    batch_items items;
    CU_ASSERT_EQUAL(batch_items_load(d, 1, &items), CLI_EXIT_OK);
    CU_ASSERT_EQUAL_FATAL(items.n, 3);
    for (int i = 0; i < 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "img%02d.png", i);
        CU_ASSERT_STRING_EQUAL(items.name[i], want);
        CU_ASSERT_PTR_NOT_NULL(strstr(items.path[i], want));
    }
    batch_items_free(&items);
    CU_ASSERT_EQUAL(items.n, 0);

    /* an empty directory is an error */
    CU_ASSERT_EQUAL(batch_items_load(fresh_dir("items-empty"), 1, &items), CLI_EXIT_FAIL);
    batch_items_free(&items);
}

static void test_items_manifest(void)
{
    const char *d = fresh_dir("manifest");
    char man[1024], text[2048];
    snprintf(man, sizeof man, "%s/list.txt", d);
    /* unsorted, a comment, blank lines, a relative path (from the manifest's directory), a jpeg
     * whose output is a .png */
    snprintf(text, sizeof text, "# inputs\n  zeta.jpg  \n\n%s/alpha.png\n\tmid.jpeg\n", d);
    write_file(man, text);
    batch_items items;
    CU_ASSERT_EQUAL_FATAL(batch_items_load(man, 0, &items), CLI_EXIT_OK);
    CU_ASSERT_EQUAL_FATAL(items.n, 3);
    char want[1024];
    snprintf(want, sizeof want, "%s/alpha.png", d);
    CU_ASSERT_STRING_EQUAL(items.path[0], want);
    snprintf(want, sizeof want, "%s/mid.jpeg", d);
    CU_ASSERT_STRING_EQUAL(items.path[1], want);
    CU_ASSERT_STRING_EQUAL(items.name[1], "mid.png");
    CU_ASSERT_STRING_EQUAL(items.name[2], "zeta.png");
    batch_items_free(&items);

    /* two inputs with one output name */
    write_file(man, "a/x.png\nb/x.jpg\n");
    CU_ASSERT_EQUAL(batch_items_load(man, 0, &items), CLI_EXIT_FAIL);
    batch_items_free(&items);
    /* comments only */
    write_file(man, "# nothing\n\n");
    CU_ASSERT_EQUAL(batch_items_load(man, 0, &items), CLI_EXIT_FAIL);
    batch_items_free(&items);
}

/* ---- results.csv ---------------------------------------------------------------------------- */

static void test_csv_parse_row(void)
{
    char file[64], status[16];
    CU_ASSERT_EQUAL(batch_csv_parse_row("\"in/a.png\",ok,1,2,0,0,0.5,1,7\n", file, sizeof file,
                                        status, sizeof status), 0);
    CU_ASSERT_STRING_EQUAL(file, "in/a.png");
    CU_ASSERT_STRING_EQUAL(status, "ok");
    /* a doubled quote is one quote of the name; a comma inside the quotes is the name's */
    CU_ASSERT_EQUAL(batch_csv_parse_row("\"say \"\"hi\"\", x.png\",failed,0\n", file, sizeof file,
                                        status, sizeof status), 0);
    CU_ASSERT_STRING_EQUAL(file, "say \"hi\", x.png");
    CU_ASSERT_STRING_EQUAL(status, "failed");
    /* the header and torn rows are not rows */
    CU_ASSERT_EQUAL(batch_csv_parse_row(BATCH_CSV_HEADER, file, sizeof file, status, sizeof status), -1);
    CU_ASSERT_EQUAL(batch_csv_parse_row("\"in/a.p", file, sizeof file, status, sizeof status), -1);
    CU_ASSERT_EQUAL(batch_csv_parse_row("\"in/a.png\"", file, sizeof file, status, sizeof status), -1);
    CU_ASSERT_EQUAL(batch_csv_parse_row("", file, sizeof file, status, sizeof status), -1);
    /* a row cut inside its status still parses; its status is not "ok" when cut short */
    CU_ASSERT_EQUAL(batch_csv_parse_row("\"a.png\",o", file, sizeof file, status, sizeof status), 0);
    CU_ASSERT_STRING_EQUAL(status, "o");
    /* a name longer than the buffer is truncated, not overrun */
    char small[4];
    CU_ASSERT_EQUAL(batch_csv_parse_row("\"abcdefgh\",ok,", small, sizeof small, status, sizeof status), 0);
    CU_ASSERT_STRING_EQUAL(small, "abc");
}

static void test_csv_append_and_resume(void)
{
    const char *d = fresh_dir("csv");
    char csv[1024];
    snprintf(csv, sizeof csv, "%s/results.csv", d);
    batch_items items = {0};
    char *paths[3] = {"in/a.png", "in/b.png", "in/c.png"};
    items.path = paths;
    items.n = 3;
    ru_result r;
    memset(&r, 0, sizeof r);
    r.nfe.unet_forward = 12;
    r.seconds = 0.25;
    r.batch = 2;
    CU_ASSERT_EQUAL(batch_csv_append(csv, "in/a.png", "ok", &r, 99), 0);
    CU_ASSERT_EQUAL(batch_csv_append(csv, "in/b.png", "failed", &r, 5), 0);
    const char *text = read_file(csv);
    CU_ASSERT_EQUAL(strncmp(text, BATCH_CSV_HEADER, strlen(BATCH_CSV_HEADER)), 0);
    CU_ASSERT_EQUAL(count_of(text, "file,status"), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"in/a.png\",ok,12,0,0,0,0.250,2,99\n"));

    char done[3] = {0};
    off_t off = 0;
    CU_ASSERT_EQUAL(batch_csv_read_done(csv, &items, done, &off), 0);
    CU_ASSERT_EQUAL(done[0], 1);
    CU_ASSERT_EQUAL(done[1], 0);   /* a failed row does not make an item done */
    CU_ASSERT_EQUAL(done[2], 0);
    struct stat st;
    CU_ASSERT_EQUAL(stat(csv, &st), 0);
    CU_ASSERT_EQUAL(off, st.st_size);

    /* a writer killed half-way through c's row: the reader stops before the torn row ... */
    int fd = open(csv, O_WRONLY | O_APPEND);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, "\"in/c.png\",ok,1", 15), 15);
    close(fd);
    CU_ASSERT_EQUAL(batch_csv_read_done(csv, &items, done, &off), 0);
    CU_ASSERT_EQUAL(done[2], 0);
    CU_ASSERT_EQUAL(off, st.st_size);
    /* ... and the next append cuts it before writing its own, complete row */
    CU_ASSERT_EQUAL(batch_csv_append(csv, "in/c.png", "ok", &r, 3), 0);
    text = read_file(csv);
    CU_ASSERT_EQUAL(count_of(text, "\"in/c.png\""), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"in/c.png\",ok,12,"));
    CU_ASSERT_EQUAL(count_of(text, "\n"), 4);   /* header + 3 rows, every one complete */
    CU_ASSERT_EQUAL(batch_csv_read_done(csv, &items, done, &off), 0);
    CU_ASSERT_EQUAL(done[2], 1);
    CU_ASSERT_EQUAL(stat(csv, &st), 0);
    CU_ASSERT_EQUAL(off, st.st_size);

    /* a name with a quote round-trips */
    CU_ASSERT_EQUAL(batch_csv_append(csv, "in/\"q\".png", "ok", &r, 1), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(read_file(csv), "\"in/\"\"q\"\".png\",ok,"));

    /* a row file that cannot be written: the errno */
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/missing-dir/results.csv", d);
    CU_ASSERT_EQUAL(batch_csv_append(bad, "x", "ok", &r, 1), ENOENT);
    CU_ASSERT(batch_disk_full(ENOSPC, NULL));
    CU_ASSERT(batch_disk_full(0, strerror(ENOSPC)));
    CU_ASSERT(!batch_disk_full(EACCES, "permission denied"));
}

/* ---- claims --------------------------------------------------------------------------------- */

static void test_claims(void)
{
    const char *d = fresh_dir("claims");
    int a = batch_claim_take(d, "x.png");
    CU_ASSERT_FATAL(a >= 0);
    CU_ASSERT(exists(d, ".x.png.claim"));
    /* held: another descriptor (another writer) does not get it; another output does */
    CU_ASSERT_EQUAL(batch_claim_take(d, "x.png"), -1);
    int y = batch_claim_take(d, "y.png");
    CU_ASSERT(y >= 0);
    batch_claim_release(d, "y.png", y);
    batch_claim_release(d, "x.png", a);
    CU_ASSERT(!exists(d, ".x.png.claim"));
    a = batch_claim_take(d, "x.png");
    CU_ASSERT(a >= 0);
    batch_claim_release(d, "x.png", a);
    batch_claim_release(d, "x.png", -1);   /* nothing held: nothing done */

    /* a process that holds a claim blocks it until it dies; its file stays, free to take */
    int go[2], ready[2];
    CU_ASSERT_FATAL(pipe(go) == 0 && pipe(ready) == 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        char c = batch_claim_take(d, "z.png") >= 0 ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) < 0) {}
        raise(SIGKILL);   /* dies holding it */
    }
    char c = 0;
    CU_ASSERT_EQUAL(read(ready[0], &c, 1), 1);
    CU_ASSERT_EQUAL(c, 'y');
    CU_ASSERT_EQUAL(batch_claim_take(d, "z.png"), -1);
    CU_ASSERT_EQUAL(write(go[1], "x", 1), 1);
    int status = 0;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFSIGNALED(status));
    CU_ASSERT(exists(d, ".z.png.claim"));
    int z = batch_claim_take(d, "z.png");
    CU_ASSERT(z >= 0);
    batch_claim_release(d, "z.png", z);
    CU_ASSERT(!exists(d, ".z.png.claim"));
    close(go[0]), close(go[1]), close(ready[0]), close(ready[1]);
}

static void test_temp_names(void)
{
    CU_ASSERT(batch_is_temp_of(".a.png.123.tmp", "a.png"));
    CU_ASSERT(batch_is_temp_of("..a.png.123.tmp.0badf00d.tmp", "a.png"));
    CU_ASSERT(!batch_is_temp_of(".a.png.123.tmp", "b.png"));
    CU_ASSERT(!batch_is_temp_of(".aa.png.123.tmp", "a.png"));
    CU_ASSERT(!batch_is_temp_of("a.png.123.tmp", "a.png"));       /* not a dot file */
    CU_ASSERT(!batch_is_temp_of(".a.png.tmp", "a.png"));          /* no pid */
    CU_ASSERT(!batch_is_temp_of(".a.png.12x.tmp", "a.png"));
    CU_ASSERT(!batch_is_temp_of("..a.png.1.tmp.0badf00.tmp", "a.png"));   /* 7 hex digits */
    CU_ASSERT(!batch_is_temp_of(".a.png.claim", "a.png"));
}

static void test_save_claimed(void)
{
    const char *d = fresh_dir("single");
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    stsl_image *img = NULL;
    TU_ASSERT_OK(stsl_image_create(1, 8, 8, &img));
    memset(img->data, 0, 64 * sizeof *img->data);
    char stale[1024], out[1024];
    snprintf(stale, sizeof stale, "%s/.out.png.99999.tmp", d);   /* a killed run's temporary */
    write_file(stale, "partial");
    snprintf(out, sizeof out, "%s/out.png", d);
    CU_ASSERT_EQUAL(batch_save_claimed(ctx, img, out), CLI_EXIT_OK);
    CU_ASSERT(exists(d, "out.png"));
    CU_ASSERT(!exists(d, ".out.png.99999.tmp"));
    CU_ASSERT(!exists(d, ".out.png.claim"));
    stsl_image *back = NULL;
    TU_ASSERT_OK(stsl_image_load(ctx, out, 1, &back));
    stsl_image_destroy(back);
    /* into a missing directory: an error, nothing left */
    snprintf(out, sizeof out, "%s/none/out.png", d);
    CU_ASSERT_EQUAL(batch_save_claimed(ctx, img, out), CLI_EXIT_FAIL);
    stsl_image_destroy(img);
    stsl_context_destroy(ctx);
}

/* ---- the engine, with a stand-in restoration ----------------------------------------------- */

typedef struct fake {
    const char *fail_name;     /* an input whose restoration fails (in any batch) */
    int calls, max_n, opened, closed;
    pthread_mutex_t lock;
} fake;

static int fake_open(void *user, int w, stsl_context **ctx, void **state)
{
    fake *f = user;
    pthread_mutex_lock(&f->lock);
    f->opened++;
    pthread_mutex_unlock(&f->lock);
    *state = f;
    (void)w;
    return stsl_context_create(ctx) == STSL_OK ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

static void fake_close(void *user, int w, stsl_context *ctx, void *state)
{
    fake *f = user;
    (void)w, (void)state;
    pthread_mutex_lock(&f->lock);
    f->closed++;
    pthread_mutex_unlock(&f->lock);
    stsl_context_destroy(ctx);
}

/* The input's first pixel carries its index (make_images); a bad input is marked with -1. */
static int fake_load(void *state, const char *path, stsl_image **input, char *err)
{
    fake *f = state;
    stsl_context *ctx = NULL;
    if (stsl_context_create(&ctx) != STSL_OK) return -1;
    stsl_status st = stsl_image_load(ctx, path, 1, input);
    stsl_context_destroy(ctx);
    if (st != STSL_OK) {
        snprintf(err, BATCH_ERR_LEN, "cannot read %s", path);
        return -1;
    }
    if (f->fail_name && strstr(path, f->fail_name)) (*input)->data[0] = -1.0f;
    return 0;
}

/* Restores by negating; fails a call that holds a bad input. */
static int fake_restore(void *state, const stsl_image *const *in, const uint64_t *seeds, int n,
                        stsl_solver **running, ru_result *res, char *err)
{
    fake *f = state;
    (void)seeds, (void)running;
    pthread_mutex_lock(&f->lock);
    f->calls++;
    if (n > f->max_n) f->max_n = n;
    pthread_mutex_unlock(&f->lock);
    for (int j = 0; j < n; j++)
        if (in[j]->data[0] == -1.0f) {
            snprintf(err, BATCH_ERR_LEN, "stand-in failure");
            return CLI_EXIT_FAIL;
        }
    for (int j = 0; j < n; j++) {
        memset(&res[j], 0, sizeof res[j]);
        if (stsl_image_create(1, 8, 8, &res[j].restored) != STSL_OK) return CLI_EXIT_FAIL;
        for (int k = 0; k < 64; k++) res[j].restored->data[k] = -in[j]->data[k];
        res[j].nfe.unet_forward = 3;
        res[j].batch = n;
    }
    return 0;
}

static const batch_ops FAKE_OPS = {NULL, fake_open, fake_close, fake_load, fake_restore, NULL, NULL};

static int run_fake(fake *f, const char *out, const batch_items *items, int shard_i, int shard_n,
                    int batch, int jobs, batch_counts *c)
{
    batch_ops ops = FAKE_OPS;
    ops.user = f;
    const batch_config cfg = {out, shard_i, shard_n, batch, jobs, 7, 1, 0};
    return batch_run(&cfg, &ops, items, c);
}

static int ok_rows(const char *out)
{
    char csv[1024];
    snprintf(csv, sizeof csv, "%s/results.csv", out);
    return count_of(read_file(csv), ",ok,");
}

/* Input and output directories tag-in/ and tag-out/, `images` inputs (and an unreadable one named
 * `unreadable`, unless NULL), their items and a stand-in. */
typedef struct run_fixture {
    const char *in, *out;
    batch_items items;
    fake f;
} run_fixture;

static void fixture_open(run_fixture *x, const char *tag, int images, const char *unreadable)
{
    char name[64];
    snprintf(name, sizeof name, "%s-in", tag);
    x->in = fresh_dir(name);
    snprintf(name, sizeof name, "%s-out", tag);
    x->out = fresh_dir(name);
    make_images(x->in, images);
    if (unreadable) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", x->in, unreadable);
        write_file(p, "not a png");
    }
    CU_ASSERT_EQUAL_FATAL(batch_items_load(x->in, 1, &x->items), CLI_EXIT_OK);
    memset(&x->f, 0, sizeof x->f);
    pthread_mutex_init(&x->f.lock, NULL);
}

static void fixture_close(run_fixture *x)
{
    pthread_mutex_destroy(&x->f.lock);
    batch_items_free(&x->items);
}

static void test_run_shards_and_resume(void)
{
    run_fixture x;
    fixture_open(&x, "run", 7, NULL);
    fake *f = &x.f;
    batch_counts c;

    /* shard 1/3 takes items 1 and 4 only */
    CU_ASSERT_EQUAL(run_fake(f, x.out, &x.items, 1, 3, 4, 1, &c), CLI_EXIT_OK);
    CU_ASSERT_EQUAL(c.mine, 2);
    CU_ASSERT_EQUAL(c.done, 2);
    for (int i = 0; i < 7; i++) CU_ASSERT_EQUAL(exists(x.out, x.items.name[i]), i % 3 == 1);
    CU_ASSERT_EQUAL(f->calls, 1);   /* both in one call of batch 4 */
    CU_ASSERT_EQUAL(f->max_n, 2);
    CU_ASSERT_EQUAL(f->opened, 1);
    CU_ASSERT_EQUAL(f->closed, 1);

    /* the other shards, two workers, batches of 2 */
    CU_ASSERT_EQUAL(run_fake(f, x.out, &x.items, 0, 3, 2, 2, &c), CLI_EXIT_OK);
    CU_ASSERT_EQUAL(c.mine, 3);
    CU_ASSERT_EQUAL(c.done, 3);
    CU_ASSERT_EQUAL(run_fake(f, x.out, &x.items, 2, 3, 2, 2, &c), CLI_EXIT_OK);
    CU_ASSERT_EQUAL(c.done, 2);
    CU_ASSERT(f->max_n <= 4);
    CU_ASSERT_EQUAL(f->opened, f->closed);
    for (int i = 0; i < 7; i++) CU_ASSERT(exists(x.out, x.items.name[i]));
    CU_ASSERT_EQUAL(ok_rows(x.out), 7);

    /* the restored image is the stand-in's, written as a PNG */
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", x.out, x.items.name[3]);
    stsl_image *img = NULL;
    TU_ASSERT_OK(stsl_image_load(ctx, p, 1, &img));
    if (img) CU_ASSERT_DOUBLE_EQUAL(img->data[0], -3.0 / 7.0, 1.0 / 255.0 + 1e-6);
    stsl_image_destroy(img);
    stsl_context_destroy(ctx);

    /* resume, unsharded: every output exists, nothing restored, no row added */
    int calls = f->calls;
    CU_ASSERT_EQUAL(run_fake(f, x.out, &x.items, 0, 1, 3, 1, &c), CLI_EXIT_OK);
    CU_ASSERT_EQUAL(c.skipped, 7);
    CU_ASSERT_EQUAL(c.done, 0);
    CU_ASSERT_EQUAL(f->calls, calls);
    CU_ASSERT_EQUAL(ok_rows(x.out), 7);

    /* an output lost after its row (a run killed between its row and its rename): restored
     * again, its row not written twice */
    snprintf(p, sizeof p, "%s/%s", x.out, x.items.name[5]);
    CU_ASSERT_EQUAL(unlink(p), 0);
    CU_ASSERT_EQUAL(run_fake(f, x.out, &x.items, 0, 1, 3, 1, &c), CLI_EXIT_OK);
    CU_ASSERT_EQUAL(c.done, 1);
    CU_ASSERT(exists(x.out, x.items.name[5]));
    CU_ASSERT_EQUAL(ok_rows(x.out), 7);
    fixture_close(&x);
}

static void test_run_claims_and_debris(void)
{
    run_fixture x;
    fixture_open(&x, "claim", 4, NULL);
    fake *f = &x.f;
    /* item 1 is being restored by another writer; item 2 has a killed run's temporaries and claim
     * file */
    int held = batch_claim_take(x.out, x.items.name[1]);
    CU_ASSERT_FATAL(held >= 0);
    char p[1024];
    snprintf(p, sizeof p, "%s/.%s.4242.tmp", x.out, x.items.name[2]);
    write_file(p, "partial");
    snprintf(p, sizeof p, "%s/..%s.4242.tmp.0badf00d.tmp", x.out, x.items.name[2]);
    write_file(p, "partial");
    snprintf(p, sizeof p, "%s/.%s.claim", x.out, x.items.name[2]);
    write_file(p, "");
    batch_counts c;
    CU_ASSERT_EQUAL(run_fake(f, x.out, &x.items, 0, 1, 2, 1, &c), CLI_EXIT_OK);
    CU_ASSERT_EQUAL(c.done, 3);
    CU_ASSERT_EQUAL(c.elsewhere, 1);
    CU_ASSERT(!exists(x.out, x.items.name[1]));
    CU_ASSERT(exists(x.out, x.items.name[2]));
    /* nothing but outputs, the CSV and the claim still held */
    DIR *d = opendir(x.out);
    struct dirent *e;
    int stray = 0;
    char held_file[600];
    snprintf(held_file, sizeof held_file, ".%s.claim", x.items.name[1]);
    while ((e = readdir(d)))
        if (e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            strcmp(e->d_name, held_file))
            stray++, fprintf(stderr, "\n  left: %s", e->d_name);
    closedir(d);
    CU_ASSERT_EQUAL(stray, 0);
    batch_claim_release(x.out, x.items.name[1], held);
    /* released: the next run restores it */
    CU_ASSERT_EQUAL(run_fake(f, x.out, &x.items, 0, 1, 2, 1, &c), CLI_EXIT_OK);
    CU_ASSERT_EQUAL(c.done, 1);
    CU_ASSERT_EQUAL(c.skipped, 3);
    CU_ASSERT_EQUAL(ok_rows(x.out), 4);
    fixture_close(&x);
}

static void test_run_failure_isolated(void)
{
    run_fixture x;
    fixture_open(&x, "fail", 5, "img05.png");   /* unreadable: fails at load */
    fake *f = &x.f;
    f->fail_name = "img02.png";    /* fails its batch's call, then its own */
    batch_counts c;
    CU_ASSERT_EQUAL(run_fake(f, x.out, &x.items, 0, 1, 3, 1, &c), CLI_EXIT_FAIL);
    CU_ASSERT_EQUAL(c.done, 4);
    CU_ASSERT_EQUAL(c.failed, 2);
    for (int i = 0; i < 6; i++) CU_ASSERT_EQUAL(exists(x.out, x.items.name[i]), i != 2 && i != 5);
    char csv[1024];
    snprintf(csv, sizeof csv, "%s/results.csv", x.out);
    const char *text = read_file(csv);
    CU_ASSERT_EQUAL(count_of(text, ",failed,"), 2);
    CU_ASSERT_EQUAL(count_of(text, ",ok,"), 4);
    /* the batch of img00..img02 failed once, then each was retried alone */
    CU_ASSERT(f->calls >= 5);
    fixture_close(&x);
}

static void test_run_bad_config(void)
{
    batch_items items = {0};
    fake f = {0};
    batch_counts c;
    CU_ASSERT_EQUAL(run_fake(&f, "/nonexistent", &items, 3, 3, 1, 1, &c), CLI_EXIT_FAIL);
    CU_ASSERT_EQUAL(run_fake(&f, "/nonexistent", &items, 0, 1, 0, 1, &c), CLI_EXIT_FAIL);
    CU_ASSERT_EQUAL(f.opened, 0);
}

int main(void)
{
    cli_set_program("test_batch");
    static const stsl_test tests[] = {
        {"items from a directory", test_items_directory},
        {"items from a manifest", test_items_manifest},
        {"csv row parsing, torn rows", test_csv_parse_row},
        {"csv append, resume, torn tail cut", test_csv_append_and_resume},
        {"claims within and across processes", test_claims},
        {"temporary names", test_temp_names},
        {"single mode's claimed save", test_save_claimed},
        {"run: shards, workers, resume", test_run_shards_and_resume},
        {"run: claims held elsewhere, debris", test_run_claims_and_debris},
        {"run: one failing item in a batch", test_run_failure_isolated},
        {"run: bad configuration", test_run_bad_config},
        {NULL, NULL},
    };
    return stsl_test_main("batch", tests);
}
