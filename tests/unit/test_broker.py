"""The embedded broker's pure helpers."""

from __future__ import annotations

import base64

from streams.broker import new_cluster_id


def test_cluster_ids_are_16_bytes_and_never_look_like_an_option() -> None:
    ids = {new_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    for cluster_id in ids:
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    # With 5000 draws a leading "-" would have shown up (p of missing it ~ (63/64)^5000) if not filtered;
    # other URL-safe characters still appear first, so the filter is narrow.
    assert any(cluster_id.startswith("_") for cluster_id in ids)
