"""Training of the DEGAN GAN (imported as ``geosr.training``); see docs/training.md.

config.py       TrainConfig: every setting, its meaning and its checks
configfile.py   TOML files with ``base`` inheritance, command-line overrides typed like the settings, resume rules
schedule.py     the learning rate as a function of the step: step decays or a cosine, with a warm-up
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
setup.py        a run's set-up: the run folder, precisions, VGG19 weights, seeds, a fresh or restored start
build.py        a run's data (splits, patches, loaders) and networks (G, D, EMA, losses, optimisers, schedule)
records.py      what the loop writes: validations, log rows, checkpoints, the model files at the end
loop.py         fit(): the phases, then the training loop
keep.py         training that does not stop: resumable cycles that continue a shipped model
"""
