"""_blocks."""
