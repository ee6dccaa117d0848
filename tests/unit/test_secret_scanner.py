"""The suite-wide secret scanner is wired: it sees structlog, stdlib and frames."""

import logging

import structlog

from tests.secrets import SCANNER, observe_frame


def test_scanner_sees_structlog_stdlib_and_frames():
    """A secret in any of the three places is caught (and then forgiven, for this test only)."""
    before = list(SCANNER.violations)
    try:
        structlog.get_logger("probe").info("probe.event", value="sim-api-token")
        logging.getLogger("probe.stdlib").warning("header peer-api-token")
        observe_frame('{"type":"event","data":{"pubsub_token":"x"}}')
        found = SCANNER.violations[len(before) :]
        assert any("log probe" in v and "sim-api-token" in v for v in found)
        assert any("probe.stdlib" in v and "peer-api-token" in v for v in found)
        assert any(v.startswith("frame") and "pubsub_token key" in v for v in found)
    finally:
        SCANNER.violations[:] = before
