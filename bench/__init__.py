"""Measurement programs: they print figures; none of them is a test."""
