"""The local venue's admin endpoints answer this machine only, even when the venue listens on every interface
(as it does in a container)."""
from __future__ import annotations

import socket

import httpx
import pytest

from .venue_harness import Venue


def own_address() -> str:
    """This machine's address on its default route (no packet is sent), or skip where there is none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("this machine has no non-loopback route to reach its own address by")
        address = s.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback address")
    return address


def test_admin_requests_from_another_address_are_refused_and_the_rest_of_the_venue_answers(state_dir) -> None:
    address = own_address()
    venue = Venue(state_dir, 61, 100, "--host", "0.0.0.0", "--still")
    try:
        outside = f"http://{address}:{venue.clob_port}"
        refused = httpx.post(f"{outside}/_admin/latency", json={"orders_ms": 5000}, trust_env=False)
        assert refused.status_code == 403 and "loopback clients only" in refused.json()["error"]
        assert httpx.get(f"{outside}/ok", trust_env=False).status_code == 200  # the venue itself answers
        assert httpx.post(f"{venue.clob}/_admin/latency", json={"orders_ms": 0}, trust_env=False).json() == \
            {"orders_ms": 0.0}
        for bad_body in ({"orders_ms": "soon"}, {"reads_ms": -1}, {"reads_ms": 60_001}, {}):
            bad = httpx.post(f"{venue.clob}/_admin/latency", json=bad_body, trust_env=False)
            assert bad.status_code == 400 and "orders_ms, reads_ms" in bad.json()["error"], bad_body
        assert httpx.post(f"{venue.clob}/_admin/latency", json={"reads_ms": 0, "orders_ms": 0},
                          trust_env=False).json() == {"orders_ms": 0.0, "reads_ms": 0.0}
    finally:
        venue.stop()
