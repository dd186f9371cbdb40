"""featuregraph: a persistent database of SAE ablation graphs, with a query layer.

Data flows ingest (compute, the only code that imports torch) -> store (persist)
-> query (ask) -> dashboard (look). This package holds what they share: the
version, the error classes and the command line.
"""

__version__ = "0.1.0"
