"""The golden set's file format and its comparison figure."""

from __future__ import annotations

import io

import numpy as np
import pytest

from controllers.modelversion.golden import GoldenMismatch, parse, relative_difference


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_parse_reads_ids_per_table_and_optional_expected_outputs():
    golden = parse(npz(**{"ids.user": np.arange(4), "ids.item": np.arange(4),
                          "expected.score": np.zeros((4, 1))}))
    assert set(golden.ids) == {"user", "item"} and golden.rows == 4
    assert golden.ids["user"].dtype == np.int64
    assert set(golden.expected) == {"score"}
    with pytest.raises(ValueError, match="no ids"):
        parse(npz(**{"expected.score": np.zeros(2)}))
    with pytest.raises(ValueError, match="differ in length"):
        parse(npz(**{"ids.user": np.arange(3), "ids.item": np.arange(4)}))


def test_relative_difference_is_l1_over_l1_and_robust_to_outputs_near_zero():
    ref = {"score": np.array([[1.0], [-1.0], [0.0], [2.0]])}
    assert relative_difference(ref, ref) == 0
    off = {"score": ref["score"] + 0.1}
    assert relative_difference(off, ref) == pytest.approx(0.4 / 4)
    # An all-zero reference compares absolutely instead of dividing by zero.
    assert relative_difference({"s": np.full(3, 0.5)}, {"s": np.zeros(3)}) == 1.5


def test_relative_difference_refuses_missing_misshapen_or_non_finite_outputs():
    ref = {"score": np.ones((2, 1))}
    with pytest.raises(GoldenMismatch, match="no output"):
        relative_difference({}, ref)
    with pytest.raises(GoldenMismatch, match=r"\[2\]"):
        relative_difference({"score": np.ones(2)}, ref)
    with pytest.raises(GoldenMismatch, match="not finite"):
        relative_difference({"score": np.full((2, 1), np.nan)}, ref)
