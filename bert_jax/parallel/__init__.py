"""Parallelism: the logical-axis rules table and device meshes, multi-process start-up."""
