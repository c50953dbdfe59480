/* amed.h: the AMED step (reference/amed.md §2-3; Zhou et al., CVPR 2024, arXiv 2312.00094), its
 * plugins, and sampling with a trained predictor (nn/mlp.h).
 *
 * VE/EDM form, t = sigma, D the teacher's denoiser. One step n -> n+1 over the schedule of N
 * points (t_n > t_{n+1}, h = t_{n+1} - t_n):
 *   d_n = (x_n - D(x_n, t_n)) / t_n, or x_n / sqrt(1 + t_n^2) for an AFS first step (no NFE)
 *   f   = the channel mean of the U-Net bottleneck of that same evaluation, detached (zeros at
 *         an AFS step: there is no evaluation)
 *   (r, c, a) = g(f, t_n, t_{n+1})      (c = 1 without the S_dir head, a = 1 without S_time)
 *   s   = t_{n+1}^r t_n^(1-r)           per sample
 *   x_s = first sub-step from t_n to s
 *   d_s = (x_s - D(x_s, a s)) / s       the network sees a s; the divisor is s
 *   x_{n+1} = second sub-step from s to t_{n+1}, c scaling its update
 * NFE = 2(N-1) - afs. The sub-steps by plugin, as diff-sampler's amed-solver-main/solvers_amed.py
 * (checked against amed_sampler, euler_sampler, dpm_2_sampler, ipndm_sampler there):
 *   amed   (AMED-Solver)  x_s = x_n + (s - t_n) d_n;  x_{n+1} = x_n + c h d_s.
 *          With r = 1/2, c = a = 1 this is DPM-Solver-2 (solvers.h dpm2) exactly.
 *   euler  x_s = x_n + (s - t_n) d_n;  x_{n+1} = x_s + c (t_{n+1} - s) d_s.
 *   dpm2   x_s = x_n + (s - t_n) d_n;  x_{n+1} = x_n + c h [(1/(2r)) d_s + (1 - 1/(2r)) d_n]
 *          (DPM-Solver-2 with its intermediate point at r; r = 1/2 is the plain solver).
 *   ipndm  both sub-steps are Adams-Bashforth steps with iPNDM's fixed coefficients (solvers.h
 *          ipndm) over one shared history of directions (newest first, at most max_order - 1
 *          kept): order p = min(max_order, |hist| + 1);
 *            x_s     = x_n + (s - t_n) AB_p(d_n, hist),         then d_n joins hist;
 *            x_{n+1} = x_s + c (t_{n+1} - s) AB_p(d_s, hist),   then d_s joins hist (detached).
 *          The AFS step is the one with an empty history (the first).
 *   dpmpp  multistep DPM-Solver++ (solvers.h dpmpp2m/dpmpp3m, data prediction, thresholding and
 *          lower_order_final on; diff-sampler's dpm_pp_sampler) over the 2N-1 points t_0, s_0,
 *          t_1, s_1, ..., t_{N-1}, the s_n per sample (lambda = -ln s per sample): one history
 *          of thresholded data predictions m and their times (the newest 3 kept; m_n from
 *          D(x_n, t_n), or x_n - t_n d_n at the AFS step), sub-step k = 2n+1, 2n+2 of order
 *          solver_dpmpp_order(k, 2N-1, min(max_order, 3), true):
 *            x_s     = DPM-Solver++ update from t_n to s over (m_n, older entries);
 *            m_s     = thresholded D(x_s, a s), joining the history with time s;
 *            x_{n+1} = DPM-Solver++ update from s to t_{n+1} over (m_s, m_n, ...), c scaling
 *                      every model term.
 *          The gradient reaches r through s (the update's lambda steps, its x_s and m_s) and a
 *          through m_s, and, as in the reference (torch.quantile), through the thresholding's
 *          scale when it exceeds 1.
 *          With r = 1/2, c = a = 1 on a logsnr schedule of N points the s_n are the midpoints of
 *          the logsnr schedule of 2N-1 points: this is dpmpp3m (max order 3) on that grid.
 *
 * The step is written on the tape (autograd) and serves both training (the gradient of the loss
 * reaches r, c, a through s, x_s and the noise level a s, and the predictor's weights behind them;
 * the teacher's weights are frozen: its WeightSet has no gradient buffer) and sampling (a no-grad
 * scope): a predictor samples with exactly the arithmetic it was trained with.
 */
#ifndef CM_AMED_H
#define CM_AMED_H

#include <stdbool.h>

#include "nn/mlp.h"
#include "sample/precond.h"
#include "sample/schedule.h"
#include "sample/solvers.h"

typedef enum AmedPlugin {
    AMED_PLUGIN_SOLVER,          /* "amed": AMED-Solver */
    AMED_PLUGIN_EULER,
    AMED_PLUGIN_DPM2,
    AMED_PLUGIN_IPNDM,
    AMED_PLUGIN_DPMPP,           /* "dpmpp": multistep DPM-Solver++ */
    AMED_PLUGIN_COUNT
} AmedPlugin;

/* "amed", "euler", "dpm2", "ipndm", "dpmpp", NULL-terminated (the amed.student choices). */
extern const char *const amed_plugin_names[AMED_PLUGIN_COUNT + 1];
/* Whether the plugin keeps a history across steps (ipndm, dpmpp): its training continues from its own
 * detached output, the single-step ones from the teacher's point (amed.md §4). */
bool amed_plugin_multistep(AmedPlugin p);

/* Everything a predictor samples with besides its weights (stored with it, train/methods/amed.c). */
typedef struct AmedSettings {
    AmedPlugin plugin;
    ScheduleKind schedule;
    double rho, sigma_min, sigma_max;
    int N;                       /* time points: N - 1 steps */
    bool afs;
    int max_order;               /* ipndm: 1..4; dpmpp: min(max_order, 3) */
} AmedSettings;

/* NFE = 2(N - 1) - afs. */
int amed_nfe(const AmedSettings *s);

/* The frozen teacher denoiser: a U-Net, its preconditioning and its weights. */
typedef struct AmedTeacher {
    const UNet *net;
    PrecondParams pre;
    const float *w;
} AmedTeacher;

/* A batch's trajectory state across steps: the ipndm and dpmpp histories (host memory,
 * detached). */
typedef struct AmedTraj {
    int B;
    size_t dim;                  /* C H W */
    int C, H, W;
    float *hist[3];              /* newest first, [B*dim] each; nhist of them in use: ipndm's
                                  * directions, dpmpp's thresholded data predictions */
    float *htime[3];             /* dpmpp: the times of hist[j], [B] each */
    int nhist;
    int steps;                   /* steps taken since the reset */
} AmedTraj;

void amed_traj_init(AmedTraj *tr, int B, int C, int H, int W);
void amed_traj_reset(AmedTraj *tr);
void amed_traj_free(AmedTraj *tr);

/* The first half of step n: d_n [B,C,H,W] and the predictor's input f [B, bottleneck] (zeros with
 * AFS), both constants (no gradient). x: [B,C,H,W] without gradient. */
typedef struct AmedBegin {
    Tensor *d, *f;
} AmedBegin;
/* The bottleneck size of T's U-Net for H x W images: (H >> (L-1)) (W >> (L-1)). */
int amed_feature_dim(const AmedTeacher *T, int H, int W);
AmedBegin amed_step_begin(Ctx *c, const AmedTeacher *T, Tensor *x, double t_cur, bool afs);

/* The second half: from x_n, d_n and the predictor's (r, c, a) (each [B]; c, a may be NULL for 1)
 * to x_{n+1} [B,C,H,W] on the tape; updates tr's history (ipndm). */
Tensor *amed_step_end(Ctx *c, const AmedTeacher *T, const AmedSettings *s, AmedTraj *tr, Tensor *x, Tensor *d,
                      Tensor *r, Tensor *cs, Tensor *a, double t_cur, double t_next);

/* One whole step n (t the N-point schedule): begin, the predictor g (weights ws), end. */
Tensor *amed_step(Ctx *c, const AmedTeacher *T, const AmedSettings *s, const AmedMLP *g, const WeightSet *ws,
                  AmedTraj *tr, Tensor *x, const double *t, int n);

/* A trained predictor with its settings (train/methods/amed.c loads one). */
typedef struct AmedPredictor {
    AmedSettings s;
    AmedMLP mlp;
    float *w;                    /* mlp.ps.total */
} AmedPredictor;

/* n samples into out [n,C,H,W]: x_0 = sigma_max z with z of (seed, STREAM_SAMPLE, i) as
 * sample_ode, then N - 1 AMED steps in no-grad batches of at most `batch`; ctx is scratch.
 * *nfe (may be NULL) gets the network evaluations per sample. */
void amed_sample(const AmedTeacher *T, const AmedPredictor *p, int C, int H, int W, int batch, Ctx *ctx, int n,
                 uint64_t seed, float *out, int *nfe);

#endif
