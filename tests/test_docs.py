"""The API reference is generated from the code and kept current."""

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).parent.parent / "docs"


def test_the_reference_page_is_current():
    generated = subprocess.run([sys.executable, str(DOCS / "reference.py")], capture_output=True, text=True, check=True)
    assert generated.stdout == (DOCS / "reference.md").read_text(), "regenerate: python docs/reference.py > docs/reference.md"


def test_the_family_guide_exists():
    assert "adapter" in (DOCS / "adding_a_model_family.md").read_text()
