"""Training of the DEGAN GAN: data, degradation, losses, the GAN step, the loop, distributed set-up."""
