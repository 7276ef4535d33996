"""``python -m dynbench method=pabee task=mrpc``: see dynbench/cli.py."""
from dynbench.cli import main

if __name__ == "__main__":
    main()
