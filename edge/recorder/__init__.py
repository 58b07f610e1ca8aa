"""Continuous recording of the window cameras: supervisors, index, retention, clips."""
