"""Rewrite the key tables in docs/keys.md and docs/spec-reference.md from the declarations.

.venv/bin/python scripts/readme-keys.py
"""

from pathlib import Path

from sweep.spec.reference import README_BEGIN, README_END, SPEC_REFERENCE, key_tables, spec_reference

repo = Path(__file__).resolve().parents[1]
(repo / SPEC_REFERENCE).write_text(spec_reference(repo), encoding="utf-8")
print(f"wrote {repo / SPEC_REFERENCE}")
keys_page = repo / "docs/keys.md"
text = keys_page.read_text()
head, rest = text.split(README_BEGIN, 1)
_, tail = rest.split(README_END, 1)
keys_page.write_text(f"{head}{README_BEGIN}\n{key_tables(markdown=True)}\n{README_END}{tail}")
print(f"updated the key tables in {keys_page}")
