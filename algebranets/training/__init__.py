"""Training: config-driven, data-parallel over every device of every host, resumable.

  config_lib    the config argument syntax and the blocks every experiment config has
  distributed   multi-host start-up, the device mesh, per-host -> global batches, RNG streams
  state         TrainState, the one pytree a checkpoint holds
  optim         optax optimisers, schedules, weight decay by parameter name, clipping
  tasks         registry of tasks: classification (images), language_model (Transformer-XL)
  step          the jitted train/eval steps (NamedShardings, donated buffers)
  checkpoint    orbax checkpoints: periodic, on SIGTERM/SIGINT, last K + best, atomic
  metrics       TensorBoard + JSONL + progress bar / log lines
  train         train_and_evaluate(config, workdir), evaluate(config, workdir)

The command line is `python -m algebranets.train` (algebranets/train.py). Submodules are
imported where used (orbax, tensorboardX load only with `train`).
"""
