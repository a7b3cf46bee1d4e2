"""MDM-ASR in JAX/Flax: masked-diffusion non-autoregressive speech recognition."""

__version__ = "0.1.0"
