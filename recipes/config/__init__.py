"""The recipe's hydra configuration (``recipes/config``), shipped in the wheel as ``tabb_torchrl._config``."""
