"""Commands beside the worker: ``demo`` with its embedded broker and producer, ``replay`` for
backfills, and ``configdoc`` for the README's config reference."""
