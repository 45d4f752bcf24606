"""Public inference entry points: filter, smoother, likelihood, sampling, posterior, forecast."""
