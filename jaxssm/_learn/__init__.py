"""_learn."""
