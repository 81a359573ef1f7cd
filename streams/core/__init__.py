"""The domain, without I/O and without Faust: attribution over a click history, the join of an
item to its click, batching and cuts, the CSV rows and files, the order-change rules and the
expiry rules. The worker, ``replay``, the benchmarks and the tests all use these."""
