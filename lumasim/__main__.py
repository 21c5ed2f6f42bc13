"""`python -m lumasim`: the simulator in the foreground (what `tracker simulate` runs)."""

from lumasim.run import main

if __name__ == "__main__":
    raise SystemExit(main())
