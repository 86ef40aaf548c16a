"""hwlat agent: times models on the device. Standard library, numpy and a runtime only."""

__version__ = "0.1.0"
