#include "method.h"

#include <stdlib.h>
#include <string.h>

#include "nn/optim.h"

#include "train/model.h"

extern const Method method_edm, method_ct, method_cd, method_bcm, method_amed, method_classifier;

/* Every method this build trains: adding a method is its file in methods/ and one row here. */
static const Method *const METHODS[] = {
    &method_edm,
    &method_ct,
    &method_cd,
    &method_bcm,
    &method_amed,
    &method_classifier,
};

const Method *method_find(CfgMethod id)
{
    for (size_t i = 0; i < CM_ARRAY_LEN(METHODS); i++)
        if (METHODS[i]->id == id) return METHODS[i];
    return NULL;
}

int method_get(const Config *cfg, const Method **out)
{
    *out = method_find(cfg->experiment.method);
    if (*out) return 0;
    char names[256];
    size_t k = 0;
    names[0] = '\0';
    for (size_t i = 0; i < CM_ARRAY_LEN(METHODS) && k < sizeof names; i++)
        k += (size_t)snprintf(names + k, sizeof names - k, "%s%s", i ? ", " : "", METHODS[i]->name);
    return cm_fail("experiment.method = %s: not implemented yet (this build trains: %s)",
                   config_method_name(cfg->experiment.method), names);
}

int method_unet_setup(MethodUNet *u, const MethodEnv *env, const ParamSet **ps)
{
    /* The keys to change when the network does not fit the data (model_check names them). */
    if (model_check(env->cfg, env->C, env->H, env->W, env->data->source) != 0) return -1;
    UNetConfig ucfg;
    model_unet_config(env->cfg, env->C, env->H, env->W, &ucfg);
    if (unet_init(&u->net, &ucfg) != 0) return cm_fail("[model]: %s", cm_errmsg());
    u->pre = model_precond(env->cfg);
    u->cfg = env->cfg;
    *ps = &u->net.ps;
    return 0;
}

const UNet *method_unet(const void *st) { return &((const MethodUNet *)st)->net; }
size_t method_unet_param_count(const void *st) { return unet_param_count(&((const MethodUNet *)st)->net); }
void method_unet_print_table(const void *st, FILE *f) { unet_print_table(&((const MethodUNet *)st)->net, f); }
void method_unet_free(MethodUNet *u) { unet_free(&u->net); }

void method_cm_start_target(MethodCm *m, const float *w, double mu0)
{
    if (mu0 <= 0) return;
    m->target = params_buffer(&m->u.net.ps);
    memcpy(m->target, w, m->u.net.ps.total * sizeof(float));
}

const float *method_cm_target(const MethodCm *m, const float *online) { return m->target ? m->target : online; }

void method_cm_after_update(void *st, const float *w)
{
    MethodCm *m = st;
    if (m->target) ema_update(m->target, w, m->u.net.ps.total, (float)m->mu);
}

void method_cm_ckpt_save(void *st, CkptState *s)
{
    MethodCm *m = st;
    if (m->target) ckpt_add_weights(s, "target", m->target);
    s->sched_N = m->N;
    s->sched_mu = m->mu;
}

void method_cm_ckpt_loaded(void *st, const CkptState *s)
{
    MethodCm *m = st;
    m->N = s->sched_N;
    m->mu = s->sched_mu;
}

void method_cm_free(MethodCm *m)
{
    free(m->target);
    method_unet_free(&m->u);
}
