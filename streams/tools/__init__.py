"""Commands beside the worker: ``demo`` with its embedded broker and producer, ``replay`` for
backfills, and ``configdoc`` for the configuration reference in docs/."""
