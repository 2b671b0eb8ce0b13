"""The port against Meta's reference on the tiny golden fixture, through the public loader and
tools/run_fixture.py: every stage within 1e-4 (float32)."""

import numpy as np
import pytest
from conftest import FIXTURES

from tools.run_fixture import compare, main

FIXTURE = FIXTURES / "sam_tiny_a"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixture") / "out.npz"
    assert main([str(FIXTURE), str(out)]) == 0
    return dict(np.load(out))


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURE / "expected.npz"))


def test_every_expected_key_is_produced(results, expected):
    assert set(expected) <= set(results)


@pytest.mark.parametrize("key", sorted(np.load(FIXTURE / "expected.npz").files))
def test_stage_matches_reference(results, expected, key):
    err = compare(results, expected)[key]
    assert err <= 1e-4, f"{key}: max abs error {err:.3g} > 1e-4"
