"""Task modules of the examples: each stands in for real work with a sleep, and shows one pattern.

On the local cluster the examples' JobQueues get `PYTHONPATH` pointing here; in an image, copy this
folder into `/app` (see `examples/Dockerfile`).
"""
