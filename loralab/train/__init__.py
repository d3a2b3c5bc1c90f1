"""LoRA training on a host's diffusion model: datasets, networks, objectives, runs and their
checkpoints. The host (ComfyUI) supplies the model through :class:`loralab.train.run.TrainModel`
and the encoders through :func:`loralab.train.dataset.build_dataset`; nothing here imports it."""
