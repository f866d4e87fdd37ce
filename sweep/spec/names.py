"""What a new study may be called."""

from __future__ import annotations

import re

from digitsum.errors import shown
from sweep.spec.model import SpecError

# A study's name becomes part of file names (reports/NAME.html, checkpoint folders) and of URLs
# (optuna-dashboard), and `STUDY:TRIAL` is split at its last colon: so a new name is plain.
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STUDY_NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or a digit, like compare-cells"


def is_study_name(name: str) -> bool:
    return bool(_STUDY_NAME.fullmatch(name))


def check_study_name(name: str, option: str = "--name") -> str:
    """A name for a new study (or one to resume) as `sweep run` takes it; SpecError saying what is allowed.
    Studies stored under other names before this rule stay readable, exportable and removable."""
    if not is_study_name(name):
        raise SpecError(f"{option} {shown(name)}: a study name is {STUDY_NAME_RULE}")
    return name
