"""_schedules."""
