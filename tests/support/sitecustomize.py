"""Loaded by the worker subprocesses the tests start (tests/support is on their PYTHONPATH):
applies the test-broker workarounds before Faust starts. Never part of the product."""
import os

for _name in filter(None, os.environ.get("IMREF_TEST_WITHOUT", "").split(",")):
    import sys

    sys.modules[_name] = None  # an installation that lacks this package: importing it fails (first: the
    # modules below import the ones that would look for it)

if os.environ.get("IMREF_TEST_TANSU_COMPAT"):
    import tansu_compat  # noqa: F401  corrects changelog high-waters (table recovery)

if os.environ.get("IMREF_TEST_HOOKS"):
    import imref_test_hooks  # noqa: F401  SIGUSR1 rebalance, held uploads
