"""Referring-expression models (two-stage, point-based: PBREC): localisation heads and comprehension."""
