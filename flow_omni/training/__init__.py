"""Training: Lightning wrappers, recipes and the entry point (the only package that imports Lightning)."""
