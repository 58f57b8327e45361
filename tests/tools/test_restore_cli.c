/*
 * test_restore_cli.c -- the stsl-restore command line (DESIGN.md section 5): usage errors exit 2
 * with one line on stderr, a missing input exits 1, --help lists every task and solver, a tiny
 * restoration writes an image of the right size (and a montage), batch mode skips outputs that
 * exist and writes results.csv, --shard I/N splits the items.
 *
 * Runs the built tool ($STSL_RESTORE_BIN, else tu_tool("stsl-restore"): $STSL_BIN_DIR, which
 * tests/run.sh sets to make's BINOUT, else bin/; missing, it fails under tests/run.sh) on
 * 8x8 grey images with the TorchScript fixtures tests/scores/fixtures/unet_latent.pt + ae.pt (a
 * latent prior on 1x8x8 images), 2 reverse steps.  The runs that need a model are skipped, with a
 * message, when the library has no TorchScript backend or the fixtures are missing.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/testutil.h"

static char g_bin[1024];
static char g_model[1024];
static int g_have_model;
static char g_dir[1024];
static int g_timeout;       /* > 0: runs are killed after this many seconds (a hang fails) */

static void setup_paths(void)
{
    if (g_bin[0]) return;
    /* (the tool finds its library by its rpath, $ORIGIN/<LIBOUT relative to BINOUT>) */
    const char *env = getenv("STSL_RESTORE_BIN");
    snprintf(g_bin, sizeof g_bin, "%s", env && *env ? env : tu_tool("stsl-restore"));
    snprintf(g_model, sizeof g_model, "%s", tu_path("scores/fixtures/unet_latent.pt"));
    char ae[1024];
    snprintf(ae, sizeof ae, "%s", tu_path("scores/fixtures/ae.pt"));
    g_have_model = stsl_has_torch() && access(g_model, R_OK) == 0 && access(ae, R_OK) == 0;
    snprintf(g_dir, sizeof g_dir, "%s", tu_tmpdir());
}

/* Run the tool with `args` (a shell fragment); stdout/stderr captured into files under g_dir.
 * Returns the exit status, or -1 if it did not exit normally. */
static int run(const char *args, char *out, size_t outn, char *err, size_t errn)
{
    char cmd[20000], po[1200], pe[1200];
    snprintf(po, sizeof po, "%s/stdout.txt", g_dir);
    snprintf(pe, sizeof pe, "%s/stderr.txt", g_dir);
    /* runs that load a model do so on STSL_TEST_DEVICE when it is set (the tool's default: the
     * library's, STSL_DEFAULT_DEVICE), unless the run names its own device (a later --device
     * would override the one under test) */
    char devarg[128] = "";
    const char *dev = getenv("STSL_TEST_DEVICE");
    if (dev && *dev && strlen(dev) < 64 && !strchr(dev, '\'') && strstr(args, "--model ") &&
        !strstr(args, "--device "))
        snprintf(devarg, sizeof devarg, " --device '%s'", dev);
    char limit[64] = "";
    if (g_timeout > 0) snprintf(limit, sizeof limit, "timeout -s KILL %d ", g_timeout);
    snprintf(cmd, sizeof cmd, "%s'%s' %s%s >'%s' 2>'%s' </dev/null", limit, g_bin, args, devarg,
             po, pe);
    int st = system(cmd);
    const char *paths[2] = {po, pe};
    char *bufs[2] = {out, err};
    size_t ns[2] = {outn, errn};
    for (int k = 0; k < 2; k++) {
        if (!bufs[k]) continue;
        bufs[k][0] = '\0';
        FILE *f = fopen(paths[k], "r");
        if (!f) continue;
        size_t n = fread(bufs[k], 1, ns[k] - 1, f);
        bufs[k][n] = '\0';
        fclose(f);
    }
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        if (*s == '\n') n++;
    return n;
}

static int tool_present(void)
{
    setup_paths();
    if (access(g_bin, X_OK) != 0) {
        if (tu_tool_required()) {
            fprintf(stderr, "\n  %s is not built (STSL_BIN_DIR is the build's BINOUT)\n", g_bin);
            CU_FAIL("stsl-restore not found in STSL_BIN_DIR");
        } else {
            fprintf(stderr, "\n  skipped: %s is not built (make tools)\n", g_bin);
        }
        return 0;
    }
    return 1;
}

static int model_present(void)
{
    if (!tool_present()) return 0;
    if (!g_have_model) {
        fprintf(stderr, "\n  skipped: %s\n", stsl_has_torch() ? "fixtures tests/scores/fixtures/unet_latent.pt, ae.pt missing (make torchscript-fixtures)"
                                                              : "library built without the TorchScript backend");
        return 0;
    }
    return 1;
}

/* An 8x8 grey PNG with a seeded pattern. */
static void make_image(const char *path, uint64_t seed)
{
    stsl_image *img = NULL;
    TU_ASSERT_OK(stsl_image_create(1, 8, 8, &img));
    if (!img) return;
    tu_fill_uniform(img->data, 64, seed, -1.0f, 1.0f);
    TU_ASSERT_OK(stsl_image_save(NULL, img, path, STSL_FORMAT_PNG, 8, 0));
    stsl_image_destroy(img);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static char out_buf[65536], err_buf[65536];

static void test_help(void)
{
    if (!tool_present()) return;
    int rc = run("--help", out_buf, sizeof out_buf, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 0);
    /* every task and every solver the library knows is listed */
    const char *lists[2] = {stsl_operator_names(), stsl_solver_names()};
    for (int k = 0; k < 2; k++) {
        char names[1024];
        snprintf(names, sizeof names, "%s", lists[k]);
        for (char *tok = strtok(names, " "); tok; tok = strtok(NULL, " ")) {
            char pat[80];
            snprintf(pat, sizeof pat, " %s", tok);
            if (!strstr(out_buf, pat)) fprintf(stderr, "\n  --help does not list '%s'\n", tok);
            CU_ASSERT_PTR_NOT_NULL(strstr(out_buf, pat));
        }
    }
}

/* issue 29: the help is generated from the library: every solver option shows, for every solver
 * that uses it, the default stsl_solver_param_bounds reports (get-after-create) */
static void test_help_defaults_from_library(void)
{
    if (!tool_present()) return;
    CU_ASSERT_EQUAL(run("--help", out_buf, sizeof out_buf, NULL, 0), 0);
    const stsl_param tools_own[] = {STSL_PARAM_SEED, STSL_PARAM_PROGRESS_ESTIMATE};
    CU_ASSERT(tu_help_lists_library_defaults(out_buf, 1, tools_own, 2) > 40);
    /* and it can tell a wrong one */
    CU_ASSERT_FALSE(tu_help_lists_default(out_buf, "--steps", "12345", "dps"));
}

static void test_bad_usage(void)
{
    if (!tool_present()) return;
    const char *cases[] = {
        "",                                                         /* no arguments */
        "a.png b.png --solver stsl",                                /* no --task */
        "a.png b.png --task sr4 --solver no-such-solver",           /* unknown solver */
        "a.png b.png --task sr4 --solver dps --bogus",              /* unknown option */
        "a.png b.png --task sr4 --solver dps --steps 0",            /* bad value */
        "a.png b.png --task sr4 --solver dps --shard 2/2",          /* bad shard */
        /* issue 30: numbers beyond int were wrapped by sscanf("%d/%d") and accepted */
        "a.png b.png --task sr4 --solver dps --shard 0/4294967297",
        "a.png b.png --task sr4 --solver dps --shard 4294967296/2",
        "a.png b.png --task sr4 --solver dps --shard -1/2",
        "a.png b.png --task sr4 --solver dps --shard 0/+2",
        "a.png b.png --task sr4 --solver dps --shard 0/2x",
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int rc = run(cases[k], NULL, 0, err_buf, sizeof err_buf);
        if (rc != 2 || count_lines(err_buf) != 1)
            fprintf(stderr, "\n  '%s': exit %d, stderr '%s'\n", cases[k], rc, err_buf);
        CU_ASSERT_EQUAL(rc, 2);
        CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    }
}

static void test_missing_input(void)
{
    if (!tool_present()) return;
    char args[16384];
    snprintf(args, sizeof args, "'%s/no-such-input.png' '%s/out.png' --task sr2 --solver dps", g_dir, g_dir);
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "no-such-input.png"));
}

static void test_option_not_for_solver(void)
{
    if (!tool_present()) return;
    char args[16384], in[1100];
    snprintf(in, sizeof in, "%s/opt.png", g_dir);
    make_image(in, 7);
    snprintf(args, sizeof args, "'%s' '%s/o.png' --task sr2 --solver dps --gamma 1", in, g_dir);
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 2);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
}

static void test_single_run(void)
{
    if (!model_present()) return;
    char in[1100], out[1100], mont[1100], args[16384];
    snprintf(in, sizeof in, "%s/single.png", g_dir);
    snprintf(out, sizeof out, "%s/single-out.png", g_dir);
    snprintf(mont, sizeof mont, "%s/single-montage.png", g_dir);
    make_image(in, 1);
    snprintf(args, sizeof args,
             "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s' --threads 1 --seed 3 "
             "--montage '%s'",
             in, out, g_model, mont);
    int rc = run(args, out_buf, sizeof out_buf, err_buf, sizeof err_buf);
    if (rc != 0) fprintf(stderr, "\n  exit %d: %s", rc, err_buf);
    CU_ASSERT_EQUAL(rc, 0);
    stsl_image *img = NULL;
    TU_ASSERT_OK(stsl_image_load(NULL, out, 0, &img));
    if (img) {
        CU_ASSERT_EQUAL(img->channels, 1);
        CU_ASSERT_EQUAL(img->height, 8);
        CU_ASSERT_EQUAL(img->width, 8);
        stsl_image_destroy(img);
    }
    img = NULL;
    TU_ASSERT_OK(stsl_image_load(NULL, mont, 0, &img));
    if (img) {   /* clean | measurement | restoration with 2-pixel gutters */
        CU_ASSERT_EQUAL(img->height, 8);
        CU_ASSERT_EQUAL(img->width, 3 * 8 + 2 * 2);
        stsl_image_destroy(img);
    }
    /* the summary reports the four NFE counts */
    CU_ASSERT_PTR_NOT_NULL(strstr(out_buf, "forward"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out_buf, "vjp"));
    /* a clean input of the wrong size is a failure (exit 1), not a crash */
    char big[1100];
    snprintf(big, sizeof big, "%s/big.png", g_dir);
    stsl_image *b = NULL;
    TU_ASSERT_OK(stsl_image_create(1, 12, 12, &b));
    if (b) {
        TU_ASSERT_OK(stsl_image_save(NULL, b, big, STSL_FORMAT_PNG, 8, 0));
        stsl_image_destroy(b);
    }
    snprintf(args, sizeof args, "'%s' '%s/big-out.png' --task sr2 --solver psld --steps 2 --model '%s'",
             big, g_dir, g_model);
    rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
}

/* A 12-wide, 10-high RGB input for the 1x8x8 fixture model: white in its centred 10x10 square,
 * black in the two 1-pixel side bands.  Without --resize/--crop it is refused with advice and the
 * file's real channel count; --crop keeps only the white square, --resize keeps some black. */
static void test_fit_input(void)
{
    if (!model_present()) return;
    char in[1100], args[16384], mont[1100];
    snprintf(in, sizeof in, "%s/wide-rgb.png", g_dir);
    snprintf(mont, sizeof mont, "%s/fit-montage.png", g_dir);
    stsl_image *w = NULL;
    TU_ASSERT_OK(stsl_image_create(3, 10, 12, &w));
    if (!w) return;
    for (int c = 0; c < 3; c++)
        for (int r = 0; r < 10; r++)
            for (int q = 0; q < 12; q++) w->data[(c * 10 + r) * 12 + q] = q == 0 || q == 11 ? -1.f : 1.f;
    TU_ASSERT_OK(stsl_image_save(NULL, w, in, STSL_FORMAT_PNG, 8, 0));
    stsl_image_destroy(w);
    const char *common = "--task sr2 --solver psld --steps 2 --threads 1 --quiet";
    snprintf(args, sizeof args, "'%s' '%s/fit.png' %s --model '%s'", in, g_dir, common, g_model);
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "12x10 with 3 channel(s)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "8x8 images with 1 channel(s)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "--resize"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "--crop"));
    /* the fitted clean input is the montage's first 8x8 tile */
    float mins[2] = {0, 0};
    const char *modes[2] = {"--crop", "--resize"};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "'%s' '%s/fit.png' %s --model '%s' %s --montage '%s'", in, g_dir,
                 common, g_model, modes[k], mont);
        rc = run(args, NULL, 0, err_buf, sizeof err_buf);
        if (rc != 0) fprintf(stderr, "\n  %s: exit %d: %s", modes[k], rc, err_buf);
        CU_ASSERT_EQUAL(rc, 0);
        stsl_image *m = NULL;
        TU_ASSERT_OK(stsl_image_load(NULL, mont, 0, &m));
        if (!m) continue;
        CU_ASSERT_EQUAL(m->height, 8);
        mins[k] = 1.f;
        for (int r = 0; r < 8; r++)
            for (int q = 0; q < 8; q++)
                if (m->data[r * m->width + q] < mins[k]) mins[k] = m->data[r * m->width + q];
        stsl_image_destroy(m);
    }
    CU_ASSERT_EQUAL(mins[0], 1.f);   /* crop: only white */
    CU_ASSERT(mins[1] < 0.5f);      /* resize: the black bands are squeezed in */
    /* usage errors: both modes, or fitting a measurement */
    snprintf(args, sizeof args, "'%s' '%s/fit.png' %s --model '%s' --resize --crop", in, g_dir, common, g_model);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 2);
    snprintf(args, sizeof args, "'%s' '%s/fit.png' %s --model '%s' --resize --measured", in, g_dir, common, g_model);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 2);
}

static int csv_rows(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        if (c == '\n') n++;
    fclose(f);
    return n - 1;   /* header */
}

static void test_batch_resume(void)
{
    if (!model_present()) return;
    char in[1100], out[1100], p[1300], args[16384];
    snprintf(in, sizeof in, "%s/batch-in", g_dir);
    snprintf(out, sizeof out, "%s/batch-out", g_dir);
    CU_ASSERT_EQUAL(mkdir(in, 0777), 0);
    CU_ASSERT_EQUAL(mkdir(out, 0777), 0);
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/img%d.png", in, k);
        make_image(p, 10 + (uint64_t)k);
    }
    /* img1's output exists already: it must be left alone */
    snprintf(p, sizeof p, "%s/img1.png", out);
    FILE *f = fopen(p, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("placeholder", f);
    fclose(f);
    snprintf(args, sizeof args, "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s' --threads 1 --quiet",
             in, out, g_model);
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    if (rc != 0) fprintf(stderr, "\n  exit %d: %s", rc, err_buf);
    CU_ASSERT_EQUAL(rc, 0);
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/img%d.png", out, k);
        CU_ASSERT(exists(p));
    }
    snprintf(p, sizeof p, "%s/img1.png", out);
    struct stat st;
    CU_ASSERT(stat(p, &st) == 0 && st.st_size == (off_t)strlen("placeholder"));
    snprintf(p, sizeof p, "%s/results.csv", out);
    CU_ASSERT_EQUAL(csv_rows(p), 2);

    /* a manifest with comments gives the same items */
    char man[1100], out2[1100];
    snprintf(man, sizeof man, "%s/manifest.txt", g_dir);
    snprintf(out2, sizeof out2, "%s/batch-out2", g_dir);
    f = fopen(man, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "# inputs\n%s/img2.png\n\n%s/img0.png\n", in, in);
    fclose(f);
    snprintf(args, sizeof args, "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s' --threads 1 --quiet",
             man, out2, g_model);
    rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 0);
    snprintf(p, sizeof p, "%s/results.csv", out2);
    CU_ASSERT_EQUAL(csv_rows(p), 2);
    snprintf(p, sizeof p, "%s/img1.png", out2);
    CU_ASSERT(!exists(p));
}

static void test_shard(void)
{
    if (!model_present()) return;
    char in[1100], out[1100], p[1300], args[16384];
    snprintf(in, sizeof in, "%s/shard-in", g_dir);
    snprintf(out, sizeof out, "%s/shard-out", g_dir);
    CU_ASSERT_EQUAL(mkdir(in, 0777), 0);
    /* names chosen so that sorted order differs from creation order */
    const char *names[4] = {"d", "b", "a", "c"};
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/%s.png", in, names[k]);
        make_image(p, 20 + (uint64_t)k);
    }
    snprintf(args, sizeof args,
             "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s' --threads 1 --quiet --shard 1/2",
             in, out, g_model);
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    if (rc != 0) fprintf(stderr, "\n  exit %d: %s", rc, err_buf);
    CU_ASSERT_EQUAL(rc, 0);
    /* sorted a b c d: shard 1/2 takes indices 1 and 3 */
    const int expect[4] = {0, 1, 0, 1};
    const char *sorted[4] = {"a", "b", "c", "d"};
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/%s.png", out, sorted[k]);
        if (exists(p) != expect[k]) fprintf(stderr, "\n  shard 1/2: %s.png %s\n", sorted[k], expect[k] ? "missing" : "unexpected");
        CU_ASSERT_EQUAL(exists(p), expect[k]);
    }
    snprintf(args, sizeof args,
             "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s' --threads 1 --quiet --shard=0/2",
             in, out, g_model);
    rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 0);
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/%s.png", out, sorted[k]);
        CU_ASSERT(exists(p));
    }
    snprintf(p, sizeof p, "%s/results.csv", out);
    CU_ASSERT_EQUAL(csv_rows(p), 4);
}

static int file_contains(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

static void write_file(const char *path, const char *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

/* A 2-step psld restoration of `in` into `out` with the fixture prior; exit status, stderr in
 * err_buf. */
static int restore_tiny(const char *in, const char *out)
{
    char args[16384];
    snprintf(args, sizeof args, "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s'", in, out,
             g_model);
    return run(args, out_buf, sizeof out_buf, err_buf, sizeof err_buf);
}

/* issue 17: an image-named input that is not an image was taken for an (empty) manifest: exit 0,
 * nothing restored, and OUTPUT out.png created as a directory.  These fail before any model. */
static void test_bad_image_input(void)
{
    if (!tool_present()) return;
    char in[1100], out[1100], good[1100];
    struct {
        const char *name;
        const char *bytes;
        size_t n;
    } cases[] = {
        {"empty.png", "", 0},                                 /* name says image, empty */
        {"text.jpg", "not an image\n", 13},                  /* name says image, text */
        {"magic.dat", "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 16}, /* bytes say PNG, truncated */
        {"magic2.txt", "\xff\xd8\xff\xe0\0\x10JFIF", 10},     /* bytes say JPEG, truncated */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(in, sizeof in, "%s/%s", g_dir, cases[k].name);
        snprintf(out, sizeof out, "%s/bad-out-%zu.png", g_dir, k);
        write_file(in, cases[k].bytes, cases[k].n);
        int rc = restore_tiny(in, out);
        if (rc != 1 || count_lines(err_buf) != 1 || exists(out))
            fprintf(stderr, "\n  %s: exit %d, stderr '%s'\n", cases[k].name, rc, err_buf);
        CU_ASSERT_EQUAL(rc, 1);
        CU_ASSERT_EQUAL(count_lines(err_buf), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, cases[k].name));
        CU_ASSERT(!exists(out));
    }
    /* a manifest whose OUTPUT names an image file: usage error, no directory created */
    snprintf(good, sizeof good, "%s/good.png", g_dir);
    make_image(good, 5);
    snprintf(in, sizeof in, "%s/one.txt", g_dir);
    char line[1200];
    snprintf(line, sizeof line, "%s\n", good);
    write_file(in, line, strlen(line));
    snprintf(out, sizeof out, "%s/batch-as-image.png", g_dir);
    CU_ASSERT_EQUAL(restore_tiny(in, out), 2);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    CU_ASSERT(!exists(out));
}

/* issue 17: a manifest (or directory) with no item is an error, not a successful empty run */
static void test_empty_batch(void)
{
    if (!tool_present()) return;
    char in[1100], out[1100];
    snprintf(in, sizeof in, "%s/empty-manifest.txt", g_dir);
    write_file(in, "# only a comment\n\n", 18);
    snprintf(out, sizeof out, "%s/empty-out", g_dir);
    CU_ASSERT_EQUAL(restore_tiny(in, out), 1);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    CU_ASSERT(!exists(out));
    snprintf(in, sizeof in, "%s/empty-dir", g_dir);
    CU_ASSERT_EQUAL(mkdir(in, 0777), 0);
    CU_ASSERT_EQUAL(restore_tiny(in, out), 1);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
}

/* issue 17: a missing output directory was found only after the restoration, and the message
 * said "cannot write" twice.  The output is checked before the model is even looked at (the
 * model named here does not exist: the output's error must come first). */
static void test_output_checked_first(void)
{
    if (!tool_present()) return;
    char in[1100], args[16384];
    snprintf(in, sizeof in, "%s/outcheck.png", g_dir);
    make_image(in, 9);
    snprintf(args, sizeof args,
             "'%s' '%s/no-such-dir/o.png' --task sr2 --solver dps --steps 2 --model '%s/none.pt'",
             in, g_dir, g_dir);
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "no-such-dir"));
    CU_ASSERT_PTR_NULL(strstr(err_buf, "none.pt"));
    CU_ASSERT(file_contains(err_buf, "cannot write") <= 1);
    /* --montage likewise */
    snprintf(args, sizeof args,
             "'%s' '%s/o.png' --task sr2 --solver dps --steps 2 --model '%s/none.pt' "
             "--montage '%s/no-such-dir/m.png'",
             in, g_dir, g_dir, g_dir);
    rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "no-such-dir"));
    CU_ASSERT_PTR_NULL(strstr(err_buf, "none.pt"));
}

/* issue 17: the task list says sr8 needs sizes divisible by 8 */
static void test_help_sr_note(void)
{
    if (!tool_present()) return;
    CU_ASSERT_EQUAL(run("--help", out_buf, sizeof out_buf, NULL, 0), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_buf, "divisible by 2, 4, 8"));
}

/* Largest difference in 8-bit levels between two PNGs of one size; -1 if either cannot be read. */
static int png_level_diff(const char *a, const char *b)
{
    stsl_context *ctx = NULL;
    stsl_image *ia = NULL, *ib = NULL;
    int d = -1;
    if (stsl_context_create(&ctx) != STSL_OK) return -1;
    if (stsl_image_load(ctx, a, 0, &ia) == STSL_OK && stsl_image_load(ctx, b, 0, &ib) == STSL_OK &&
        ia->channels == ib->channels && ia->height == ib->height && ia->width == ib->width) {
        d = 0;
        size_t n = (size_t)ia->channels * ia->height * ia->width;
        for (size_t i = 0; i < n; i++) {   /* [-1, 1] holds 255 levels of 2/255 */
            int l = (int)lround(fabs((double)ia->data[i] - ib->data[i]) * 127.5);
            if (l > d) d = l;
        }
    }
    stsl_image_destroy(ia), stsl_image_destroy(ib);
    stsl_context_destroy(ctx);
    return d;
}

/* issue 19, narrowed by issue 30: with --pad-batch 1 batch mode restores each image bit for bit
 * the same whatever batch, shard, worker or neighbours (one image a run, on any CPU); by default
 * (batched calls, kernels that may round by a sample's place in the call) to a level at most */
static void test_batch_same_result(void)
{
    if (!model_present()) return;
    enum { N = 16 };
    char in[1100], p[1300], q[1300], args[16384];
    snprintf(in, sizeof in, "%s/same-in", g_dir);
    CU_ASSERT_EQUAL(mkdir(in, 0777), 0);
    for (int k = 0; k < N; k++) {
        snprintf(p, sizeof p, "%s/im%02d.png", in, k);
        make_image(p, 40 + (uint64_t)k);
    }
    const char *runs[][2] = {{"b1", "--batch 1 --pad-batch 1"},
                             {"b7", "--batch 7 --pad-batch 1"},
                             {"j2", "--batch 5 --pad-batch 1 --jobs 2"},
                             {"b16", "--batch 16 --pad-batch 1"},
                             {"s", "--batch 16 --pad-batch 1 --shard 0/3"},
                             {"s", "--batch 16 --pad-batch 1 --shard 1/3"},
                             {"s", "--batch 16 --pad-batch 1 --shard 2/3"},
                             {"d16", "--batch 16"},
                             {"d7", "--batch 7"}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        snprintf(args, sizeof args,
                 "'%s' '%s/same-%s' --task sr2 --solver psld --steps 3 --model '%s' --threads 1 "
                 "--quiet %s",
                 in, g_dir, runs[r][0], g_model, runs[r][1]);
        int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
        if (rc != 0) fprintf(stderr, "\n  %s: exit %d: %s", runs[r][1], rc, err_buf);
        CU_ASSERT_EQUAL(rc, 0);
    }
    int same[4] = {0, 0, 0, 0}, level = 0;
    const char *other[4] = {"b1", "b7", "s", "j2"}, *batched[2] = {"d16", "d7"};
    for (int k = 0; k < N; k++) {
        snprintf(p, sizeof p, "%s/same-b16/im%02d.png", g_dir, k);
        for (int r = 0; r < 4; r++) {
            snprintf(q, sizeof q, "%s/same-%s/im%02d.png", g_dir, other[r], k);
            same[r] += tu_same_file(p, q);
        }
        for (int r = 0; r < 2; r++) {
            snprintf(q, sizeof q, "%s/same-%s/im%02d.png", g_dir, batched[r], k);
            int d = png_level_diff(p, q);
            level = d < 0 || level < 0 ? -1 : d > level ? d : level;
        }
    }
    CU_ASSERT_EQUAL(same[0], N);
    CU_ASSERT_EQUAL(same[1], N);
    CU_ASSERT_EQUAL(same[2], N);
    CU_ASSERT_EQUAL(same[3], N);
    CU_ASSERT(level >= 0 && level <= 1);
    snprintf(p, sizeof p, "%s/same-b16/results.csv", g_dir);
    CU_ASSERT_EQUAL(csv_rows(p), N);
}

/* issue 19: one image that fails its batch's run (a measurement of the wrong size) is reported
 * alone; the others of the batch are restored */
static void test_batch_failure_isolated(void)
{
    if (!model_present()) return;
    char in[1100], out[1100], p[1300], args[16384];
    snprintf(in, sizeof in, "%s/fail-in", g_dir);
    snprintf(out, sizeof out, "%s/fail-out", g_dir);
    CU_ASSERT_EQUAL(mkdir(in, 0777), 0);
    for (int k = 0; k < 4; k++) {
        stsl_image *img = NULL;
        int size = k == 2 ? 8 : 4;   /* sr2 of an 8x8 model measures 4x4: im2 is wrong */
        TU_ASSERT_OK(stsl_image_create(1, size, size, &img));
        if (!img) return;
        tu_fill_normal(img->data, (size_t)size * size, 60 + (uint64_t)k);
        for (int i = 0; i < size * size; i++) img->data[i] = tanhf(img->data[i]);
        snprintf(p, sizeof p, "%s/im%d.png", in, k);
        TU_ASSERT_OK(stsl_image_save(NULL, img, p, STSL_FORMAT_PNG, 8, 0));
        stsl_image_destroy(img);
    }
    snprintf(args, sizeof args,
             "'%s' '%s' --measured --task sr2 --solver psld --steps 2 --model '%s' --threads 1 "
             "--quiet --batch 4",
             in, out, g_model);
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "im2.png"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "1 of 4 item(s) failed"));
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/im%d.png", out, k);
        CU_ASSERT_EQUAL(exists(p), k != 2);
    }
}

/* ---- issue 30 ------------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Count the "ok" rows of each of `n` names img%02d.png in a results.csv; returns the total. */
static int ok_rows(const char *csv, int n, int *per)
{
    for (int k = 0; k < n; k++) per[k] = 0;
    FILE *f = fopen(csv, "r");
    if (!f) return -1;
    char line[4096];
    int total = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\",ok,")) continue;
        total++;
        for (int k = 0; k < n; k++) {
            char name[32];
            snprintf(name, sizeof name, "/img%02d.png\"", k);
            if (strstr(line, name)) per[k]++;
        }
    }
    fclose(f);
    return total;
}

/* 1 when `dir` holds a file whose name starts with '.' (a temporary or a claim). */
static int has_hidden_files(const char *dir)
{
    char cmd[2200], out[64];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -c '^\\.' > '%s/hidden.txt'", dir, g_dir);
    if (system(cmd) == -1) return -1;
    snprintf(cmd, sizeof cmd, "%s/hidden.txt", g_dir);
    FILE *f = fopen(cmd, "r");
    if (!f) return -1;
    int n = fgets(out, sizeof out, f) ? atoi(out) : -1;
    fclose(f);
    return n > 0;
}

/* Start the tool in the background with `args` (stderr to `errfile`); returns its pid. */
static pid_t spawn_tool(const char *args, const char *errfile)
{
    char cmd[20000];
    snprintf(cmd, sizeof cmd, "exec '%s' %s >/dev/null 2>'%s' </dev/null", g_bin, args, errfile);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void make_images(const char *dir, int n, uint64_t seed)
{
    char p[1300];
    CU_ASSERT_EQUAL(mkdir(dir, 0777), 0);
    for (int k = 0; k < n; k++) {
        snprintf(p, sizeof p, "%s/img%02d.png", dir, k);
        make_image(p, seed + (uint64_t)k);
    }
}

/* Two unsharded writers on one output directory: each image is restored by one of them (it
 * was every image by both: 2 "ok" rows an image), and nothing is left behind. */
static void test_two_writers(void)
{
    if (!model_present()) return;
    enum { N = 10 };
    char in[1100], out[1100], args[16384], e1[1200], e2[1200], csv[1200];
    snprintf(in, sizeof in, "%s/two-in", g_dir);
    snprintf(out, sizeof out, "%s/two-out", g_dir);
    make_images(in, N, 300);
    snprintf(args, sizeof args,
             "'%s' '%s' --task sr2 --solver psld --steps 8 --model '%s' --threads 1 --quiet --batch 2",
             in, out, g_model);
    snprintf(e1, sizeof e1, "%s/two-1.err", g_dir);
    snprintf(e2, sizeof e2, "%s/two-2.err", g_dir);
    pid_t a = spawn_tool(args, e1), b = spawn_tool(args, e2);
    int sa = -1, sb = -1;
    CU_ASSERT(a > 0 && b > 0);
    if (a > 0) waitpid(a, &sa, 0);
    if (b > 0) waitpid(b, &sb, 0);
    CU_ASSERT(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
    CU_ASSERT(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
    snprintf(csv, sizeof csv, "%s/results.csv", out);
    int per[N];
    int total = ok_rows(csv, N, per);
    if (total != N) fprintf(stderr, "\n  two writers: %d ok rows for %d images\n", total, N);
    CU_ASSERT_EQUAL(total, N);
    for (int k = 0; k < N; k++) CU_ASSERT_EQUAL(per[k], 1);
    CU_ASSERT_EQUAL(has_hidden_files(out), 0);
}

/* A FIFO named in a manifest fails as an item at once (open() used to wait for a writer,
 * forever: SIGTERM did not end it either); the other items are restored. */
static void test_fifo_item(void)
{
    if (!model_present()) return;
    char fifo[1100], good[1100], man[1100], out[1100], args[16384], p[1300];
    snprintf(fifo, sizeof fifo, "%s/fifo.png", g_dir);
    snprintf(good, sizeof good, "%s/fifo-good.png", g_dir);
    snprintf(man, sizeof man, "%s/fifo-manifest.txt", g_dir);
    snprintf(out, sizeof out, "%s/fifo-out", g_dir);
    CU_ASSERT_EQUAL(mkfifo(fifo, 0666), 0);
    make_image(good, 77);
    FILE *f = fopen(man, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "%s\n%s\n", fifo, good);
    fclose(f);
    snprintf(args, sizeof args, "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s' --quiet", man,
             out, g_model);
    g_timeout = 60;
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    g_timeout = 0;
    if (rc != 1) fprintf(stderr, "\n  FIFO item: exit %d, stderr '%s'\n", rc, err_buf);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "not a regular file"));
    snprintf(p, sizeof p, "%s/fifo-good.png", out);
    CU_ASSERT(exists(p));
    /* as INPUT itself too: refused, not waited on */
    snprintf(args, sizeof args, "'%s' '%s/fifo-single.png' --task sr2 --solver psld --model '%s'", fifo,
             g_dir, g_model);
    g_timeout = 60;
    rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    g_timeout = 0;
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "not a regular file"));
}

/* SIGTERM ends a batch promptly, saying how to resume; the rerun completes it with one "ok" row
 * an image and nothing left behind. */
static void test_sigterm_resumes(void)
{
    if (!model_present()) return;
    enum { N = 12 };
    char in[1100], out[1100], args[16384], e1[1200], csv[1200];
    snprintf(in, sizeof in, "%s/term-in", g_dir);
    snprintf(out, sizeof out, "%s/term-out", g_dir);
    make_images(in, N, 500);
    snprintf(args, sizeof args,
             "'%s' '%s' --task sr2 --solver psld --steps 200 --model '%s' --threads 1 --quiet --batch 1",
             in, out, g_model);
    snprintf(e1, sizeof e1, "%s/term.err", g_dir);
    snprintf(csv, sizeof csv, "%s/results.csv", out);
    pid_t pid = spawn_tool(args, e1);
    CU_ASSERT_FATAL(pid > 0);
    /* wait for the first image (or 60 s), then ask it to stop */
    for (int k = 0; k < 600 && csv_rows(csv) < 1; k++) usleep(100000);
    double t0 = now_s();
    kill(pid, SIGTERM);
    int st = -1;
    waitpid(pid, &st, 0);
    double secs = now_s() - t0;
    if (secs > 10) fprintf(stderr, "\n  SIGTERM: exit took %.1f s\n", secs);
    CU_ASSERT(secs < 10);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    int per[N];
    int before = ok_rows(csv, N, per);
    CU_ASSERT(before >= 1 && before < N);
    snprintf(args, sizeof args,
             "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s' --threads 1 --quiet --batch 1",
             in, out, g_model);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 0);
    CU_ASSERT_EQUAL(ok_rows(csv, N, per), N);
    for (int k = 0; k < N; k++) CU_ASSERT_EQUAL(per[k], 1);
    CU_ASSERT_EQUAL(has_hidden_files(out), 0);
}

/* Single mode killed inside its save leaves its temporaries; the rerun removes them (with the
 * output's claim held: no live process is writing them) and writes the output. */
static void test_single_stale_temps(void)
{
    if (!model_present()) return;
    char in[1100], dir[1100], out[1300], p[1400], args[16384];
    snprintf(in, sizeof in, "%s/st-in.png", g_dir);
    snprintf(dir, sizeof dir, "%s/st-out", g_dir);
    snprintf(out, sizeof out, "%s/o.png", dir);
    make_image(in, 88);
    CU_ASSERT_EQUAL(mkdir(dir, 0777), 0);
    snprintf(args, sizeof args, "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s' --quiet", in,
             out, g_model);
    setenv("STSL_RESTORE_KILL", "image:1", 1);
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    unsetenv("STSL_RESTORE_KILL");
    CU_ASSERT(rc != 0);
    CU_ASSERT(!exists(out));
    CU_ASSERT_EQUAL(has_hidden_files(dir), 1);
    /* and what an older run may have left: a temporary of a dead process, its claim file */
    snprintf(p, sizeof p, "%s/.o.png.99999.tmp", dir);
    write_file(p, "partial", 7);
    snprintf(p, sizeof p, "%s/.o.png.claim", dir);
    write_file(p, "", 0);
    rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    if (rc != 0) fprintf(stderr, "\n  rerun: exit %d: %s", rc, err_buf);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(exists(out));
    CU_ASSERT_EQUAL(has_hidden_files(dir), 0);
}

/* A usage error found after the arguments are parsed (a solver option's range, a task option
 * the operator refuses) leaves nothing behind: the output directory is created last. */
static void test_usage_error_creates_nothing(void)
{
    if (!tool_present()) return;
    char in[1100], out[1100], args[16384];
    snprintf(in, sizeof in, "%s/ue-in", g_dir);
    snprintf(out, sizeof out, "%s/ue-out/sub", g_dir);
    make_images(in, 2, 900);
    snprintf(args, sizeof args, "'%s' '%s' --task sr2 --solver stsl --K 0", in, out);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 2);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    /* the flag is named, not the library's parameter number */
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "--K"));
    CU_ASSERT_PTR_NULL(strstr(err_buf, "parameter "));
    snprintf(args, sizeof args, "%s/ue-out", g_dir);
    CU_ASSERT(!exists(args));
    if (!model_present()) return;
    snprintf(args, sizeof args, "'%s' '%s' --task gaussian-blur --kernel-size 4 --solver psld --model '%s'",
             in, out, g_model);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 2);
    snprintf(args, sizeof args, "%s/ue-out", g_dir);
    CU_ASSERT(!exists(args));
}

/* Messages and options that were silently wrong (issue 30 item 10). */
static void test_messages_and_refusals(void)
{
    if (!tool_present()) return;
    char in[1100], file[1100], args[16384];
    snprintf(in, sizeof in, "%s/msg-in.png", g_dir);
    make_image(in, 99);
    snprintf(file, sizeof file, "%s/a-file", g_dir);
    write_file(file, "x", 1);
    /* a file where a directory is needed is said to be one */
    snprintf(args, sizeof args, "'%s' '%s/o.png' --task sr2 --solver dps", in, file);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "a-file is not a directory"));
    snprintf(args, sizeof args, "'%s/ue-in' '%s/sub' --task sr2 --solver dps", g_dir, file);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "a-file is not a directory"));
    /* batch-mode options in single mode are refused, as --shard is */
    const char *batch_only[] = {"--batch 4", "--jobs 2", "--shard 0/2"};
    for (size_t k = 0; k < 3; k++) {
        snprintf(args, sizeof args, "'%s' '%s/o.png' --task sr2 --solver dps %s", in, g_dir, batch_only[k]);
        CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 2);
        CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    }
    /* the input as the output (also by another spelling) is refused; the input is kept */
    struct stat before, after;
    CU_ASSERT_EQUAL(stat(in, &before), 0);
    const char *spell[] = {"%s/msg-in.png", "%s/./msg-in.png"};
    for (size_t k = 0; k < 2; k++) {
        char same[1200];
        snprintf(same, sizeof same, spell[k], g_dir);
        snprintf(args, sizeof args, "'%s' '%s' --task sr2 --solver dps --steps 2", in, same);
        CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "input file itself"));
    }
    CU_ASSERT(stat(in, &after) == 0 && after.st_mtime == before.st_mtime && after.st_size == before.st_size);
    /* --help: ddim is said to ignore the measurement; the tasks are listed once */
    CU_ASSERT_EQUAL(run("--help", out_buf, sizeof out_buf, NULL, 0), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_buf, "ddim samples the prior unconditionally"));
    CU_ASSERT_EQUAL(file_contains(out_buf, stsl_operator_names()), 1);
    CU_ASSERT_EQUAL(file_contains(out_buf, "divisible by 2, 4, 8"), 1);
    if (!model_present()) return;
    /* --vae with a pixel-space prior is refused, not ignored */
    char pixel[1100], ae[1100];
    snprintf(pixel, sizeof pixel, "%s", tu_path("scores/fixtures/unet_eps.pt"));
    snprintf(ae, sizeof ae, "%s", tu_path("scores/fixtures/ae.pt"));
    snprintf(args, sizeof args, "'%s' '%s/o.png' --task sr2 --solver dps --model '%s' --vae '%s'", in,
             g_dir, pixel, ae);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "--vae"));
}

/* --device is read by the library alone: a spelling it refuses is a usage error carrying the
 * library's own message, before any model is loaded; --help states the library's default. */
static void test_device_from_library(void)
{
    if (!tool_present()) return;
    char in[1100], args[16384];
    snprintf(in, sizeof in, "%s/dev-in.png", g_dir);
    make_image(in, 31);
    const char *bad[] = {"CUDA", "cuda:01", "gpu", "cuda:256", "auto "};
    stsl_context *ctx = NULL;
    TU_ASSERT_OK(stsl_context_create(&ctx));
    for (size_t k = 0; ctx && k < sizeof bad / sizeof bad[0]; k++) {
        TU_ASSERT_STATUS(stsl_context_set_device(ctx, bad[k]), STSL_ERR_INVALID_ARG);
        /* a model that does not exist: the device is refused before any load is tried */
        snprintf(args, sizeof args, "'%s' '%s/dev-out.png' --task sr2 --solver dps --device '%s' "
                 "--model '%s/no-such-model.pt'", in, g_dir, bad[k], g_dir);
        int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
        if (rc != 2 || !strstr(err_buf, stsl_context_last_error(ctx)))
            fprintf(stderr, "\n  --device '%s': exit %d, stderr '%s'\n", bad[k], rc, err_buf);
        CU_ASSERT_EQUAL(rc, 2);
        CU_ASSERT_EQUAL(count_lines(err_buf), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "--device"));
        CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, stsl_context_last_error(ctx)));
    }
    stsl_context_destroy(ctx);
    snprintf(args, sizeof args, "%s/dev-out.png", g_dir);
    CU_ASSERT(!exists(args));
    CU_ASSERT_EQUAL(run("--help", out_buf, sizeof out_buf, NULL, 0), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out_buf, "(default " STSL_DEFAULT_DEVICE ", the"));
}

/* A full disk (results.csv on /dev/full) stops the batch with one line saying so, instead of
 * failing every image left ("short write" for each). */
static void test_disk_full_stops(void)
{
    if (!model_present()) return;
    if (access("/dev/full", W_OK) != 0) {
        fprintf(stderr, "\n  skipped: no /dev/full\n");
        return;
    }
    char in[1100], out[1100], p[1300], args[16384];
    snprintf(in, sizeof in, "%s/full-in", g_dir);
    snprintf(out, sizeof out, "%s/full-out", g_dir);
    make_images(in, 4, 700);
    CU_ASSERT_EQUAL(mkdir(out, 0777), 0);
    snprintf(p, sizeof p, "%s/results.csv", out);
    CU_ASSERT_EQUAL(symlink("/dev/full", p), 0);
    snprintf(args, sizeof args, "'%s' '%s' --task sr2 --solver psld --steps 2 --model '%s' --quiet --batch 1",
             in, out, g_model);
    g_timeout = 60;
    int rc = run(args, NULL, 0, err_buf, sizeof err_buf);
    g_timeout = 0;
    if (rc != 1 || count_lines(err_buf) != 1) fprintf(stderr, "\n  disk full: exit %d, stderr '%s'\n", rc, err_buf);
    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "no space left"));
    CU_ASSERT_EQUAL(has_hidden_files(out), 0);
}

/* A latent prior whose pairs_with file is missing is an error naming it (it silently took the
 * bundled fmnist-vae.pt instead). */
static void test_missing_pairs_with(void)
{
    if (!model_present()) return;
    char dir[1100], copy[1200], in[1100], args[16384], cmd[4000];
    snprintf(dir, sizeof dir, "%s/lonely", g_dir);
    CU_ASSERT_EQUAL(mkdir(dir, 0777), 0);
    snprintf(copy, sizeof copy, "%s/unet_latent.pt", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", g_model, copy);
    CU_ASSERT_EQUAL(system(cmd), 0);
    snprintf(in, sizeof in, "%s/lonely.png", g_dir);
    make_image(in, 5);
    snprintf(args, sizeof args, "'%s' '%s/lonely-out.png' --task sr2 --solver psld --steps 2 --model '%s'",
             in, g_dir, copy);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 1);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "ae.pt"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "pairs_with"));
}

/* An image whose header says a size the model cannot take fails on its header, before it is
 * decoded (an 8192x8192 PNG took 10 s and 1.2 GB before the same message): this one has no
 * pixel data at all, so only a header check can give the size message. */
static void test_size_checked_from_header(void)
{
    if (!model_present()) return;
    static const unsigned char png[] = {
        0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
        0, 0, 0x20, 0, 0, 0, 0x20, 0, 8, 0, 0, 0, 0, 0x5e, 0x15, 0x1f, 0x61};
    char in[1100], args[16384];
    snprintf(in, sizeof in, "%s/huge-header.png", g_dir);
    write_file(in, (const char *)png, sizeof png);
    snprintf(args, sizeof args, "'%s' '%s/huge-out.png' --task sr2 --solver psld --steps 2 --model '%s'",
             in, g_dir, g_model);
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 1);
    CU_ASSERT_EQUAL(count_lines(err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "8192x8192 with 1 channel(s)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "--resize"));
    /* the input is compared with what the model's record declares before the model is loaded:
     * this one's network fails on its declared 2,9,9 (a load's probe says so), and an 8x8 input
     * gets the size message, not the probe's (stsl_model_record_read, issue 30 item 4) */
    char small[1100];
    snprintf(small, sizeof small, "%s/small-8x8.png", g_dir);
    make_image(small, 77);
    snprintf(args, sizeof args, "'%s' '%s/odd-out.png' --task sr2 --solver dps --steps 2 --model '%s'",
             small, g_dir, tu_path("scores/fixtures/hostile_shape_odd.pt"));
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 1);
    if (!strstr(err_buf, "the input is 8x8 with 1 channel(s)")) fprintf(stderr, "\n  %s", err_buf);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "the input is 8x8 with 1 channel(s)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "restores 9x9 images"));
    CU_ASSERT_PTR_NULL(strstr(err_buf, "does not run"));
    /* the same model with a fitting request is loaded, and its probe refuses it */
    snprintf(args, sizeof args, "'%s' '%s/odd-out.png' --task sr2 --solver dps --steps 2 --resize --model '%s'",
             small, g_dir, tu_path("scores/fixtures/hostile_shape_odd.pt"));
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "does not run on sample_shape"));
    /* a model declaring more than a load may probe is refused (library limit) */
    snprintf(args, sizeof args, "'%s' '%s/huge-out.png' --task sr2 --solver dps --model '%s'", in, g_dir,
             tu_path("scores/fixtures/hostile_shape_big.pt"));
    CU_ASSERT_EQUAL(run(args, NULL, 0, err_buf, sizeof err_buf), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err_buf, "probed at load"));
}

int main(void)
{
    static const stsl_test tests[] = {
        {"help lists tasks and solvers", test_help},
        {"help: every solver option's default as the library reports it", test_help_defaults_from_library},
        {"bad usage exits 2 with one line", test_bad_usage},
        {"missing input exits 1", test_missing_input},
        {"solver option not for the solver exits 2", test_option_not_for_solver},
        {"tiny restoration writes the right size", test_single_run},
        {"batch mode resumes and writes results.csv", test_batch_resume},
        {"--shard splits the items", test_shard},
        {"batch mode: --pad-batch 1 gives the same bits at --batch 1, 7, 16, two workers, shards; batched within a level",
         test_batch_same_result},
        {"batch mode: an image that fails its batch fails alone", test_batch_failure_isolated},
        {"an input that says image but is not one fails as a bad image", test_bad_image_input},
        {"an empty manifest or directory is an error", test_empty_batch},
        {"the output is checked before any work", test_output_checked_first},
        {"--help says what sr8 needs", test_help_sr_note},
        {"a size mismatch gets advice; --resize / --crop fit the input", test_fit_input},
        {"two unsharded writers restore each image once", test_two_writers},
        {"a FIFO item fails at once instead of blocking", test_fifo_item},
        {"SIGTERM ends a batch promptly; the rerun completes it", test_sigterm_resumes},
        {"single mode removes the temporaries a killed save left", test_single_stale_temps},
        {"a usage error after parsing creates nothing", test_usage_error_creates_nothing},
        {"messages name the cause; ignored options are refused", test_messages_and_refusals},
        {"a full disk stops the batch with one message", test_disk_full_stops},
        {"a missing pairs_with autoencoder is an error naming it", test_missing_pairs_with},
        {"an input's size is checked from its header before decoding", test_size_checked_from_header},
        {"--device is read by the library: its message, its default", test_device_from_library},
        {NULL, NULL},
    };
    return stsl_test_main("tools/restore_cli", tests);
}
