"""``python -m covseg``: the ``covseg`` console script, for a Python whose scripts folder is not
on PATH (or to pick the interpreter). It runs :func:`covseg_entry.main` itself: ``-m`` imports
the package before this module runs, which loads no PyTorch (its API is imported at first use),
so that a stop while covseg loads is one line here too."""

from covseg_entry import main

if __name__ == "__main__":
    raise SystemExit(main())
