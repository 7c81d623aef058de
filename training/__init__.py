"""The trainers: `train.train(cfg)` dispatches to our fast TopK/BatchTopK loop
(`topk_loop`) or to sae-lens's SAETrainer (`saelens_backend`); both write the same
run folder (`run_files`)."""
