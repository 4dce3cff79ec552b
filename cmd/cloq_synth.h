/* cloq_synth: `cloq synth`, synthetic Hugging Face Llama checkpoints for scale tests and
 * benchmarks. It writes DIR/config.json, DIR/model.safetensors (every tensor of the HF
 * LlamaForCausalLM layout, untied lm_head) and DIR/calib.tok (a token file for --calib-format
 * tokens / --data-format tokens), with weights that look enough like a trained model's to exercise
 * the quantizer: Gaussian rows with a few shared outlier input columns per block and RMSNorm
 * weights near 1 with a few large channels. The values depend only on the settings and --seed
 * (not on the thread count), and the model is streamed to disk: a 13B checkpoint never sits in
 * memory.
 */
#ifndef CLOQ_SYNTH_H
#define CLOQ_SYNTH_H

/* Not collective: a plain single-process command (main calls it on rank 0 only, before and without
 * any MPI work). argv[0] is "synth"; the options follow (see `cloq synth --help`). Returns 0, or 1
 * after printing one "cloq: error: ..." line on stderr. Progress and the summary go to stdout. */
int cloq_synth_main(int argc, char **argv);

#endif
