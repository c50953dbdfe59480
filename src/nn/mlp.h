/* mlp.h: the AMED predictor (reference/amed.md §1, AMED_predictor), a ~9k-parameter MLP that
 * maps a U-Net bottleneck and the two noise levels of a sampler step to r (where the step's
 * intermediate point goes) and, optionally, the direction scale c and the time scale a.
 *
 *   e(s)  = [sin(s f), cos(s f)], f_k = (1/10000)^(k/(h-1)), h = noise_channels/2   (raw sigma)
 *   temb  = [silu(map_layer0(e(sigma_cur))), silu(map_layer0(e(sigma_next)))]      (shared layer)
 *   u     = enc_layer1(silu(enc_layer0(bottleneck)))
 *   z     = concat(u, temb)                     [N, out_dim + 2*noise_channels] = [N,20]
 *   r     = sigmoid(fc_r(z));  c = 2 S_dir sigmoid(fc_scale_dir(z)) + 1 - S_dir  (if S_dir > 0);
 *   a     = 2 S_time sigmoid(fc_scale_time(z)) + 1 - S_time                     (if S_time > 0).
 * Parameter names are those of the reference ("enc_layer0.weight", ...): 8,950 with r and c.
 *
 * The MLP has its own ParamSet (AMED trains only it). mlp_randomize gives the reference's init:
 * xavier uniform for map_layer0, N(0, 1/fan_in) for the other weights, zero biases.
 * (params_randomize also works: it draws the same xavier bound for map_layer0 and a uniform
 * law with variance 1/fan_in for the rest.)
 */
#ifndef CM_MLP_H
#define CM_MLP_H

#include "nn/layers.h"

typedef struct MlpConfig {
    int in_dim;                  /* bottleneck values: 64 (an 8x8 map) */
    int hidden;                  /* 128 */
    int out_dim;                 /* bottleneck features: 4 */
    int noise_channels;          /* per noise level: 8 */
    float scale_dir;             /* S_dir > 0 adds the c head (AMED-Solver default 0.01) */
    float scale_time;            /* S_time > 0 adds the a head (0 by default) */
} MlpConfig;

typedef struct AmedMLP {
    MlpConfig cfg;
    ParamSet ps;
    Linear map_layer0, enc_layer0, enc_layer1, fc_r, fc_scale_dir, fc_scale_time;
} AmedMLP;

/* r, and c and a when their heads exist (NULL otherwise: the value is 1). Each is [N]. */
typedef struct MlpOutput {
    Tensor *r, *c, *a;
} MlpOutput;

/* The reference's constructor defaults with S_dir = 0.01, S_time = 0. */
MlpConfig mlp_config_default(void);
/* Returns 0, or -1 with cm_fail() naming the bad field. */
int mlp_init(AmedMLP *m, const MlpConfig *cfg);
void mlp_free(AmedMLP *m);
size_t mlp_param_count(const AmedMLP *m);
/* The reference's initialisation into w (ps.total floats); deterministic in seed. */
void mlp_randomize(const AmedMLP *m, float *w, uint64_t seed);

MlpOutput mlp_forward(Ctx *c, const AmedMLP *m, const WeightSet *ws, Tensor *bottleneck /*[N,in_dim]*/,
                      float sigma_cur, float sigma_next);

/* The MLP's input from a U-Net bottleneck: the channel mean, flattened, detached (no gradient
 * flows back into the U-Net, as in the reference's forward hook). mid [N,C,h,w] -> [N,h*w]. */
Tensor *mlp_bottleneck_input(Ctx *c, const Tensor *mid);

#endif
