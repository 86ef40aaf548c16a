"""hwlat: measure neural-network latency on real devices and train the latency predictors NAS relies on.

This package holds the layers that are not the device agent (``agents``), the coordinator core (``harness``) or
the predictor (``predictor``): the search spaces both of those build on (``hwlat.spaces``), the active profiling
loop above both (``hwlat.profiling``) and the command line on top (``hwlat.cli``). docs/architecture.md draws
the layers; import-linter contracts in pyproject.toml keep them pointing down. Importing ``hwlat`` imports nothing.
"""
