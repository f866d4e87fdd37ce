"""Study specs: YAML -> a validated search space, sampler, pruner, objectives and fixed config.

Every spec key is declared once (`sweep.spec.keys`); the parser (`parse`), its one-line errors and
`sweep keys` (`reference`) read those declarations.
"""

from sweep.spec.components import PRUNERS, SAMPLERS, Component
from sweep.spec.files import load_spec, shipped_specs
from sweep.spec.model import Keep, Param, SpecError, StudySpec, ValueFrom
from sweep.spec.names import STUDY_NAME_RULE, check_study_name, is_study_name
from sweep.spec.objectives import Constraint, Direction, Metric, Objective
from sweep.spec.parse import parse_spec
from sweep.spec.reading import read_yaml

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "STUDY_NAME_RULE",
    "Component",
    "Constraint",
    "Direction",
    "Keep",
    "Metric",
    "Objective",
    "Param",
    "SpecError",
    "StudySpec",
    "ValueFrom",
    "check_study_name",
    "is_study_name",
    "load_spec",
    "parse_spec",
    "read_yaml",
    "shipped_specs",
]
