"""The ``jaxssm`` command's parts: options, data, the fit itself, and its outputs."""
