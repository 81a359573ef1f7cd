"""Getting sealed batches out and knowing what is done: the per-partition delivery lanes with
one retry policy, and the commit gate's ledger of what is delivered and may be committed."""
