"""``hwlat profile``: the measure -> transfer -> choose loop (``loop``), its saved state and its report.

It sits above both the coordinator (``harness``: measuring) and the predictor (``predictor``: choosing and
transferring), which do not know about each other.
"""
