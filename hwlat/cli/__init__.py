"""The ``hwlat`` command line: one module per command group; the only place argparse lives.

``main`` builds the parser and maps errors to exit codes; ``measure``, ``datasets``, ``devices``, ``predictor``
and ``profile`` each ``register`` their sub-commands; ``console`` holds the shared parser class and progress bar.
Heavy libraries (torch, scikit-learn, pandas) are imported inside the commands so ``hwlat --help`` stays fast.
"""
