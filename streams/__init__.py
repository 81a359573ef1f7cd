"""Faust agents, batching and delivery of impact conversion files."""
