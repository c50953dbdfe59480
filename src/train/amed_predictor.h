/* amed_predictor.h: AMED predictors as checkpoints (train/methods/amed.c): the teacher identity
 * they are tied to, their settings from an [amed] configuration, and loading one for sampling. */
#ifndef CM_AMED_PREDICTOR_H
#define CM_AMED_PREDICTOR_H

#include "sample/amed.h"
#include "train/model.h"

/* SHA-256 of the teacher's loaded weight set (its floats): the identity a predictor stores. */
void amed_teacher_hash(const Model *m, char hex[65]);
/* The sampler settings of cfg's [amed] with the teacher configuration tcfg's sigma range; -1 after
 * cm_fail() for a schedule that cannot be built. */
int amed_settings_from_config(const Config *cfg, const Config *tcfg, AmedSettings *s);
/* The predictor MLP of cfg's [amed] on in_dim bottleneck values. */
MlpConfig amed_mlp_config(const Config *cfg, int in_dim);

/* Loads the predictor checkpoint `path` (a method = amed run's online weights and settings) for the
 * teacher tm, loaded with configuration tcfg from teacher_path. Refused (-1 after cm_fail() naming
 * both files): a checkpoint of another method, and a teacher weight set other than the one the
 * predictor was trained on (its SHA-256). Free with amed_predictor_free, also after a failure. */
int amed_predictor_load(AmedPredictor *p, const char *path, const Model *tm, const Config *tcfg,
                        const char *teacher_path);
void amed_predictor_free(AmedPredictor *p);

#endif
