"""Schedules over time (sequential, steady-state, parallel, chunked) and the one dispatcher."""
