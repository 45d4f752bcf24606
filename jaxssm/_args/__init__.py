"""_args."""
