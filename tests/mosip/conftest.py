"""Fixtures for MOSIP mode: the session's ActiveMQ broker, a deployment with its
`dedup abis serve` process and the fake MOSIP (tests/support/mosip.py), real photos."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dedup.mosip import localbroker
from tests.support import photos as photo_helpers
from tests.support.mosip import AbisEnv, make_env
from tests.support.pg import create_database, drop_database


@pytest.fixture(scope="session")
def broker() -> Iterator[localbroker.LocalBroker]:
    """One private ActiveMQ (Debian's package) for the session: STOMP for dedup and the fake
    MOSIP, OpenWire for the Java JMS client that plays MOSIP's own transport."""
    assert localbroker.available(), "Debian's activemq package is missing: `make test` installs it (apt-get install activemq)"
    root = Path(tempfile.mkdtemp(prefix="dedup-test-amq-"))
    b = localbroker.start_broker(root, openwire=True)
    yield b
    b.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def abis(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, broker: localbroker.LocalBroker) -> Iterator[AbisEnv]:
    """A VER_R2-encrypting MOSIP and a deployment serving it (one consumer per test module)."""
    url = create_database(pg_server, prefix="mosip_")
    env = make_env(tmp_path_factory.mktemp("abis"), url, broker, encrypted=True)
    env.start()
    yield env
    env.stop()
    assert env.mosip is not None
    env.mosip.close()
    env.share.stop()
    drop_database(pg_server, url)


# ---------------------------------------------------------------------------- photos

@pytest.fixture(scope="session")
def faces() -> dict[str, np.ndarray]:
    """Real photos: two captures of Eileen Collins (scikit-image's astronaut: the original, and
    a rescaled, brighter, re-framed one), Grace Hopper (matplotlib), and coffee (no face)."""
    import matplotlib.cbook
    import skimage.data

    astro = np.ascontiguousarray(skimage.data.astronaut())
    second = photo_helpers.resize(astro[20:500, 10:480], 0.8)
    second = np.clip(second.astype(np.int16) + 18, 0, 255).astype(np.uint8)
    grace_path = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    grace = np.asarray(Image.open(io.BytesIO(grace_path.read_bytes())).convert("RGB"))
    return {"astronaut": astro, "astronaut2": np.ascontiguousarray(second), "grace": grace,
            "coffee": np.ascontiguousarray(skimage.data.coffee())}
