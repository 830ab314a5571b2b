"""python-holidays' country package, registered so that it imports only the countries used.

The one place in domain/ that changes the process (``sys.modules``): ``defer_index`` runs
when the first holiday calendar is loaded (policy.holiday_calendar), never at import.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from typing import Any

import holidays

_NAME = "holidays.countries"
_registering = threading.Lock()


def defer_index() -> None:
    """Let python-holidays import the one country a policy names, not all of them.

    Its loaders import ``holidays.countries.<country>``, and Python first runs the package's
    ``__init__``, which imports all 250 countries: most of ``sla due``'s start-up and about
    8 MB of the operator's memory (bench/memory.md). The package is registered with that
    ``__init__`` put off until a name is read from the package itself, so that
    ``from holidays.countries import Germany`` still works. Idempotent; once the package is
    imported (deferred or not) it does nothing.
    """
    with _registering:
        if _NAME in sys.modules:
            return
        spec = importlib.util.find_spec(_NAME)
        if spec is None or spec.loader is None:
            return
        loader = spec.loader
        package = importlib.util.module_from_spec(spec)
        lock = threading.Lock()
        ran = False

        def index(attribute: str) -> Any:
            nonlocal ran
            with lock:
                if not ran:
                    ran = True
                    loader.exec_module(package)
            try:
                return package.__dict__[attribute]
            except KeyError:
                raise AttributeError(
                    f"module {_NAME!r} has no attribute {attribute!r}") from None

        package.__getattr__ = index  # type: ignore[method-assign]
        sys.modules[_NAME] = package
        holidays.countries = package  # what the import system sets for an imported subpackage
