"""Rewrite docs/keys.md from the declarations (a test fails until you do, after adding a key).

.venv/bin/python docs/keys-page.py
"""

from pathlib import Path

from sweep.spec.reference import KEYS_PAGE, keys_page

repo = Path(__file__).resolve().parents[1]
(repo / KEYS_PAGE).write_text(keys_page(repo), encoding="utf-8")
print(f"wrote {repo / KEYS_PAGE}")
