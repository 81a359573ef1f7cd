import shutil
import subprocess
from pathlib import Path

import pytest

from schemas.validation import InvalidEvent
from streams.collector.beacon import Cookies, Refused, check_consent, sent_marker

SNIPPET = Path(__file__).parents[2] / "streams" / "collector" / "static" / "imref.js"


@pytest.mark.parametrize("ref, customer", [
    ("Qi-XYZ.42", "V-1001"),
    ("Qi-é😀~", "V-中" * 30),  # beyond ASCII and the BMP (UTF-16 surrogates), and past 2^32 many times over
])
def test_the_sent_marker_is_the_snippets_hash(ref, customer):
    """The collector sets the snippet's marker cookie, so it must compute the snippet's own function."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Chromium tests check the marker instead")
    source = SNIPPET.read_text()
    # The hash function exactly as imref.js has it, run by a JavaScript engine.
    body = source[source.index("  function hash(text) {"):source.index("  function send(payload)")]
    done = subprocess.run([node, "-e", f"{body}\nprocess.stdout.write(hash(process.argv[1] + '\\n' + process.argv[2]))",
                           ref, customer], capture_output=True, text=True, check=True, timeout=30)
    assert sent_marker(ref, customer) == done.stdout


def test_the_cookie_domain_is_the_configured_one_the_request_host_is_under():
    cookies = Cookies("im_ref", 60, ["shop.example", "www.shop.example", "shop-outlet.example"])
    assert cookies.domain_for("www.shop.example:443") == "www.shop.example"  # the longest
    assert cookies.domain_for("M.Shop.Example") == "shop.example"
    assert cookies.domain_for("shop-outlet.example.") == "shop-outlet.example"
    for host in ("evilshop.example", "shop.example.evil", "[::1]:8080", "127.0.0.1", None, "a:b:c", ""):
        assert cookies.domain_for(host) is None, host  # host-only: a cookie for the collector's host


def test_the_cookies_carry_the_window_and_the_attributes():
    cookies = Cookies("im_ref", 2592000, ["shop.example"])
    click = {"im_ref": "Qi;x=1 (a)", "customer_id": "V-1"}
    attributes = "Max-Age=2592000; Path=/; Secure; SameSite=Lax"
    assert cookies.for_click(click, "www.shop.example") == [
        f"im_ref=Qi%3Bx%3D1%20(a); {attributes}; Domain=shop.example",  # as encodeURIComponent writes it
        f"im_ref_sent={sent_marker('Qi;x=1 (a)', 'V-1')}; {attributes}; Domain=shop.example"]
    assert cookies.for_click(click, "collect.other.example")[0] == f"im_ref=Qi%3Bx%3D1%20(a); {attributes}"


def test_consent_said_no_or_required_and_not_said_is_refused():
    check_consent({}, required=False)
    check_consent({"consent": True}, required=True)
    for beacon, required in (({"consent": False}, False), ({"consent": False}, True), ({}, True)):
        with pytest.raises(Refused, match="consent_not_given"):
            check_consent(beacon, required)
    for value in ("yes", 1, "true", []):
        with pytest.raises(InvalidEvent, match="schema_violation"):
            check_consent({"consent": value}, required=False)
