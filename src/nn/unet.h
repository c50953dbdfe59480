/* unet.h: the configurable U-Net F_theta of every trainer (DDPM++ layout, shrunk to CPU size:
 * reference/cm.md §8.2 and §8.4; BCM's second time input: reference/bcm.md §2.2).
 *
 * Layout, for L = channel_mult_count levels at resolutions res_l = H >> l:
 *   embedding: c_noise [N] -> [sin, cos] features (base_channels wide, positional or Fourier)
 *              -> map_layer0 (-> 4*base) -> SiLU -> map_layer1 (4*base -> 4*base) -> SiLU = emb.
 *              Two times (BCM): the u branch has its own map_u_layer0/1; then
 *              emb = SiLU(map_align(concat(e_t, e_u))) with map_align Linear(2E -> E, no bias),
 *              where e_t, e_u are the branches before their final SiLU.
 *   conv_in (3x3, img_channels -> base); push.
 *   enc.<l>: num_blocks ResBlocks (-> base*mult[l]), each followed by attention when res_l is
 *            listed in attn_resolutions; push after each. enc.<l>.down (3x3 stride 2) between
 *            levels; push.
 *   mid: block0, attn (if mid_attn), block1; its output is the bottleneck (AMED).
 *   dec.<l>, l = L-1..0: num_blocks+1 ResBlocks on concat(h, pop) (+ attention as above);
 *            dec.<l>.up (nearest 2x + 3x3 conv) between levels.
 *   norm_out (GN), SiLU, conv_out (3x3 -> img_channels, near-zero init) = F.
 * Parameter names are the PyTorch twin's state_dict keys (tools/cmlab_torch.py), e.g.
 * "enc.0.block1.conv2.weight", "dec.2.attn0.q.weight", "map_layer0.bias".
 *
 * Preconditioning (c_in, c_skip, c_out, c_noise) is the trainers' job (train/precond.h,
 * precond_forward; its PRECOND_BCM kind is what feeds cnoise_u to a two_times net): the input x
 * is already c_in * x and the noise inputs are c_noise values. The noise levels are tensors so
 * that a gradient can flow into them (AMED backpropagates through a frozen U-Net into sigma).
 *
 * Fourier frequencies: W ~ N(0, fourier_scale^2) is a frozen, non-trainable buffer held here
 * (fourier_freqs), generated in unet_init from (seed, UNET_STREAM_FOURIER). It is not in the
 * ParamSet on purpose: then no optimiser, weight decay (AdamW) or EMA can touch it, and
 * params_randomize alone initialises the trainable weights. It is a pure function of the config
 * (seed, scale), which every checkpoint carries; the PyTorch twin regenerates it the same way, or
 * reads it from /buffers/map_noise.freqs when a checkpoint stores it.
 *
 * Invariants: unet_init builds the layout only (numbers: params_randomize(&net->ps, w, seed));
 * a UNet holds no pointers into its ParamSet, and forward never allocates outside the Ctx arena.
 */
#ifndef CM_UNET_H
#define CM_UNET_H

#include <stdbool.h>
#include <stdio.h>

#include "nn/layers.h"

#define UNET_MAX_LEVELS 6
#define UNET_MAX_BLOCKS 8
#define UNET_MAX_ATTN 6
/* Rng stream of the Fourier frequencies (with seed = cfg.seed, step 0, sample 0). */
#define UNET_STREAM_FOURIER 0x464f5552u

typedef enum UNetEmbedding {
    UNET_EMB_POSITIONAL,         /* EDM / DDPM++: c_noise = ln(sigma)/4 */
    UNET_EMB_FOURIER,            /* NCSN++: Gaussian Fourier features with fourier_scale */
} UNetEmbedding;

typedef struct UNetConfig {
    int img_channels;            /* 1 or 3 */
    int img_h, img_w;            /* the table's input size; forward takes any size divisible by 2^(L-1) */
    int base_channels;           /* also the width of the noise features; a multiple of 4 */
    int channel_mult[UNET_MAX_LEVELS];
    int channel_mult_count;      /* L, the number of levels */
    int num_blocks;              /* ResBlocks per encoder level (the decoder has one more) */
    int attn_resolutions[UNET_MAX_ATTN];
    int attn_resolutions_count;
    bool mid_attn;               /* attention in the middle block (DDPM++: yes) */
    int attn_heads;              /* 1 = single head; must divide every attention's channels */
    float dropout;               /* in every ResBlock */
    UNetEmbedding emb_type;
    float fourier_scale;         /* std of W (UNET_EMB_FOURIER) */
    float skip_scale;            /* 1 or sqrt(0.5): residual sums are multiplied by it */
    bool two_times;              /* BCM: a second noise input (u) */
    uint64_t seed;               /* of the Fourier frequencies */
} UNetConfig;

/* DDPM++ defaults at CPU size (reference/cm.md §8.4): 1x28x28, base 32, mult (1,2,2),
 * 2 blocks, no attention resolutions but a middle attention, 1 head, dropout 0, positional,
 * skip_scale sqrt(0.5), one time input, seed 0. */
UNetConfig unet_config_default(void);

/* One row of the layer table: a layer name, its output shape [C,H,W] at img_h x img_w, and its
 * parameter count. */
typedef struct UNetTableRow {
    char name[48];
    int c, h, w;
    size_t params;
} UNetTableRow;

typedef struct UNetLevel {
    ResBlock enc[UNET_MAX_BLOCKS];
    Attention enc_attn[UNET_MAX_BLOCKS];
    Downsample down;             /* all levels but the last */
    ResBlock dec[UNET_MAX_BLOCKS + 1];
    Attention dec_attn[UNET_MAX_BLOCKS + 1];
    Upsample up;                 /* all levels but the first */
    bool attn;                   /* this level's resolution is in attn_resolutions */
} UNetLevel;

typedef struct UNet {
    UNetConfig cfg;
    ParamSet ps;
    int emb_dim;                 /* E = 4 * base_channels */
    Linear map_layer0, map_layer1, map_u_layer0, map_u_layer1, map_align;
    float *fourier_freqs;        /* [base_channels/2] for UNET_EMB_FOURIER, else NULL */
    Conv2d conv_in;
    UNetLevel levels[UNET_MAX_LEVELS];
    ResBlock mid_block0, mid_block1;
    Attention mid_attn;
    GroupNorm norm_out;
    Conv2d conv_out;
    int num_dropout;             /* ResBlocks, i.e. dropout streams used (unet_forward) */
    UNetTableRow *table;
    int table_len, table_cap;
} UNet;

/* Validates cfg and builds the layout. Returns 0, or -1 with cm_fail() naming the bad field. */
int unet_init(UNet *net, const UNetConfig *cfg);
void unet_free(UNet *net);
/* The layer table: name, output shape at the configured size, parameters; then the total. */
void unet_print_table(const UNet *net, FILE *f);
/* Sum of the parameter slices' element counts (ps.total also counts alignment padding). */
size_t unet_param_count(const UNet *net);

/* F = U-Net(x; c_noise(t)[, c_noise(u)]) -> [N,img_channels,H,W].
 *   x:        [N,img_channels,H,W], already multiplied by c_in; H, W divisible by 2^(L-1)
 *   cnoise_t: [N] (or [N,1]); cnoise_u: [N] for two_times, else NULL
 *   dropout:  NULL in eval mode. ResBlock i (in forward order) draws its mask from
 *             {dropout->seed, dropout->stream + i, dropout->step}, i < num_dropout, for samples
 *             sample0..; so the same Rng gives the same masks (CT's online and target passes),
 *             and the caller must keep streams stream..stream+num_dropout-1 for dropout alone.
 *   bottleneck: when not NULL, receives the middle block's output [N,C_mid,H>>(L-1),W>>(L-1)]. */
Tensor *unet_forward(Ctx *c, const UNet *net, const WeightSet *ws, Tensor *x, Tensor *cnoise_t,
                     Tensor *cnoise_u, const Rng *dropout, int sample0, Tensor **bottleneck);

#endif
