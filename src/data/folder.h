/* folder.h: a directory of PNG images as an unlabelled dataset (data.dataset = folder), for
 * training on one's own images.
 *
 * Invariants:
 *   - the images are the directory's regular entries whose names end in .png (any case),
 *     in strcmp order of their names, so the dataset is the same on every machine whatever order
 *     readdir gives; subdirectories and other files are ignored;
 *   - every image has the size and channel count of the first one (after image_read_png's
 *     normalisation to 8-bit gray or RGB); the first that differs is an error naming it;
 *   - every label is -1.
 */
#ifndef CM_FOLDER_H
#define CM_FOLDER_H

#include "dataset.h"

/* d: [n, c, h, w] with c 1 or 3. 0 ok, -1 with a cm_fail message naming the path. */
int folder_load(Dataset *d, const char *dir);

#endif
