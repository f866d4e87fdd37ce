"""Rewrite the README's key tables from the declarations (what `sweep keys --markdown` prints).

.venv/bin/python scripts/readme-keys.py
"""

from pathlib import Path

from sweep.reference import README_BEGIN, README_END, key_tables

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text()
head, rest = text.split(README_BEGIN, 1)
_, tail = rest.split(README_END, 1)
readme.write_text(f"{head}{README_BEGIN}\n{key_tables(markdown=True)}\n{README_END}{tail}")
print(f"updated the key tables in {readme}")
