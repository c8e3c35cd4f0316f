"""``python -m ckptsurgeon``: the same command as ``ckptsurgeon`` (for a venv whose scripts are not on PATH)."""
from ckptsurgeon.cli import main

if __name__ == "__main__":
    main()
