"""Protections against attacks on AI, by the name users type (`PROT=`).

Each protection is a module with a `Protection` subclass; the registry maps
names to modules, which are imported only when chosen so that a missing
protection library (tensorflow-privacy, CleverHans, scikit-learn, TenSEAL)
stops only the protection that needs it.
"""

from __future__ import annotations

import importlib

from pipeline.errors import choice_error
from pipeline.protections.base import Protection

# name -> module that defines `PROTECTION` (a Protection subclass).
PROTECTIONS: dict[str, str] = {
    "none": "pipeline.protections.base",
    "he": "pipeline.protections.he",
    "anomaly": "pipeline.protections.anomaly",
    "adv": "pipeline.protections.adversarial",
    "adv-retrain": "pipeline.protections.adversarial_retraining",
    "dp": "pipeline.protections.dp",
}


def get(name: str) -> type[Protection]:
    """The Protection class registered under `name`."""
    if name not in PROTECTIONS:
        raise choice_error("protection", name, list(PROTECTIONS))
    return importlib.import_module(PROTECTIONS[name]).PROTECTION


def add_all_arguments(parser) -> None:
    """Adds every protection's options to `parser`, one argument group each.

    Protection options default to None on the command line, so that an option
    given for another protection can be refused instead of ignored; the
    protection's options dataclass holds the real defaults.
    """
    for name in PROTECTIONS:
        group = parser.add_argument_group(f"PROT={name}")
        get(name).add_arguments(group)
        _OPTION_DESTS[name] = [a.dest for a in group._group_actions]


_OPTION_DESTS: dict[str, list[str]] = {}


def option_dests() -> dict[str, list[str]]:
    """The argparse destinations of each protection's options (after add_all_arguments)."""
    return _OPTION_DESTS
