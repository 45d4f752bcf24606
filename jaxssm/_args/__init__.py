"""Argument handling: counts and options, the schedule, model and data checks, the prologue."""
