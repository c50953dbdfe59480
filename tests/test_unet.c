/* test_unet.c UNET.h5: the U-Net and the AMED MLP against their PyTorch twins.
 *
 * UNET.h5 is written by tests/torch/unet.py on every build (its docstring has the layout). For
 * every U-Net config /<config> this test
 *   1. builds the U-Net from the group's attributes and checks that every cmlab parameter is in
 *      the fixture and every fixture weight is a cmlab parameter, with identical shapes;
 *   2. checks the layer table's total against PyTorch's parameter count;
 *   3. runs forward + backward (seed gout) and compares the output, every parameter gradient
 *      (the worst is named), and the gradients of x and the noise inputs: each <= 1e-4;
 *   4. reruns with a frozen WeightSet (g NULL): the same dx, and no parameter tensor on the tape
 *      requires or holds a gradient;
 *   5. with dropout: a second pass with the same Rng gives the same output, an eval pass another;
 *   6. a no-grad pass gives the grad pass's output bit for bit and keeps at most half its
 *      bytes.
 * For every AMED MLP config /amed_* it compares r (and c, a) and all gradients, and the count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ops.h"
#include "fixture.h"
#include "nn/mlp.h"
#include "nn/unet.h"

#define TOL 1e-4             /* relative error allowed against the float64 reference */
#define REL_FLOOR 1e-6       /* rel_error's floor */
#define FROZEN_TOL 1e-6      /* dx of the frozen pass against the trainable one */

/* ---- fixture helpers ---- */

static void group_path(char *buf, size_t len, const char *group, const char *name)
{
    snprintf(buf, len, "/%s/%s", group, name);
}

static float *read_array(Fixture *f, const char *group, const char *name, int *ndim, int *shape)
{
    char path[256];
    group_path(path, sizeof path, group, name);
    return fixture_read(f, path, ndim, shape);
}

/* A leaf tensor over a fixture array (the data stays alive until free_inputs). */
static Tensor *read_input(Ctx *c, Fixture *f, const char *group, const char *name, bool requires_grad,
                          float **keep)
{
    int ndim, shape[4];
    *keep = read_array(f, group, name, &ndim, shape);
    return tensor_wrap(c, *keep, NULL, ndim, shape, requires_grad);
}

/* Fills w from /<group>/weights/online/<name>, checking names and shapes in both directions. */
static void load_weights(Fixture *f, const char *group, const ParamSet *ps, float *w)
{
    char dir[256];
    snprintf(dir, sizeof dir, "/%s/weights/online", group);
    fixture_load_weights(f, dir, ps, w);
}

/* Prints and checks one comparison. */
static void compare(const char *group, const char *what, const float *got, const float *want, size_t n)
{
    double e = rel_error(got, want, n, REL_FLOOR);
    printf("  %-16s %-32s rel error %.2e\n", group, what, e);
    CHECK(e <= TOL, "%s: %s rel error %.3e > %.0e", group, what, e, TOL);
}

static void compare_fixture(Fixture *f, const char *group, const char *name, const char *what, const float *got,
                            size_t n)
{
    int ndim, shape[4];
    float *want = read_array(f, group, name, &ndim, shape);
    compare(group, what, got, want, n);
    free(want);
}

/* Every parameter gradient against /<group>/grad/<name>; prints the worst. */
static void compare_param_grads(Fixture *f, const char *group, const ParamSet *ps, const float *g)
{
    double worst = -1;
    const char *worst_name = "";
    char path[256];
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->items[i];
        snprintf(path, sizeof path, "/%s/grad/%s", group, p->name);
        float *want = fixture_read(f, path, NULL, NULL);
        double e = rel_error(g + p->offset, want, p->n, REL_FLOOR);
        free(want);
        CHECK(e <= TOL, "%s: gradient of %s rel error %.3e > %.0e", group, p->name, e, TOL);
        if (e > worst || isnan(e)) {
            worst = isnan(e) ? INFINITY : e;
            worst_name = p->name;
        }
    }
    char what[160];
    snprintf(what, sizeof what, "worst param grad (%s)", worst_name);
    printf("  %-16s %-32s rel error %.2e\n", group, what, worst);
}

/* ---- the U-Net ---- */

/* The "total" row of the printed layer table. */
static size_t table_total(const UNet *net, bool show)
{
    char *buf = NULL;
    size_t len = 0, total = 0;
    FILE *m = open_memstream(&buf, &len);
    unet_print_table(net, m);
    fclose(m);
    if (show) fputs(buf, stdout);
    const char *row = strstr(buf, "\ntotal");
    CM_ASSERT(row && sscanf(row + 6, "%zu", &total) == 1, "unet_print_table printed no total row");
    free(buf);
    return total;
}

typedef struct UNetInputs {
    Tensor *x, *ct, *cu;
    float *keep[3];
    Rng dropout;
    bool has_dropout;
    int sample0;
} UNetInputs;

static void read_unet_inputs(Ctx *c, Fixture *f, const char *group, const UNet *net, UNetInputs *in)
{
    char obj[128];
    snprintf(obj, sizeof obj, "/%s", group);
    memset(in, 0, sizeof *in);
    in->x = read_input(c, f, group, "x", true, &in->keep[0]);
    in->ct = read_input(c, f, group, "cnoise_t", true, &in->keep[1]);
    if (net->cfg.two_times) in->cu = read_input(c, f, group, "cnoise_u", true, &in->keep[2]);
    in->has_dropout = net->cfg.dropout > 0;
    in->dropout = (Rng){.seed = (uint64_t)fixture_attr_int(f, obj, "dropout_seed", 0),
                        .stream = (uint32_t)fixture_attr_int(f, obj, "dropout_stream", 0),
                        .step = (uint32_t)fixture_attr_int(f, obj, "dropout_step", 0)};
    in->sample0 = (int)fixture_attr_int(f, obj, "sample0", 0);
}

static void free_inputs(UNetInputs *in)
{
    for (int i = 0; i < 3; i++) free(in->keep[i]);
}

static Tensor *run_unet(Ctx *c, const UNet *net, const WeightSet *ws, const UNetInputs *in)
{
    return unet_forward(c, net, ws, in->x, in->ct, in->cu, in->has_dropout ? &in->dropout : NULL, in->sample0, NULL);
}

/* True when p points into the weight buffer w of n floats. */
static bool in_buffer(const float *p, const float *w, size_t n) { return p >= w && p < w + n; }

/* Step 4: a frozen weight set gives the same dx and puts no weight gradient on the tape. */
static void check_frozen(Ctx *c, Fixture *f, const char *group, const UNet *net, float *w, const float *dx_ref)
{
    ctx_reset(c);
    UNetInputs in;
    read_unet_inputs(c, f, group, net, &in);
    in.ct->requires_grad = in.cu ? (in.cu->requires_grad = false) : false;
    WeightSet frozen = {w, NULL};
    Tensor *out = run_unet(c, net, &frozen, &in);
    float *gout = read_array(f, group, "gout", NULL, NULL);
    tape_backward(c, out, gout);
    double e = rel_error(in.x->grad, dx_ref, in.x->n, REL_FLOOR);
    printf("  %-16s %-32s rel error %.2e\n", group, "frozen dx vs trainable dx", e);
    CHECK(e <= FROZEN_TOL, "%s: frozen dx differs from trainable dx by %.3e", group, e);
    int seen = 0, bad = 0;
    for (int i = 0; i < c->tape_len; i++)
        for (int k = 0; k < c->tape[i].nin; k++) {
            const Tensor *t = c->tape[i].in[k];
            if (!t || !in_buffer(t->data, w, net->ps.total)) continue;
            seen++;
            bad += t->requires_grad || t->grad != NULL;
        }
    CHECK(seen > 0 && bad == 0, "%s: frozen pass: %d of %d parameter inputs on the tape need a gradient", group, bad,
          seen);
    free(gout);
    free_inputs(&in);
}

/* Step 5: dropout masks repeat with the same Rng and differ from an eval pass. */
static void check_dropout_repeat(Ctx *c, Fixture *f, const char *group, const UNet *net, float *w)
{
    ctx_reset(c);
    ctx_no_grad_begin(c);
    UNetInputs in;
    read_unet_inputs(c, f, group, net, &in);
    WeightSet ws = {w, NULL};
    Tensor *a = run_unet(c, net, &ws, &in), *b = run_unet(c, net, &ws, &in);
    Tensor *eval = unet_forward(c, net, &ws, in.x, in.ct, in.cu, NULL, 0, NULL);
    CHECK(memcmp(a->data, b->data, a->n * sizeof(float)) == 0, "%s: two passes with one Rng differ", group);
    CHECK(memcmp(a->data, eval->data, a->n * sizeof(float)) != 0, "%s: dropout changed nothing", group);
    ctx_no_grad_end(c);
    free_inputs(&in);
}

/* Step 6: a no-grad pass (sampling, the target pass) gives the grad pass's output bit for bit
 * (its residual blocks run their convs as pairs, op_conv2d_pair, whose norm statistics are summed
 * in double in another order: on these inputs every one rounds to the same float, as in
 * test_conv's pair cases), and keeps only the blocks' outputs: each is written below its block's intermediates, which are
 * then released (unet.c's kept_begin / kept_end). Bound: a pass with gradients holds every
 * intermediate (the norms' and the attention's, each block's first conv output, the decoder's
 * concatenations: at least twice what the blocks output), so the no-grad pass must end holding
 * at most half the bytes of a grad pass's forward. */
static void check_no_grad(Ctx *c, Fixture *f, const char *group, const UNet *net, float *w)
{
    ctx_reset(c);
    UNetInputs in;
    read_unet_inputs(c, f, group, net, &in);
    WeightSet ws = {w, NULL};
    size_t before = arena_used(&c->arena);
    Tensor *g = unet_forward(c, net, &ws, in.x, in.ct, in.cu, NULL, 0, NULL);
    size_t grad_bytes = arena_used(&c->arena) - before;
    ctx_no_grad_begin(c);
    before = arena_used(&c->arena);
    Tensor *o = unet_forward(c, net, &ws, in.x, in.ct, in.cu, NULL, 0, NULL);
    size_t kept_bytes = arena_used(&c->arena) - before;
    ctx_no_grad_end(c);
    printf("  %-16s no-grad pass holds %zu bytes, a grad pass %zu\n", group, kept_bytes, grad_bytes);
    CHECK(memcmp(o->data, g->data, o->n * sizeof(float)) == 0, "%s: the no-grad pass's output differs", group);
    CHECK(2 * kept_bytes <= grad_bytes, "%s: the no-grad pass holds %zu bytes, over half a grad pass's %zu", group,
          kept_bytes, grad_bytes);
    free_inputs(&in);
}

static void test_unet(Ctx *c, Fixture *f, const char *group, bool show_table)
{
    char obj[128];
    snprintf(obj, sizeof obj, "/%s", group);
    printf("%s\n", group);
    UNetConfig cfg;
    fixture_unet_config(f, obj, &cfg);
    UNet net;
    int rc = unet_init(&net, &cfg);
    CHECK(rc == 0, "%s: unet_init: %s", group, cm_errmsg());
    if (rc != 0) return;

    size_t torch_count = (size_t)fixture_attr_int(f, obj, "param_count", -1), total = table_total(&net, show_table);
    printf("  %-16s parameters: table %zu, cmlab %zu, PyTorch %zu\n", group, total, unet_param_count(&net), torch_count);
    CHECK(total == torch_count && unet_param_count(&net) == torch_count, "%s: parameter counts differ", group);

    float *w = params_buffer(&net.ps), *g = params_buffer(&net.ps);
    load_weights(f, group, &net.ps, w);
    if (cfg.emb_type == UNET_EMB_FOURIER)
        compare_fixture(f, group, "fourier_freqs", "fourier frequencies W", net.fourier_freqs,
                        (size_t)cfg.base_channels / 2);

    ctx_reset(c);
    UNetInputs in;
    read_unet_inputs(c, f, group, &net, &in);
    WeightSet ws = {w, g};
    Tensor *out = run_unet(c, &net, &ws, &in);
    float *gout = read_array(f, group, "gout", NULL, NULL);
    tape_backward(c, out, gout);
    compare_fixture(f, group, "out", "output", out->data, out->n);
    compare_param_grads(f, group, &net.ps, g);
    compare_fixture(f, group, "grad_x", "grad x", in.x->grad, in.x->n);
    compare_fixture(f, group, "grad_cnoise_t", "grad cnoise_t", in.ct->grad, in.ct->n);
    if (in.cu) compare_fixture(f, group, "grad_cnoise_u", "grad cnoise_u", in.cu->grad, in.cu->n);

    float *dx = cm_malloc(in.x->n * sizeof(float));
    memcpy(dx, in.x->grad, in.x->n * sizeof(float));
    check_frozen(c, f, group, &net, w, dx);
    if (cfg.dropout > 0) check_dropout_repeat(c, f, group, &net, w);
    check_no_grad(c, f, group, &net, w);

    free(dx);
    free(gout);
    free_inputs(&in);
    free(w);
    free(g);
    unet_free(&net);
}

/* ---- the AMED MLP ---- */

static void test_amed(Ctx *c, Fixture *f, const char *group)
{
    char obj[128];
    snprintf(obj, sizeof obj, "/%s", group);
    printf("%s\n", group);
    MlpConfig cfg = {
        .in_dim = (int)fixture_attr_int(f, obj, "in_dim", -1),
        .hidden = (int)fixture_attr_int(f, obj, "hidden", -1),
        .out_dim = (int)fixture_attr_int(f, obj, "out_dim", -1),
        .noise_channels = (int)fixture_attr_int(f, obj, "noise_channels", -1),
        .scale_dir = (float)fixture_attr_double(f, obj, "scale_dir", -1),
        .scale_time = (float)fixture_attr_double(f, obj, "scale_time", -1),
    };
    AmedMLP m;
    int rc = mlp_init(&m, &cfg);
    CHECK(rc == 0, "%s: mlp_init: %s", group, cm_errmsg());
    if (rc != 0) return;
    size_t torch_count = (size_t)fixture_attr_int(f, obj, "param_count", -1);
    size_t want = 8929 + (cfg.scale_dir > 0 ? 21 : 0) + (cfg.scale_time > 0 ? 21 : 0);
    printf("  %-16s parameters: cmlab %zu, PyTorch %zu, reference %zu\n", group, mlp_param_count(&m), torch_count, want);
    CHECK(mlp_param_count(&m) == torch_count && torch_count == want, "%s: parameter counts differ", group);

    float *w = params_buffer(&m.ps), *g = params_buffer(&m.ps), *keep;
    load_weights(f, group, &m.ps, w);
    ctx_reset(c);
    Tensor *b = read_input(c, f, group, "bottleneck", true, &keep);
    WeightSet ws = {w, g};
    MlpOutput out = mlp_forward(c, &m, &ws, b, (float)fixture_attr_double(f, obj, "sigma_cur", -1),
                                (float)fixture_attr_double(f, obj, "sigma_next", -1));
    /* objective: sum over heads of sum(out_head * gout_head) */
    const char *heads[3] = {"r", "c", "a"};
    Tensor *outs[3] = {out.r, out.c, out.a}, *loss = NULL;
    float *gouts[3] = {0};
    for (int h = 0; h < 3; h++) {
        char name[16];
        snprintf(name, sizeof name, "gout_%s", heads[h]);
        bool in_fixture = fixture_exists(f, (snprintf(obj, sizeof obj, "/%s/%s", group, name), obj));
        CHECK(in_fixture == (outs[h] != NULL), "%s: head %s present in one of cmlab and PyTorch only", group, heads[h]);
        if (!outs[h] || !in_fixture) continue;
        Tensor *gt = read_input(c, f, group, name, false, &gouts[h]);
        Tensor *term = op_sum(c, op_mul(c, outs[h], gt));
        loss = loss ? op_add(c, loss, term) : term;
    }
    tape_backward(c, loss, NULL);
    for (int h = 0; h < 3; h++) {
        if (!outs[h] || !gouts[h]) continue;
        char name[16], what[16];
        snprintf(name, sizeof name, "out_%s", heads[h]);
        snprintf(what, sizeof what, "output %s", heads[h]);
        compare_fixture(f, group, name, what, outs[h]->data, outs[h]->n);
        free(gouts[h]);
    }
    compare_param_grads(f, group, &m.ps, g);
    compare_fixture(f, group, "grad_bottleneck", "grad bottleneck", b->grad, b->n);
    free(keep);
    free(w);
    free(g);
    mlp_free(&m);
}

/* ---- initialisation and input sizes (no fixture) ---- */

/* The default config with params_randomize: near-zero output layers make F ~ 0, and the net runs
 * on an input size other than the configured one (32x32 for a 28x28 table). */
static void test_init(Ctx *c)
{
    printf("init\n");
    UNetConfig cfg = unet_config_default();
    UNet net;
    CHECK(unet_init(&net, &cfg) == 0, "unet_init(default): %s", cm_errmsg());
    float *w = params_buffer(&net.ps);
    params_randomize(&net.ps, w, 1);
    ctx_reset(c);
    Tensor *x = TENSOR_NEW(c, 2, 1, 32, 32), *ct = TENSOR_NEW(c, 2);
    Rng r = {.seed = 5, .stream = 0, .step = 0};
    rng_normal(&r, x->data, 2, 0, 32 * 32);
    ct->data[0] = -1.2f;
    ct->data[1] = 0.8f;
    WeightSet ws = {w, NULL};
    Tensor *mid = NULL, *F = unet_forward(c, &net, &ws, x, ct, NULL, NULL, 0, &mid);
    double fmax_abs = 0;
    for (size_t i = 0; i < F->n; i++) fmax_abs = fmax(fmax_abs, fabs(F->data[i]));
    printf("  %-16s max |F| at init %.2e, bottleneck [%d,%d,%d,%d]\n", "default", fmax_abs, mid->shape[0],
           mid->shape[1], mid->shape[2], mid->shape[3]);
    CHECK(F->shape[2] == 32 && F->shape[3] == 32 && fmax_abs < 1e-3, "F at init: max |F| %.3e", fmax_abs);
    CHECK(mid->shape[1] == 64 && mid->shape[2] == 8 && mid->shape[3] == 8, "bottleneck shape");
    Tensor *b = mlp_bottleneck_input(c, mid);
    CHECK(b->shape[0] == 2 && b->shape[1] == 64 && !b->requires_grad, "mlp_bottleneck_input shape");

    free(w);
    unet_free(&net);

    UNetConfig bad = cfg;
    bad.img_h = 30;
    CHECK(unet_init(&net, &bad) != 0 && strstr(cm_errmsg(), "divisible"), "30x28 input accepted");
}

/* mlp_randomize: map_layer0 xavier uniform (|w| <= sqrt(6/16)), enc_layer0 N(0, 1/64), biases 0. */
static void test_mlp_init(void)
{
    AmedMLP m;
    MlpConfig cfg = mlp_config_default();
    CHECK(mlp_init(&m, &cfg) == 0, "mlp_init(default): %s", cm_errmsg());
    float *w = params_buffer(&m.ps);
    mlp_randomize(&m, w, 3);
    const float *w0 = w + m.map_layer0.weight.offset, *w1 = w + m.enc_layer0.weight.offset;
    double bound = 0, var = 0, bias = 0;
    for (int i = 0; i < 64; i++) bound = fmax(bound, fabs(w0[i]));
    for (int i = 0; i < 128 * 64; i++) var += (double)w1[i] * w1[i] / (128 * 64);
    for (int i = 0; i < 128; i++) bias = fmax(bias, fabs(w[m.enc_layer0.bias.offset + i]));
    printf("  %-16s map_layer0 max |w| %.4f (bound 0.6124), enc_layer0 var %.5f (1/64 = 0.01563)\n", "amed init",
           bound, var);
    CHECK(bound <= sqrt(6.0 / 16) && bound > 0.5 && fabs(var - 1.0 / 64) < 0.1 / 64 && bias == 0, "mlp_randomize");
    free(w);
    mlp_free(&m);
}

int main(int argc, char **argv)
{
    CM_ASSERT(argc == 2, "usage: test_unet UNET.h5");
    cm_set_threads(2);
    Fixture f;
    fixture_open(&f, argv[1]);
    Ctx c;
    ctx_init(&c, 64 << 20);
    char **groups;
    int n = fixture_list(&f, "/", &groups), unets = 0, mlps = 0;
    double t0 = cm_now();
    for (int i = 0; i < n; i++) {
        if (strncmp(groups[i], "amed_", 5) == 0) {
            test_amed(&c, &f, groups[i]);
            mlps++;
        } else {
            test_unet(&c, &f, groups[i], unets == 0);
            unets++;
        }
        free(groups[i]);
    }
    free(groups);
    test_init(&c);
    test_mlp_init();
    CHECK(unets >= 3 && mlps >= 1, "fixture has %d U-Net and %d MLP configs (want >= 3 and >= 1)", unets, mlps);
    printf("%d U-Net and %d MLP configs in %.1f s, arena high-water %.1f MB\n", unets, mlps, cm_now() - t0,
           c.arena.high_water / 1e6);
    ctx_free(&c);
    fixture_close(&f);
    return test_summary("unet");
}
