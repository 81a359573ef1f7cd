"""The Faust worker, the only code that imports Faust: the app and its wiring, the gated
consumer (the commit gate's adapter), table writes, the expiry sweep, the web endpoints, the
click collector and the pull from impact."""
