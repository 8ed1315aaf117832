"""docs/LOG_TIERS.md and this package's README document every setting the package declares."""

from __future__ import annotations

from pathlib import Path

import pytest
from bananas_logfile import SETTINGS

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("doc", ["docs/LOG_TIERS.md", "docs/CONFIGURATION.md", "plugins/bananas-logfile/README.md"])
def test_every_setting_is_documented(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    for spec in SETTINGS:
        if doc == "docs/LOG_TIERS.md":
            assert spec.env[-1] in text, (doc, spec.env[-1])  # LOG_FILE_PATH …
        else:
            assert f"`{spec.key}`" in text and all(f"`{name}`" in text for name in spec.env), (doc, spec.key)
