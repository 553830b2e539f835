"""aggregator: poll feeds, write Hexo-style articles, republish them as RSS, Atom and JSON Feed.

The pipeline, one module per stage (see ``aggregator.pipeline`` for the order)::

    config -> fetch -> parse -> normalize (+ clean) -> store (dedup) -> publish
"""

__version__ = "0.1.0"
USER_AGENT = f"aggregator/{__version__} (+https://github.com/aggregator-project/aggregator)"
