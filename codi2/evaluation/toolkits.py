"""The field's evaluation toolkits that codi2's metrics reproduce, at the versions the parity
tests (``tests/test_eval_parity_audio.py``, ``tests/test_eval_parity_image.py``) compare with.

A metric says which toolkit number it equals (``metric.matches``, built with :func:`cite`) and
which feature network it ran (``metric.network``); ``codi2 eval`` writes both beside every
number so a table can be cited. The parity tests check that the installed toolkit has the
version named here, so a claim in a report is always one a test has checked.
"""

from __future__ import annotations

#: PyPI distribution -> the version the parity tests ran against
TOOLKITS = {
    "audioldm-eval": "0.0.3",
    "ssr-eval": "0.0.7",
    "panns-inference": "0.1.1",
    "torchlibrosa": "0.1.0",
    "frechet-audio-distance": "0.3.4",
    "torchmetrics": "1.9.0",
    "clean-fid": "0.1.35",
}

__all__ = ["TOOLKITS", "cite"]


def cite(toolkit: str, what: str) -> str:
    """``"audioldm-eval 0.0.3: calculate_kl (softmax)"`` — a toolkit, its version and the number."""
    return f"{toolkit} {TOOLKITS[toolkit]}: {what}"
