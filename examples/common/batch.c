/*
 * batch.c -- see batch.h.
 */
#include "common/batch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cli.h"

/* ---- items ---------------------------------------------------------------------------------- */

static int items_push(batch_items *l, const char *p)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **np = realloc(l->path, (size_t)cap * sizeof *np);
        if (!np) return -1;
        l->path = np;
        l->cap = cap;
    }
    if (!(l->path[l->n] = strdup(p))) return -1;
    l->n++;
    return 0;
}

void batch_items_free(batch_items *l)
{
    for (int i = 0; i < l->n; i++) free(l->path[i]);
    free(l->path);
    free(l->name);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_directory(const char *dir, batch_items *l)
{
    DIR *d = opendir(dir);
    if (!d) return cli_failure("cannot read directory %s: %s", dir, strerror(errno));
    struct dirent *e;
    size_t dl = strlen(dir);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !cli_is_image_name(e->d_name)) continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", e->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (items_push(l, p)) {
            closedir(d);
            return cli_failure("out of memory");
        }
    }
    closedir(d);
    return 0;
}

static int read_manifest(const char *file, batch_items *l)
{
    FILE *f = fopen(file, "r");
    if (!f) return cli_failure("cannot read %s: %s", file, strerror(errno));
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", file);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    char line[PATH_MAX];
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                     line[n - 1] == '\t'))
            line[--n] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        char path[PATH_MAX * 2];
        if (p[0] != '/' && access(p, F_OK) != 0) snprintf(path, sizeof path, "%s/%s", dir, p);
        else snprintf(path, sizeof path, "%s", p);
        if (items_push(l, path)) {
            fclose(f);
            return cli_failure("out of memory");
        }
    }
    fclose(f);
    return 0;
}

/* NAME of an input: its base name with ".png" for its extension. */
static void out_name(const char *in, char *buf, size_t n)
{
    const char *base = strrchr(in, '/');
    base = base ? base + 1 : in;
    const char *dot = strrchr(base, '.');
    int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    snprintf(buf, n, "%.*s.png", len, base);
}

int batch_items_load(const char *input, int is_dir, batch_items *items)
{
    memset(items, 0, sizeof *items);
    int rc = is_dir ? list_directory(input, items) : read_manifest(input, items);
    if (rc) return CLI_EXIT_FAIL;
    if (items->n == 0)
        return cli_failure(is_dir ? "%s: no .png, .jpg or .jpeg file in this directory"
                                  : "%s: the manifest lists no input (one image path per line)",
                           input);
    qsort(items->path, (size_t)items->n, sizeof *items->path, cmp_str);
    items->name = calloc((size_t)items->n, sizeof *items->name);
    if (!items->name) return cli_failure("out of memory");
    for (int i = 0; i < items->n; i++) {
        out_name(items->path[i], items->name[i], sizeof items->name[i]);
        for (int j = 0; j < i; j++)
            if (!strcmp(items->name[i], items->name[j]))
                return cli_failure("%s and %s would both be written to %s", items->path[j],
                                   items->path[i], items->name[i]);
    }
    return CLI_EXIT_OK;
}

/* ---- results.csv: one complete row per append, whatever kills a process ------------------- */

/* Called with the lock held: a writer killed inside write() may have left a row without its
 * newline; cut the file back to its last complete line so the next row starts cleanly. */
static int csv_repair_tail(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    off_t end = st.st_size;
    char buf[512];
    while (end > 0) {
        off_t start = end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0;
        ssize_t n = pread(fd, buf, (size_t)(end - start), start);
        if (n != end - start) return -1;
        for (ssize_t k = n - 1; k >= 0; k--)
            if (buf[k] == '\n') {
                off_t keep = start + k + 1;
                return keep == st.st_size ? 0 : ftruncate(fd, keep);
            }
        end = start;
    }
    return st.st_size == 0 ? 0 : ftruncate(fd, 0);
}

static int csv_lock(const char *csv)
{
    int fd = open(csv, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0) return -1;
    if (flock(fd, LOCK_EX) != 0 || csv_repair_tail(fd) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int g_kill_csv = -1, g_kill_image = -1;

void batch_kill_hook_init(const char *var)
{
    const char *e = getenv(var);
    if (!e) return;
    int k;
    if (sscanf(e, "csv:%d", &k) == 1) g_kill_csv = k;
    if (sscanf(e, "image:%d", &k) == 1) g_kill_image = k;
}

/* The image:K hook, after this process's K-th save of an image to `tmp` (for output DIR/NAME):
 * leave a partial library temporary beside it and die, as a kill inside the save would. */
static void kill_hook_image(const char *dir, const char *name, const char *tmp)
{
    if (!(g_kill_image > 0 && --g_kill_image == 0)) return;
    char part[PATH_MAX + NAME_MAX + 64];
    struct stat st;
    snprintf(part, sizeof part, "%s/..%s.%d.tmp.0badf00d.tmp", dir, name, (int)getpid());
    if (link(tmp, part) == 0 && stat(part, &st) == 0 && truncate(part, st.st_size / 2)) {}
    raise(SIGKILL);
}

int batch_disk_full(int e, const char *msg)
{
    return e == ENOSPC || e == EDQUOT ||
           (msg && (strstr(msg, strerror(ENOSPC)) || strstr(msg, strerror(EDQUOT))));
}

/* One write: a reader never sees half a row once the next writer has repaired the tail. */
int batch_csv_append(const char *csv, const char *file, const char *status, const ru_result *r,
                     uint64_t seed)
{
    int fd = csv_lock(csv);
    if (fd < 0) {
        int e = errno ? errno : EIO;
        if (!batch_disk_full(e, NULL)) cli_failure("cannot write %s: %s", csv, strerror(e));
        return e;
    }
    char row[PATH_MAX * 2 + 512];
    int len = 0;
    struct stat st;
    int have_size = fstat(fd, &st) == 0;   /* the size to cut a short row back to */
    int size_errno = have_size ? 0 : errno;
    if (have_size && st.st_size == 0)
        len += snprintf(row + len, sizeof row - (size_t)len, "%s", BATCH_CSV_HEADER);
    /* quote the file name (CSV: double any '"') */
    row[len++] = '"';
    for (const char *p = file; *p && len < (int)sizeof row - 200; p++) {
        if (*p == '"') row[len++] = '"';
        row[len++] = *p;
    }
    len += snprintf(row + len, sizeof row - (size_t)len, "\",%s,%llu,%llu,%llu,%llu,%.3f,%d,%llu\n",
                    status, (unsigned long long)r->nfe.unet_forward,
                    (unsigned long long)r->nfe.unet_vjp, (unsigned long long)r->nfe.decoder_forward,
                    (unsigned long long)r->nfe.decoder_vjp, r->seconds, r->batch,
                    (unsigned long long)seed);
    if (g_kill_csv > 0 && --g_kill_csv == 0) {
        if (write(fd, row, (size_t)len / 2) < 0) { /* killed anyway */ }
        raise(SIGKILL);
    }
    /* a short write (a full disk) is followed by another, which says why it stopped */
    ssize_t done = 0, w = 0;
    while (done < len && (w = write(fd, row + done, (size_t)(len - done))) > 0) done += w;
    int e = done == len ? 0 : w < 0 ? errno : EIO;
    /* never leave a short row behind; when it cannot be cut off, the message says the row is torn
     * (the next writer's csv_repair_tail cuts it) */
    int torn = e && done > 0 && (!have_size || ftruncate(fd, st.st_size) != 0);
    int te = torn ? (have_size ? errno : size_errno) : 0;
    flock(fd, LOCK_UN);
    close(fd);
    if (torn)
        cli_failure("cannot write %s: %s, and the partial row could not be removed: %s", csv,
                    strerror(e), strerror(te));
    else if (e && !batch_disk_full(e, NULL))
        cli_failure("cannot write %s: %s", csv, strerror(e));   /* else the caller stops */
    return e;
}

int batch_csv_parse_row(const char *line, char *file, size_t fn, char *status, size_t sn)
{
    if (line[0] != '"') return -1;
    size_t k = 0;
    const char *p = line + 1;
    for (;; p++) {
        if (!*p) return -1;
        if (*p == '"') {
            if (p[1] == '"') p++;
            else break;
        }
        if (k + 1 < fn) file[k++] = *p;
    }
    file[k] = '\0';
    if (p[1] != ',') return -1;
    p += 2;
    k = 0;
    while (*p && *p != ',' && *p != '\n' && k + 1 < sn) status[k++] = *p++;
    status[k] = '\0';
    return 0;
}

/* A run reads the file once at its start, then only the rows other processes appended since
 * (before it claims an item).  The items are sorted (bsearch). */
int batch_csv_read_done(const char *csv, const batch_items *items, char *done, off_t *offset)
{
    int fd = csv_lock(csv);
    if (fd < 0) return cli_failure("cannot write %s: %s", csv, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : cli_failure("cannot read %s: %s", csv, strerror(errno));
    char line[PATH_MAX * 2 + 512], file[PATH_MAX * 2], status[32];
    while (rc == 0 && *offset < st.st_size) {
        size_t want = st.st_size - *offset < (off_t)sizeof line - 1 ? (size_t)(st.st_size - *offset)
                                                                     : sizeof line - 1;
        ssize_t n = pread(fd, line, want, *offset);
        if (n <= 0) {
            rc = cli_failure("cannot read %s: %s", csv, n < 0 ? strerror(errno) : "file shrank");
            break;
        }
        char *nl = memchr(line, '\n', (size_t)n);
        if (!nl) {
            if ((size_t)n == sizeof line - 1) *offset += n;   /* a line too long to be a row */
            else break;                                        /* a torn row: not ours to cut */
            continue;
        }
        nl[1] = '\0';
        *offset += nl + 1 - line;
        char *key = file;
        char **hit;
        if (batch_csv_parse_row(line, file, sizeof file, status, sizeof status) == 0 &&
            !strcmp(status, "ok") &&
            (hit = bsearch(&key, items->path, (size_t)items->n, sizeof *items->path, cmp_str)))
            done[hit - items->path] = 1;
    }
    flock(fd, LOCK_UN);
    close(fd);
    return rc;
}

/* ---- claims: one process at a time per output ---------------------------------------------- */

int batch_is_temp_of(const char *entry, const char *name)
{
    if (entry[0] != '.') return 0;
    while (*entry == '.') entry++;
    size_t n = strlen(name);
    if (strncmp(entry, name, n) != 0 || entry[n] != '.') return 0;
    const char *p = entry + n + 1;
    if (!(*p >= '0' && *p <= '9')) return 0;
    while (*p >= '0' && *p <= '9') p++;
    if (!strcmp(p, ".tmp")) return 1;
    if (strncmp(p, ".tmp.", 5) != 0) return 0;
    p += 5;
    int hex = 0;
    while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')) p++, hex++;
    return hex == 8 && !strcmp(p, ".tmp");
}

/* ".NAME.claim": the claim file of output NAME. */
static int is_claim_of(const char *entry, const char *name)
{
    size_t n = strlen(name);
    return entry[0] == '.' && !strncmp(entry + 1, name, n) && !strcmp(entry + 1 + n, ".claim");
}

/* The claim file a killed holder leaves is taken over by the next claimant, who removes it on
 * release. */
int batch_claim_take(const char *dir, const char *name)
{
    char p[PATH_MAX + NAME_MAX + 16];
    snprintf(p, sizeof p, "%s/.%s.claim", dir, name);
    for (int tries = 0; tries < 16; tries++) {
        int fd = open(p, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0) return -2;
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            close(fd);
            if (e == EWOULDBLOCK) return -1;
            errno = e;
            return -2;
        }
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(p, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            return fd;
        close(fd);   /* its holder released (removed) it as we opened it: take the new one */
    }
    errno = EAGAIN;
    return -2;
}

void batch_claim_release(const char *dir, const char *name, int fd)
{
    if (fd < 0) return;
    char p[PATH_MAX + NAME_MAX + 16];
    snprintf(p, sizeof p, "%s/.%s.claim", dir, name);
    unlink(p);
    close(fd);
}

void batch_remove_temps_of(const char *dir, const char *name)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (batch_is_temp_of(e->d_name, name)) {
            char p[PATH_MAX + NAME_MAX + 2];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

int batch_save_claimed(stsl_context *ctx, const stsl_image *img, const char *path)
{
    char dir[PATH_MAX], tmp[PATH_MAX + NAME_MAX + 48];
    cli_dir_of(path, dir, sizeof dir);
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    int claim = batch_claim_take(dir, name);
    if (claim >= 0) batch_remove_temps_of(dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.tmp", dir, name, (int)getpid());
    stsl_image_format fmt = strcasecmp(cli_ext_of(path), ".png") ? STSL_FORMAT_JPEG : STSL_FORMAT_PNG;
    int rc = CLI_EXIT_OK;
    stsl_status st = stsl_image_save(ctx, img, tmp, fmt, 8, 0);
    if (st != STSL_OK) {
        char msg[RU_ERR_LEN + PATH_MAX];
        ru_io_message(ctx, st, "write", tmp, msg, sizeof msg);
        rc = cli_failure("%s", msg);
    } else {
        kill_hook_image(dir, name, tmp);
        if (rename(tmp, path) != 0) {
            rc = cli_failure("cannot write %s: %s", path, strerror(errno));
            unlink(tmp);
        }
    }
    batch_claim_release(dir, name, claim);
    return rc;
}

/* ---- the engine ----------------------------------------------------------------------------- */

static volatile sig_atomic_t g_interrupted = 0;

/* What the workers share: the item cursor, the counters, the CSV state; all under `lock`
 * (finishing an image is cheap next to restoring it). */
typedef struct batch_state {
    const batch_config *cfg;
    const batch_ops *ops;
    const batch_items *items;
    char csv[PATH_MAX];
    char *has_row;             /* item i already has its "ok" row */
    off_t csv_read;            /* results.csv is read up to here (has_row) */
    char *debris;              /* item i had a killed run's files left when this run started */
    int *claim;                /* item i's claim while this process holds it, or -1 */
    batch_counts c;
    int k;                     /* items looked at (the K of "[K/N]") */
    int rc;
    int next;                  /* the next item index to look at */
    int stop;                  /* a worker hit a usage error, a full disk, or was interrupted */
    pthread_mutex_t lock;
} batch_state;

/* One worker: its own context and state (a score handle serialises its calls), and the solver
 * it is running, for batch_interrupt to cancel. */
typedef struct worker {
    pthread_t thread;
    int opened;
    stsl_context *ctx;
    void *state;
    batch_state *b;
    stsl_solver *volatile running;
} worker;

static worker *volatile g_workers;
static volatile int g_nworkers;

void batch_interrupt(void)
{
    g_interrupted = 1;
    worker *w = g_workers;
    for (int i = 0; w && i < g_nworkers; i++) {
        stsl_solver *s = w[i].running;
        if (s) stsl_solver_cancel(s);
    }
}

static int in_shard(const batch_config *cfg, int i) { return i % cfg->shard_n == cfg->shard_i; }

/* Note which of this shard's items have debris in the output directory (temporaries or a claim
 * file of a killed run), and clean it now for those whose claim is free: the others are being
 * written by a live process (their debris, if it dies, is cleaned when they are claimed). */
static void find_debris(const batch_config *cfg, const batch_items *items, char *debris)
{
    const char *dir = cfg->output;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.') continue;
        for (int i = 0; i < items->n; i++)
            if (in_shard(cfg, i) &&
                (batch_is_temp_of(e->d_name, items->name[i]) || is_claim_of(e->d_name, items->name[i]))) {
                debris[i] = 1;
                break;
            }
    }
    closedir(d);
    for (int i = 0; i < items->n; i++) {
        if (!debris[i]) continue;
        int fd = batch_claim_take(dir, items->name[i]);
        if (fd < 0) continue;
        batch_remove_temps_of(dir, items->name[i]);
        batch_claim_release(dir, items->name[i], fd);
        debris[i] = 0;
    }
}

/* Release item i's claim if this process holds it.  Called with b->lock held. */
static void drop_claim(batch_state *b, int i)
{
    batch_claim_release(b->cfg->output, b->items->name[i], b->claim[i]);
    b->claim[i] = -1;
}

/* A full disk stops the batch (said once, with how to resume) instead of failing every image
 * left.  Called with b->lock held. */
static void stop_disk_full(batch_state *b, const char *what)
{
    if (!b->stop)
        b->rc = cli_failure("%s: no space left on the device; stopping (free some space and run "
                            "the same command again to resume)", what);
    b->stop = 1;
}

/* Finish item i: save to a temporary, extra files, append the "ok" row, rename into place; or,
 * when it failed (ok = 0, reason in err), report it and append a "failed" row.  A process killed
 * anywhere leaves either no output (the item is redone; a row written before the kill is not
 * written twice) or the output and its row.  Returns -1 when interrupted (nothing written).
 * Called with b->lock held. */
static int finish_item(worker *w, int i, const stsl_image *in, const ru_result *r, int ok, char *err)
{
    batch_state *b = w->b;
    const batch_config *cfg = b->cfg;
    const char *name = b->items->name[i];
    char out[PATH_MAX + NAME_MAX + 16], tmp[PATH_MAX + NAME_MAX + 48];
    snprintf(out, sizeof out, "%s/%s", cfg->output, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.tmp", cfg->output, name, (int)getpid());
    b->k++;
    if (ok) {
        stsl_status sst = stsl_image_save(w->ctx, r->restored, tmp, STSL_FORMAT_PNG, 8, 0);
        int e = errno;
        if (sst == STSL_OK) kill_hook_image(cfg->output, name, tmp);
        if (sst != STSL_OK) {
            ru_io_message(w->ctx, sst, "write", out, err, BATCH_ERR_LEN);
            ok = 0;
            if (batch_disk_full(e, err)) stop_disk_full(b, out);
        }
    }
    if (ok && b->ops->extra && b->ops->extra(b->ops->user, w->ctx, name, in, r) != 0)
        ok = 0, err[0] = 0;
    if ((g_interrupted || b->stop) && !ok) {
        unlink(tmp);
        drop_claim(b, i);
        return -1;
    }
    const char *path = b->items->path[i];
    const uint64_t seed = ru_image_seed(cfg->seed, name);
    int e = 0;
    if (ok) {
        if (!b->has_row[i] && (e = batch_csv_append(b->csv, path, "ok", r, seed)) != 0) {
            ok = 0, err[0] = 0;
        } else if (rename(tmp, out) != 0) {
            snprintf(err, BATCH_ERR_LEN, "cannot write %s: %s", out, strerror(e = errno));
            ok = 0;
        }
        if (ok) b->has_row[i] = 1;
    }
    if (!ok) unlink(tmp);
    if (!ok && batch_disk_full(e, NULL)) {   /* every further image would fail the same way */
        stop_disk_full(b, b->csv);
        drop_claim(b, i);
        return -1;
    }
    drop_claim(b, i);
    if (ok) {
        b->c.done++;
        if (!cfg->quiet) {
            printf("[%d/%d] ", b->k, b->c.mine);
            if (b->ops->report) b->ops->report(b->ops->user, path, out, r);
            else printf("%s -> %s\n", path, out);
            fflush(stdout);
        }
    } else {
        b->c.failed++;
        if (err[0]) fprintf(stderr, "%s: %s: %s\n", cli_program(), path, err);
        if ((e = batch_csv_append(b->csv, path, "failed", r, seed)) != 0) {
            b->rc = CLI_EXIT_FAIL;
            if (batch_disk_full(e, NULL)) stop_disk_full(b, b->csv);
        }
    }
    return 0;
}

/* 1 when OUTPUT/NAME of item i exists. */
static int output_exists(const batch_state *b, int i)
{
    char out[PATH_MAX + NAME_MAX + 16];
    struct stat st;
    snprintf(out, sizeof out, "%s/%s", b->cfg->output, b->items->name[i]);
    return stat(out, &st) == 0 && st.st_size > 0;
}

/* Take up to B loaded inputs of this shard (under the lock), each claimed; a skipped, claimed
 * elsewhere or unreadable item does not take a place.  Returns how many. */
static int gather(worker *w, int B, int *idx, stsl_image **in, uint64_t *seeds, char *err)
{
    batch_state *b = w->b;
    const batch_config *cfg = b->cfg;
    const char *dir = cfg->output;
    int n = 0;
    for (; b->next < b->items->n && n < B && !g_interrupted && !b->stop; b->next++) {
        const int i = b->next;
        const char *name = b->items->name[i];
        if (!in_shard(cfg, i)) continue;
        const char *why = NULL;
        if (output_exists(b, i)) {
            why = "exists";
            b->c.skipped++;
        } else if ((b->claim[i] = batch_claim_take(dir, name)) == -1) {
            why = "is being restored by another process";
            b->c.elsewhere++;
        } else if (b->claim[i] < 0) {
            b->claim[i] = -1;
            if (n > 0) break;   /* out of descriptors, say: this item waits for the next batch */
            b->rc = cli_failure("cannot claim %s/%s: %s", dir, name, strerror(errno));
            b->stop = 1;
            break;
        } else if (output_exists(b, i)) {   /* finished by another process since the check */
            drop_claim(b, i);
            why = "exists";
            b->c.skipped++;
        } else if (batch_csv_read_done(b->csv, b->items, b->has_row, &b->csv_read) != 0) {
            drop_claim(b, i);
            b->rc = CLI_EXIT_FAIL;
            b->stop = 1;
            break;
        }
        if (why) {
            b->k++;
            if (cfg->verbose)
                fprintf(stderr, "%s: [%d/%d] %s/%s %s, skipped\n", cli_program(), b->k, b->c.mine,
                        dir, name, why);
            continue;
        }
        if (b->debris[i]) {   /* a killed run's files, busy when this run started */
            batch_remove_temps_of(dir, name);
            b->debris[i] = 0;
        }
        if (b->ops->load(w->state, b->items->path[i], &in[n], err) != 0) {
            ru_result none;
            memset(&none, 0, sizeof none);
            finish_item(w, i, NULL, &none, 0, err);
            continue;
        }
        idx[n] = i;
        seeds[n] = ru_image_seed(cfg->seed, name);
        n++;
    }
    return n;
}

/* A worker: take a batch, restore it in one call, finish its images; a call that fails is
 * retried image by image, so one bad image never costs the others of its batch. */
static void *worker_main(void *arg)
{
    worker *w = arg;
    batch_state *b = w->b;
    const batch_ops *ops = b->ops;
    const int B = b->cfg->batch;
    int *idx = calloc((size_t)B, sizeof *idx);
    stsl_image **in = calloc((size_t)B, sizeof *in);
    uint64_t *seeds = calloc((size_t)B, sizeof *seeds);
    ru_result *res = calloc((size_t)B, sizeof *res);
    char err[BATCH_ERR_LEN];
    stsl_solver **running = (stsl_solver **)&w->running;
    pthread_mutex_lock(&b->lock);
    if (!idx || !in || !seeds || !res) {
        b->rc = cli_failure("out of memory");
        b->stop = 1;
    }
    while (!b->stop && !g_interrupted) {
        int n = gather(w, B, idx, in, seeds, err);
        if (n == 0) break;
        pthread_mutex_unlock(&b->lock);
        int r = ops->restore(w->state, (const stsl_image *const *)in, seeds, n, running, res, err);
        if (r != 0 && r != CLI_EXIT_USAGE && !g_interrupted && n > 1 && b->cfg->verbose)
            fprintf(stderr, "%s: a run of %d images failed (%s); retrying them one by one\n",
                    cli_program(), n, err);
        pthread_mutex_lock(&b->lock);
        if (r == CLI_EXIT_USAGE) {
            b->rc = cli_usage_error("%s", err);
            b->stop = 1;
        } else if (r == 0) {
            for (int j = 0; j < n && !b->stop; j++)
                if (finish_item(w, idx[j], in[j], &res[j], 1, err) < 0) b->stop = 1;
        } else if (g_interrupted) {
            b->stop = 1;
        } else if (n == 1) {
            finish_item(w, idx[0], in[0], &res[0], 0, err);
        } else {
            /* one image may have failed the call: each alone, so the others are not lost */
            for (int j = 0; j < n && !b->stop && !g_interrupted; j++) {
                ru_result one;
                memset(&one, 0, sizeof one);
                pthread_mutex_unlock(&b->lock);
                int ok = ops->restore(w->state, (const stsl_image *const *)&in[j], &seeds[j], 1,
                                      running, &one, err) == 0;
                pthread_mutex_lock(&b->lock);
                if (!ok && g_interrupted) b->stop = 1;
                else if (finish_item(w, idx[j], in[j], &one, ok, err) < 0) b->stop = 1;
                ru_result_free(&one);
            }
        }
        for (int j = 0; j < n; j++) {
            drop_claim(b, idx[j]);   /* an image not finished (interrupted, stopped) */
            ru_result_free(&res[j]);
            stsl_image_destroy(in[j]);
            in[j] = NULL;
        }
    }
    pthread_mutex_unlock(&b->lock);
    free(idx), free(in), free(seeds), free(res);
    return NULL;
}

int batch_run(const batch_config *cfg, const batch_ops *ops, const batch_items *items,
              batch_counts *counts)
{
    if (counts) memset(counts, 0, sizeof *counts);
    if (!cfg || !ops || !items || !ops->open_worker || !ops->load || !ops->restore ||
        cfg->shard_n < 1 || cfg->shard_i < 0 || cfg->shard_i >= cfg->shard_n || cfg->batch < 1 ||
        cfg->jobs < 1)
        return cli_failure("batch: bad configuration");
    batch_state b;
    memset(&b, 0, sizeof b);
    b.cfg = cfg;
    b.ops = ops;
    b.items = items;
    snprintf(b.csv, sizeof b.csv, "%s/results.csv", cfg->output);
    b.has_row = calloc((size_t)items->n + 1, 1);
    b.debris = calloc((size_t)items->n + 1, 1);
    b.claim = malloc(((size_t)items->n + 1) * sizeof *b.claim);
    worker *w = calloc((size_t)cfg->jobs, sizeof *w);
    if (!b.has_row || !b.debris || !b.claim || !w) {
        free(b.has_row), free(b.debris), free(b.claim), free(w);
        return cli_failure("out of memory");
    }
    for (int i = 0; i < items->n; i++) b.claim[i] = -1;
    pthread_mutex_init(&b.lock, NULL);
    int rc = batch_csv_read_done(b.csv, items, b.has_row, &b.csv_read) != 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
    if (rc == CLI_EXIT_OK) find_debris(cfg, items, b.debris);
    for (int i = 0; i < items->n; i++)
        if (in_shard(cfg, i)) b.c.mine++;
    for (int j = 0; j < cfg->jobs && rc == CLI_EXIT_OK; j++) {
        w[j].b = &b;
        w[j].opened = 1;
        rc = ops->open_worker(ops->user, j, &w[j].ctx, &w[j].state);
    }
    if (rc == CLI_EXIT_OK) {
        g_nworkers = 0;
        g_workers = w;
        g_nworkers = cfg->jobs;
        int spawned = 0;
        for (; spawned < cfg->jobs; spawned++)
            if (pthread_create(&w[spawned].thread, NULL, worker_main, &w[spawned]) != 0) break;
        if (spawned == 0) rc = cli_failure("cannot start a worker thread");
        for (int j = 0; j < spawned; j++) pthread_join(w[j].thread, NULL);
        g_nworkers = 0;
        g_workers = NULL;
        if (b.rc) rc = b.rc;
    }
    for (int j = 0; j < cfg->jobs; j++)
        if (w[j].opened && ops->close_worker) ops->close_worker(ops->user, j, w[j].ctx, w[j].state);
    free(w);
    free(b.has_row), free(b.debris), free(b.claim);
    pthread_mutex_destroy(&b.lock);
    if (counts) *counts = b.c;
    if (rc != CLI_EXIT_OK) return rc;
    if (b.stop || g_interrupted) return cli_failure("interrupted; run the same command again to resume");
    if (!cfg->quiet)
        printf("shard %d/%d: %d item(s): %d restored, %d skipped (already done), %d left to other "
               "processes, %d failed; see %s\n",
               cfg->shard_i, cfg->shard_n, b.c.mine, b.c.done, b.c.skipped, b.c.elsewhere,
               b.c.failed, b.csv);
    if (b.c.failed) return cli_failure("%d of %d item(s) failed (see %s)", b.c.failed, b.c.mine, b.csv);
    return CLI_EXIT_OK;
}
