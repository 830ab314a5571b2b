"""Write bytecode for exactly the modules that fluxsupport imports (the Dockerfile's build stage).

Every module of the package is imported, except the development tools (devcluster, demo: the
image lacks their dependencies), and so are rich's tables, which the CLI imports only when it
prints one. Each source file of the venv that these imports compile (including the optional
ones that then fail, such as urllib3's SOCKS support) gets an *unchecked-hash* .pyc: valid
whatever the files' mtimes become. Layer tars round mtimes to whole seconds, which makes about
half of the usual timestamp-checked .pyc files stale; on the Pod's read-only root every stale
one is compiled again at every start. Code never loaded (most of pygments, holidays' other
countries) stays source only.

Run with the venv's interpreter and PYTHONDONTWRITEBYTECODE=1 (the Dockerfile's ENV):
python hack/image/compile_imported.py
"""

from __future__ import annotations

import importlib
import importlib.machinery
import pkgutil
import py_compile
import sys
from typing import Any

DEVELOPMENT = ("fluxsupport.devcluster", "fluxsupport.cli.devcluster", "fluxsupport.cli.demo",
               "fluxsupport.__main__")
IMPORTED_WHEN_USED = ("rich.console", "rich.table")

compiled: set[str] = set()
_source_to_code = importlib.machinery.SourceFileLoader.source_to_code


def _recording(self: Any, data: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
    compiled.add(str(path))
    return _source_to_code(self, data, path, *args, **kwargs)


def main() -> None:
    # Called for each module without valid bytecode (every one, after `pip install
    # --no-compile`), even when its import then fails; the modules loaded are added below.
    importlib.machinery.SourceFileLoader.source_to_code = _recording  # type: ignore[method-assign]
    import fluxsupport

    for info in pkgutil.walk_packages(fluxsupport.__path__, "fluxsupport."):
        if not info.name.startswith(DEVELOPMENT):
            importlib.import_module(info.name)
    for name in IMPORTED_WHEN_USED:
        importlib.import_module(name)
    loaded = {path for module in list(sys.modules.values())
              if isinstance(path := getattr(module, "__file__", None), str)}
    files = sorted(path for path in compiled | loaded
                   if path.endswith(".py") and path.startswith(sys.prefix + "/"))
    for path in files:
        py_compile.compile(path, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    print(f"bytecode for {len(files)} modules")


if __name__ == "__main__":
    main()
