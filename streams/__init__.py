"""The worker: clicks and order items joined, batched and delivered as impact conversion files."""
