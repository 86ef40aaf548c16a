"""hwlat latency predictor: encodings, models, transfer to a new device, samplers.

``predictor.load(path).predict(archs, device)`` -> latencies in ms; ``Predictor.train(table)`` to build one.
"""

from .api import Predictor, load

__all__ = ["Predictor", "load"]
