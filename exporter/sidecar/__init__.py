"""The sidecar, ``codebook serve``: OTLP receivers, config, web config and forwarding.

Everything here builds on the core one level up (taxonomy, codebook, enrich, metrics); nothing in
the core imports from here.
"""
