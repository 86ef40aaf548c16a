"""hwlat coordinator: builds candidate networks, ships them to agents, stores the timings."""

__version__ = "0.1.0"
