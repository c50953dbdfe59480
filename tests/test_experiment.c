/* test_experiment: experiment files (src/io/experiment.h) as DESIGN.md "Experiment files"
 * says: valid files, every kind of bad input with file:line and a useful message (all printed),
 * --set, the config_write round trip, the [sweep] grid and zip, and --help/Markdown covering every key.
 * Files are written to a fresh directory under the working directory, removed at the end. */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "fixture.h"
#include "io/experiment.h"

static char tmpdir[64];

static const char *write_ini(const char *name, const char *text)
{
    static char bufs[4][256];
    static int next;
    char *path = bufs[next++ % 4];
    snprintf(path, sizeof bufs[0], "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    CM_ASSERT(f, "cannot create %s", path);
    fputs(text, f);
    CM_ASSERT(fclose(f) == 0, "cannot write %s", path);
    return path;
}

static bool contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

/* Loading `text` fails, cfg stays as it was, and the message names name:line and has `needle`. */
static void expect_error(const char *name, const char *text, int line, const char *needle)
{
    const char *path = write_ini(name, text);
    Config cfg, before;
    config_defaults(&cfg);
    CM_ASSERT(config_set(&cfg, "train.lr=0.5") == 0, "%s", cm_errmsg());
    memcpy(&before, &cfg, sizeof cfg);
    int rc = config_load(&cfg, path);
    const char *msg = cm_errmsg();
    printf("  %s\n    -> %s\n", name, rc ? msg : "(loaded)");
    char where[300];
    snprintf(where, sizeof where, "%s:%d: ", path, line);
    CHECK(rc == -1, "%s: config_load returned %d", name, rc);
    CHECK(rc == 0 || contains(msg, where), "%s: message does not name '%s': %s", name, where, msg);
    CHECK(rc == 0 || contains(msg, needle), "%s: message lacks '%s': %s", name, needle, msg);
    CHECK(memcmp(&cfg, &before, sizeof cfg) == 0, "%s: a failed load changed the Config", name);
}

/* Every key of a against b by its written value; prints the first difference. */
static bool same_values(const Config *a, const Config *b, const char *what)
{
    int n;
    const CfgKey *keys = config_keys(&n);
    for (int i = 0; i < n; i++) {
        char va[256], vb[256];
        config_format(a, i, va, sizeof va);
        config_format(b, i, vb, sizeof vb);
        if (strcmp(va, vb)) {
            printf("  %s: %s.%s = '%s' vs '%s'\n", what, keys[i].section, keys[i].key, va, vb);
            return false;
        }
    }
    return true;
}

static void test_valid(void)
{
    const char *path = write_ini("valid.ini",
        "; a comment\n"
        "# another\n"
        "[experiment]\n"
        "name = fmnist-ct\n"
        "method = ct\n"
        "seed = 7\n"
        "\n"
        "[model]\n"
        "channel_mult = 1, 2,2,4\n"
        "attn_resolutions = 8\n"
        "dropout = 0.3 ; inline comment\n"
        "emb_type = fourier\n"
        "mid_attn = no\n"
        "[train]\n"
        "lr = 2e-4\n"
        "batch_size = 128\n"
        "ema = 0.999,0.9999\n"
        "optimizer = radam\n"
        "[data]\n"
        "hflip = true\n"
        "path = /tmp/some data/x\n"
        "[ct]\n"
        "loss = pseudo_huber\n"
        "[sample]\n"
        "schedule = time_uniform\n"
        "[train]\n"
        "iterations = 400000\n");
    Config cfg, dflt;
    config_defaults(&dflt);
    int rc = config_load(&cfg, path);
    CHECK(rc == 0, "valid.ini: %s", cm_errmsg());
    if (rc) return;
    CHECK(strcmp(cfg.experiment.name, "fmnist-ct") == 0, "name = '%s'", cfg.experiment.name);
    CHECK(cfg.experiment.method == CFG_METHOD_CT, "method = %d", cfg.experiment.method);
    CHECK(cfg.experiment.seed == 7, "seed = %d", cfg.experiment.seed);
    CHECK(cfg.model.channel_mult.n == 4 && cfg.model.channel_mult.v[0] == 1 &&
          cfg.model.channel_mult.v[1] == 2 && cfg.model.channel_mult.v[2] == 2 &&
          cfg.model.channel_mult.v[3] == 4, "channel_mult n = %d", cfg.model.channel_mult.n);
    CHECK(cfg.model.attn_resolutions.n == 1 && cfg.model.attn_resolutions.v[0] == 8,
          "attn_resolutions n = %d", cfg.model.attn_resolutions.n);
    CHECK(cfg.model.dropout == 0.3, "dropout = %g", cfg.model.dropout);
    CHECK(cfg.model.emb_type == UNET_EMB_FOURIER, "emb_type = %d", cfg.model.emb_type);
    CHECK(!cfg.model.mid_attn, "mid_attn = %d", cfg.model.mid_attn);
    CHECK(cfg.train.lr == 2e-4, "lr = %g", cfg.train.lr);
    CHECK(cfg.train.batch_size == 128, "batch_size = %d", cfg.train.batch_size);
    CHECK(cfg.train.ema.n == 2 && cfg.train.ema.v[0] == 0.999 && cfg.train.ema.v[1] == 0.9999,
          "ema n = %d", cfg.train.ema.n);
    CHECK(cfg.train.optimizer == OPTIM_RADAM, "optimizer = %d", cfg.train.optimizer);
    CHECK(cfg.train.iterations == 400000, "iterations = %d", cfg.train.iterations);
    CHECK(cfg.data.hflip, "hflip = %d", cfg.data.hflip);
    CHECK(strcmp(cfg.data.path, "/tmp/some data/x") == 0, "path = '%s'", cfg.data.path);
    CHECK(cfg.ct.loss == CFG_LOSS_PSEUDO_HUBER, "ct.loss = %d", cfg.ct.loss);
    CHECK(cfg.sample.schedule == SCHEDULE_TIME_UNIFORM, "schedule = %d", cfg.sample.schedule);

    /* Every key the file did not spell has its default. */
    static const char *const spelled[] = {
        "experiment.name", "experiment.method", "experiment.seed", "model.channel_mult",
        "model.attn_resolutions", "model.dropout", "model.emb_type", "model.mid_attn", "train.lr",
        "train.batch_size", "train.ema", "train.optimizer", "data.hflip", "data.path", "ct.loss",
        "sample.schedule", "train.iterations",
    };
    int n, defaults = 0, differ = 0;
    const CfgKey *keys = config_keys(&n);
    for (int i = 0; i < n; i++) {
        char name[64], a[256], b[256];
        snprintf(name, sizeof name, "%s.%s", keys[i].section, keys[i].key);
        bool is_spelled = false;
        for (size_t s = 0; s < CM_ARRAY_LEN(spelled); s++) is_spelled |= strcmp(spelled[s], name) == 0;
        config_format(&cfg, i, a, sizeof a);
        config_format(&dflt, i, b, sizeof b);
        if (is_spelled) differ += strcmp(a, b) != 0;
        else {
            defaults++;
            CHECK(strcmp(a, b) == 0, "%s = '%s', not its default '%s'", name, a, b);
        }
    }
    CHECK(differ == (int)CM_ARRAY_LEN(spelled), "%d of %zu spelled keys differ from the defaults",
          differ, CM_ARRAY_LEN(spelled));
    CHECK(defaults == n - (int)CM_ARRAY_LEN(spelled), "%d keys at their defaults of %d", defaults, n);

    /* The defaults themselves: the documented values of the references. */
    CHECK(dflt.model.sigma_min == 0.002 && dflt.model.sigma_max == 80 && dflt.model.sigma_data == 0.5,
          "sigma defaults %g %g %g", dflt.model.sigma_min, dflt.model.sigma_max, dflt.model.sigma_data);
    CHECK(dflt.edm.p_mean == -1.2 && dflt.edm.p_std == 1.2, "edm p %g %g", dflt.edm.p_mean, dflt.edm.p_std);
    CHECK(dflt.ct.p_mean == -1.1 && dflt.ct.p_std == 2.0 && dflt.ct.target_mu == 0.9,
          "ct defaults %g %g %g", dflt.ct.p_mean, dflt.ct.p_std, dflt.ct.target_mu);
    CHECK(dflt.cd.N == 18 && dflt.cd.solver == SOLVER_HEUN && dflt.cd.target_mu == 0,
          "cd defaults %d %d %g", dflt.cd.N, dflt.cd.solver, dflt.cd.target_mu);
    CHECK(strcmp(dflt.experiment.out_dir, "runs") == 0, "out_dir '%s'", dflt.experiment.out_dir);
    CHECK(config_ct_s0(&dflt) == 2 && config_ct_s1(&dflt) == 150, "original s0 %d s1 %d",
          config_ct_s0(&dflt), config_ct_s1(&dflt));
    dflt.ct.curriculum = CFG_CURRICULUM_DOUBLING;
    CHECK(config_ct_s0(&dflt) == 10 && config_ct_s1(&dflt) == 1280, "doubling s0 %d s1 %d",
          config_ct_s0(&dflt), config_ct_s1(&dflt));
    dflt.ct.s1 = 40;
    CHECK(config_ct_s1(&dflt) == 40, "spelled s1 %d", config_ct_s1(&dflt));
    CHECK(fabs(config_skip_scale(&cfg) - sqrt(0.5)) < 1e-15, "skip scale %g", config_skip_scale(&cfg));
}

static void test_name_from_file(void)
{
    Config cfg;
    int rc = config_load(&cfg, write_ini("cifar10_ict.ini", "[experiment]\nmethod = ct\n"));
    CHECK(rc == 0 && strcmp(cfg.experiment.name, "cifar10_ict") == 0, "name from file: rc %d '%s' (%s)",
          rc, cfg.experiment.name, rc ? cm_errmsg() : "");
    rc = config_load(&cfg, write_ini("bad name.ini", "[experiment]\nmethod = ct\n"));
    printf("  bad name.ini\n    -> %s\n", rc ? cm_errmsg() : "(loaded)");
    CHECK(rc == -1 && contains(cm_errmsg(), "set experiment.name"), "a file name with a space: rc %d", rc);
    rc = config_load(&cfg, write_ini("bad name2.ini", "[experiment]\nname = fine\n"));
    CHECK(rc == 0 && strcmp(cfg.experiment.name, "fine") == 0, "spelled name wins: rc %d", rc);

    /* A file that sets no key is refused, naming the file: it once trained every default. */
    static const char *const keyless[][2] = {{"empty.ini", ""}, {"comments.ini", "; nothing\n# here\n\n"},
                                             {"headers.ini", "[experiment]\n[train]\n"}};
    for (size_t i = 0; i < CM_ARRAY_LEN(keyless); i++) {
        const char *path = write_ini(keyless[i][0], keyless[i][1]);
        rc = config_load(&cfg, path);
        printf("  %s\n    -> %s\n", keyless[i][0], rc ? cm_errmsg() : "(loaded)");
        CHECK(rc == -1 && contains(cm_errmsg(), path) && contains(cm_errmsg(), "sets no key"),
              "%s: a file without keys loaded (rc %d)", keyless[i][0], rc);
    }

    char missing[300];
    snprintf(missing, sizeof missing, "%s/missing.ini", tmpdir);
    rc = config_load(&cfg, missing);
    printf("  missing.ini\n    -> %s\n", cm_errmsg());
    CHECK(rc == -1 && contains(cm_errmsg(), missing) && contains(cm_errmsg(), "No such file"),
          "missing file: rc %d '%s'", rc, cm_errmsg());
}

static void test_errors(void)
{
    printf("error messages:\n");
    expect_error("typo.ini",
                 "[experiment]\nname = t\n\n[train]\nlr = 0.001\niterations = 10\nbatchsize = 64\n",
                 7, "unknown key 'train.batchsize'; did you mean 'train.batch_size'?");
    expect_error("wrong_section.ini", "[train]\np_mean = -1.0\n", 2,
                 "did you mean 'edm.p_mean'?");
    expect_error("section.ini", "[experiment]\nseed = 1\n[trian]\nlr = 0.1\n", 3,
                 "unknown section [trian]; did you mean [train]?");
    expect_error("empty_section.ini", "[experiment]\nseed = 1\n\n[modle]\n", 4,
                 "unknown section [modle]; did you mean [model]?");
    expect_error("bad_int.ini", "[train]\n\nbatch_size = 12x\n", 3,
                 "train.batch_size = '12x': expected an integer in [1, 1048576]");
    expect_error("float_for_int.ini", "[train]\niterations = 1.5\n", 2, "expected an integer");
    expect_error("bad_float.ini", "[train]\nbatch_size = 8\n\n\n\n\n\nlr = fast\n", 8,
                 "train.lr = 'fast': expected a number in (0, 10]");
    expect_error("nan.ini", "[model]\nsigma_max = nan\n", 2, "expected a number in (0, 100000]");
    expect_error("range.ini", "[train]\nbatch_size = 0\n", 2,
                 "train.batch_size = '0': expected an integer in [1, 1048576]");
    expect_error("open_range.ini", "[train]\nbeta2 = 1\n", 2,
                 "train.beta2 = '1': expected a number in [0, 1)");
    expect_error("enum.ini", "[sample]\nsolver = heum\n", 2,
                 "sample.solver = 'heum': expected one of euler, heun, dpm2, dpmpp2m, dpmpp3m, ipndm; "
                 "did you mean 'heun'?");
    expect_error("enum_far.ini", "[experiment]\nmethod = diffusion\n", 2,
                 "expected one of edm, cd, ct, bcm, amed, classifier");
    expect_error("cd_solver.ini", "[cd]\nsolver = dpm2\n", 2, "expected one of euler, heun");
    expect_error("bool.ini", "[data]\nhflip = maybe\n", 2, "data.hflip = 'maybe': expected true or false");
    expect_error("list.ini", "[model]\nchannel_mult = 1,x,2\n", 2,
                 "model.channel_mult = '1,x,2': value 2 'x': expected 1 to 6 integers in [1, 64]");
    expect_error("list_range.ini", "[train]\nema = 0.999, 1.5\n", 2, "value 2 '1.5': expected up to 8 numbers in [0, 1)");
    expect_error("list_long.ini", "[model]\nchannel_mult = 1,2,2,2,2,2,2\n", 2, "more than 6 values");
    expect_error("list_empty.ini", "[model]\nchannel_mult =\n", 2, "expected 1 to 6 integers");
    expect_error("list_trailing.ini", "[model]\nchannel_mult = 1,2,\n", 2, "value 3 is empty");
    expect_error("name_chars.ini", "[experiment]\nname = my run/1\n", 2, "expected a name of at most 63");
    expect_error("duplicate.ini", "[train]\nlr = 0.1\nbatch_size = 4\n[train]\nlr = 0.2\n", 5,
                 "train.lr is given twice (first on line 2)");
    expect_error("outside.ini", "seed = 3\n[experiment]\n", 1, "'seed' is outside any section");
    expect_error("syntax.ini", "[train]\nlr = 0.1\njust some words\n", 3, "expected 'key = value'");
    expect_error("bracket.ini", "[train\nlr = 0.1\n", 1, "needs a closing ']'");
    expect_error("header_text.ini", "[train] lr = 0.1\n", 1, "text after the section header");
    expect_error("indent.ini", "[train]\nema = 0.999,\n  0.9999\n", 3, "multi-line values are not allowed");
    char long_line[400];
    snprintf(long_line, sizeof long_line, "[data]\npath = /%0250d\n", 0);
    expect_error("long_line.ini", long_line, 2, "longer than");
    expect_error("sweep_bad.ini", "[sweep]\nct.loss = l2, l3\n", 2, "sweep ct.loss: value 2 'l3': expected one of l2, l1, pseudo_huber");
    expect_error("sweep_unknown.ini", "[sweep]\nct.los = l2, l1\n", 2, "did you mean 'ct.loss'?");
    expect_error("sweep_twice.ini", "[sweep]\nct.loss = l2\nct.loss = l1\n", 3, "given twice");

    /* Every error of a file at once, in line order. */
    const char *many = "[train]\nlr = x\nbatchsize = 3\n[modle]\nchannels = 2\n[sample]\nnfe = 0\n";
    expect_error("many.ini", many, 2, "train.lr = 'x'");
    Config cfg;
    const char *path = write_ini("many.ini", many);
    config_load(&cfg, path);
    const char *msg = cm_errmsg();
    char at[4][300];
    for (int i = 0; i < 4; i++) snprintf(at[i], sizeof at[i], "%s:%d: ", path, (int[]){2, 3, 4, 7}[i]);
    const char *p2 = strstr(msg, at[0]), *p3 = strstr(msg, at[1]), *p4 = strstr(msg, at[2]),
               *p7 = strstr(msg, at[3]);
    CHECK(p2 && p3 && p4 && p7 && p2 < p3 && p3 < p4 && p4 < p7,
          "many.ini: not all four errors (lines 2, 3, 4, 7) in order: %s", msg);
    CHECK(!contains(msg, "channels"), "many.ini: a key of an unknown section reported again: %s", msg);
}

static void test_set(void)
{
    printf("--set:\n");
    const char *path = write_ini("set.ini", "[train]\nlr = 0.01\n");
    Config cfg, before;
    CHECK(config_load(&cfg, path) == 0, "set.ini: %s", cm_errmsg());
    CHECK(config_set(&cfg, "train.lr=3e-4") == 0, "--set train.lr: %s", cm_errmsg());
    CHECK(cfg.train.lr == 3e-4, "file value not overridden: lr = %g", cfg.train.lr);
    CHECK(config_set(&cfg, " model.channel_mult = 1,2 ") == 0, "--set with spaces: %s", cm_errmsg());
    CHECK(cfg.model.channel_mult.n == 2 && cfg.model.channel_mult.v[1] == 2, "channel_mult n %d",
          cfg.model.channel_mult.n);
    CHECK(config_set(&cfg, "experiment.method=cd") == 0 && cfg.experiment.method == CFG_METHOD_CD,
          "default not overridden: method %d", cfg.experiment.method);
    CHECK(config_set(&cfg, "experiment.method=edm") == 0 && cfg.experiment.method == CFG_METHOD_EDM,
          "a second --set of a key: method %d", cfg.experiment.method);

    static const struct { const char *set, *needle; } bad[] = {
        {"train.lr=x", "--set train.lr=x: train.lr = 'x': expected a number in (0, 10]"},
        {"train.batchsize=3", "--set train.batchsize=3: unknown key 'train.batchsize'; did you mean 'train.batch_size'?"},
        {"trian.lr=0.1", "--set trian.lr=0.1: unknown section [trian]; did you mean [train]?"},
        {"lr=0.1", "--set lr=0.1: expected section.key=value"},
        {"train.lr", "--set train.lr: expected section.key=value"},
        {"sample.solver=rk4", "--set sample.solver=rk4: sample.solver = 'rk4': expected one of"},
        {"sweep.ct.loss=l2,lpips", "--set sweep.ct.loss=l2,lpips: sweep ct.loss: value 2 'lpips'"},
        /* Text that config.ini could not hold (found by tests/fuzz/fuzz_experiment.c). */
        {"data.path=/tmp/x ;y", "data.path = '/tmp/x ;y': expected text on one line, without a ';'"},
        {"data.path=x\ny", "data.path = 'x\ny': expected text on one line"},
    };
    memcpy(&before, &cfg, sizeof cfg);
    for (size_t i = 0; i < CM_ARRAY_LEN(bad); i++) {
        int rc = config_set(&cfg, bad[i].set);
        printf("  --set %s\n    -> %s\n", bad[i].set, rc ? cm_errmsg() : "(accepted)");
        CHECK(rc == -1, "--set %s accepted", bad[i].set);
        CHECK(rc == 0 || contains(cm_errmsg(), bad[i].needle), "--set %s: message lacks '%s': %s",
              bad[i].set, bad[i].needle, cm_errmsg());
    }
    CHECK(memcmp(&cfg, &before, sizeof cfg) == 0, "a rejected --set changed the Config");
}

/* A Config far from the defaults in every type, through config_write and config_from_string. */
static void test_round_trip(void)
{
    Config cfg, back;
    config_defaults(&cfg);
    char long_path[CFG_PATH_MAX + 16];
    memset(long_path, 'p', sizeof long_path);
    memcpy(long_path, "data.path=/", 11);
    long_path[10 + CFG_PATH_MAX] = '\0';         /* one character too long */
    int rc = config_set(&cfg, long_path);
    printf("  --set data.path=/ppp... (%d characters)\n    -> %s\n", CFG_PATH_MAX, rc ? cm_errmsg() : "(accepted)");
    CHECK(rc == -1 && strstr(cm_errmsg(), "expected text of at most 175 characters"), "an overlong path: rc %d", rc);
    long_path[10 + CFG_PATH_MAX - 1] = '\0';
    static const char *const sets[] = {
        "experiment.name=rt", "experiment.method=bcm", "experiment.seed=2147483647",
        "model.channel_mult=1,2,3,4,5,6", "model.attn_resolutions=16,8", "model.dropout=0.1",
        "model.sigma_min=0.0020000000000000001", "train.lr=0.00033333333333333332",
        "train.ema=0.9999,0.99993,0", "train.eps=1e-300", "edm.p_mean=-1.2", "data.hflip=on",
        "sample.afs=1", "cd.teacher=runs/edm/ckpt/step_00001000.h5", "ct.s1=1280",
        "train.on_nan=rollback", "sweep.ct.loss=l2,pseudo_huber", "sweep.model.channel_mult=1,2|1,2,2",
        "sweep.data.path=/a,b|/c",
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(sets); i++)
        CHECK(config_set(&cfg, sets[i]) == 0, "--set %s: %s", sets[i], cm_errmsg());
    CHECK(config_set(&cfg, long_path) == 0, "--set of a %d-character path: %s", CFG_PATH_MAX - 1, cm_errmsg());
    CHECK(strlen(cfg.data.path) == CFG_PATH_MAX - 1, "path length %zu", strlen(cfg.data.path));

    char *text = config_to_string(&cfg);
    rc = config_from_string(&back, text, "roundtrip");
    CHECK(rc == 0, "round trip does not parse: %s\n%s", cm_errmsg(), text);
    CHECK(same_values(&cfg, &back, "round trip"), "round trip changed a value");
    CHECK(memcmp(&cfg, &back, sizeof cfg) == 0, "round trip is not byte-identical");
    CHECK(back.sweep.count == 3 && config_sweep_count(&back) == 8, "sweep after round trip: %d keys, %d variants",
          back.sweep.count, config_sweep_count(&back));
    int n;
    config_keys(&n);
    int lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    int sections_with_keys = 12;
    CHECK(lines == 1 + n + 2 * sections_with_keys + 2 + 3, "resolved text has %d lines for %d keys", lines, n);
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        CHECK(eol - line <= 197, "a written line of %d characters: inih cannot read it", (int)(eol - line));
        line = eol + 1;
    }
    free(text);

    /* The defaults round-trip too (an empty name, empty lists and strings). */
    config_defaults(&cfg);
    text = config_to_string(&cfg);
    rc = config_from_string(&back, text, "defaults");
    CHECK(rc == 0 && memcmp(&cfg, &back, sizeof cfg) == 0, "defaults round trip: %s", rc ? cm_errmsg() : "differs");
    printf("resolved defaults:\n%s", text);
    free(text);

    /* A failing stream is reported. */
    FILE *f = fopen("/dev/full", "w");
    if (f) {
        rc = config_write(&cfg, f);
        printf("  config_write to /dev/full\n    -> %s\n", rc ? cm_errmsg() : "(written)");
        CHECK(rc == -1, "config_write to /dev/full succeeded");
        fclose(f);
    }
}

static void test_sweep(void)
{
    const char *path = write_ini("sweep.ini",
        "[experiment]\nmethod = ct\n"
        "[ct]\nloss = l1\n"
        "[sweep]\n"
        "ct.loss = l2, pseudo_huber\n"
        "ct.weighting = uniform,ict\n"
        "train.lr = 1e-4, 2e-4, 4e-4\n"
        "model.channel_mult = 1,2 | 1,2,2\n");
    Config base, v;
    int rc = config_load(&base, path);
    CHECK(rc == 0, "sweep.ini: %s", cm_errmsg());
    if (rc) return;
    CHECK(base.ct.loss == CFG_LOSS_L1, "the base keeps its own value: ct.loss %d", base.ct.loss);
    int count = config_sweep_count(&base);
    CHECK(count == 24, "sweep count %d, expected 2*2*3*2 = 24", count);
    char label[256];
    CHECK(config_sweep_variant(&base, 0, &v, label, sizeof label) == 0, "%s", cm_errmsg());
    printf("sweep variant 0: %s\n", label);
    CHECK(strcmp(label, "ct.loss=l2,ct.weighting=uniform,train.lr=0.0001,model.channel_mult=1,2") == 0,
          "variant 0 label '%s'", label);
    CHECK(v.ct.loss == CFG_LOSS_L2 && v.ct.weighting == CFG_WEIGHTING_UNIFORM && v.train.lr == 1e-4 &&
          v.model.channel_mult.n == 2, "variant 0 values");
    CHECK(v.sweep.count == 0 && config_sweep_count(&v) == 1, "a variant has no sweep");
    CHECK(config_sweep_variant(&base, 1, &v, label, sizeof label) == 0, "%s", cm_errmsg());
    CHECK(strcmp(label, "ct.loss=l2,ct.weighting=uniform,train.lr=0.0001,model.channel_mult=1,2,2") == 0,
          "variant 1 (the last key varies fastest): '%s'", label);
    CHECK(config_sweep_variant(&base, 2, &v, label, sizeof label) == 0 && v.train.lr == 2e-4 &&
          v.model.channel_mult.n == 2 && v.ct.loss == CFG_LOSS_L2, "variant 2: '%s'", label);
    /* Index 13 = ((1*2 + 0)*3 + 0)*2 + 1: loss pseudo_huber, weighting uniform, lr 1e-4, 1,2,2. */
    CHECK(config_sweep_variant(&base, 13, &v, label, sizeof label) == 0, "%s", cm_errmsg());
    printf("sweep variant 13: %s\n", label);
    CHECK(strcmp(label, "ct.loss=pseudo_huber,ct.weighting=uniform,train.lr=0.0001,model.channel_mult=1,2,2") == 0,
          "variant 13 label '%s'", label);
    CHECK(v.ct.loss == CFG_LOSS_PSEUDO_HUBER && v.model.channel_mult.n == 3 && v.train.lr == 1e-4,
          "variant 13 values: loss %d mult n %d lr %g", v.ct.loss, v.model.channel_mult.n, v.train.lr);
    CHECK(config_sweep_variant(&base, 23, &v, label, sizeof label) == 0 && v.ct.weighting == CFG_WEIGHTING_ICT &&
          v.train.lr == 4e-4 && v.ct.loss == CFG_LOSS_PSEUDO_HUBER, "variant 23: %s", label);
    /* Variants are all different, and each differs from the base only in swept keys. */
    int distinct = 0;
    for (int i = 0; i < count; i++) {
        Config a;
        config_sweep_variant(&base, i, &a, NULL, 0);
        CHECK(strcmp(a.experiment.name, "sweep") == 0 && a.train.iterations == base.train.iterations,
              "variant %d changed an unswept key", i);
        bool unique = true;
        for (int j = 0; j < i; j++) {
            Config b;
            config_sweep_variant(&base, j, &b, NULL, 0);
            unique &= memcmp(&a, &b, sizeof a) != 0;
        }
        distinct += unique;
    }
    CHECK(distinct == count, "%d distinct variants of %d", distinct, count);
    rc = config_sweep_variant(&base, 24, &v, label, sizeof label);
    printf("  variant 24\n    -> %s\n", rc ? cm_errmsg() : "(made)");
    CHECK(rc == -1, "variant 24 of 24 exists");
    config_defaults(&v);
    CHECK(config_sweep_count(&v) == 1 && config_sweep_variant(&v, 0, &v, label, sizeof label) == 0 && !label[0],
          "no sweep: one variant with an empty label ('%s')", label);
    CHECK(config_set(&base, "sweep.ct.loss=l1") == 0 && config_sweep_count(&base) == 12,
          "--set replaces a sweep: %d variants", config_sweep_count(&base));

    /* eval.sweep = zip: variant i takes value i of every line; lines of other lengths are refused
     * when the variants are made, and the grid's size limit does not apply. */
    Config z;
    rc = config_load(&z, write_ini("sweep_zip.ini",
        "[eval]\nsweep = zip\n"
        "[sweep]\n"
        "sample.solver = euler, heun, dpmpp3m\n"
        "sample.schedule = polynomial, polynomial, logsnr\n"
        "eval.nfe = 3,5 | 3 | 9\n"));
    CHECK(rc == 0 && config_sweep_count(&z) == 3, "zip: %s, %d variants", rc ? cm_errmsg() : "loaded",
          config_sweep_count(&z));
    CHECK(config_sweep_variant(&z, 2, &v, label, sizeof label) == 0 && v.sample.solver == SOLVER_DPMPP3M &&
          v.sample.schedule == SCHEDULE_LOGSNR && v.eval.nfe.n == 1 && v.eval.nfe.v[0] == 9 &&
          !strcmp(label, "sample.solver=dpmpp3m,sample.schedule=logsnr,eval.nfe=9"), "zip variant 2: '%s'", label);
    CHECK(config_sweep_variant(&z, 0, &v, NULL, 0) == 0 && v.sample.solver == SOLVER_EULER &&
          v.sample.schedule == SCHEDULE_POLYNOMIAL && v.eval.nfe.n == 2, "zip variant 0");
    CHECK(config_sweep_variant(&z, 3, &v, NULL, 0) == -1, "zip variant 3 of 3 exists");
    CHECK(config_set(&z, "sweep.sample.schedule=polynomial,logsnr") == 0 && config_sweep_count(&z) == -1 &&
          strstr(cm_errmsg(), "sample.solver has 3 values and sample.schedule has 2"), "zip of 3 and 2 values: %s",
          cm_errmsg());
    printf("  zip lines of 3 and 2 values\n    -> %s\n", cm_errmsg());
    CHECK(config_sweep_variant(&z, 0, &v, NULL, 0) == -1, "a variant of a zip of 3 and 2 values was made");
    /* Eight lines of 4 values: 65536 grid variants (over the limit), 4 zipped ones. */
    const char *eight[] = {"sweep.sample.schedule=polynomial,logsnr,polynomial,logsnr",
                           "sweep.sample.solver=euler,heun,dpm2,ipndm", "sweep.sample.rho=1,2,3,4",
                           "sweep.sample.afs=false,true,false,true", "sweep.eval.n=10,20,30,40",
                           "sweep.eval.seed=1,2,3,4", "sweep.sample.ipndm_order=1,2,3,4", "sweep.eval.nfe=3|4|5|6"};
    CHECK(config_set_list(&z, eight, 8) == 0 && z.sweep.count == 8 && config_sweep_count(&z) == 4,
          "an 8-line zip: %s, %d variants", cm_errmsg(), config_sweep_count(&z));
    CHECK(config_set(&z, "eval.sweep=grid") == 0 && config_sweep_count(&z) == -1 &&
          strstr(cm_errmsg(), "more than 10000 variants"), "the same lines as a grid: %s", cm_errmsg());
    printf("  8 lines of 4 values as a grid\n    -> %s\n", cm_errmsg());
}

/* --help and the Markdown list name every key with its type and default; the enum choices are the
 * names the other modules use. */
static void test_key_lists(void)
{
    char *help = NULL, *md = NULL;
    size_t help_len = 0, md_len = 0;
    FILE *f = open_memstream(&help, &help_len);
    config_help(f);
    fclose(f);
    f = open_memstream(&md, &md_len);
    config_markdown(f);
    fclose(f);
    int n, ns;
    const CfgKey *keys = config_keys(&n);
    const CfgSection *sections = config_sections(&ns);
    int rows = 0;
    for (const char *p = md; (p = strstr(p, "\n| `")); p++) rows++;
    CHECK(rows == n, "Markdown has %d key rows for %d keys", rows, n);
    for (int i = 0; i < n; i++) {
        char name[80], row[96];
        snprintf(name, sizeof name, "%s.%s ", keys[i].section, keys[i].key);
        snprintf(row, sizeof row, "| `%s.%s` |", keys[i].section, keys[i].key);
        CHECK(contains(help, name), "--help lacks %s", name);
        CHECK(contains(md, row), "Markdown lacks %s", row);
        CHECK(contains(md, keys[i].help) && contains(help, keys[i].help), "help text of %s missing", name);
        if (keys[i].type == CFG_ENUM)
            for (int c = 0; keys[i].choices[c]; c++)
                CHECK(contains(md, keys[i].choices[c]), "Markdown lacks choice %s of %s", keys[i].choices[c], name);
    }
    for (int s = 0; s < ns; s++) {
        char h[64];
        snprintf(h, sizeof h, "[%s]", sections[s].name);
        CHECK(contains(help, h) && contains(md, h), "section %s missing from a key list", h);
    }
    printf("--help (first lines):\n%.600s...\nMarkdown (first lines):\n%.500s...\n", help, md);
    free(help);
    free(md);

    for (int k = 0; k < SOLVER_KIND_COUNT; k++)
        CHECK(strcmp(config_enum_name("sample.solver", k), solver_kind_name((SolverKind)k)) == 0,
              "sample.solver choice %d '%s' vs solver_kind_name '%s'", k, config_enum_name("sample.solver", k),
              solver_kind_name((SolverKind)k));
    CHECK(config_enum_name("sample.solver", SOLVER_KIND_COUNT) == NULL, "sample.solver has extra choices");
    for (int k = 0; k < SCHEDULE_KIND_COUNT; k++)
        CHECK(strcmp(config_enum_name("sample.schedule", k), schedule_kind_name((ScheduleKind)k)) == 0,
              "sample.schedule choice %d", k);
    for (int k = 0; k < OPTIM_KIND_COUNT; k++)
        CHECK(strcmp(config_enum_name("train.optimizer", k), optim_kind_name((OptimKind)k)) == 0,
              "train.optimizer choice %d", k);
    for (int k = 0; k < 2; k++)
        CHECK(strcmp(config_enum_name("cd.solver", k), solver_kind_name((SolverKind)k)) == 0, "cd.solver choice %d", k);
    CHECK(strcmp(config_enum_name("model.emb_type", UNET_EMB_FOURIER), "fourier") == 0 &&
          strcmp(config_enum_name("model.emb_type", UNET_EMB_POSITIONAL), "positional") == 0, "emb_type choices");
    CHECK(strcmp(config_method_name(CFG_METHOD_CLASSIFIER), "classifier") == 0, "method name %s",
          config_method_name(CFG_METHOD_CLASSIFIER));
    char buf[256];
    Config cfg;
    config_defaults(&cfg);
    /* The table's default texts are written as config_write writes them, so --help and the
     * resolved file agree. */
    for (int i = 0; i < n; i++) {
        config_format(&cfg, i, buf, sizeof buf);
        CHECK(strcmp(buf, keys[i].dflt) == 0, "%s.%s: default '%s' is written '%s'", keys[i].section,
              keys[i].key, keys[i].dflt, buf);
    }
    CHECK(config_get(&cfg, "model.channel_mult", buf, sizeof buf) == 0 && strcmp(buf, "1,2,2") == 0,
          "config_get channel_mult '%s'", buf);
    CHECK(config_get(&cfg, "model.nope", buf, sizeof buf) == -1, "config_get of an unknown key");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Every shipped experiment file (argv[1] = the experiments/ directory, and its subdirectories)
 * parses, and its resolved text round-trips: a typo in a recipe fails here, not at a user's run. */
static int shipped_count;
static int check_shipped(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    size_t n = strlen(path);
    if (flag != FTW_F || n < 4 || strcmp(path + n - 4, ".ini")) return 0;
    Config a, b;
    int rc = config_load(&a, path);
    CHECK(rc == 0, "shipped experiment %s does not parse: %s", path, cm_errmsg());
    if (rc == 0) {
        char *text = config_to_string(&a);
        rc = config_from_string(&b, text, path);
        memcpy(b.source, a.source, sizeof b.source);   /* the file's name: a label, not a key */
        CHECK(rc == 0 && memcmp(&a, &b, sizeof a) == 0,
              "shipped experiment %s: its resolved text does not read back", path);
        free(text);
    }
    shipped_count++;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        nftw(argv[1], check_shipped, 16, FTW_PHYS);
        CHECK(shipped_count >= 3, "found only %d experiment files under %s", shipped_count, argv[1]);
        printf("shipped experiments: %d files parse and round-trip\n", shipped_count);
    }
    snprintf(tmpdir, sizeof tmpdir, "experiment_XXXXXX");
    CM_ASSERT(mkdtemp(tmpdir), "mkdtemp");
    test_valid();
    test_name_from_file();
    test_errors();
    test_set();
    test_round_trip();
    test_sweep();
    test_key_lists();
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_summary("experiment");
}
