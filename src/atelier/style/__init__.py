"""Style transfer: Gatys optimisation, fast feed-forward styles, CycleGAN translation (a later issue)."""
