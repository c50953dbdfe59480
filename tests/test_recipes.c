/* test_recipes.c EXPERIMENTS_DIR: the shipped recipes (the .ini files of experiments/ and
 * experiments/ablations/) hold the values of reference/cm.md's tables. test_experiment only parses them; here each file's
 * resolved configuration (its own keys, and the defaults it runs with) is compared with values
 * written below from the reference, each row naming the section it comes from, never read from
 * the files under test. So a recipe whose p_mean lost its sign, whose sigma_max became 8, or
 * whose iCT curriculum went back to CT's fails, naming the file, the key, both values and the
 * section.
 *
 * Every shipped file must have a row in RECIPES (a new recipe states which reference values it
 * follows), and every row must name a shipped file. The AMED rows follow reference/amed.md §4. What a file deliberately changes for a CPU
 * budget (widths, s1, batch, iterations) is not asserted; what it keeps from the paper is. The
 * iCT optimiser and EMA rows are the reference's recollections (cm.md §5: "not verified"), as the
 * recipe's own comment says. The pseudo-Huber c = 0.00054 sqrt(d) is computed, not a key:
 * test_ct_schedule checks it (0.0299 for 3x32x32). */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fixture.h"
#include "io/experiment.h"

/* key = value as config_write writes it (numbers are compared as numbers). A key "sweep.K" is
 * the file's [sweep] line of key K, its values in order, as config_sweep_value gives them;
 * "swept.K": value is one of that line's values. */
typedef struct Expect { const char *key, *value, *source; } Expect;

/* §1.1: the VE/Karras process every codebase uses; §1.4: rho of the Karras grid. */
static const Expect SHARED[] = {
    {"model.sigma_min", "0.002", "§1.1"},
    {"model.sigma_max", "80", "§1.1"},
    {"model.sigma_data", "0.5", "§1.1"},
    {"sample.rho", "7", "§1.4"},
    {0},
};

/* §1.3: EDM's lognormal training noise levels. */
static const Expect EDM[] = {
    {"edm.p_mean", "-1.2", "§1.3"},
    {"edm.p_std", "1.2", "§1.3"},
    {0},
};

/* §1.5: EDM's deterministic Heun sampler, N = 18 steps = 35 NFE on CIFAR-10. */
static const Expect HEUN35[] = {
    {"sample.solver", "heun", "§1.5"},
    {"sample.nfe", "35", "§1.5"},
    {"sample.schedule", "polynomial", "§1.4"},
    {0},
};

/* §5: iCT's discretised lognormal index sampling. Asserted for every method = ct file, whatever
 * its sampling: a sweep or --set switches it on with these values. */
static const Expect CT_LOGNORMAL[] = {
    {"ct.p_mean", "-1.1", "§5"},
    {"ct.p_std", "2", "§5"},
    {0},
};

/* §4: CT (2023): square-root curriculum from s0 = 2, target EMA mu0 = 0.9 (CIFAR-10), uniform
 * indices and weights. */
static const Expect CT_ORIGINAL[] = {
    {"ct.curriculum", "original", "§4.2"},
    {"ct.s0", "2", "§4.2"},
    {"ct.target_mu", "0.9", "§4.2"},
    {"ct.sampling", "uniform", "§5 table (CT column)"},
    {"ct.weighting", "uniform", "§4.1, §5 table (CT column)"},
    {0},
};

/* §5: every iCT switch. */
static const Expect ICT[] = {
    {"ct.loss", "pseudo_huber", "§5"},
    {"ct.sampling", "lognormal", "§5"},
    {"ct.curriculum", "doubling", "§5"},
    {"ct.s0", "10", "§5"},
    {"ct.weighting", "ict", "§5"},
    {"ct.target_mu", "0", "§5"},
    {"sample.mid_t", "0.821", "§5, §7.2"},
    {0},
};

/* §3.3: CD on CIFAR-10: 18 Karras points, Heun teacher steps, target = online (mu = 0). */
static const Expect CD[] = {
    {"cd.N", "18", "§3.3"},
    {"cd.solver", "heun", "§3.3"},
    {"cd.target_mu", "0", "§3.3"},
    {0},
};

/* §8.1: NCSN++'s macro layout on CIFAR-10 (nf 128, multipliers 2,2,2, 4 blocks, attention at 16). */
static const Expect NCSNPP[] = {
    {"data.dataset", "cifar10", "§8.1"},
    {"model.channels", "128", "§8.1"},
    {"model.channel_mult", "2,2,2", "§8.1"},
    {"model.num_blocks", "4", "§8.1"},
    {"model.attn_resolutions", "16", "§8.1"},
    {"data.hflip", "true", "§1.3, §3.3"},
    {0},
};

/* §8.4: the CPU-scale variant (nf 32, multipliers 1,2,2, 2 blocks, attention at 8x8). */
static const Expect CPU_NET[] = {
    {"data.dataset", "cifar10", "§8.4"},
    {"model.channels", "32", "§8.4"},
    {"model.channel_mult", "1,2,2", "§8.4"},
    {"model.num_blocks", "2", "§8.4"},
    {"model.attn_resolutions", "8", "§8.4"},
    {"data.hflip", "true", "§1.3, §3.3"},
    {0},
};

/* §3.3 and §4.2: the CM code's RAdam (beta1 0.9, beta2 0.999, eps 1e-8) without warm-up, clipping
 * or weight decay, and dropout 0. */
static const Expect CM_RADAM[] = {
    {"train.optimizer", "radam", "§3.3"},
    {"train.beta1", "0.9", "§3.3"},
    {"train.beta2", "0.999", "§3.3"},
    {"train.eps", "1e-08", "§3.3"},
    {"train.warmup", "0", "§3.3 (RAdam: no warm-up)"},
    {"train.grad_clip", "0", "§3.3 (no clipping)"},
    {"train.weight_decay", "0", "§3.3"},
    {"model.dropout", "0", "§3.3, §4.2"},
    {0},
};

static const Expect EDM_CIFAR10[] = {
    {"experiment.method", "edm", "§1.3"},
    {"train.batch_size", "512", "§1.3"},
    {"train.iterations", "400000", "§1.3 ([JCM] teacher)"},
    {"train.optimizer", "adam", "§1.3"},
    {"train.beta1", "0.9", "§1.3"},
    {"train.beta2", "0.999", "§1.3"},
    {"train.eps", "1e-08", "§1.3"},
    {"train.lr", "0.001", "§1.3"},
    {"train.warmup", "19531", "§1.3 (1e7/512)"},
    {"train.ema_halflife_kimg", "500", "§1.3 (half-life 0.5 Mimg)"},
    {"train.ema_rampup", "0.05", "§1.3"},
    {"model.dropout", "0.13", "§1.3"},
    {0},
};

static const Expect EDM_CPU[] = {
    {"experiment.method", "edm", "§1.3"},
    {"train.optimizer", "adam", "§1.3"},
    {0},
};

/* Issue 15 / amed.md §1: AMED's predictor reads an 8x8 bottleneck, so the 28x28 teacher is padded
 * to 32x32 (three levels: 32 -> 8). */
static const Expect PAD32[] = {
    {"data.pad_to", "32", "issue 15 (amed.md §1: the 8x8 bottleneck)"},
    {"model.channel_mult", "1,2,2", "issue 15 (three levels: 32 -> 8)"},
    {0},
};

static const Expect CD_CIFAR10[] = {
    {"experiment.method", "cd", "§3.3"},
    {"cd.loss", "l2", "§3.2-3.3 (l2: LPIPS is not available on the CPU; [JCM] released cd-l2)"},
    {"train.lr", "0.0004", "§3.3 (l2)"},
    {"train.batch_size", "512", "§3.3"},
    {"train.iterations", "800000", "§3.3"},
    {"train.ema", "0.9999", "§3.3"},
    {0},
};

static const Expect CD_CPU[] = {
    {"experiment.method", "cd", "§3.3"},
    {"cd.loss", "l2", "§3.2-3.3"},
    {"train.lr", "0.0004", "§3.3 (l2)"},
    {0},
};

static const Expect CT_CIFAR10[] = {
    {"experiment.method", "ct", "§4"},
    {"ct.s1", "150", "§4.2"},
    {"ct.loss", "l2", "§4.1 (LPIPS is not available on the CPU)"},
    {"train.lr", "0.0004", "§4.2 (launch.sh)"},
    {"train.batch_size", "512", "§4.2"},
    {"train.iterations", "800000", "§4.2"},
    {"train.ema", "0.9999", "§4.2"},
    {"model.emb_type", "fourier", "§8.1"},
    {"model.fourier_scale", "16", "§8.1"},
    {0},
};

static const Expect CT_CPU[] = {
    {"experiment.method", "ct", "§4"},
    {"ct.loss", "l2", "§4.1"},
    {"train.lr", "0.0004", "§4.2"},
    {0},
};

static const Expect ICT_CIFAR10[] = {
    {"experiment.method", "ct", "§5"},
    {"ct.s1", "1280", "§5"},
    {"train.batch_size", "1024", "§5"},
    {"train.iterations", "400000", "§5"},
    {"model.dropout", "0.3", "§5"},
    {"model.emb_type", "fourier", "§5"},
    {"model.fourier_scale", "0.02", "§5"},
    {"train.optimizer", "radam", "§5 (recollection)"},
    {"train.lr", "0.0001", "§5 (recollection)"},
    {"train.beta2", "0.995", "§5 (recollection)"},
    {"train.ema", "0.99993", "§5 (recollection)"},
    {0},
};

static const Expect ICT_CPU[] = {
    {"experiment.method", "ct", "§5"},
    {"train.optimizer", "radam", "§5 (recollection)"},
    {"train.beta2", "0.995", "§5 (recollection)"},
    {0},
};

/* bcm.md §3.3 (the official BCM code): RAdam, and §3.2: the pseudo-Huber c by iCT's rule
 * (bcm.huber_c = 0; 0.06 at ImageNet-64's 3x64x64), with iCT's lognormal masses (CT_LOGNORMAL,
 * bcm.md §1). Rows from reference/bcm.md, not cm.md. */
static const Expect BCM[] = {
    {"experiment.method", "bcm", "bcm.md §3"},
    {"train.optimizer", "radam", "bcm.md §3.3"},
    {"bcm.huber_c", "0", "bcm.md §3.2 (c = 0.00054 sqrt(D))"},
    {0},
};

/* bcm.md §3.5, right column (iCT's CIFAR-10 values, unverified for BCM) and §3.1 (doubling). */
static const Expect BCM_CIFAR10[] = {
    {"ct.curriculum", "doubling", "bcm.md §3.1"},
    {"ct.s0", "10", "bcm.md §3.1, §3.5"},
    {"ct.s1", "1280", "bcm.md §3.1, §3.5"},
    {"bcm.N", "0", "bcm.md §3.5 (from scratch: the curriculum)"},
    {"bcm.init", "", "bcm.md §3.5 (init: random)"},
    {"train.batch_size", "1024", "bcm.md §3.5"},
    {"train.lr", "0.0001", "bcm.md §3.5"},
    {"train.iterations", "400000", "bcm.md §3.5"},
    {"train.ema", "0.99993", "bcm.md §3.5"},
    {"model.dropout", "0.3", "bcm.md §3.5"},
    {"model.emb_type", "fourier", "cm.md §5"},
    {"model.fourier_scale", "0.02", "cm.md §5"},
    {0},
};

/* From scratch on Fashion-MNIST: the demo's iCT curriculum (bcm.md §3.1: iCT's doubling). */
static const Expect BCM_SCRATCH[] = {
    {"ct.curriculum", "doubling", "bcm.md §3.1"},
    {"ct.s0", "10", "bcm.md §3.1"},
    {"bcm.N", "0", "bcm.md §3.1 (from scratch: N(k))"},
    {"bcm.init", "", "bcm.md §3.5 (from scratch)"},
    {0},
};

/* ablations/cd_vs_ct.ini: CD (§3.3) against CT, both with l2 (§3.4, §9). */
static const Expect CD_VS_CT[] = {
    {"cd.loss", "l2", "§3.4"},
    {"ct.loss", "l2", "§4.1"},
    {"ct.s0", "2", "§4.2"},
    {"ct.curriculum", "original", "§4.2"},
    {"sweep.experiment.method", "cd,ct", "§9"},
    {0},
};

/* ablations/ct_vs_ict.ini: CT's values first, iCT's last, one [sweep] line per row of §5's table. */
static const Expect CT_VS_ICT[] = {
    {"ct.loss", "l2", "§4.1"},
    {"sweep.ct.loss", "l2,pseudo_huber", "§5 (metric)"},
    {"sweep.ct.target_mu", "0.9,0", "§4.2, §5 (teacher EMA)"},
    {"sweep.ct.sampling", "uniform,lognormal", "§5 (noise-level sampling)"},
    {"sweep.ct.weighting", "uniform,ict", "§5 (weighting)"},
    {"sweep.ct.curriculum", "original,doubling", "§5 (curriculum)"},
    {0},
};

/* ablations/bcm.ini: BCM against its source CM (bcm.md §6), the source first, then the BCM model
 * with re-noising and with its ancestral jumps (bcm.md §5), zipped. */
static const Expect BCM_VS_CM[] = {
    {"eval.sweep", "zip", "bcm.md §5-6 (a checkpoint with its sampler)"},
    {"sweep.eval.checkpoint",
     "runs/demo/ckpt/step_00002000.h5,runs/bcm_fashion_mnist/ckpt/step_00002000.h5,"
     "runs/bcm_fashion_mnist/ckpt/step_00002000.h5",
     "bcm.md §6 (BCM against its iCT source)"},
    {"sweep.sample.bcm_jumps", "false,false,true", "bcm.md §5 (ancestral sampling: no fresh noise)"},
    {"sweep.eval.nfe", "1,2,3,4,1,2,3,4,2,3,4", "bcm.md §6 (NFE 1 to 4; a jump needs NFE 2 or more)"},
    {"sample.times", "80,0.821,0.4,0.15", "cm.md §7.2 (T, iCT's 2-step time; 0.4 and 0.15 untuned, README says so)"},
    {0},
};

/* ablations/bcm_times.ini: the second step's time of BCM's 2-step samplers (bcm.md §5). */
static const Expect BCM_TIMES[] = {
    {"eval.sweep", "grid", "bcm.md §5 (both samplers at every time)"},
    {"eval.nfe", "2", "bcm.md §5 (two steps)"},
    {"sweep.sample.bcm_jumps", "false,true", "bcm.md §5 (re-noising and ancestral jumps)"},
    {"sweep.sample.times", "80,0.2,80,0.4,80,0.821,80,1.5,80,2.4,80,5,80,10",
     "bcm.md §5 (T = 80, t1 around its 2-step times)"},
    {0},
};

/* ablations/sampling_steps.ini: 2-step sampling around iCT's mid_t. */
static const Expect SAMPLING_STEPS[] = {
    {"experiment.method", "ct", "§7.2"},
    {"swept.sample.mid_t", "0.821", "§5, §7.2"},
    {0},
};

/* ablations/bf16.ini: issue 19's quality study, the demo's iCT recipe (src/train/demo.c, `cmlab demo
 * --print-config`) for a budget of steps, not seconds: fp32 from three seeds (the spread), bf16
 * from the first two, and the first fp32 model sampled in bf16, zipped; FD at n = 2000, 1 and 2
 * steps. */
static const Expect BF16_STUDY[] = {
    {"experiment.method", "ct", "the demo"},
    {"model.channels", "32", "the demo"},
    {"model.channel_mult", "1,2,2", "the demo"},
    {"model.num_blocks", "1", "the demo"},
    {"model.mid_attn", "false", "the demo"},
    {"train.iterations", "2000", "the demo (its N doubling 10 -> 80 over 2000 steps)"},
    {"train.time_limit", "0", "issue 19 (the same steps in fp32 and bf16)"},
    {"train.lr", "0.001", "the demo"},
    {"train.warmup", "100", "the demo"},
    {"train.ema", "0.99", "the demo"},
    {"train.batch_size", "64", "the demo"},
    {"ct.s1", "80", "the demo"},
    {"eval.sweep", "zip", "issue 19 (a precision with its seed and checkpoint)"},
    {"eval.n", "2000", "issue 19 (FD at n = 2000)"},
    {"eval.nfe", "1,2", "issue 19 (1 and 2 steps)"},
    {"sweep.model.precision", "fp32,fp32,fp32,bf16,bf16,bf16",
     "issue 19 (fp32 three times for the spread, bf16 trained twice, bf16 sampled)"},
    {"sweep.experiment.seed", "0,1,2,0,1,0", "issue 19 (bf16 from fp32's first two seeds)"},
    {"sweep.eval.checkpoint", ",,,,,runs/ablations/bf16/00-fp32-0/ckpt/step_00002000.h5",
     "issue 19 (the fp32 seed-0 model sampled in bf16)"},
    {0},
};

/* ablations/solvers.ini: the AMED paper's protocol, one zipped column per solver (reference/amed.md
 * §5 and §7, diff-sampler's README), then EDM's 35-NFE sampler (§1.5) as the teacher row, then
 * AMED-Solver and AMED-Plugin (iPNDM) with one predictor per NFE (their sample.* values repeat the
 * predictors' settings, §4-5: time_uniform rho 1 and polynomial rho 7, both with AFS). */
static const Expect SOLVERS[] = {
    {"experiment.method", "edm", "§1.5"},
    {"eval.sweep", "zip", "amed.md §7 (each solver with its own settings)"},
    {"sweep.sample.solver", "euler,heun,dpm2,dpmpp3m,ipndm,heun,dpm2,ipndm", "amed.md §7, §1.5, §2 (r = 1/2: DPM-2)"},
    {"sweep.sample.schedule", "polynomial,polynomial,polynomial,logsnr,polynomial,polynomial,time_uniform,polynomial",
     "amed.md §5 (polynomial rho 7: Euler, Heun, DPM-2, iPNDM; logsnr: DPM-Solver++; time_uniform: AMED-Solver), "
     "§1.4"},
    {"sweep.sample.rho", "7,7,7,7,7,7,1,7", "amed.md §5, §1.4"},
    {"sweep.sample.afs", "false,true,true,false,false,false,true,true",
     "amed.md §7 (odd NFE of Heun, DPM-2 and AMED by AFS)"},
    {"sweep.sample.denoise_to_zero", "false,false,false,false,false,true,false,false", "amed.md §6 (none), §1.5"},
    {"sweep.eval.nfe", "3,5,7,9,3,5,7,9,3,5,7,9,3,5,7,9,3,5,7,9,35,3,5,7,9,3,5,7,9", "amed.md §7, §1.5"},
    {"sweep.eval.predictor",
     ",,,,,,runs/amed_solver_fashion_mnist_nfe{nfe}/ckpt/step_00000079.h5,"
     "runs/amed_plugin_ipndm_fashion_mnist_nfe{nfe}/ckpt/step_00000079.h5",
     "the recipes' own run directories (amed_*_fashion_mnist.ini headers)"},
    {"sample.ipndm_order", "4", "amed.md §6"},
    {0},
};

/* reference/amed.md §4: the AMED predictor's training (train.py defaults, launch.sh rows):
 * Adam lr 5e-3, no EMA, batch 128 for CIFAR-10, 10k latents = 79 batches of 128. */
static const Expect AMED[] = {
    {"experiment.method", "amed", "amed.md §4"},
    {"train.lr", "0.005", "amed.md §4 (train.py)"},
    {"train.optimizer", "adam", "amed.md §4"},
    {"train.beta1", "0.9", "amed.md §4"},
    {"train.beta2", "0.999", "amed.md §4"},
    {"train.ema", "", "amed.md §4 (no EMA)"},
    {"train.batch_size", "128", "amed.md §4 (launch.sh)"},
    {"train.iterations", "79", "amed.md §4 (10 kimg / 128)"},
    {"amed.N", "4", "amed.md §4 (launch.sh)"},
    {"amed.afs", "true", "amed.md §4 (launch.sh)"},
    {"amed.scale_dir", "0.01", "amed.md §4 (launch.sh)"},
    {0},
};

/* amed.md §4, AMED-Solver row: amed / heun, M = 1, time_uniform rho 1, S_time 0. */
static const Expect AMED_SOLVER[] = {
    {"amed.student", "amed", "amed.md §4"},
    {"amed.teacher_solver", "heun", "amed.md §4"},
    {"amed.M", "1", "amed.md §4"},
    {"amed.schedule", "time_uniform", "amed.md §4"},
    {"amed.rho", "1", "amed.md §4"},
    {"amed.scale_time", "0", "amed.md §4"},
    {0},
};

/* amed.md §4, plugin CIFAR-10 row: ipndm / ipndm, M = 2, polynomial rho 7, S_time 0.2, max order 4. */
static const Expect AMED_PLUGIN_IPNDM[] = {
    {"amed.student", "ipndm", "amed.md §4"},
    {"amed.teacher_solver", "ipndm", "amed.md §4"},
    {"amed.M", "2", "amed.md §4"},
    {"amed.schedule", "polynomial", "amed.md §4"},
    {"amed.rho", "7", "amed.md §4"},
    {"amed.scale_time", "0.2", "amed.md §4"},
    {"amed.max_order", "4", "amed.md §4"},
    {0},
};

/* classifier_cifar10.ini (issue #20): the feature network of CIFAR-10, on its ten labels. */
static const Expect CLF_CIFAR10[] = {
    {"data.dataset", "cifar10", "issue #20"},
    {"classifier.classes", "10", "issue #20 (CIFAR-10's labels)"},
    {0},
};

typedef struct Recipe {
    const char *file;                /* relative to EXPERIMENTS_DIR */
    const Expect *groups[7];         /* NULL-terminated */
} Recipe;

static const Recipe RECIPES[] = {
    {"edm_cifar10.ini", {SHARED, EDM, HEUN35, NCSNPP, EDM_CIFAR10}},
    {"edm_cifar10_cpu.ini", {SHARED, EDM, HEUN35, CPU_NET, EDM_CPU}},
    {"edm_fashion_mnist.ini", {SHARED, EDM, HEUN35, EDM_CPU}},
    {"edm_fashion_mnist_32.ini", {SHARED, EDM, HEUN35, EDM_CPU, PAD32}},
    {"amed_solver_fashion_mnist.ini", {SHARED, AMED, AMED_SOLVER}},
    {"amed_plugin_ipndm_fashion_mnist.ini", {SHARED, AMED, AMED_PLUGIN_IPNDM}},
    {"amed_cifar10.ini", {SHARED, AMED, AMED_SOLVER}},
    {"cd_cifar10.ini", {SHARED, CD, CM_RADAM, NCSNPP, CD_CIFAR10}},
    {"cd_cifar10_cpu.ini", {SHARED, CD, CM_RADAM, CPU_NET, CD_CPU}},
    {"ct_cifar10.ini", {SHARED, CT_LOGNORMAL, CT_ORIGINAL, CM_RADAM, NCSNPP, CT_CIFAR10}},
    {"ct_cifar10_cpu.ini", {SHARED, CT_LOGNORMAL, CT_ORIGINAL, CM_RADAM, CPU_NET, CT_CPU}},
    {"ict_cifar10.ini", {SHARED, CT_LOGNORMAL, ICT, NCSNPP, ICT_CIFAR10}},
    {"ict_cifar10_cpu.ini", {SHARED, CT_LOGNORMAL, ICT, CPU_NET, ICT_CPU}},
    {"classifier_fashion_mnist.ini", {SHARED}},
    {"classifier_cifar10.ini", {SHARED, CLF_CIFAR10}},
    {"bcm_fashion_mnist.ini", {SHARED, CT_LOGNORMAL, BCM}},
    {"bcm_scratch_fashion_mnist.ini", {SHARED, CT_LOGNORMAL, BCM, BCM_SCRATCH}},
    {"bcm_cifar10_cpu.ini", {SHARED, CT_LOGNORMAL, BCM, CPU_NET}},
    {"bcm_cifar10.ini", {SHARED, CT_LOGNORMAL, BCM, NCSNPP, BCM_CIFAR10}},
    {"ablations/cd_vs_ct.ini", {SHARED, CT_LOGNORMAL, CD, CD_VS_CT}},
    {"ablations/ct_vs_ict.ini", {SHARED, CT_LOGNORMAL, CT_ORIGINAL, CT_VS_ICT}},
    {"ablations/sampling_steps.ini", {SHARED, CT_LOGNORMAL, SAMPLING_STEPS}},
    {"ablations/bcm.ini", {SHARED, CT_LOGNORMAL, BCM_VS_CM}},
    {"ablations/bcm_times.ini", {SHARED, CT_LOGNORMAL, BCM_TIMES}},
    {"ablations/solvers.ini", {SHARED, EDM, SOLVERS}},
    {"ablations/bf16.ini", {SHARED, CT_LOGNORMAL, ICT, BF16_STUDY}},
};

#define NRECIPES ((int)CM_ARRAY_LEN(RECIPES))

static char dir[512];
static bool seen[NRECIPES];
static int files, values;

/* Two value texts as numbers, element by element (lists separated by ','). */
static bool same_numbers(const char *a, const char *b)
{
    for (;;) {
        char *ea, *eb;
        double x = strtod(a, &ea), y = strtod(b, &eb);
        if (ea == a || eb == b || !(fabs(x - y) <= 1e-12 * fabs(y))) return false;
        if (*ea != *eb) return false;
        if (!*ea) return true;
        a = ea + 1, b = eb + 1;
    }
}

/* The [sweep] values of key `name` in cfg, joined by ','; false if the file sweeps no such key. */
static bool sweep_values(const Config *cfg, const char *name, char *out, size_t len)
{
    int key = config_key_find(name);
    CM_ASSERT(key >= 0, "test_recipes: a row names the unknown key %s", name);
    for (int s = 0; s < cfg->sweep.count; s++) {
        if (cfg->sweep.keys[s].key != key) continue;
        size_t n = 0;
        out[0] = 0;
        for (int j = 0; j < cfg->sweep.keys[s].count; j++) {
            char v[CFG_SWEEP_TEXT];
            CM_ASSERT(config_sweep_value(cfg, s, j, v, sizeof v) == 0, "%s", cm_errmsg());
            n += (size_t)snprintf(out + n, len - CM_MIN(n, len), "%s%s", j ? "," : "", v);
        }
        return true;
    }
    return false;
}

/* Whether the list text `list` ("0.2,0.821,2") has the number `value`. */
static bool has_number(const char *list, const char *value)
{
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        char one[64];
        snprintf(one, sizeof one, "%.*s", (int)n, p);
        if (same_numbers(one, value)) return true;
        p += n + (p[n] == ',');
    }
    return false;
}

static void check_value(const char *file, const Config *cfg, const Expect *e)
{
    char got[CFG_SWEEP_TEXT * 2] = "";
    bool is_sweep = strncmp(e->key, "sweep.", 6) == 0, is_swept = strncmp(e->key, "swept.", 6) == 0;
    bool same;
    if (is_sweep || is_swept) {
        bool has = sweep_values(cfg, e->key + 6, got, sizeof got);
        same = has && (is_sweep ? strcmp(got, e->value) == 0 : has_number(got, e->value));
        if (!has) snprintf(got, sizeof got, "(not swept)");
    } else {
        int key = config_key_find(e->key);
        CM_ASSERT(key >= 0, "test_recipes: a row names the unknown key %s", e->key);
        config_format(cfg, key, got, sizeof got);
        int nkeys;
        CfgType type = config_keys(&nkeys)[key].type;
        /* An empty list (train.ema =) has no numbers to compare. */
        bool numbers = (type == CFG_FLOAT || type == CFG_FLOATS) && got[0] && e->value[0];
        same = numbers ? same_numbers(got, e->value) : strcmp(got, e->value) == 0;
    }
    values++;
    /* Sources are sections of reference/cm.md unless they name amed.md. */
    CHECK(same, "%s: %s = %s, but reference/%s%s says %s%s", file, e->key, got,
          strncmp(e->source, "amed.md", 7) ? "cm.md " : "", e->source, is_swept ? "a value of " : "", e->value);
}

static int check_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)ftw;
    size_t n = strlen(path);
    if (flag != FTW_F || n < 4 || strcmp(path + n - 4, ".ini")) return 0;
    const char *rel = path + strlen(dir) + 1;
    files++;
    int r = 0;
    while (r < NRECIPES && strcmp(RECIPES[r].file, rel)) r++;
    CHECK(r < NRECIPES, "%s is a shipped recipe without a row in test_recipes.c's RECIPES: add the "
          "reference/cm.md values it follows", rel);
    if (r == NRECIPES) return 0;
    seen[r] = true;
    Config cfg;
    int rc = config_load(&cfg, path);
    CHECK(rc == 0, "%s does not parse: %s", rel, cm_errmsg());
    if (rc) return 0;
    int before = values, failed = test_failed;
    for (int g = 0; RECIPES[r].groups[g]; g++)
        for (const Expect *e = RECIPES[r].groups[g]; e->key; e++) check_value(rel, &cfg, e);
    printf("  %-30s %2d values %s\n", rel, values - before, test_failed == failed ? "as the reference says" : "DIFFER");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_recipes EXPERIMENTS_DIR\n");
        return CM_EXIT_INPUT;
    }
    snprintf(dir, sizeof dir, "%s", argv[1]);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') dir[--n] = 0;
    CM_ASSERT(nftw(dir, check_file, 16, FTW_PHYS) == 0, "cannot walk %s", dir);
    for (int r = 0; r < NRECIPES; r++)
        CHECK(seen[r], "RECIPES names %s, which is not a shipped recipe under %s", RECIPES[r].file, dir);
    printf("%d shipped recipes, %d values checked against reference/cm.md\n", files, values);
    return test_summary("recipes");
}
