"""Public learning entry points: M-step, EM, score, start, acceleration, fit, gradient MLE."""
