"""Measurements taken on a net during and after training: gradient norms per layer,
residual-branch magnitudes, block lesions, the Hessian's curvature and the loss landscape,
and the gradient-profile and landscape pictures."""
