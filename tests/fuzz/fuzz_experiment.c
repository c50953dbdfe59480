/* fuzz_experiment.c: experiment files and --set overrides (io/experiment.h).
 *
 * Input: the file's text, then up to four --set assignments, each after a NUL byte
 * ("[train]\nlr = 1\n\0model.channels=8\0sweep.ct.loss=l1,l2"). The text goes through
 * config_from_string and, as a file, config_load; the assignments through config_set on the
 * result. Checked besides "no crash": what config_write writes reads back to a byte-identical
 * Config (experiment.h's round-trip promise), and every [sweep] variant can be built. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "io/experiment.h"

enum { FUZZ_MAX_SETS = 4 };

/* config_to_string, then config_from_string of that: must succeed and give the same bytes. */
static void check_round_trip(const Config *cfg)
{
    char *text = config_to_string(cfg);
    Config back;
    CM_ASSERT(config_from_string(&back, text, "written") == 0, "written config rejected: %s\n%s",
              cm_errmsg(), text);
    memcpy(back.source, cfg->source, sizeof back.source);   /* the file's name: a label, not a key */
    CM_ASSERT(memcmp(&back, cfg, sizeof back) == 0, "config differs after the round trip:\n%s", text);
    free(text);
}

static void check_sweep(const Config *cfg)
{
    int count = config_sweep_count(cfg);
    if (count < 0) return;   /* a grid too large or zip lines of different lengths: refused */
    CM_ASSERT(count >= 1 && count <= CFG_SWEEP_VARIANTS, "sweep count %d", count);
    /* The first and last variants cover every key's first and last value. */
    for (int i = 0; i < count; i += CM_MAX(1, count - 1)) {
        Config v;
        char label[512];
        CM_ASSERT(config_sweep_variant(cfg, i, &v, label, sizeof label) == 0, "variant %d: %s", i,
                  cm_errmsg());
        check_round_trip(&v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* One NUL-terminated copy; its NUL bytes split it into the text and the assignments. */
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *text = buf;
    const char *sets[FUZZ_MAX_SETS];
    int nsets = 0;
    for (size_t at = strlen(buf); at < size && nsets < FUZZ_MAX_SETS; at += strlen(buf + at)) {
        at++;
        sets[nsets++] = buf + at;
    }

    Config cfg;
    if (config_from_string(&cfg, text, "fuzz.ini") == 0) {
        check_round_trip(&cfg);
        for (int i = 0; i < nsets; i++)
            if (config_set(&cfg, sets[i]) == 0) check_round_trip(&cfg);
        check_sweep(&cfg);
    }
    const char *path = fuzz_write("fuzz.ini", text, strlen(text));
    if (config_load(&cfg, path) == 0) check_round_trip(&cfg);
    fuzz_remove("fuzz.ini");
    free(buf);
    return 0;
}
