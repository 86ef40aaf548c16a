"""hwlat latency predictor: encodings, models, transfer to a new device, samplers."""
