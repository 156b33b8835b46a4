"""``python -m covseg``: the ``covseg`` console script, for a Python whose scripts folder is not
on PATH (or to pick the interpreter). It runs :func:`covseg_entry.main` itself; only a stop
while covseg loads differs, since ``-m`` imports the package before this module runs."""

from covseg_entry import main

if __name__ == "__main__":
    raise SystemExit(main())
