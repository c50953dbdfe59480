/* experiment.c: the key table, value parsing and formatting by type, the INI reader around inih,
 * --set, the resolved text, the key lists, and the [sweep] grid.
 *
 * Line numbers: Debian's libinih 55 is built without INI_HANDLER_LINENO, so the handler is not
 * told the line. inih reads one line through its reader and handles it before it reads the next,
 * so parsing goes through ini_parse_stream with a reader that serves the text line by line and
 * counts: inside the handler, Parser.line is the line being handled. The same reader checks
 * section headers (inih calls no handler for a section without keys), lines too long for inih's
 * buffer (which it would otherwise split silently) and lines that are neither a key, a section
 * nor a comment, so that every error of a file is reported in one pass. */
#include "experiment.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "autograd/gemm_bf16.h"
#include "common.h"
#include "sample/amed.h"

/* ---- the key table ---- */

static const char *const methods[] = {"edm", "cd", "ct", "bcm", "amed", "classifier", NULL};
static const char *const datasets[] = {"fashion-mnist", "mnist", "cifar10", "folder", NULL};
static const char *const emb_types[] = {"positional", "fourier", NULL};        /* UNetEmbedding */
static const char *const skip_scales[] = {"sqrt_half", "one", NULL};
static const char *const on_nans[] = {"stop", "rollback", NULL};
static const char *const guards[] = {"warn", "skip", "rollback", "stop", NULL};      /* CfgGuard */
static const char *const cd_solvers[] = {"euler", "heun", NULL};               /* SolverKind's first two */
static const char *const losses[] = {"l2", "l1", "pseudo_huber", NULL};
static const char *const samplings[] = {"uniform", "lognormal", NULL};
static const char *const curricula[] = {"original", "doubling", NULL};
static const char *const weightings[] = {"uniform", "ict", NULL};
static const char *const sweep_modes[] = {"grid", "one_at_a_time", "zip", NULL};     /* CfgSweepMode */
#define NAMES_OF(table, count) _Static_assert(CM_ARRAY_LEN(table) == (count) + 1, #table ": one name per value")
NAMES_OF(methods, CFG_METHOD_COUNT);
NAMES_OF(datasets, CFG_DATASET_COUNT);
NAMES_OF(emb_types, UNET_EMB_FOURIER + 1);
NAMES_OF(skip_scales, CFG_SKIP_COUNT);
NAMES_OF(on_nans, CFG_ON_NAN_COUNT);
NAMES_OF(guards, CFG_GUARD_COUNT);
NAMES_OF(losses, CFG_LOSS_COUNT);
NAMES_OF(samplings, CFG_SAMPLING_COUNT);
NAMES_OF(curricula, CFG_CURRICULUM_COUNT);
NAMES_OF(weightings, CFG_WEIGHTING_COUNT);
NAMES_OF(sweep_modes, CFG_SWEEP_MODE_COUNT);
_Static_assert(SOLVER_EULER == 0 && SOLVER_HEUN == 1, "cd_solvers names SolverKind's first two");
/* The solvers, schedules, optimisers and precisions have their modules' tables (solver_kind_names, ...). */

static const CfgSection sections[] = {
    {"experiment", "The run: its name, method, seed and where run directories go."},
    {"data", "The training images."},
    {"model", "The U-Net F_theta (src/nn/unet.h) and the noise range of the preconditioning."},
    {"train", "Optimisation, weight averages, checkpoints, sample grids and logging."},
    {"edm", "method = edm: the EDM denoiser (reference/cm.md §1.3)."},
    {"cd", "method = cd: Consistency Distillation from an EDM teacher (reference/cm.md §3)."},
    {"ct", "method = ct: Consistency Training; the iCT changes are separate switches "
           "(reference/cm.md §4-5)."},
    {"bcm", "method = bcm: Bidirectional Consistency Training and fine-tuning (reference/bcm.md §3-4); "
            "[ct]'s p_mean, p_std and curriculum (s0, s1; unless bcm.N is set) apply, its loss, sampling, "
            "weighting and target_mu do not (BCM fixes them: pseudo-Huber, lognormal, 1/(t - t'), online)."},
    {"amed", "method = amed: the ~9k-parameter AMED predictor, distilled from an EDM teacher's ODE "
             "trajectories (reference/amed.md; src/sample/amed.h)."},
    {"classifier", "method = classifier: the CNN whose penultimate features define the Frechet "
                   "distance of `cmlab eval` (src/nn/classifier.h)."},
    {"sample", "Sample grids and `cmlab sample`: the ODE solver of a denoiser (src/sample/solvers.h)."},
    {"eval", "`cmlab eval` (Frechet distance in a cmlab classifier's feature space) and how "
             "`cmlab ablate` evaluates its variants."},
    {"sweep", "`cmlab ablate`: lines `section.key = v1, v2, ...` span a grid of runs (eval.sweep = zip: one run per column of values)."},
};

#define AT(sec, field)                                                                   \
    .section = #sec, .key = #field, .offset = offsetof(Config, sec.field),              \
    .size = sizeof(((Config *)0)->sec.field)
#define INT(lo, hi) .type = CFG_INT, .min = (lo), .max = (hi)
#define FLOAT(lo, hi, open) .type = CFG_FLOAT, .min = (lo), .max = (hi), .flags = (open)
#define ENUM(names) .type = CFG_ENUM, .choices = (names)
#define BOOL .type = CFG_BOOL
#define TEXT(maxlen, fl) .type = CFG_STRING, .max = (maxlen), .flags = (fl)
#define INTS(lo, hi, nmin, nmax) .type = CFG_INTS, .min = (lo), .max = (hi), .min_len = (nmin), .max_len = (nmax)
#define FLOATS(lo, hi, open, nmin, nmax)                                                 \
    .type = CFG_FLOATS, .min = (lo), .max = (hi), .flags = (open), .min_len = (nmin), .max_len = (nmax)
#define MANY 2000000000

static const CfgKey keys[] = {
    {AT(experiment, name), TEXT(CFG_NAME_MAX - 1, CFG_FILENAME), .dflt = "",
     .help = "Run name: the run directory is out_dir/name. Empty: the experiment file's base name."},
    {AT(experiment, method), ENUM(methods), .dflt = "edm",
     .help = "What to train: the EDM teacher, CD, CT (with the iCT switches of [ct]), BCM, AMED, "
             "or the classifier behind the Frechet distance."},
    {AT(experiment, seed), INT(0, INT_MAX), .dflt = "0",
     .help = "Seed of every random number (init, noise, dropout, data order, sample grids)."},
    {AT(experiment, out_dir), TEXT(CFG_PATH_MAX - 1, 0), .dflt = "runs",
     .help = "Directory that holds the run directories."},

    {AT(data, dataset), ENUM(datasets), .dflt = "fashion-mnist",
     .help = "Data set: IDX files (fashion-mnist, mnist), CIFAR-10 binary batches or .tar.gz, "
             "or a folder of same-sized PNGs."},
    {AT(data, path), TEXT(CFG_PATH_MAX - 1, 0), .dflt = "",
     .help = "Where the data is. Empty: the data set's standard place (fashion-mnist: "
             "/usr/share/datasets/fashion-mnist); folder needs a path."},
    {AT(data, pad_to), INT(0, 4096), .dflt = "0",
     .help = "Pad images to this size, e.g. 32 for 28x28 data. 0: no padding."},
    {AT(data, hflip), BOOL, .dflt = "false",
     .help = "Random horizontal flips."},

    {AT(model, channels), INT(4, 4096), .dflt = "32",
     .help = "Base channel count (a multiple of 4); level l has channels * channel_mult[l]."},
    {AT(model, channel_mult), INTS(1, 64, 1, UNET_MAX_LEVELS), .dflt = "1,2,2",
     .help = "Channel multiplier per level; one value per resolution (28, 14, 7 for 1,2,2 on 28x28)."},
    {AT(model, num_blocks), INT(1, UNET_MAX_BLOCKS), .dflt = "2",
     .help = "Residual blocks per encoder level (the decoder has one more)."},
    {AT(model, attn_resolutions), INTS(1, 4096, 0, UNET_MAX_ATTN), .dflt = "",
     .help = "Resolutions (image sizes, e.g. 16) whose blocks get self-attention. Empty: none."},
    {AT(model, mid_attn), BOOL, .dflt = "true",
     .help = "Self-attention in the middle block."},
    {AT(model, attn_heads), INT(1, 64), .dflt = "1",
     .help = "Attention heads; must divide the channels of every attention."},
    {AT(model, dropout), FLOAT(0, 1, CFG_OPEN_MAX), .dflt = "0",
     .help = "Dropout in every residual block (EDM CIFAR-10 0.13, iCT 0.3, CD 0)."},
    {AT(model, emb_type), ENUM(emb_types), .dflt = "positional",
     .help = "Noise embedding: positional (EDM/DDPM++) or Gaussian Fourier features (NCSN++)."},
    {AT(model, fourier_scale), FLOAT(0, 1000, CFG_OPEN_MIN), .dflt = "16",
     .help = "Std of the Fourier frequencies (emb_type = fourier): NCSN++ 16, iCT 0.02."},
    {AT(model, skip_scale), ENUM(skip_scales), .dflt = "sqrt_half",
     .help = "Factor on residual sums: sqrt_half (DDPM++, NCSN++) or one."},
    {AT(model, precision), ENUM(cm_precision_names), .dflt = "fp32",
     .help = "Products of the convolutions, linear layers and attention: fp32, or bf16 inputs with fp32 "
             "sums (AMX tiles where the CPU has them, else AVX512_BF16; neither: a note and fp32; the "
             "environment's CMLAB_BF16=off forces that fallback, =avx512 keeps AMX out). Weights, "
             "optimiser, norms, softmax and losses stay fp32; for training and the trainer's sample grids."},
    {AT(model, sigma_data), FLOAT(0, 100, CFG_OPEN_MIN), .dflt = "0.5",
     .help = "Standard deviation of the data in the preconditioning (data in [-1, 1])."},
    {AT(model, sigma_min), FLOAT(0, 100, CFG_OPEN_MIN), .dflt = "0.002",
     .help = "Smallest noise level: the consistency models' eps and the solvers' last time."},
    {AT(model, sigma_max), FLOAT(0, 100000, CFG_OPEN_MIN), .dflt = "80",
     .help = "Largest noise level T: sampling starts from sigma_max * z."},

    {AT(train, iterations), INT(1, MANY), .dflt = "10000",
     .help = "Optimiser steps. Also K, the horizon of the CT curricula."},
    {AT(train, batch_size), INT(1, 1 << 20), .dflt = "64",
     .help = "Images per step (over all processes)."},
    {AT(train, lr), FLOAT(0, 10, CFG_OPEN_MIN), .dflt = "0.001",
     .help = "Learning rate (after the warm-up)."},
    {AT(train, optimizer), ENUM(optim_kind_names), .dflt = "adam",
     .help = "Adam, AdamW (decoupled weight decay) or RAdam, as PyTorch (src/nn/optim.h)."},
    {AT(train, beta1), FLOAT(0, 1, CFG_OPEN_MAX), .dflt = "0.9",
     .help = "First-moment decay."},
    {AT(train, beta2), FLOAT(0, 1, CFG_OPEN_MAX), .dflt = "0.999",
     .help = "Second-moment decay."},
    {AT(train, eps), FLOAT(0, 1, CFG_OPEN_MIN), .dflt = "1e-08",
     .help = "Denominator epsilon."},
    {AT(train, weight_decay), FLOAT(0, 10, 0), .dflt = "0",
     .help = "Weight decay (L2 through the moments for adam and radam, decoupled for adamw)."},
    {AT(train, warmup), INT(0, MANY), .dflt = "0",
     .help = "Linear learning-rate warm-up over this many steps. 0: none."},
    {AT(train, grad_clip), FLOAT(0, 1e9, 0), .dflt = "0",
     .help = "Clip the global gradient norm to this. 0: no clipping."},
    {AT(train, ema), FLOATS(0, 1, CFG_OPEN_MAX, 0, CFG_LIST_MAX), .dflt = "0.999",
     .help = "Rates of the evaluation EMAs, one weight set each (e.g. 0.999,0.9999). Empty: none."},
    {AT(train, ema_halflife_kimg), FLOAT(0, 1e9, 0), .dflt = "0",
     .help = "An EDM-style EMA with this half-life in thousands of images, besides the rates "
             "(EDM CIFAR-10: 500). 0: none."},
    {AT(train, ema_rampup), FLOAT(0, 1, 0), .dflt = "0.05",
     .help = "Ramp-up ratio of the half-life EMA (EDM: 0.05). 0: none."},
    {AT(train, checkpoint_every), INT(0, MANY), .dflt = "1000",
     .help = "Save a checkpoint every this many steps, and at the end. 0: only at the end."},
    {AT(train, keep_checkpoints), INT(0, 1000000), .dflt = "3",
     .help = "Keep this many newest checkpoints. 0: keep all."},
    {AT(train, sample_every), INT(0, MANY), .dflt = "1000",
     .help = "Write a sample grid at fixed seeds every this many steps, and at the end. 0: only at the end."},
    {AT(train, log_every), INT(1, MANY), .dflt = "50",
     .help = "Log a metrics line every this many steps."},
    {AT(train, threads), INT(0, 4096), .dflt = "0",
     .help = "OpenMP threads. 0: OMP_NUM_THREADS, else the cores other tasks leave, read at start and every "
             "minute (every core on an idle machine). A run's bits follow the count: set it to resume bit-exact "
             "on a machine whose load changes."},
    {AT(train, time_limit), FLOAT(0, 1e9, 0), .dflt = "0",
     .help = "Stop after this many seconds of training as if the last step were reached (checkpoint, "
             "sample grid); --resume goes on. 0: none."},
    {AT(train, on_nan), ENUM(on_nans), .dflt = "stop",
     .help = "On a non-finite loss: stop with the step, or roll back to the newest checkpoint and go on."},
    {AT(train, guard), ENUM(guards), .dflt = "warn",
     .help = "The divergence guard, on a step whose loss or gradient norm is an outlier of the last "
             "train.guard_window steps (robust z-score above train.guard_z): report it and go on "
             "(warn), report and drop that update (skip), roll back to the newest checkpoint and skip "
             "that batch (rollback), or stop with exit 1 (stop)."},
    {AT(train, guard_window), INT(0, 100000), .dflt = "100",
     .help = "Steps in the divergence guard's window (at least 10 must be seen before it judges). "
             "0: no guard (non-finite values are still caught by train.on_nan)."},
    {AT(train, guard_z), FLOAT(0, 1e9, CFG_OPEN_MIN), .dflt = "20",
     .help = "The divergence guard's threshold: (value - median) / (1.4826 MAD) of the window."},

    {AT(edm, p_mean), FLOAT(-20, 20, 0), .dflt = "-1.2",
     .help = "Mean of ln(sigma) of the training noise levels."},
    {AT(edm, p_std), FLOAT(0, 20, CFG_OPEN_MIN), .dflt = "1.2",
     .help = "Standard deviation of ln(sigma) of the training noise levels."},

    {AT(cd, teacher), TEXT(CFG_PATH_MAX - 1, 0), .dflt = "",
     .help = "EDM teacher checkpoint (needed for method = cd); the student starts from its weights."},
    {AT(cd, teacher_weights), TEXT(CFG_NAME_MAX - 1, 0), .dflt = "",
     .help = "The teacher's weight set: online or ema:RATE, as cmlab info lists them. Empty: its first "
             "EMA (else online)."},
    {AT(cd, solver), ENUM(cd_solvers), .dflt = "heun",
     .help = "The teacher's ODE step between adjacent grid points."},
    {AT(cd, N), INT(2, 1000000), .dflt = "18",
     .help = "Points of the Karras grid (rho 7, sigma_min..sigma_max); CIFAR-10 used 18."},
    {AT(cd, target_mu), FLOAT(0, 1, CFG_OPEN_MAX), .dflt = "0",
     .help = "EMA rate of the target network. 0: the online network without gradient "
             "(CIFAR-10 recipe); ImageNet-64 used 0.95."},
    {AT(cd, loss), ENUM(losses), .dflt = "l2",
     .help = "Distance d: the papers' LPIPS is not available on CPU; pseudo_huber is iCT's "
             "(per-sample norm, c = 0.00054 sqrt(C*H*W))."},

    {AT(ct, loss), ENUM(losses), .dflt = "l2",
     .help = "Distance d: l2 (CT used LPIPS, not available on CPU), l1, or iCT's pseudo_huber."},
    {AT(ct, sampling), ENUM(samplings), .dflt = "uniform",
     .help = "Noise-index sampling: uniform (CT) or iCT's discretised lognormal (p_mean, p_std)."},
    {AT(ct, curriculum), ENUM(curricula), .dflt = "original",
     .help = "N(k): original (CT, square-root growth) or iCT's doubling."},
    {AT(ct, weighting), ENUM(weightings), .dflt = "uniform",
     .help = "Loss weight lambda: uniform (1) or iCT's 1/(sigma_{i+1} - sigma_i)."},
    {AT(ct, s0), INT(0, 1000000), .dflt = "0",
     .help = "Curriculum start s0. 0: the curriculum's own (original 2, doubling 10)."},
    {AT(ct, s1), INT(0, 1000000), .dflt = "0",
     .help = "Curriculum end s1. 0: the curriculum's own (original 150, doubling 1280)."},
    {AT(ct, target_mu), FLOAT(0, 1, CFG_OPEN_MAX), .dflt = "0.9",
     .help = "mu0 of the target EMA mu(k) = exp(s0 ln(mu0) / (N(k) - 1)) (CT, code convention). "
             "0: no target EMA, the online network without gradient (iCT)."},
    {AT(ct, p_mean), FLOAT(-20, 20, 0), .dflt = "-1.1",
     .help = "Mean of ln(sigma) of the lognormal index sampling."},
    {AT(ct, p_std), FLOAT(0, 20, CFG_OPEN_MIN), .dflt = "2",
     .help = "Standard deviation of ln(sigma) of the lognormal index sampling."},

    {AT(bcm, init), TEXT(CFG_PATH_MAX - 1, 0), .dflt = "",
     .help = "Fine-tune this consistency checkpoint (method = ct or cd, the same [model]): the u branch "
             "starts as a copy of the t branch and the align layer as [I, 0]. Empty: train from scratch."},
    {AT(bcm, init_weights), TEXT(CFG_NAME_MAX - 1, 0), .dflt = "",
     .help = "The weight set of bcm.init: online, target or ema:RATE, as cmlab info lists them. Empty: "
             "its first EMA (else online)."},
    {AT(bcm, N), INT(0, 1000000), .dflt = "0",
     .help = "Fixed number of Karras grid points (at least 3; the official fine-tune used 321). "
             "0: N(k) of [ct]'s curriculum (s0, s1)."},
    {AT(bcm, huber_c), FLOAT(0, 100, 0), .dflt = "0",
     .help = "c of the pseudo-Huber distance (sqrt(sum (a - b)^2 + c^2) - c) / sqrt(C*H*W). 0: iCT's "
             "0.00054 sqrt(C*H*W), which gives the official 0.06 at 3x64x64; 0.0151 at 1x28x28, "
             "0.0173 at 1x32x32, 0.0299 at 3x32x32."},
    {AT(amed, teacher), TEXT(CFG_PATH_MAX - 1, 0), .dflt = "",
     .help = "EDM teacher checkpoint (needed for method = amed); its U-Net must have an 8x8 bottleneck "
             "(e.g. Fashion-MNIST with data.pad_to = 32 and 3 levels)."},
    {AT(amed, teacher_weights), TEXT(CFG_NAME_MAX - 1, 0), .dflt = "",
     .help = "The teacher's weight set: online or ema:RATE. Empty: its first EMA (else online)."},
    {AT(amed, student), ENUM(amed_plugin_names), .dflt = "amed",
     .help = "The student: AMED-Solver (amed) or AMED-Plugin on euler, dpm2, ipndm or dpmpp (multistep "
             "DPM-Solver++ over 2N - 1 points; its teacher: teacher_solver = dpmpp3m)."},
    {AT(amed, teacher_solver), ENUM(solver_kind_names), .dflt = "heun",
     .help = "The ODE solver of the teacher trajectories (no AFS, no step to 0)."},
    {AT(amed, N), INT(2, 1000), .dflt = "4",
     .help = "The student's time points: N - 1 steps, 2(N - 1) - afs NFE (N = 3..6: NFE 3, 5, 7, 9 with afs)."},
    {AT(amed, M), INT(0, 1000), .dflt = "1",
     .help = "Teacher steps inserted per student step: the teacher has (M + 1)(N - 1) + 1 points."},
    {AT(amed, afs), BOOL, .dflt = "true",
     .help = "The student's analytical first step (saves one NFE)."},
    {AT(amed, schedule), ENUM(schedule_kind_names), .dflt = "time_uniform",
     .help = "The schedule of student and teacher (same type, sigma range of the teacher)."},
    {AT(amed, rho), FLOAT(0, 1000, CFG_OPEN_MIN), .dflt = "1",
     .help = "Exponent of the polynomial and time_uniform schedules."},
    {AT(amed, scale_dir), FLOAT(0, 1, CFG_OPEN_MAX), .dflt = "0.01",
     .help = "S_dir: the c head, c in (1 - S_dir, 1 + S_dir). 0: no head, c = 1."},
    {AT(amed, scale_time), FLOAT(0, 1, CFG_OPEN_MAX), .dflt = "0",
     .help = "S_time: the a head, a in (1 - S_time, 1 + S_time). 0: no head, a = 1."},
    {AT(amed, max_order), INT(1, 4), .dflt = "4",
     .help = "Highest Adams-Bashforth order of the ipndm student and teacher; the dpmpp student's order "
             "is at most min(max_order, 3)."},
    {AT(amed, nonfinite_limit), INT(0, MANY), .dflt = "10",
     .help = "Updates with a non-finite loss or gradient are skipped and counted (metrics.jsonl "
             "nonfinite_skipped); the run stops (exit 1) when more than this many were skipped over the "
             "whole run, resumes included (the checkpoint keeps the count)."},

    {AT(classifier, channels), INTS(1, 4096, 1, 4), .dflt = "32,64",
     .help = "Widths of the conv levels (two 3x3 conv + GN + SiLU, then a 2x2 average pool, each)."},
    {AT(classifier, features), INT(2, 65536), .dflt = "256",
     .help = "Width of the penultimate layer: the feature space of the Frechet distance."},
    {AT(classifier, classes), INT(2, 1000), .dflt = "10",
     .help = "Classes of the labels (10 for Fashion-MNIST, MNIST and CIFAR-10)."},

    {AT(sample, solver), ENUM(solver_kind_names), .dflt = "heun",
     .help = "ODE solver of a denoiser (EDM teachers)."},
    {AT(sample, nfe), INT(1, 100000), .dflt = "35",
     .help = "Denoiser evaluations per sample, counted as reference/amed.md does (heun: 35 is EDM's 18 steps)."},
    {AT(sample, schedule), ENUM(schedule_kind_names), .dflt = "polynomial",
     .help = "Time steps: polynomial (Karras, rho), uniform in log-SNR, or time_uniform."},
    {AT(sample, rho), FLOAT(0, 1000, CFG_OPEN_MIN), .dflt = "7",
     .help = "Exponent of the polynomial and time_uniform schedules (1: uniform in sigma)."},
    {AT(sample, n), INT(1, 1000000), .dflt = "64",
     .help = "Images per sample grid."},
    {AT(sample, afs), BOOL, .dflt = "false",
     .help = "Analytical first step (saves one NFE)."},
    {AT(sample, denoise_to_zero), BOOL, .dflt = "true",
     .help = "A last step from sigma_min to 0, x = D(x; sigma_min), as EDM's sampler (one NFE)."},
    {AT(sample, ipndm_order), INT(1, 4), .dflt = "4",
     .help = "Highest order of ipndm."},
    {AT(sample, mid_t), FLOAT(0, 100000, CFG_OPEN_MIN), .dflt = "0.821",
     .help = "Consistency models: the time of the second step of 2-step sampling (iCT/ECT CIFAR-10: 0.821)."},
    {AT(sample, times), FLOATS(0, 100000, CFG_OPEN_MIN, 0, CFG_LIST_MAX), .dflt = "",
     .help = "Consistency and BCM models: multistep times, T first, descending (e.g. 80,2,0.8,0.3); NFE k "
             "samples with the first k. Empty: NFE 1 is T, NFE 2 is T then sample.mid_t."},
    {AT(sample, bcm_jumps), BOOL, .dflt = "false",
     .help = "BCM models: multistep sampling jumps from each time straight to the next with f(x, t, u), no "
             "fresh noise (BCM's ancestral sampling: T > t1 > ... > eps). false: re-noise to each time as a "
             "consistency model does."},

    {AT(eval, features), TEXT(CFG_PATH_MAX - 1, 0), .dflt = "",
     .help = "Checkpoint of the feature network (a method = classifier run on the same data set)."},
    {AT(eval, n), INT(2, 1000000), .dflt = "10000",
     .help = "Generated samples per Frechet distance (FD is biased upwards at small n: compare at equal n)."},
    {AT(eval, nfe), INTS(1, 100000, 0, CFG_LIST_MAX), .dflt = "",
     .help = "NFEs to evaluate: ODE solver evaluations (EDM) or sampling steps 1, 2 (consistency models). "
             "Empty: sample.nfe (EDM) or 1,2."},
    {AT(eval, seed), INT(0, INT_MAX), .dflt = "0",
     .help = "Seed of the evaluation samples: sample i starts from the noise of (seed, sample i)."},
    {AT(eval, weights), TEXT(CFG_NAME_MAX - 1, 0), .dflt = "",
     .help = "Weight set to evaluate: online, target or ema:RATE. Empty: the first EMA, else online."},
    {AT(eval, checkpoint), TEXT(CFG_PATH_MAX - 1, 0), .dflt = "",
     .help = "`cmlab ablate`: evaluate this checkpoint instead of training (sampler ablations)."},
    {AT(eval, sweep), ENUM(sweep_modes), .dflt = "grid",
     .help = "`cmlab ablate`: every combination of the [sweep] values (grid), or the file's own "
             "configuration, each swept value changed on its own, then all keys at their last values "
             "(one_at_a_time), or the keys varying together, variant i taking value i of every line "
             "(zip: linked settings such as a solver and its schedule; every line lists as many values)."},
    {AT(eval, predictor), TEXT(CFG_PATH_MAX - 1, 0), .dflt = "",
     .help = "An AMED predictor checkpoint (method = amed) trained on the evaluated teacher: sample "
             "with it (its own NFE) instead of sample.solver. {nfe} in the path stands for each NFE of "
             "eval.nfe (one predictor per NFE: runs/amed_nfe{nfe}/ckpt/step_00000079.h5)."},
};

#define KEY_COUNT ((int)CM_ARRAY_LEN(keys))
#define SECTION_COUNT ((int)CM_ARRAY_LEN(sections))

/* The longest line inih reads (INI_MAX_LINE 200 less "\r\n\0"); written lines must fit. */
#define LINE_LIMIT 197
/* Message buffers: a reason ("expected one of ...") and a whole error (name, value, reason). */
enum { REASON_LEN = 320, WHY_LEN = 768 };

const CfgKey *config_keys(int *count) { *count = KEY_COUNT; return keys; }
const CfgSection *config_sections(int *count) { *count = SECTION_COUNT; return sections; }

/* ---- small string helpers ---- */

static const char *skip_space(const char *s)
{
    while (isspace((unsigned char)*s)) s++;
    return s;
}

/* s[0..len) without surrounding white space, into out (truncated to n - 1). */
static void copy_trimmed(char *out, size_t n, const char *s, size_t len)
{
    while (len && isspace((unsigned char)*s)) s++, len--;
    while (len && isspace((unsigned char)s[len - 1])) len--;
    if (len > n - 1) len = n - 1;
    memcpy(out, s, len);
    out[len] = '\0';
}

/* ---- values by type: parse (text -> field), format (field -> text), allowed values ---- */

static void format_double(double v, char *buf, size_t n)
{
    /* Whole numbers in full (80, not 8e+01); others the shortest %g that reads back to the same
     * double (0.001 stays "0.001", 1e-08 stays short). */
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static int read_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || isspace((unsigned char)*s)) return -1;
    *out = v;
    return 0;
}

static int read_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v) || isspace((unsigned char)*s)) return -1;
    *out = v;
    return 0;
}

static bool in_range(const CfgKey *k, double v)
{
    bool lo = (k->flags & CFG_OPEN_MIN) ? v > k->min : v >= k->min;
    bool hi = (k->flags & CFG_OPEN_MAX) ? v < k->max : v <= k->max;
    return lo && hi;
}

static void range_text(const CfgKey *k, char *buf, size_t n)
{
    char lo[32], hi[32];
    format_double(k->min, lo, sizeof lo);
    format_double(k->max, hi, sizeof hi);
    snprintf(buf, n, "%c%s, %s%c", (k->flags & CFG_OPEN_MIN) ? '(' : '[', lo, hi,
             (k->flags & CFG_OPEN_MAX) ? ')' : ']');
}

static bool filename_ok(const char *s)
{
    if (s[0] == '.') return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._-", *s)) return false;
    return true;
}

static void allowed_int(const CfgKey *k, char *buf, size_t n)
{
    char r[80];
    range_text(k, r, sizeof r);
    snprintf(buf, n, "an integer in %s", r);
}

static void allowed_float(const CfgKey *k, char *buf, size_t n)
{
    char r[80];
    range_text(k, r, sizeof r);
    snprintf(buf, n, "a number in %s", r);
}

static void allowed_bool(const CfgKey *k, char *buf, size_t n)
{
    (void)k;
    snprintf(buf, n, "true or false");
}

/* Text that config_write can write and inih read back unchanged: one line (no control
 * character but tab), and no ';' after a space or tab, which inih takes as the start of an
 * inline comment. A file's value can fail only by a control character (inih has cut its comment
 * already); a --set value could fail either way, and was then written to config.ini and into
 * checkpoints as text that did not read back (tests/fuzz/regress/experiment/). */
static bool text_ok(const char *s)
{
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
        if (c == ';' && i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t')) return false;
    }
    return true;
}

static void allowed_string(const CfgKey *k, char *buf, size_t n)
{
    if (k->flags & CFG_FILENAME)
        snprintf(buf, n, "a name of at most %d letters, digits, '.', '_' or '-' (not starting "
                 "with '.')", (int)k->max);
    else
        snprintf(buf, n, "text of at most %d characters", (int)k->max);
}

static void allowed_enum(const CfgKey *k, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "one of");
    for (int i = 0; k->choices[i] && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s %s", i ? "," : "", k->choices[i]);
}

static void allowed_list(const CfgKey *k, char *buf, size_t n)
{
    char r[80], count[32];
    range_text(k, r, sizeof r);
    if (k->min_len == 0) snprintf(count, sizeof count, "up to %d", k->max_len);
    else snprintf(count, sizeof count, "%d to %d", k->min_len, k->max_len);
    snprintf(buf, n, "%s %s in %s, separated by commas", count,
             k->type == CFG_INTS ? "integers" : "numbers", r);
}

/* Each parse_* stores into the field only on success; on failure it writes what follows
 * "section.key = 'text': " into why. */
static int expected(const CfgKey *k, char *why, size_t n);

static int parse_int(const CfgKey *k, const char *text, void *field, char *why, size_t n)
{
    long v;
    if (read_long(text, &v) || !in_range(k, (double)v)) return expected(k, why, n);
    *(int *)field = (int)v;
    return 0;
}

static void format_int(const CfgKey *k, const void *field, char *buf, size_t n)
{
    (void)k;
    snprintf(buf, n, "%d", *(const int *)field);
}

static int parse_float(const CfgKey *k, const char *text, void *field, char *why, size_t n)
{
    double v;
    if (read_double(text, &v) || !in_range(k, v)) return expected(k, why, n);
    *(double *)field = v;
    return 0;
}

static void format_float(const CfgKey *k, const void *field, char *buf, size_t n)
{
    (void)k;
    format_double(*(const double *)field, buf, n);
}

static int parse_bool(const CfgKey *k, const char *text, void *field, char *why, size_t n)
{
    static const struct { const char *word; bool value; } words[] = {
        {"true", true}, {"false", false}, {"yes", true}, {"no", false},
        {"on", true}, {"off", false}, {"1", true}, {"0", false},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(words); i++)
        if (strcasecmp(text, words[i].word) == 0) {
            *(bool *)field = words[i].value;
            return 0;
        }
    return expected(k, why, n);
}

static void format_bool(const CfgKey *k, const void *field, char *buf, size_t n)
{
    (void)k;
    snprintf(buf, n, "%s", *(const bool *)field ? "true" : "false");
}

static int parse_string(const CfgKey *k, const char *text, void *field, char *why, size_t n)
{
    size_t len = strlen(text);
    if (len > (size_t)k->max || ((k->flags & CFG_FILENAME) && len && !filename_ok(text)))
        return expected(k, why, n);
    if (!text_ok(text)) {
        snprintf(why, n, "expected text on one line, without a ';' after a space (an experiment "
                 "file reads that as a comment)");
        return -1;
    }
    memset(field, 0, k->size);
    memcpy(field, text, len);
    return 0;
}

static void format_string(const CfgKey *k, const void *field, char *buf, size_t n)
{
    (void)k;
    snprintf(buf, n, "%s", (const char *)field);
}

/* Enum fields are C enums of int size (checked in config_defaults); memcpy keeps the access
 * independent of the enum's underlying type. */
static int parse_enum(const CfgKey *k, const char *text, void *field, char *why, size_t n)
{
    int best = -1, best_d = 3;
    for (int i = 0; k->choices[i]; i++) {
        if (strcmp(text, k->choices[i]) == 0) {
            memcpy(field, &i, sizeof i);
            return 0;
        }
        int d = cm_edit_distance(text, k->choices[i]);
        if (d < best_d) best = i, best_d = d;
    }
    expected(k, why, n);
    if (best >= 0) {
        size_t used = strlen(why);
        snprintf(why + used, n - used, "; did you mean '%s'?", k->choices[best]);
    }
    return -1;
}

static void format_enum(const CfgKey *k, const void *field, char *buf, size_t n)
{
    int v;
    memcpy(&v, field, sizeof v);
    snprintf(buf, n, "%s", k->choices[v]);
}

/* Lists: comma-separated values, each read like an INT or FLOAT of the same range. An empty
 * text is the empty list. */
static int parse_list(const CfgKey *k, const char *text, void *field, char *why, size_t n)
{
    bool ints = k->type == CFG_INTS;
    CfgInts iv = {0};
    CfgFloats fv = {0};
    int count = 0;
    const char *s = skip_space(text);
    while (*s) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        char item[LINE_LIMIT + 1];
        copy_trimmed(item, sizeof item, s, len);
        if (count == k->max_len) {
            char a[160];
            allowed_list(k, a, sizeof a);
            snprintf(why, n, "more than %d values: expected %s", k->max_len, a);
            return -1;
        }
        long l = 0;
        double d = 0;
        bool ok = ints ? read_long(item, &l) == 0 && in_range(k, (double)l)
                       : read_double(item, &d) == 0 && in_range(k, d);
        if (!ok) {
            char a[160];
            allowed_list(k, a, sizeof a);
            snprintf(why, n, "value %d '%s': expected %s", count + 1, item, a);
            return -1;
        }
        if (ints) iv.v[count++] = (int)l;
        else fv.v[count++] = d;
        if (!comma) break;
        s = skip_space(comma + 1);
        if (!*s) {
            snprintf(why, n, "value %d is empty (a trailing comma?)", count + 1);
            return -1;
        }
    }
    if (count < k->min_len) return expected(k, why, n);
    iv.n = fv.n = count;
    if (ints) memcpy(field, &iv, sizeof iv);
    else memcpy(field, &fv, sizeof fv);
    return 0;
}

static void format_list(const CfgKey *k, const void *field, char *buf, size_t n)
{
    const CfgInts *iv = field;
    const CfgFloats *fv = field;
    int count = k->type == CFG_INTS ? iv->n : fv->n;
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < count && used < n; i++) {
        char v[32];
        if (k->type == CFG_INTS) snprintf(v, sizeof v, "%d", iv->v[i]);
        else format_double(fv->v[i], v, sizeof v);
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? "," : "", v);
    }
}

typedef struct TypeOps {
    const char *name;            /* --help's type column */
    size_t size;                 /* of the field (0: any, for strings) */
    int (*parse)(const CfgKey *k, const char *text, void *field, char *why, size_t n);
    void (*format)(const CfgKey *k, const void *field, char *buf, size_t n);
    void (*allowed)(const CfgKey *k, char *buf, size_t n);
} TypeOps;

static const TypeOps type_ops[] = {
    [CFG_INT] = {"int", sizeof(int), parse_int, format_int, allowed_int},
    [CFG_FLOAT] = {"float", sizeof(double), parse_float, format_float, allowed_float},
    [CFG_BOOL] = {"bool", sizeof(bool), parse_bool, format_bool, allowed_bool},
    [CFG_STRING] = {"string", 0, parse_string, format_string, allowed_string},
    [CFG_ENUM] = {"enum", sizeof(int), parse_enum, format_enum, allowed_enum},
    [CFG_INTS] = {"int list", sizeof(CfgInts), parse_list, format_list, allowed_list},
    [CFG_FLOATS] = {"float list", sizeof(CfgFloats), parse_list, format_list, allowed_list},
};
_Static_assert(CM_ARRAY_LEN(type_ops) == CFG_TYPE_COUNT, "one TypeOps per CfgType");
_Static_assert(sizeof(CfgMethod) == sizeof(int) && sizeof(UNetEmbedding) == sizeof(int) &&
               sizeof(OptimKind) == sizeof(int) && sizeof(SolverKind) == sizeof(int) &&
               sizeof(ScheduleKind) == sizeof(int), "enum fields are int-sized");

static int expected(const CfgKey *k, char *why, size_t n)
{
    char a[200];
    type_ops[k->type].allowed(k, a, sizeof a);
    snprintf(why, n, "expected %s", a);
    return -1;
}

static void *field_of(Config *cfg, const CfgKey *k) { return (char *)cfg + k->offset; }
static const void *cfield_of(const Config *cfg, const CfgKey *k) { return (const char *)cfg + k->offset; }

/* cfg.<key i> = text, or -1 with "section.key = 'text': expected ..." in why. */
static int assign(Config *cfg, int i, const char *text, char *why, size_t n)
{
    const CfgKey *k = &keys[i];
    char reason[REASON_LEN];
    if (type_ops[k->type].parse(k, text, field_of(cfg, k), reason, sizeof reason) == 0) return 0;
    snprintf(why, n, "%s.%s = '%s': %s", k->section, k->key, text, reason);
    return -1;
}

void config_format(const Config *cfg, int i, char *buf, size_t len)
{
    CM_ASSERT(i >= 0 && i < KEY_COUNT, "config_format: key index %d of %d", i, KEY_COUNT);
    type_ops[keys[i].type].format(&keys[i], cfield_of(cfg, &keys[i]), buf, len);
}

/* ---- lookup ---- */

static int section_find(const char *name)
{
    for (int s = 0; s < SECTION_COUNT; s++)
        if (strcmp(sections[s].name, name) == 0) return s;
    return -1;
}

static int key_find(const char *section, const char *key)
{
    for (int i = 0; i < KEY_COUNT; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].key, key) == 0) return i;
    return -1;
}

int config_key_find(const char *name)
{
    const char *dot = strchr(name, '.');
    if (!dot || (size_t)(dot - name) >= 32) return -1;
    char section[32];
    memcpy(section, name, (size_t)(dot - name));
    section[dot - name] = '\0';
    return key_find(section, dot + 1);
}

static int section_keys(const char *section)
{
    int count = 0;
    for (int i = 0; i < KEY_COUNT; i++) count += strcmp(keys[i].section, section) == 0;
    return count;
}

/* The table key nearest to section.key; a key of the same name in another section counts as
 * distance 1 (a key under the wrong section). */
static int nearest_key(const char *section, const char *key)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", section, key);
    int best = 0, best_d = INT_MAX;
    for (int i = 0; i < KEY_COUNT; i++) {
        char cand[96];
        snprintf(cand, sizeof cand, "%s.%s", keys[i].section, keys[i].key);
        int d = cm_edit_distance(full, cand);
        if (strcasecmp(key, keys[i].key) == 0) d = CM_MIN(d, 1);
        if (d < best_d) best = i, best_d = d;
    }
    return best;
}

static void unknown_key(const char *section, const char *key, char *why, size_t n)
{
    const CfgKey *k = &keys[nearest_key(section, key)];
    snprintf(why, n, "unknown key '%s.%s'; did you mean '%s.%s'?", section, key, k->section, k->key);
}

static void unknown_section(const char *section, char *why, size_t n)
{
    int best = 0, best_d = INT_MAX;
    for (int s = 0; s < SECTION_COUNT; s++) {
        int d = cm_edit_distance(section, sections[s].name);
        if (d < best_d) best = s, best_d = d;
    }
    snprintf(why, n, "unknown section [%s]; did you mean [%s]?", section, sections[best].name);
}

/* ---- [sweep] ---- */

/* Values of a sweep line are separated by '|' for list keys (whose values contain commas) and
 * when the text has a '|'; otherwise by ','. */
static char sweep_separator(const CfgKey *k, const char *text)
{
    return (k->type == CFG_INTS || k->type == CFG_FLOATS || strchr(text, '|')) ? '|' : ',';
}

/* Value j of a sweep text, trimmed. Returns false past the last value. */
static bool sweep_value(const CfgKey *k, const char *text, int j, char *out, size_t n)
{
    char sep = sweep_separator(k, text);
    const char *s = text;
    for (; j > 0; j--) {
        s = strchr(s, sep);
        if (!s) return false;
        s++;
    }
    const char *end = strchr(s, sep);
    copy_trimmed(out, n, s, end ? (size_t)(end - s) : strlen(s));
    return true;
}

/* Adds (or, with replace, replaces) the sweep of key `name`. Every value is checked against the
 * key and stored formatted as config_write would write it, joined by ", " or, when the values
 * contain commas (lists), by " | ". */
static int sweep_assign(Config *cfg, const char *name, const char *text, bool replace,
                        char *why, size_t n)
{
    enum { MAX_VALUES = 64 };
    int i = config_key_find(name);
    if (i < 0) {
        const char *dot = strchr(name, '.');
        char section[64];
        if (!dot) {
            snprintf(why, n, "sweep '%s': expected section.key = v1, v2, ...", name);
            return -1;
        }
        copy_trimmed(section, sizeof section, name, (size_t)(dot - name));
        unknown_key(section, dot + 1, why, n);
        return -1;
    }
    const CfgKey *k = &keys[i];
    bool list = k->type == CFG_INTS || k->type == CFG_FLOATS;
    char formatted[MAX_VALUES][LINE_LIMIT + 1], value[LINE_LIMIT + 1];
    const char *join = ", ";
    int count = 0;
    for (; sweep_value(k, text, count, value, sizeof value); count++) {
        Config scratch;
        char reason[REASON_LEN];
        if (count == MAX_VALUES) {
            snprintf(why, n, "sweep %s: more than %d values", name, MAX_VALUES);
            return -1;
        }
        /* Empty only where the key's own "not set" is empty (an optional list or path:
         * eval.predictor in the columns of plain solvers). */
        if (!value[0] && !(list && k->min_len == 0) && !(k->type == CFG_STRING && !k->dflt[0])) {
            snprintf(why, n, "sweep %s: value %d is empty", name, count + 1);
            return -1;
        }
        memset(&scratch, 0, sizeof scratch);
        if (type_ops[k->type].parse(k, value, field_of(&scratch, k), reason, sizeof reason)) {
            snprintf(why, n, "sweep %s: value %d '%s': %s", name, count + 1, value, reason);
            return -1;
        }
        type_ops[k->type].format(k, cfield_of(&scratch, k), formatted[count], sizeof formatted[0]);
        if (list || strchr(formatted[count], ',')) join = " | ";
    }
    CfgSweepKey e = {.key = i, .count = count};
    size_t used = 0;
    for (int j = 0; j < count && used < sizeof e.values; j++)
        used += (size_t)snprintf(e.values + used, sizeof e.values - used, "%s%s", j ? join : "",
                                 formatted[j]);
    if (used >= sizeof e.values || strlen(name) + 3 + used > LINE_LIMIT) {
        snprintf(why, n, "sweep %s: the values are too long (a line holds %d characters)", name,
                 LINE_LIMIT);
        return -1;
    }
    int slot = cfg->sweep.count;
    for (int s = 0; s < cfg->sweep.count; s++)
        if (cfg->sweep.keys[s].key == i) slot = s;
    if (slot < cfg->sweep.count && !replace) {
        snprintf(why, n, "sweep %s is given twice", name);
        return -1;
    }
    if (slot == CFG_SWEEP_MAX) {
        snprintf(why, n, "sweep %s: at most %d keys can be swept", name, CFG_SWEEP_MAX);
        return -1;
    }
    cfg->sweep.keys[slot] = e;
    if (slot == cfg->sweep.count) cfg->sweep.count++;
    return 0;
}

int config_sweep_value(const Config *cfg, int s, int j, char *out, size_t len)
{
    if (s < 0 || s >= cfg->sweep.count) return cm_fail("[sweep] has no line %d", s);
    const CfgKey *k = &keys[cfg->sweep.keys[s].key];
    if (j < 0 || !sweep_value(k, cfg->sweep.keys[s].values, j, out, len))
        return cm_fail("sweep %s.%s has no value %d", k->section, k->key, j);
    return 0;
}

/* "sample.solver" of [sweep] line s, for messages. */
static const char *sweep_key_name(const Config *cfg, int s, char *out, size_t n)
{
    const CfgKey *k = &keys[cfg->sweep.keys[s].key];
    snprintf(out, n, "%s.%s", k->section, k->key);
    return out;
}

/* The size of the grid or the zip is checked here, not per line: which one the lines span
 * depends on eval.sweep, which may come later in the file or from a --set. */
int config_sweep_count(const Config *cfg)
{
    char a[128], b[128];
    if (cfg->eval.sweep == CFG_SWEEP_ZIP) {
        for (int s = 1; s < cfg->sweep.count; s++)
            if (cfg->sweep.keys[s].count != cfg->sweep.keys[0].count)
                return cm_fail("[sweep] with eval.sweep = zip: every line lists one value per variant, "
                               "but %s has %d values and %s has %d", sweep_key_name(cfg, 0, a, sizeof a),
                               cfg->sweep.keys[0].count, sweep_key_name(cfg, s, b, sizeof b),
                               cfg->sweep.keys[s].count);
        return cfg->sweep.count ? cfg->sweep.keys[0].count : 1;
    }
    long long count = 1;
    for (int s = 0; s < cfg->sweep.count; s++) {
        count *= cfg->sweep.keys[s].count;
        if (count > CFG_SWEEP_VARIANTS)
            return cm_fail("[sweep]: the grid of its %d lines has more than %d variants (up to %s); "
                           "eval.sweep = zip varies the lines together instead", cfg->sweep.count,
                           CFG_SWEEP_VARIANTS, sweep_key_name(cfg, s, a, sizeof a));
    }
    return (int)count;
}

int config_sweep_variant(const Config *base, int i, Config *out, char *label, size_t len)
{
    int count = config_sweep_count(base);
    if (count < 0) return -1;
    if (i < 0 || i >= count)
        return cm_fail("sweep variant %d does not exist (the %s has %d)", i,
                       base->eval.sweep == CFG_SWEEP_ZIP ? "zip" : "grid", count);
    Config v;
    memcpy(&v, base, sizeof v);
    memset(&v.sweep, 0, sizeof v.sweep);
    int pick[CFG_SWEEP_MAX];
    for (int s = base->sweep.count - 1, rest = i; s >= 0; s--) {
        pick[s] = base->eval.sweep == CFG_SWEEP_ZIP ? i : rest % base->sweep.keys[s].count;
        rest /= base->sweep.keys[s].count;
    }
    size_t used = 0;
    if (label && len) label[0] = '\0';
    for (int s = 0; s < base->sweep.count; s++) {
        const CfgSweepKey *e = &base->sweep.keys[s];
        const CfgKey *k = &keys[e->key];
        char value[LINE_LIMIT + 1], why[WHY_LEN];
        bool found = sweep_value(k, e->values, pick[s], value, sizeof value);
        CM_ASSERT(found && assign(&v, e->key, value, why, sizeof why) == 0,
                  "sweep %s.%s: stored value %d does not parse", k->section, k->key, pick[s]);
        if (label && used < len)
            used += (size_t)snprintf(label + used, len - used, "%s%s.%s=%s", s ? "," : "",
                                     k->section, k->key, value);
    }
    memcpy(out, &v, sizeof v);
    return 0;
}

/* ---- defaults ---- */

void config_defaults(Config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < KEY_COUNT; i++) {
        const CfgKey *k = &keys[i];
        size_t size = type_ops[k->type].size;
        CM_ASSERT(size == 0 || size == k->size, "key %s.%s: a %s key on a field of %zu bytes",
                  k->section, k->key, type_ops[k->type].name, k->size);
        CM_ASSERT(k->type != CFG_STRING || k->max < (double)k->size, "key %s.%s: max length %g "
                  "does not fit %zu bytes", k->section, k->key, k->max, k->size);
        CM_ASSERT(section_find(k->section) >= 0, "key %s.%s: no such section", k->section, k->key);
        char why[WHY_LEN];
        CM_ASSERT(assign(cfg, i, k->dflt, why, sizeof why) == 0, "default of %s", why);
    }
}

/* ---- the INI reader ---- */

enum { MAX_ERRORS = 12 };

typedef struct Parser {
    const char *name;            /* the file, as messages name it */
    Config *cfg;
    const char *pos;             /* the next line of the text */
    int line;                    /* the line inih is handling */
    bool indented;               /* it starts with white space */
    int prev_key;                /* the key of the previous handler call on this section, or -1 */
    int seen[KEY_COUNT];         /* the line that set each key (0: not yet) */
    int sweep_seen[KEY_COUNT];
    char errors[960];            /* one "name:line: message\n" per error (cm_fail keeps 1024) */
    int error_lines[MAX_ERRORS];
    int nerrors, dropped;
} Parser;

static void parse_error(Parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void parse_error(Parser *p, int line, const char *fmt, ...)
{
    size_t used = strlen(p->errors), room = sizeof p->errors - used;
    char msg[WHY_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Keep room for the "(and N more errors)" line. */
    size_t need = (size_t)snprintf(NULL, 0, "%s:%d: %s\n", p->name, line, msg) + 32;
    if (p->nerrors == MAX_ERRORS || need > room) {
        p->dropped++;
        return;
    }
    snprintf(p->errors + used, room, "%s:%d: %s\n", p->name, line, msg);
    p->error_lines[p->nerrors++] = line;
}

/* What inih would accept quietly or misread: a section header must be "[name]" with a known
 * name (inih takes the text up to the first ']' as it is, and ignores what follows), and a
 * line at the margin must be a comment, a header or contain '=' (or inih's ':'). */
static void check_line(Parser *p, const char *line)
{
    char text[LINE_LIMIT + 8];
    copy_trimmed(text, sizeof text, line, strlen(line));
    const char *s = text;
    if (!*s || *s == ';' || *s == '#') return;
    if (*s == '[') {
        p->prev_key = -1;
        const char *end = strchr(s, ']');
        if (!end) {
            parse_error(p, p->line, "'%s': a section header needs a closing ']'", s);
            return;
        }
        const char *after = skip_space(end + 1);
        if (*after && *after != ';' && *after != '#')
            parse_error(p, p->line, "'%s': text after the section header", s);
        char section[64];
        copy_trimmed(section, sizeof section, s + 1, (size_t)(end - s - 1));
        if ((size_t)(end - s - 1) != strlen(section) || section_find(section) < 0) {
            char why[300];
            snprintf(section, sizeof section, "%.*s", (int)CM_MIN(end - s - 1, 60), s + 1);
            unknown_section(section, why, sizeof why);
            parse_error(p, p->line, "%s", why);
        }
        return;
    }
    if (!p->indented && !strpbrk(s, "=:"))
        parse_error(p, p->line, "'%s': expected 'key = value', '[section]' or a comment", s);
}

/* inih's reader: the next line of the text, counted, with its end of line. */
static char *read_line(char *str, int num, void *stream)
{
    Parser *p = stream;
    if (!*p->pos) return NULL;
    const char *eol = strchr(p->pos, '\n');
    size_t len = eol ? (size_t)(eol - p->pos) : strlen(p->pos);
    const char *line = p->pos;
    p->pos += len + (eol != NULL);
    p->line++;
    if (p->line == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) line += 3, len -= 3;
    if (len + 2 > (size_t)num) {
        parse_error(p, p->line, "the line is longer than %d characters", num - 2);
        p->indented = false;
        snprintf(str, (size_t)num, ";\n");
        return str;
    }
    memcpy(str, line, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    p->indented = len && isspace((unsigned char)line[0]);
    check_line(p, str);
    return str;
}

static int on_pair(void *user, const char *section, const char *name, const char *value)
{
    Parser *p = user;
    char why[WHY_LEN];
    if (!*section) {
        parse_error(p, p->line, "'%s' is outside any section: put it under [section]", name);
        return 1;
    }
    if (section_find(section) < 0) return 1;          /* reported at the header */
    if (strcmp(section, "sweep") == 0) {
        int i = config_key_find(name);
        if (i >= 0 && p->sweep_seen[i]) {
            parse_error(p, p->line, "sweep %s is given twice (first on line %d)", name, p->sweep_seen[i]);
        } else if (sweep_assign(p->cfg, name, value, false, why, sizeof why)) {
            parse_error(p, p->line, "%s", why);
        } else {
            p->sweep_seen[i] = p->line;
        }
        return 1;
    }
    int i = key_find(section, name);
    if (p->indented && i >= 0 && i == p->prev_key) {
        parse_error(p, p->line, "this indented line would continue the value of %s.%s: "
                    "multi-line values are not allowed (remove the indentation)", section, name);
        return 1;
    }
    p->prev_key = i;
    if (i < 0) {
        unknown_key(section, name, why, sizeof why);
        parse_error(p, p->line, "%s", why);
    } else if (p->seen[i]) {
        parse_error(p, p->line, "%s.%s is given twice (first on line %d)", section, name, p->seen[i]);
    } else if (assign(p->cfg, i, value, why, sizeof why)) {
        parse_error(p, p->line, "%s", why);
    } else {
        p->seen[i] = p->line;
    }
    return 1;
}

static bool has_error_at(const Parser *p, int line)
{
    for (int e = 0; e < p->nerrors; e++)
        if (p->error_lines[e] == line) return true;
    return false;
}

/* Parses text over cfg's current values; cfg is changed only on success. */
static int parse_text(Config *cfg, const char *text, const char *name)
{
    Parser *p = cm_calloc(1, sizeof *p);
    Config work;
    memcpy(&work, cfg, sizeof work);
    p->name = name;
    p->cfg = &work;
    p->pos = text;
    p->prev_key = -1;
    int rc = ini_parse_stream(read_line, p, on_pair, p);
    if (rc > 0 && !has_error_at(p, rc))
        parse_error(p, rc, "inih cannot read this line (expected 'key = value', '[section]' or a comment)");
    else if (rc < 0)
        parse_error(p, 0, "inih failed (%d)", rc);
    int status = 0;
    if (p->nerrors || p->dropped) {
        size_t used = strlen(p->errors);
        if (used && p->errors[used - 1] == '\n') p->errors[--used] = '\0';
        if (p->dropped)
            snprintf(p->errors + used, sizeof p->errors - used, "\n(and %d more errors)", p->dropped);
        status = cm_fail("%s", p->errors);
    } else {
        memcpy(cfg, &work, sizeof work);
    }
    free(p);
    return status;
}

int config_from_string(Config *cfg, const char *text, const char *name)
{
    Config c;
    config_defaults(&c);
    if (parse_text(&c, text, name)) return -1;
    memcpy(cfg, &c, sizeof c);
    return 0;
}

/* The file's text, NUL-terminated (malloc'd), or NULL after cm_fail(). */
static char *read_text(const char *path)
{
    enum { LIMIT = 1 << 20 };
    char *buf;
    size_t len;
    int rc = cm_read_file(path, LIMIT, &buf, &len);
    if (rc == CM_READ_OPEN) {
        cm_fail("%s: cannot open the experiment file: %s", path, strerror(errno));
        return NULL;
    }
    const char *problem = rc == CM_READ_ERROR ? "cannot read it" : rc == CM_READ_TOO_LARGE ? "larger than 1 MiB: not an experiment file"
                        : memchr(buf, '\0', len) ? "it has NUL bytes: not a text file" : NULL;
    if (problem) {
        cm_fail("%s: %s", path, problem);
        free(buf);
        return NULL;
    }
    return buf;
}

/* Whether a parsed text sets any key: a line that is neither blank, a comment nor a header. */
static bool sets_a_key(const char *text)
{
    for (const char *line = text; *line;) {
        line += strspn(line, " \t\r");
        if (*line && *line != '\n' && *line != ';' && *line != '#' && *line != '[') return true;
        line = strchr(line, '\n');
        if (!line) break;
        line++;
    }
    return false;
}

int config_load(Config *cfg, const char *path)
{
    char *text = read_text(path);
    if (!text) return -1;
    Config c;
    config_defaults(&c);
    int rc = parse_text(&c, text, path);
    /* An empty file (a failed copy, a wrong path to an existing empty file) would otherwise train
     * every default: an EDM model for 10000 steps into ./runs. */
    if (rc == 0 && !sets_a_key(text))
        rc = cm_fail("%s: the experiment file sets no key (it is %s): at least experiment.method "
                     "and data.dataset are expected; see experiments/ for examples",
                     path, text[0] ? "only comments and section headers" : "empty");
    free(text);
    if (rc) return -1;
    if (!c.experiment.name[0]) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        const char *dot = strrchr(base, '.');
        size_t len = dot && dot != base ? (size_t)(dot - base) : strlen(base);
        char name[CFG_NAME_MAX];
        snprintf(name, sizeof name, "%.*s", (int)len, base);
        if (len >= CFG_NAME_MAX || !name[0] || !filename_ok(name))
            return cm_fail("%s: experiment.name is not set, and the file name '%.*s' is not a run "
                           "name (at most %d letters, digits, '.', '_', '-'): set experiment.name",
                           path, (int)len, base, CFG_NAME_MAX - 1);
        memcpy(c.experiment.name, name, strlen(name));
    }
    snprintf(c.source, sizeof c.source, "%s", path);
    memcpy(cfg, &c, sizeof c);
    return 0;
}

int config_set(Config *cfg, const char *assignment)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = strchr(assignment, '.');
    if (!eq || !dot || dot > eq)
        return cm_fail("--set %s: expected section.key=value (e.g. train.lr=0.0002)", assignment);
    char section[64], key[128], value[LINE_LIMIT + 1], why[WHY_LEN];
    copy_trimmed(section, sizeof section, assignment, (size_t)(dot - assignment));
    copy_trimmed(key, sizeof key, dot + 1, (size_t)(eq - dot - 1));
    copy_trimmed(value, sizeof value, eq + 1, strlen(eq + 1));
    if (strlen(eq + 1) > LINE_LIMIT)
        return cm_fail("--set %s: the value is longer than %d characters", assignment, LINE_LIMIT);
    int i = key_find(section, key);
    if (strcmp(section, "sweep") == 0) {
        if (sweep_assign(cfg, key, value, true, why, sizeof why) == 0) return 0;
    } else if (section_find(section) < 0) {
        unknown_section(section, why, sizeof why);
    } else if (i < 0) {
        unknown_key(section, key, why, sizeof why);
    } else if (assign(cfg, i, value, why, sizeof why) == 0) {
        return 0;
    }
    return cm_fail("--set %s: %s", assignment, why);
}

int config_set_list(Config *cfg, const char *const *assignments, int n)
{
    for (int i = 0; i < n; i++)
        if (config_set(cfg, assignments[i]) != 0) return -1;
    return 0;
}

/* ---- writing ---- */

int config_write(const Config *cfg, FILE *f)
{
    fprintf(f, "; resolved configuration: every key, defaults included\n");
    for (int s = 0; s < SECTION_COUNT; s++) {
        if (!section_keys(sections[s].name)) continue;
        fprintf(f, "\n[%s]\n", sections[s].name);
        for (int i = 0; i < KEY_COUNT; i++) {
            if (strcmp(keys[i].section, sections[s].name)) continue;
            char v[LINE_LIMIT + 1];
            config_format(cfg, i, v, sizeof v);
            fprintf(f, "%s =%s%s\n", keys[i].key, v[0] ? " " : "", v);
        }
    }
    if (cfg->sweep.count) {
        fprintf(f, "\n[sweep]\n");
        for (int s = 0; s < cfg->sweep.count; s++) {
            const CfgKey *k = &keys[cfg->sweep.keys[s].key];
            fprintf(f, "%s.%s = %s\n", k->section, k->key, cfg->sweep.keys[s].values);
        }
    }
    if (fflush(f) || ferror(f)) return cm_fail("writing the configuration: %s", strerror(errno));
    return 0;
}

char *config_to_string(const Config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CM_ASSERT(f, "open_memstream: out of memory");
    int rc = config_write(cfg, f);
    fclose(f);
    CM_ASSERT(rc == 0, "config_to_string: %s", cm_errmsg());
    return text;
}

int config_get(const Config *cfg, const char *name, char *buf, size_t len)
{
    int i = config_key_find(name);
    if (i < 0) return cm_fail("unknown configuration key '%s'", name);
    config_format(cfg, i, buf, len);
    return 0;
}

/* ---- key lists ---- */

static void quoted_default(const CfgKey *k, char *buf, size_t n)
{
    snprintf(buf, n, "%s", k->dflt[0] ? k->dflt : "\"\"");
}

void config_help(FILE *f)
{
    fprintf(f, "Experiment file keys ([section] then key = value; --set section.key=value "
               "overrides one):\n");
    for (int s = 0; s < SECTION_COUNT; s++) {
        fprintf(f, "\n[%s]  %s\n", sections[s].name, sections[s].help);
        for (int i = 0; i < KEY_COUNT; i++) {
            const CfgKey *k = &keys[i];
            if (strcmp(k->section, sections[s].name)) continue;
            char full[64], dflt[64], allowed[200];
            snprintf(full, sizeof full, "%s.%s", k->section, k->key);
            quoted_default(k, dflt, sizeof dflt);
            type_ops[k->type].allowed(k, allowed, sizeof allowed);
            fprintf(f, "  %-26s %-10s default %-14s %s\n      %s\n", full, type_ops[k->type].name,
                    dflt, allowed, k->help);
        }
    }
}

void config_markdown(FILE *f)
{
    fprintf(f, "| key | type | default | allowed | description |\n|---|---|---|---|---|\n");
    for (int i = 0; i < KEY_COUNT; i++) {
        const CfgKey *k = &keys[i];
        char dflt[64], allowed[200];
        quoted_default(k, dflt, sizeof dflt);
        type_ops[k->type].allowed(k, allowed, sizeof allowed);
        fprintf(f, "| `%s.%s` | %s | `%s` | %s | %s |\n", k->section, k->key,
                type_ops[k->type].name, dflt, allowed, k->help);
    }
    fprintf(f, "\nSections:");
    for (int s = 0; s < SECTION_COUNT; s++) {
        const char *name = sections[s].name;
        const char *note = strcmp(name, "sweep") == 0 ? " (`section.key = v1, v2, ...` lines)" : "";
        fprintf(f, " `[%s]`%s%s", name, note, s + 1 < SECTION_COUNT ? "," : ".\n");
    }
}

/* ---- helpers for the consumers ---- */

const char *config_enum_name(const char *key, int value)
{
    int i = config_key_find(key);
    if (i < 0 || keys[i].type != CFG_ENUM || value < 0) return NULL;
    for (int c = 0; keys[i].choices[c]; c++)
        if (c == value) return keys[i].choices[c];
    return NULL;
}

const char *config_method_name(CfgMethod method)
{
    return config_enum_name("experiment.method", (int)method);
}

double config_skip_scale(const Config *cfg)
{
    return cfg->model.skip_scale == CFG_SKIP_ONE ? 1.0 : M_SQRT1_2;
}

int config_ct_s0(const Config *cfg)
{
    if (cfg->ct.s0) return cfg->ct.s0;
    return cfg->ct.curriculum == CFG_CURRICULUM_DOUBLING ? 10 : 2;
}

int config_ct_s1(const Config *cfg)
{
    if (cfg->ct.s1) return cfg->ct.s1;
    return cfg->ct.curriculum == CFG_CURRICULUM_DOUBLING ? 1280 : 150;
}
