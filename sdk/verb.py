"""A package that is also a verb: ``edgesdk.compress(...)``, ``edgesdk.search(...)``, ``edgesdk.check(...)``.

Each of those names is a package (its submodules stay importable) whose module object is made callable, so the
package and the function it is named after are one name, as users expect from ``edgesdk.<verb>(...)``.
"""
from __future__ import annotations

import sys
import types
from typing import Any, Callable


def make_callable(module_name: str, run: Callable[..., Any]) -> None:
    """Make the imported module ``module_name`` callable: calling it calls ``run`` with the same arguments.
    ``run`` may import lazily (compress's does, so that its package never imports the API)."""

    class _Verb(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return run(*args, **kwargs)

    _Verb.__name__ = _Verb.__qualname__ = f"Verb[{module_name}]"
    sys.modules[module_name].__class__ = _Verb
