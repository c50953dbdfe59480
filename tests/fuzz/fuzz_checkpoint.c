/* fuzz_checkpoint.c: opening a checkpoint (io/checkpoint.h), the path `cmlab info`, sample, eval,
 * edit and --resume take.
 *
 * Input: a checkpoint file. It goes through ckpt_verify, ckpt_describe (to /dev/null),
 * ckpt_read_config, ckpt_list_weights and ckpt_load into the seeds' tiny state (fuzz.h), so a
 * mutated file that still verifies also reaches the loader's shape and name checks. Only the
 * public API is used: whatever ckpt_* check before libhdf5 reads the file (a whole-file seal)
 * applies here as in the commands. Checked besides "no crash": a failed load changes nothing in
 * the state (ckpt_load is all-or-nothing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("step_00000001.h5", data, size);
    ckpt_verify(path);

    FILE *null = fopen("/dev/null", "w");
    CM_ASSERT(null, "fuzz: cannot open /dev/null");
    ckpt_describe(path, null);
    fclose(null);
    free(ckpt_read_config(path));
    char names[CKPT_MAX_SETS][64];
    ckpt_list_weights(path, names, CKPT_MAX_SETS);

    FuzzCkpt f;
    fuzz_ckpt_init(&f);
    for (int i = 0; i < 2; i++) memset(f.w[i], 0xAB, f.ps.total * sizeof(float));
    if (ckpt_load(path, &f.st) != 0) {
        for (int i = 0; i < 2; i++)
            for (size_t k = 0; k < f.ps.total; k++)
                CM_ASSERT(((uint32_t *)f.w[i])[k] == 0xABABABABu, "failed load changed set %d", i);
        CM_ASSERT(f.st.loaded_config == NULL && f.st.step == 0, "failed load changed the state");
    }
    fuzz_ckpt_free(&f);
    fuzz_remove("step_00000001.h5");
    return 0;
}
