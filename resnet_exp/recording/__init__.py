"""Measurements taken on a net during and after training: gradient norms per layer,
residual-branch magnitudes, block lesions, and the per-epoch gradient-profile images."""
