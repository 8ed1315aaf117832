"""docs/LOG_TIERS.md and this package's README document every setting the package declares, and the mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
from bananas_elasticsearch import SETTINGS
from bananas_elasticsearch.templates import MAPPING_FIELDS

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("doc", ["docs/LOG_TIERS.md", "docs/CONFIGURATION.md",
                                 "plugins/bananas-elasticsearch/README.md"])
def test_every_setting_is_documented(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    for spec in SETTINGS:
        if doc == "docs/LOG_TIERS.md":
            assert spec.env[-1] in text, (doc, spec.env[-1])  # LOG_ES_FLUSH_BYTES …
        else:
            assert f"`{spec.key}`" in text and all(f"`{name}`" in text for name in spec.env), (doc, spec.key)


def test_the_guide_names_every_mapped_field():
    text = (ROOT / "docs" / "LOG_TIERS.md").read_text(encoding="utf-8")
    assert all(f"`{field}`" in text for field in MAPPING_FIELDS), [f for f in MAPPING_FIELDS if f"`{f}`" not in text]
