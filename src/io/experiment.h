/* experiment.h: experiment files (DESIGN.md "Experiment files"): the typed Config of a run, the
 * key table that defines it, strict INI parsing through inih, `--set` overrides, the resolved
 * text written to the run directory and into checkpoints, `--help` and Markdown key lists, and
 * the [sweep] grid of `cmlab ablate`.
 *
 * The key table in experiment.c is the single source of truth: every key's section, name, type,
 * default (as text, parsed by the same code as a file), allowed range or choices, help text and
 * place in Config. Parsing, config_write, config_help and config_markdown all walk it.
 *
 * Strictness: an unknown section or key, a value of the wrong type, out of range or not among
 * the choices, a key given twice, a line inih cannot read, and an indented line (inih would
 * glue it onto the previous value) are errors. Every error names file:line (or the --set
 * assignment); an unknown name also names the nearest valid one. All errors of a file are
 * reported at once (the message has one line per error). Nothing the file spells is replaced
 * by a default.
 *
 * Invariants: a Config is plain data (no pointers): copy it with memcpy and compare with memcmp.
 * Every writer zero-fills unused string bytes and list slots, and config_defaults zero-fills the
 * padding, so two Configs with the same values are byte-identical. Cross-key checks (attention
 * resolutions against the U-Net's levels, sigma_min < sigma_max, cd.teacher set for method = cd)
 * are the consumers' job (unet_init and the trainers).
 */
#ifndef CM_EXPERIMENT_H
#define CM_EXPERIMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "nn/optim.h"
#include "nn/unet.h"
#include "sample/schedule.h"
#include "sample/solvers.h"

#define CFG_LIST_MAX 8           /* values in a list key */
#define CFG_NAME_MAX 64          /* experiment.name buffer (63 characters) */
/* Path buffers. inih reads lines of at most 197 characters (INI_MAX_LINE 200 minus the line
 * end): a written "teacher = <175 characters>" must still fit, for the round trip. */
#define CFG_PATH_MAX 176
#define CFG_SWEEP_MAX 8          /* keys in [sweep] */
#define CFG_SWEEP_TEXT 192       /* one [sweep] line's normalised values */
#define CFG_SWEEP_VARIANTS 10000 /* the largest grid (config_sweep_count checks it) */

/* Each enum ends with its count; experiment.c holds its one name table (a static assert ties
 * the two), or takes the module's (solver, schedule, optimiser). */
typedef enum CfgMethod {
    CFG_METHOD_EDM, CFG_METHOD_CD, CFG_METHOD_CT, CFG_METHOD_BCM, CFG_METHOD_AMED,
    CFG_METHOD_CLASSIFIER, CFG_METHOD_COUNT
} CfgMethod;
typedef enum CfgDataset {
    CFG_DATASET_FASHION_MNIST, CFG_DATASET_MNIST, CFG_DATASET_CIFAR10, CFG_DATASET_FOLDER, CFG_DATASET_COUNT
} CfgDataset;
typedef enum CfgSkipScale { CFG_SKIP_SQRT_HALF, CFG_SKIP_ONE, CFG_SKIP_COUNT } CfgSkipScale;
typedef enum CfgOnNan { CFG_ON_NAN_STOP, CFG_ON_NAN_ROLLBACK, CFG_ON_NAN_COUNT } CfgOnNan;
typedef enum CfgGuard { CFG_GUARD_WARN, CFG_GUARD_SKIP, CFG_GUARD_ROLLBACK, CFG_GUARD_STOP, CFG_GUARD_COUNT } CfgGuard;
typedef enum CfgLoss { CFG_LOSS_L2, CFG_LOSS_L1, CFG_LOSS_PSEUDO_HUBER, CFG_LOSS_COUNT } CfgLoss;
typedef enum CfgSampling { CFG_SAMPLING_UNIFORM, CFG_SAMPLING_LOGNORMAL, CFG_SAMPLING_COUNT } CfgSampling;
typedef enum CfgCurriculum { CFG_CURRICULUM_ORIGINAL, CFG_CURRICULUM_DOUBLING, CFG_CURRICULUM_COUNT } CfgCurriculum;
typedef enum CfgWeighting { CFG_WEIGHTING_UNIFORM, CFG_WEIGHTING_ICT, CFG_WEIGHTING_COUNT } CfgWeighting;
typedef enum CfgSweepMode { CFG_SWEEP_GRID, CFG_SWEEP_ONE_AT_A_TIME, CFG_SWEEP_ZIP, CFG_SWEEP_MODE_COUNT } CfgSweepMode;

typedef struct CfgInts { int n; int v[CFG_LIST_MAX]; } CfgInts;
typedef struct CfgFloats { int n; double v[CFG_LIST_MAX]; } CfgFloats;

/* Field names are the key names: train.batch_size is cfg->train.batch_size. The meaning of each
 * field is the help text of its key (config_help, or experiments/README.md). */
typedef struct CfgExperiment {
    char name[CFG_NAME_MAX];
    CfgMethod method;
    int seed;
    char out_dir[CFG_PATH_MAX];
} CfgExperiment;

typedef struct CfgData {
    CfgDataset dataset;
    char path[CFG_PATH_MAX];
    int pad_to;
    bool hflip;
} CfgData;

typedef struct CfgModel {
    int channels;
    CfgInts channel_mult;
    int num_blocks;
    CfgInts attn_resolutions;
    bool mid_attn;
    int attn_heads;
    double dropout;
    UNetEmbedding emb_type;
    double fourier_scale;
    CfgSkipScale skip_scale;
    CmPrecision precision;
    double sigma_data, sigma_min, sigma_max;
} CfgModel;

typedef struct CfgTrain {
    int iterations, batch_size;
    double lr;
    OptimKind optimizer;
    double beta1, beta2, eps, weight_decay;
    int warmup;
    double grad_clip;
    CfgFloats ema;
    double ema_halflife_kimg, ema_rampup;
    int checkpoint_every, keep_checkpoints, sample_every, log_every, threads;
    double time_limit;
    CfgOnNan on_nan;
    CfgGuard guard;
    int guard_window;
    double guard_z;
} CfgTrain;

typedef struct CfgEdm { double p_mean, p_std; } CfgEdm;

typedef struct CfgCd {
    char teacher[CFG_PATH_MAX];
    char teacher_weights[CFG_NAME_MAX];
    SolverKind solver;           /* SOLVER_EULER or SOLVER_HEUN */
    int N;
    double target_mu;
    CfgLoss loss;
} CfgCd;

typedef struct CfgCt {
    CfgLoss loss;
    CfgSampling sampling;
    CfgCurriculum curriculum;
    CfgWeighting weighting;
    int s0, s1;                  /* 0: the curriculum's own value (config_ct_s0, config_ct_s1) */
    double target_mu, p_mean, p_std;
} CfgCt;

typedef struct CfgBcm {
    char init[CFG_PATH_MAX];     /* "": train from scratch */
    char init_weights[CFG_NAME_MAX];
    int N;                       /* 0: [ct]'s curriculum */
    double huber_c;              /* 0: iCT's rule 0.00054 sqrt(C H W) */
} CfgBcm;
typedef struct CfgAmed {
    char teacher[CFG_PATH_MAX];
    char teacher_weights[CFG_NAME_MAX];
    int student;                 /* AmedPlugin (sample/amed.h) */
    SolverKind teacher_solver;
    int N, M;
    bool afs;
    ScheduleKind schedule;
    double rho, scale_dir, scale_time;
    int max_order;
    int nonfinite_limit;
} CfgAmed;

typedef struct CfgClassifier {
    CfgInts channels;
    int features, classes;
} CfgClassifier;

typedef struct CfgSample {
    SolverKind solver;
    int nfe;
    ScheduleKind schedule;
    double rho;
    int n;
    bool afs, denoise_to_zero;
    int ipndm_order;
    double mid_t;
    CfgFloats times;             /* multistep consistency / BCM sampling: NFE k takes the first k */
    bool bcm_jumps;
} CfgSample;

typedef struct CfgEval {
    char features[CFG_PATH_MAX];
    int n;
    CfgInts nfe;
    int seed;
    char weights[CFG_NAME_MAX];
    char checkpoint[CFG_PATH_MAX];
    CfgSweepMode sweep;
    char predictor[CFG_PATH_MAX];
} CfgEval;

/* One [sweep] line: a key of the table and its values, normalised (each value formatted as
 * config_write would, joined by ',' or, for list keys, by '|'). */
typedef struct CfgSweepKey {
    int key;                     /* index into the key table */
    int count;                   /* values */
    char values[CFG_SWEEP_TEXT];
} CfgSweepKey;

typedef struct Config {
    CfgExperiment experiment;
    CfgData data;
    CfgModel model;
    CfgTrain train;
    CfgEdm edm;
    CfgCd cd;
    CfgCt ct;
    CfgBcm bcm;
    CfgAmed amed;
    CfgClassifier classifier;
    CfgSample sample;
    CfgEval eval;
    struct { int count; CfgSweepKey keys[CFG_SWEEP_MAX]; } sweep;
    char source[CFG_PATH_MAX];   /* the file config_load read, for messages; not a key ("" else) */
} Config;

/* ---- loading ---- */

/* Every key at its default; padding zeroed. */
void config_defaults(Config *cfg);
/* Defaults, then the file. An empty experiment.name becomes the file's base name without its
 * extension. Returns 0, or -1 after cm_fail() with one "path:line: ..." line per error. */
int config_load(Config *cfg, const char *path);
/* Defaults, then `text`; `name` stands for the file in messages (e.g. "ckpt.h5:config"). */
int config_from_string(Config *cfg, const char *text, const char *name);
/* One `--set` override, "section.key=value" (also "sweep.section.key=v1,v2", which replaces that
 * key's sweep). On error cfg is unchanged and the message starts "--set <assignment>: ". */
int config_set(Config *cfg, const char *assignment);
/* config_set for each of n assignments in order; stops at the first that fails (its message). */
int config_set_list(Config *cfg, const char *const *assignments, int n);

/* ---- writing ---- */

/* The resolved configuration: every key, defaults included, by section, then [sweep] when it has
 * keys. config_from_string reads it back to a byte-identical Config. Returns -1 after cm_fail()
 * when the stream fails. */
int config_write(const Config *cfg, FILE *f);
/* config_write into a malloc'd string (for checkpoints); free() it. */
char *config_to_string(const Config *cfg);
/* The key list for --help: sections with their help, then per key its name, type, default,
 * allowed values and help. */
void config_help(FILE *f);
/* The same as Markdown (one table of keys; README's key list is generated from it). */
void config_markdown(FILE *f);

/* ---- the [sweep] grid ---- */

/* The number of variants: the product of the value counts (eval.sweep = grid or one_at_a_time),
 * or with eval.sweep = zip the one value count every line shares; 1 without a [sweep]. -1 after
 * cm_fail() for a grid of more than CFG_SWEEP_VARIANTS, or zip lines of different lengths. */
int config_sweep_count(const Config *cfg);
/* Variant i (0 <= i < count) of base: grid, the first [sweep] key varies slowest, the last
 * fastest; zip, value i of every key. out gets base with the variant's values and no [sweep];
 * label gets "ct.loss=l2,ct.weighting=ict" (empty without a [sweep]; label may be NULL). Returns
 * -1 after cm_fail() for a bad i or a bad sweep (config_sweep_count). */
int config_sweep_variant(const Config *base, int i, Config *out, char *label, size_t len);
/* Value j of [sweep] line s as text ("pseudo_huber", "1,2,2"), into out; -1 after cm_fail() when
 * there is no such line or value. */
int config_sweep_value(const Config *cfg, int s, int j, char *out, size_t len);

/* ---- the key table, for tools and tests ---- */

typedef enum CfgType {
    CFG_INT, CFG_FLOAT, CFG_BOOL, CFG_STRING, CFG_ENUM, CFG_INTS, CFG_FLOATS, CFG_TYPE_COUNT
} CfgType;

enum {
    CFG_OPEN_MIN = 1 << 0,       /* the range excludes min */
    CFG_OPEN_MAX = 1 << 1,       /* the range excludes max */
    CFG_FILENAME = 1 << 2,       /* a string usable as a directory name: [A-Za-z0-9._-], no leading '.' */
};

typedef struct CfgKey {
    const char *section, *key;
    CfgType type;
    const char *dflt;            /* as it would be written in a file */
    double min, max;             /* numbers and list elements; strings: max = the longest length */
    unsigned flags;
    int min_len, max_len;        /* lists: how many values */
    const char *const *choices;  /* CFG_ENUM: the names of values 0, 1, ..., NULL-terminated */
    size_t offset, size;         /* of the field in Config */
    const char *help;
} CfgKey;

typedef struct CfgSection { const char *name, *help; } CfgSection;

const CfgKey *config_keys(int *count);
const CfgSection *config_sections(int *count);
/* The index of "section.key", or -1. */
int config_key_find(const char *name);
/* The value of key `index` in cfg as config_write writes it. */
void config_format(const Config *cfg, int index, char *buf, size_t len);
/* config_format by name; -1 after cm_fail() for an unknown key. */
int config_get(const Config *cfg, const char *name, char *buf, size_t len);

/* ---- helpers for the consumers ---- */

/* The choice name of an enum value of key "section.key" ("experiment.method", 2 -> "ct"). */
const char *config_enum_name(const char *key, int value);
const char *config_method_name(CfgMethod method);
double config_skip_scale(const Config *cfg);    /* sqrt(1/2) or 1 */
/* ct.s0 and ct.s1 with 0 resolved to the curriculum's own: original 2 and 150 (CM, CIFAR-10),
 * doubling 10 and 1280 (iCT); reference/cm.md §4.2 and §5. */
int config_ct_s0(const Config *cfg);
int config_ct_s1(const Config *cfg);

#endif
