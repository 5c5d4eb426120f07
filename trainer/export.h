// trainer/export.h: -export PATH.safetensors: the model's weights as HuggingFace's GPT-2 (GPT2LMHeadModel)
// expects them, in the safetensors format, so a run here can be loaded, evaluated or fine-tuned there.
#ifndef TRAINER_EXPORT_H
#define TRAINER_EXPORT_H

#include <stddef.h>
#include "trainer/model.h"
#include "common/checkpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

// Writes the fp32 weights w (num_params, our 16-tensor storage order) to path (through a new file
// path.tmp.XXXXXX, created exclusively, and a rename, so a failed export never leaves a half-written
// file under path, and concurrent exports never mix). Refuses a path that exists and is not a regular
// file (a device, a FIFO, a directory, a symlink). 0, or -1 with a message.
int export_safetensors(const char* path, const ModelLayout* ml, const float* w, char* err, size_t errlen);
// -1 with a message when path exists and is not a regular file; else 0, *replaces = 1 when a regular
// file is there (the export replaces it atomically, and says so).
int export_check_target(const char* path, int* replaces, char* err, size_t errlen);

// The run's weights from its checkpoint blobs (the "weights fp32" blob: the master in bf16 mode):
// exports them and prints what was written; a path that is not a regular file is exit 2, a failed write
// prints the error and exits 5 (a failed write, trainer/run.h), a missing blob is an internal error.
void export_blobs(const char* path, const ModelLayout* ml, const CkptBlob* blobs, int nblobs);

// config.json beside path (its directory): HuggingFace's GPT2Config for the shape c, so that
// GPT2LMHeadModel.from_pretrained(DIR) loads DIR/model.safetensors with it. 0, or -1 with a message.
int export_hf_config(const char* path, const GPT2Config* c, char* err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
