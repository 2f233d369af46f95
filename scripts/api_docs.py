"""The API reference, generated from the docstrings with pdoc (nothing generated is committed).

    python scripts/api_docs.py                  # HTML into runs/api; open runs/api/index.html
    python scripts/api_docs.py --serve          # or browse it live on http://127.0.0.1:8080

Every module of ``ffe_gym`` and ``ffe_agents`` is named to pdoc (a package's ``__all__`` would
otherwise hide its submodules); docstrings are read as reStructuredText.
"""

from __future__ import annotations

import argparse
import pkgutil
import warnings
from pathlib import Path

SKIP = ("ffe_agents.llm.node",)  # package data (the Node sidecar), not Python


def modules() -> list[str]:
    import ffe_agents
    import ffe_gym

    names = []
    for package in (ffe_gym, ffe_agents):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(SKIP) and not info.name.endswith("__main__"):
                names.append(info.name)
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/api"), help="output folder")
    p.add_argument("--serve", action="store_true", help="serve on 127.0.0.1:8080 instead")
    args = p.parse_args(argv)
    import pdoc
    import pdoc.web

    # a package without __all__ already brings its submodules: naming them again is harmless
    warnings.filterwarnings("ignore", message="The module specification .* adds a module")
    # names a package provides lazily (module __getattr__), documented in their own modules
    warnings.filterwarnings("ignore", message=".*(SB3VecEnv|correlation_factor).* does not "
                            "resolve")

    pdoc.render.configure(docformat="restructuredtext", show_source=True)
    if args.serve:
        server = pdoc.web.DocServer(("127.0.0.1", 8080), modules())
        print("API reference on http://127.0.0.1:8080 (Ctrl-C to stop)")
        server.serve_forever()
        return 0
    pdoc.pdoc(*modules(), output_directory=args.out)
    print(f"API reference: {args.out / 'index.html'} ({len(modules())} modules)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
