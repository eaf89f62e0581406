"""Training of the DEGAN GAN (imported as ``geosr.training``); see docs/training.md.

    config.py       TrainConfig: every setting, TOML files with ``base`` inheritance, command-line overrides
    data.py         PatchDataset (random HR crops, flips/rotations, LR on the fly), the resumable sampler, loaders
    degradation.py  LR = MATLAB-style bicubic downsampling on the image's integer grid
    vgg.py          VGG19 features with torchvision's layout and ImageNet weights (never silently random)
    losses.py       MSE, VGG-feature Charbonnier, adversarial BCE, discriminator feature matching
    gan.py          one generator step (D frozen) and one discriminator step; precision and gradient scaling
    ema.py          the exponential moving average of the generator
    guard.py        the divergence guard: NaN/Inf losses or an exploding MSE stop the run without saving
    card.py         the model card of a run's exported model files (provenance, settings, metrics)
    state.py        the run folder: what a checkpoint holds, resuming from it, RNG states, log.csv
    distributed.py  torchrun / DDP set-up (NCCL on GPUs, gloo on CPUs)
    loop.py         fit(): the training loop, with validation, checkpoints and model-file export when due
"""
