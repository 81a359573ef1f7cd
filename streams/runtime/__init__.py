"""The Faust worker, the only code that imports Faust: the app and its wiring, the gated
consumer (the commit gate's adapter), table writes, the expiry sweep, the web endpoints and the
pull from impact (the click collector is a process of its own: ``streams.collector``)."""
